"""Check a demo report in a real headless browser (Chromium): every section is there, with its heading, every
figure decodes, and the layout holds at two window widths (1400 px and 800 px): the document is never wider than
the window, every table sits in a `div.table-wrap` box, a table wider than its box scrolls inside it
(`overflow-x: auto`), and no figure or image reaches past the window. Writes full-page screenshots next to the
report (report-1400.png, report-800.png).

    python scripts/check_report.py runs/demo-*/report.html

Exit status 0 when every check passes, 1 otherwise (each failure printed); without Chromium it says so and
exits 0, because the report itself was still produced and validated as HTML.
"""
from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_docs import chromium, find_chromium  # noqa: E402

SECTIONS = {"summary": "Summary", "imaging": "Imaging cohorts", "hgnn": "HiPerfGNN", "saliency": "Saliency",
            "genomic-cohort": "Genomic cohort", "lunar": "LUNAR", "run": "Run configuration"}
WIDTHS = (1400, 800)
QUIET = ("--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync")
# Runs on load: records each image's decoded width, and the layout the browser computed, on <body data-layout>.
PROBE = """<script>window.addEventListener('load', () => {
  for (const i of document.images) i.dataset.w = i.naturalWidth;
  const right = e => Math.ceil(e.getBoundingClientRect().right);
  const tables = [...document.querySelectorAll('table')].map(t => { const w = t.parentElement; return {
    wrapped: w.tagName === 'DIV' && w.classList.contains('table-wrap'), width: Math.ceil(t.getBoundingClientRect().width),
    box: w.clientWidth, scroll: w.scrollWidth, overflowX: getComputedStyle(w).overflowX, right: right(w)}; });
  const media = [...document.querySelectorAll('img, figure')].map(e => ({tag: e.tagName.toLowerCase(), right: right(e)}));
  document.body.dataset.layout = JSON.stringify({innerWidth: window.innerWidth, height: document.documentElement.scrollHeight,
    scrollWidth: document.documentElement.scrollWidth, tables, media});
});</script>"""


class ReportDOM(HTMLParser):
    "Section ids with their h2 text, the decoded width of every image, and the layout the probe recorded."
    def __init__(self):
        super().__init__(); self.sections, self.images, self.layout, self._sec, self._h2 = {}, [], None, None, False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body" and a.get("data-layout"): self.layout = json.loads(a["data-layout"])
        elif tag == "section": self._sec = a.get("id")
        elif tag == "h2": self._h2 = True
        elif tag == "img": self.images.append((a.get("alt", ""), int(a.get("data-w") or 0)))
    def handle_endtag(self, tag):
        if tag == "h2": self._h2 = False
    def handle_data(self, data):
        if self._h2 and self._sec: self.sections[self._sec] = self.sections.get(self._sec, "") + data


def load(binary: str, report: Path, width: int) -> ReportDOM:
    "The report's DOM after loading it in a `width` px wide window, with the probe's measurements."
    probe = report.with_name("report.check.html")  # the report plus the probe script, next to it
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = ReportDOM(); dom.feed(chromium(binary, *QUIET, f"--window-size={width},2000", "--dump-dom", probe.as_uri()))
    finally: probe.unlink(missing_ok=True)
    if dom.layout is None: raise RuntimeError(f"{report}: the layout probe did not run")
    return dom


def layout_problems(m: dict) -> list[str]:
    "What is wrong with the layout measured in one window (`ReportDOM.layout`)."
    vw, probs = m["innerWidth"], []
    if m["scrollWidth"] > vw: probs.append(f"the document is {m['scrollWidth']} px wide in a {vw} px window")
    for i, t in enumerate(m["tables"], 1):
        if not t["wrapped"]: probs.append(f"table {i} is not inside a div.table-wrap")
        elif t["right"] > vw: probs.append(f"table {i}: its box ends at {t['right']} px, past the {vw} px window")
        elif t["scroll"] > t["box"] and t["overflowX"] not in ("auto", "scroll"):
            probs.append(f"table {i} ({t['scroll']} px) is wider than its box ({t['box']} px), which does not scroll (overflow-x {t['overflowX']})")
    probs += [f"{e['tag']} {i}: ends at {e['right']} px, past the {vw} px window" for i, e in enumerate(m["media"], 1) if e["right"] > vw]
    return probs


def layout_summary(m: dict) -> str:
    "One line: document and window width, tables, wide tables, figures."
    wide = sum(t["scroll"] > t["box"] for t in m["tables"])
    return (f"{m['innerWidth']} px window: document {m['scrollWidth']} px wide, {len(m['tables'])} tables "
            f"({wide} wider than their box, scrolling inside it), {len(m['media'])} images/figures within the page")


def main(path: str) -> int:
    report = Path(path).resolve()
    if not report.exists(): print(f"{report}: no report"); return 1
    binary = find_chromium()
    if binary is None: print("check_report: no Chromium found, browser check skipped"); return 0
    fails = []
    for width in WIDTHS:
        dom = load(binary, report, width)
        fails += [f"{width} px: {p}" for p in layout_problems(dom.layout)]
        print(f"check_report: {layout_summary(dom.layout)}")
        shot = report.with_name(f"report-{width}.png")  # the whole page (Chromium caps very tall windows)
        chromium(binary, *QUIET, f"--window-size={width},{min(dom.layout['height'], 16000)}", f"--screenshot={shot}", report.as_uri())
    fails += [f"section {sid!r} missing or without its heading {head!r}" for sid, head in SECTIONS.items()
              if head not in dom.sections.get(sid, "")]
    if len(dom.images) < 4: fails.append(f"expected at least 4 figures, found {len(dom.images)}")
    fails += [f"figure {alt!r} did not decode" for alt, w in dom.images if w <= 0]
    for f in fails: print(f"check_report: FAIL {f}")
    if not fails: print(f"check_report: {len(SECTIONS)} sections, {len(dom.images)} figures decoded, screenshots "
                        f"{', '.join(f'report-{w}.png' for w in WIDTHS)} in {report.parent}")
    return 1 if fails else 0


if __name__ == "__main__":
    if len(sys.argv) != 2: print(__doc__); sys.exit(2)
    sys.exit(main(sys.argv[1]))
