"""Check that every file under a folder has the permissions the current umask gives a new file (0644 under umask
022), so a lab group can read the results: `python scripts/check_modes.py runs/demo-...`. Exit 1 naming the files."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hiperf_nb.core import file_mode  # noqa: E402


def wrong_modes(folder: Path) -> list[str]:
    "Files under `folder` whose permission bits differ from `file_mode()`."
    want = file_mode()
    return [f"{p}: {oct(p.stat().st_mode & 0o777)} (expected {oct(want)})"
            for p in sorted(folder.rglob("*")) if p.is_file() and (p.stat().st_mode & 0o777) != want]


if __name__ == "__main__":
    bad = wrong_modes(Path(sys.argv[1]))
    print("\n".join(bad) if bad else f"all files under {sys.argv[1]} have mode {oct(file_mode())}")
    sys.exit(1 if bad else 0)
