"""The notebook bridge: every notebook in nbs/ runs as one test, exactly as `nbdev_test` runs it
(cells flagged with settings.ini's tst_flags, e.g. `#| slow`, `#| gpu`, are skipped)."""
from pathlib import Path

import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))


def test_there_are_notebooks():
    assert {"00_core", "01_io", "20_cli", "index"} <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook(nb):
    flags = get_config(path=ROOT).tst_flags.split()  # nbdev splits tst_flags on whitespace
    ok, seconds = run_notebook(nb, skip_flags=flags)
    assert ok, f"{nb.name} failed (traceback above)"
