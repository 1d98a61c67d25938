"""Check a demo report. First its content, from the file: the "VQ-VAE codes" table gives codebook usage, perplexity,
median habitats per tumour and the fraction of single-habitat tumours (internal test and external), the
degenerate-hierarchy warning box is there exactly when those numbers say the hierarchy is degenerate, and a quick
demo says it is a smoke run. Then in a real headless browser (Chromium): every section is there, with its heading,
every figure decodes, and the layout holds at two window widths (1400 px and 800 px): the document is never wider
than the window, every table sits in a `div.table-wrap` box, a table wider than its box scrolls inside it
(`overflow-x: auto`), and no figure or image reaches past the window. Writes full-page screenshots next to the
report (report-1400.png, report-800.png).

    python scripts/check_report.py runs/demo-*/report.html

Exit status 0 when every check passes, 1 otherwise (each failure printed); without Chromium the browser checks are
skipped (it says so), and the content checks still decide the exit status.
"""
from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_docs import chromium, find_chromium  # noqa: E402
from hiperf_nb.demo import HIERARCHY_MIN_HABITATS, HIERARCHY_MIN_PERPLEXITY  # noqa: E402

SECTIONS = {"summary": "Summary", "imaging": "Imaging cohorts", "hgnn": "HiPerfGNN", "saliency": "Saliency",
            "genomic-cohort": "Genomic cohort", "lunar": "LUNAR", "run": "Run configuration"}
WIDTHS = (1400, 800)
GROUPS = ("internal test", "external")
CODE_ROWS = ("codebook usage", "perplexity", *(f"median habitats per tumour, {g}" for g in GROUPS),
             *(f"single-habitat tumours, {g}" for g in GROUPS))  # the rows of the "VQ-VAE codes" table
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
    "Section ids with their h2 text, element ids, the rows of the VQ-VAE codes table, image widths, the probe's layout."
    def __init__(self):
        super().__init__(); self.sections, self.images, self.layout, self._sec, self._h2 = {}, [], None, None, False
        self.ids, self.codes, self._codes_depth, self._row = set(), {}, 0, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        if tag == "div" and (self._codes_depth or a.get("id") == "vqvae-codes"): self._codes_depth += 1
        if tag == "body" and a.get("data-layout"): self.layout = json.loads(a["data-layout"])
        elif tag == "section": self._sec = a.get("id")
        elif tag == "h2": self._h2 = True
        elif tag == "img": self.images.append((a.get("alt", ""), int(a.get("data-w") or 0)))
        elif tag == "tr" and self._codes_depth: self._row = []
        elif tag == "td" and self._row is not None: self._row.append("")
    def handle_endtag(self, tag):
        if tag == "h2": self._h2 = False
        elif tag == "div" and self._codes_depth: self._codes_depth -= 1
        elif tag == "tr" and self._row is not None:
            if len(self._row) == 2: self.codes[self._row[0].strip()] = self._row[1].strip()
            self._row = None
    def handle_data(self, data):
        if self._h2 and self._sec: self.sections[self._sec] = self.sections.get(self._sec, "") + data
        if self._row: self._row[-1] += data


def content_problems(html: str) -> list[str]:
    "What is missing or inconsistent in the report's content (VQ-VAE codes table, degenerate-hierarchy warning, smoke note)."
    dom = ReportDOM(); dom.feed(html)
    missing = [r for r in CODE_ROWS if r not in dom.codes]
    if missing: return [f"the VQ-VAE codes table (div#vqvae-codes) lacks the row(s) {missing}"]
    try: values = {r: float(dom.codes[r].rstrip("%")) for r in CODE_ROWS}
    except ValueError as e: return [f"the VQ-VAE codes table has a value that is not a number ({e})"]
    perplexity, habitats = values["perplexity"], [values[f"median habitats per tumour, {g}"] for g in GROUPS]
    probs = []
    degenerate = perplexity < HIERARCHY_MIN_PERPLEXITY or min(habitats) <= HIERARCHY_MIN_HABITATS
    if degenerate != ("hierarchy-warning" in dom.ids):
        probs.append(f"perplexity {perplexity:g} and median habitats {habitats} make the hierarchy "
                     f"{'degenerate' if degenerate else 'not degenerate'}, but the warning box is "
                     f"{'missing' if degenerate else 'shown'}")
    if "<p>Quick demo," in html and "smoke-run" not in dom.ids: probs.append("a quick demo report does not say it is a smoke run")
    return probs


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
    fails = content_problems(report.read_text(encoding="utf-8"))
    if not fails: print("check_report: VQ-VAE codes table complete, hierarchy warning consistent with it")
    binary = find_chromium()
    if binary is None:
        for f in fails: print(f"check_report: FAIL {f}")
        print("check_report: no Chromium found, browser check skipped"); return 1 if fails else 0
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
