"""Shared by the bench scripts: replace (or append) one script's section of BENCHMARKS.md."""
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`, each its own section; regenerate with `python bench/<name>.py`.\n"


def write_section(text: str) -> Path:
    "Put `text` (starting with its '## ' heading line) in BENCHMARKS.md, replacing the section with that heading."
    heading = text.lstrip().splitlines()[0]
    if not heading.startswith("## "): raise ValueError(f"a section starts with a '## ' heading, got {heading!r}")
    doc = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pat = re.compile(r"^" + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.strip() + "\n\n"
    doc = pat.sub(lambda m: body, doc) if pat.search(doc) else doc.rstrip() + "\n\n" + body
    BENCHMARKS.write_text(doc.rstrip() + "\n")
    return BENCHMARKS
