"""The docs site builds offline (nbdev processing + nbconvert) and renders in a real browser (headless Chromium)."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import build_docs  # noqa: E402
import check_docs  # noqa: E402


def test_pages_are_ordered_and_named_like_the_quarto_site():
    nbs = build_docs.notebooks()
    assert nbs[0].name == "index.ipynb" and [p.name for p in nbs[1:]] == sorted(p.name for p in nbs[1:])
    assert build_docs.page_name(ROOT / "nbs" / "00_core.ipynb") == "core.html"
    assert build_docs.page_name(ROOT / "nbs" / "index.ipynb") == "index.html"
    with pytest.raises(build_docs.DocsError, match="no notebook 99_nope"): build_docs.notebooks(only=["99_nope"])


def test_flagged_cells_are_not_executed(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\nprint('ran', x)"),
        nbformat.v4.new_code_cell("#| slow\nraise RuntimeError('a slow cell ran')"),
        nbformat.v4.new_code_cell("#| gpu\nraise RuntimeError('a gpu cell ran')"),
        nbformat.v4.new_code_cell("#| eval: false\nraise RuntimeError('an eval: false cell ran')"),
        nbformat.v4.new_code_cell("import nbdev; nbdev.nbdev_export()")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "flags.ipynb"
    nbformat.write(nb, path)
    out = build_docs.execute(path, tmp_path, timeout=60, flags=build_docs.tst_flags())
    assert "ran 1" in out.cells[0].outputs[0].text
    assert [c.metadata.get("hiperf_docs_skipped") for c in out.cells[1:]] == ["slow", "gpu", "eval: false", None]
    assert all(not c.get("outputs") for c in out.cells[1:])


def test_failed_notebook_is_named(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")])
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(build_docs.DocsError, match=r"broken\.ipynb failed to execute \(cell 1\): ZeroDivisionError"):
        build_docs.execute(path, tmp_path, timeout=60, flags=set())


def test_site_renders_in_headless_chromium(tmp_path):
    binary = check_docs.find_chromium()
    if not binary: pytest.skip("no Chromium binary on PATH (apt-get install chromium, or set $CHROMIUM)")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_docs.py"), "--only", "index", "01_io", "--quick",
                        "--out", str(site)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[2/2] 01_io.ipynb" in r.stdout
    problems = check_docs.check_site(site, "io.html", partial=True, binary=binary)
    assert not problems, "\n".join(problems)
    for shot in ("index.png", "io.png", "io-figure.png"): assert (site / "_screenshots" / shot).stat().st_size > 20_000
    io = (site / "io.html").read_text()
    assert 'href="core.html#' in io  # nbdev's symbol links point into the local site, not the web
