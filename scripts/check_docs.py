"""Check the offline docs site in a real headless browser (Chromium).

Loads `index.html` and one API page of a site built by scripts/build_docs.py through `file://` URLs in
`chromium --headless`, and checks, from the DOM Chromium dumps after loading the page:

- the page title and its `<h1>` heading are the notebook's title;
- the sidebar links to every notebook page, in order, and (unless --partial) every linked page exists;
- the API page has show_doc API sections (`<h3>` headings inside `show_doc` outputs), one of them the
  symbol the page's notebook documents first;
- the API page shows at least one figure: an `<img>` whose source is a data URI or an existing file and
  that the browser decoded (its `naturalWidth`, recorded by the page's load handler, is positive).

Screenshots of both pages (and of the API page around its first figure) go to `<site>/_screenshots/`.

    python scripts/check_docs.py                       # _docs, API page graphs.html (or the first with a figure)
    python scripts/check_docs.py --site /tmp/site --page core.html --partial
    python scripts/check_docs.py --all                 # every built page loads, none failed to execute

Exit status 0 when every check passes, 1 otherwise (each failure printed), 2 when Chromium is missing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_docs  # noqa: E402  (same folder: page names and titles come from the same code that built the site)

ROOT = build_docs.ROOT
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WINDOW = (1280, 1400)


def find_chromium() -> str | None:
    "Path of a Chromium/Chrome binary: $CHROMIUM, else the first of `CHROMIUM_NAMES` on PATH."
    if os.environ.get("CHROMIUM"): return shutil.which(os.environ["CHROMIUM"]) or None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def chromium(binary: str, *args: str, timeout: int = 90) -> str:
    "Run headless Chromium with `args` (own throw-away profile); return its stdout, or raise with its stderr."
    with tempfile.TemporaryDirectory(prefix="hiperf-chromium-") as prof:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={prof}", "--virtual-time-budget=5000", *args]
        try: r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired: raise RuntimeError(f"chromium timed out after {timeout}s: {' '.join(args)}")
    if r.returncode != 0:
        raise RuntimeError(f"chromium exited with {r.returncode} for {' '.join(args)}:\n{r.stderr[-2000:]}")
    return r.stdout


class PageDOM(HTMLParser):
    "What the checks need from a dumped DOM: title, headings, API headings, images, sidebar links."

    def __init__(self):
        super().__init__()
        self.title, self.headings, self.api_headings, self.imgs, self.nav = "", [], [], [], []
        self.body_loaded, self.failed_banner = False, False
        self._div_api, self._in_nav, self._text_into = [], 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body": self.body_loaded = a.get("data-loaded") == "1"
        if tag == "div": self._div_api.append("celltag_hp-api" in (a.get("class") or "").split())
        if tag == "div" and "hp-error" in (a.get("class") or "").split(): self.failed_banner = True
        if tag == "nav" and "hp-sidebar" in (a.get("class") or ""): self._in_nav += 1
        if tag == "a" and self._in_nav and a.get("href") and not a["href"].startswith("#"): self.nav.append(a["href"])
        if tag == "img": self.imgs.append(a)
        if tag == "title": self._text_into = ["title", ""]
        if tag in ("h1", "h2", "h3", "h4"): self._text_into = [tag, "", any(self._div_api), a.get("id", "")]

    def handle_endtag(self, tag):
        if tag == "div" and self._div_api: self._div_api.pop()
        if tag == "nav" and self._in_nav: self._in_nav -= 1
        t = self._text_into
        if t and tag == t[0]:
            if tag == "title": self.title = t[1].strip()
            else:
                h = (tag, t[1].replace("\u00b6", "").strip(), t[3])
                self.headings.append(h)
                if t[2]: self.api_headings.append(h)
            self._text_into = None

    def handle_data(self, data):
        if self._text_into: self._text_into[1] += data


def parse_dom(dom: str) -> PageDOM:
    "Parse a DOM dump."
    p = PageDOM(); p.feed(dom); p.close()
    return p


def png_size(path: Path) -> tuple[int, int]:
    "Width and height from a PNG's IHDR chunk (raises on a file that is not a PNG)."
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n": raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def screenshot(binary: str, url: str, dest: Path, height: int = WINDOW[1]) -> list[str]:
    "Screenshot `url` (window 1280 x `height`) into `dest`; return problems (missing, not a PNG, wrong size, empty)."
    dest.parent.mkdir(parents=True, exist_ok=True)
    chromium(binary, f"--window-size={WINDOW[0]},{height}", f"--screenshot={dest}", url)
    if not dest.exists(): return [f"no screenshot written for {url}"]
    try: size = png_size(dest)
    except ValueError as e: return [str(e)]
    probs = [] if size == (WINDOW[0], height) else [f"{dest.name}: {size} pixels, expected {(WINDOW[0], height)}"]
    if dest.stat().st_size < 20_000: probs.append(f"{dest.name}: only {dest.stat().st_size} bytes, the page looks empty")
    return probs


def figure_screenshot(binary: str, url: str, dest: Path, top: int) -> list[str]:
    """Screenshot of the page around its first figure (at `top` px). Headless Chromium draws scrolled pages
    (`#fragment` URLs) off by the scroll offset, so the window is made tall enough instead and the shot cropped."""
    height = min(top + WINDOW[1], 30_000)
    probs = screenshot(binary, url, dest, height)
    if probs: return probs
    try: from PIL import Image
    except ImportError: return []  # keep the tall screenshot
    with Image.open(dest) as im: im.crop((0, max(0, height - WINDOW[1] - 150), WINDOW[0], height - 150)).save(dest)
    return []


def figure_ok(img: dict, site: Path) -> bool:
    "An `<img>` the browser decoded, whose source is a data URI or a file inside the site."
    src = img.get("src", "")
    exists = src.startswith("data:image/") or (not src.startswith(("http:", "https:")) and (site / src).is_file())
    return exists and int(img.get("data-natural-width") or 0) > 0


def check_page(binary: str, site: Path, page: str, pages: list[dict], partial: bool, api: bool):
    "Load `page` in Chromium and check it; return (problems, one-line summary, first figure's top or None)."
    path = site / page
    if not path.is_file(): return [f"{page}: missing (build it with scripts/build_docs.py)"], "", None
    dom = parse_dom(chromium(binary, f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", path.as_uri()))
    entry = next(p for p in pages if p["page"] == page)
    probs = []
    if not dom.body_loaded: probs.append(f"{page}: the page's load handler did not run")
    if dom.failed_banner: probs.append(f"{page}: its notebook failed to execute in the docs build (see the page)")
    if entry["title"] not in dom.title: probs.append(f"{page}: <title> is {dom.title!r}, expected {entry['title']!r}")
    h1 = [t for tag, t, _ in dom.headings if tag == "h1"]
    if not h1 or h1[0] != entry["title"]: probs.append(f"{page}: first <h1> is {h1[:1]}, expected {entry['title']!r}")
    want_nav = [p["page"] for p in pages]
    got_nav = [h.split("#")[0] for h in dom.nav]
    if got_nav != want_nav: probs.append(f"{page}: sidebar links {got_nav}, expected every page in order {want_nav}")
    missing = [h for h in got_nav if not (site / h).is_file()]
    if missing and not partial: probs.append(f"{page}: sidebar links to missing pages {missing}")
    figs = [i for i in dom.imgs if figure_ok(i, site)]
    fig_top = int(figs[0].get("data-top") or 0) if figs else None
    if api:
        if not dom.api_headings: probs.append(f"{page}: no show_doc API sections (h3 in a show_doc output)")
        if not figs: probs.append(f"{page}: no decoded figure (<img> from a data URI or an existing file): {dom.imgs[:3]}")
    if page == "index.html":
        listed = {a for a in got_nav}
        if set(want_nav) - listed: probs.append(f"index.html: does not link {sorted(set(want_nav) - listed)}")
    summary = (f"{page}: title {dom.title!r}, {len(dom.headings)} headings, {len(dom.api_headings)} API sections "
               f"(e.g. {', '.join(t for _, t, _ in dom.api_headings[:3]) or '-'}), {len(figs)}/{len(dom.imgs)} figures decoded, "
               f"{len(got_nav)} sidebar links")
    return probs, summary, fig_top


def pick_api_page(site: Path, pages: list[dict]) -> str:
    "graphs.html when built, else the first built page with both a show_doc section and an image."
    built = [p["page"] for p in pages if (site / p["page"]).is_file() and p["page"] != "index.html"]
    if "graphs.html" in built: return "graphs.html"
    for page in built:
        text = (site / page).read_text(encoding="utf-8")
        if "celltag_hp-api" in text and "<img" in text: return page
    return built[0] if built else "graphs.html"


def check_site(site: Path, page: str | None = None, partial: bool = False, binary: str | None = None,
               every: bool = False) -> list[str]:
    """Check `index.html` and API page `page` of `site` in Chromium, write screenshots; return the problems.
    With `every`, also load every other built page (title, heading, sidebar, no execution failure)."""
    binary = binary or find_chromium()
    if not binary: raise FileNotFoundError("no Chromium binary (apt-get install chromium, or set $CHROMIUM)")
    pages = build_docs.site_pages(build_docs.notebooks())
    page = page or pick_api_page(site, pages)
    if page not in {p["page"] for p in pages}: return [f"--page {page}: not a page of this site ({[p['page'] for p in pages]})"]
    shots, problems = site / "_screenshots", []
    todo = [("index.html", False), (page, True)]
    if every: todo += [(p["page"], False) for p in pages if p["page"] not in ("index.html", page) and (site / p["page"]).is_file()]
    for pg, api in todo:
        try:
            probs, summary, fig_top = check_page(binary, site, pg, pages, partial, api)
            if summary: print("  " + summary)
            problems += probs
            if (site / pg).is_file():
                stem = pg.removesuffix(".html")
                if api or pg == "index.html": problems += screenshot(binary, (site / pg).as_uri(), shots / f"{stem}.png")
                if fig_top is not None:
                    problems += figure_screenshot(binary, (site / pg).as_uri(), shots / f"{stem}-figure.png", fig_top)
        except RuntimeError as e: problems.append(f"{pg}: {e}")
    return problems


def main(argv=None) -> int:
    "Command line: check a built site, print the problems, exit 1 if there are any."
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", type=Path, default=ROOT / "_docs", help="built site folder (default: _docs)")
    ap.add_argument("--page", help="API page to check (default: graphs.html, else the first page with a figure)")
    ap.add_argument("--partial", action="store_true", help="site built with --only: pages not built may be missing")
    ap.add_argument("--all", dest="every", action="store_true", help="also load and check every other built page")
    args = ap.parse_args(argv)
    binary = find_chromium()
    if not binary:
        print("error: no Chromium binary found (apt-get install chromium, or set $CHROMIUM)", file=sys.stderr)
        return 2
    print(f"checking {args.site.resolve()} with {binary}")
    problems = check_site(args.site.resolve(), args.page, args.partial, binary, args.every)
    for p in problems: print(f"FAIL {p}", file=sys.stderr)
    print(f"{'OK' if not problems else f'{len(problems)} problem(s)'}; screenshots in {args.site.resolve() / '_screenshots'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
