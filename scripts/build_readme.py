"""Build README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which cannot be installed
offline): nbdev's notebook processing (directives, hidden cells, frontmatter), then execution and Markdown
export with nbconvert. Run from the repository root: `python scripts/build_readme.py` (or `make readme`)."""
from pathlib import Path

import nbformat
import yaml
from nbconvert import MarkdownExporter
from nbconvert.preprocessors import ExecutePreprocessor
from nbdev.serve import proc_nbs

root = Path(__file__).resolve().parent.parent
proc = proc_nbs(file_glob="index.ipynb", n_workers=0)
nb = nbformat.read(proc / "index.ipynb", as_version=4)
front = nb.cells[0]
if front.cell_type == "raw" and front.source.startswith("---"):
    meta = yaml.safe_load(front.source.strip().strip("-"))
    nb.cells[0] = nbformat.v4.new_markdown_cell(f"# {meta['title']}\n\n> {meta.get('description', '')}")
ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(root / "nbs")}})
def without_code(cell):
    "A `#| echo: false` cell becomes its Markdown output alone (e.g. a results table), or nothing."
    md = [o["data"]["text/markdown"] for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
    return [nbformat.v4.new_markdown_cell("\n\n".join(md))] if md else []
nb.cells = [c for cell in nb.cells for c in (without_code(cell) if cell.cell_type == "code" and "#| echo: false" in cell.source else [cell])]
body, _ = MarkdownExporter().from_notebook_node(nb)
note = "<!-- generated from nbs/index.ipynb by scripts/build_readme.py: edit the notebook, not this file -->\n\n"
(root / "README.md").write_text(note + body.strip() + "\n")
print(f"wrote {root / 'README.md'}")
