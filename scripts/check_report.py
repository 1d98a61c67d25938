"""Check a demo report in a real headless browser (Chromium): every section is there, with its heading,
and every figure decodes. Writes a full-page screenshot next to the report (report.png).

    python scripts/check_report.py runs/demo-*/report.html

Exit status 0 when every check passes, 1 otherwise (each failure printed); without Chromium it says so and
exits 0, because the report itself was still produced and validated as HTML.
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_docs import chromium, find_chromium  # noqa: E402

SECTIONS = {"summary": "Summary", "imaging": "Imaging cohorts", "hgnn": "HiPerfGNN", "saliency": "Saliency",
            "genomic-cohort": "Genomic cohort", "lunar": "LUNAR", "run": "Run configuration"}
DECODE = """<script>window.addEventListener('load',()=>{for(const i of document.images){i.dataset.w=i.naturalWidth}});</script>"""


class ReportDOM(HTMLParser):
    "Section ids with their h2 text, and the decoded width of every image."
    def __init__(self):
        super().__init__(); self.sections, self.images, self._sec, self._h2 = {}, [], None, False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section": self._sec = a.get("id")
        elif tag == "h2": self._h2 = True
        elif tag == "img": self.images.append((a.get("alt", ""), int(a.get("data-w") or 0)))
    def handle_endtag(self, tag):
        if tag == "h2": self._h2 = False
    def handle_data(self, data):
        if self._h2 and self._sec: self.sections[self._sec] = self.sections.get(self._sec, "") + data


def main(path: str) -> int:
    report = Path(path).resolve()
    if not report.exists(): print(f"{report}: no report"); return 1
    binary = find_chromium()
    if binary is None: print("check_report: no Chromium found, browser check skipped"); return 0
    probe = report.with_name("report.check.html")  # the report plus a load handler recording decoded image sizes
    probe.write_text(report.read_text().replace("</body>", DECODE + "</body>"))
    try:
        dom = ReportDOM(); dom.feed(chromium(binary, "--dump-dom", probe.as_uri()))
        shot = report.with_name("report.png")
        chromium(binary, "--window-size=1200,9000", f"--screenshot={shot}", report.as_uri())
    finally: probe.unlink(missing_ok=True)
    fails = [f"section {sid!r} missing or without its heading {head!r}" for sid, head in SECTIONS.items()
             if head not in dom.sections.get(sid, "")]
    if len(dom.images) < 4: fails.append(f"expected at least 4 figures, found {len(dom.images)}")
    fails += [f"figure {alt!r} did not decode" for alt, w in dom.images if w <= 0]
    for f in fails: print(f"check_report: FAIL {f}")
    print(f"check_report: {len(SECTIONS)} sections, {len(dom.images)} figures decoded, screenshot {shot}" if not fails else "")
    return 1 if fails else 0


if __name__ == "__main__":
    if len(sys.argv) != 2: print(__doc__); sys.exit(2)
    sys.exit(main(sys.argv[1]))
