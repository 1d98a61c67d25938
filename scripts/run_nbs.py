"""Execute the notebooks in place so they are committed with their outputs (`make nbs`), as fastcore and nbdev do:
a reader on a forge, in JupyterLab or in the docs sees the tables and figures without running anything.

Each notebook runs exactly as in the docs build (`scripts/build_docs.py`: working directory `_proc/`, so what a
notebook writes stays out of the work tree; cells flagged `#| slow`/`#| gpu` and the export cell are not run;
HIPERF_PROGRESS=0; IN_TEST=1 unless `--full`, so workloads are the tested ones). Then the outputs are made
deterministic: no stderr (progress bars, warnings with file paths), no widget state, no execution counts or
timings, and any temporary or machine path in a text output becomes `<tmp>`/`<repo>`. `nbdev_clean` finishes the
job, and CI checks that a committed notebook is unchanged by it.

    python scripts/run_nbs.py                 # every notebook (2 at a time)
    python scripts/run_nbs.py 03_dsc 08_metrics
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_docs  # noqa: E402  (same execution as the docs build)

ROOT, NBS = build_docs.ROOT, build_docs.NBS
_TMP = re.compile(r"(?:/private)?(?:/tmp|/var/folders|" + re.escape(tempfile.gettempdir()) + r")/[^\s'\")\]]*")
_DROP_MIME = ("application/vnd.jupyter.widget-view+json",)


def _mask(text: str) -> str:
    "Temporary paths -> `<tmp>`, the repository's absolute path -> `<repo>`."
    return _TMP.sub("<tmp>", text.replace(str(ROOT), "<repo>"))


def deterministic(nb) -> None:
    "Strip what differs between two runs of the same notebook: stderr, widgets, counts, timings, paths."
    for cell in nb.cells:
        cell.metadata.pop("execution", None); cell.metadata.pop("hiperf_docs_skipped", None)
        if cell.cell_type != "code": continue
        cell.execution_count = None
        outs = []
        for o in cell.outputs:
            if o.output_type == "stream" and o.name == "stderr": continue
            if o.output_type == "stream": o.text = _mask(o.text)
            if "data" in o:
                for m in _DROP_MIME: o.data.pop(m, None)
                for m in ("text/plain", "text/html", "text/markdown"):
                    if m in o.data: o.data[m] = _mask(o.data[m])
                if not o.data: continue
                if o.output_type == "execute_result": o.execution_count = None
            outs.append(o)
        cell.outputs = outs


def run_one(stem: str, full: bool) -> str:
    "Execute `nbs/<stem>.ipynb` in place; return a one-line result."
    p = NBS / f"{stem}.ipynb"
    if not full: os.environ["IN_TEST"] = "1"
    try: nb = build_docs.execute(p, build_docs.PROC, timeout=900, flags=build_docs.tst_flags())
    except build_docs.DocsError as e: return f"FAILED {p.name}: {e}"
    deterministic(nb)
    nbformat.write(nb, p)
    return f"ok {p.name}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="notebook names (default: all)")
    ap.add_argument("--full", action="store_true", help="full workloads (IN_TEST unset)")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks executed at once")
    args = ap.parse_args(argv)
    os.environ.setdefault("HIPERF_PROGRESS", "0")
    os.environ["MPLBACKEND"] = "Agg"
    stems = [p.stem for p in build_docs.notebooks(only=args.only or None)]
    build_docs.sync_proc_folder()
    with ProcessPoolExecutor(args.jobs) as ex:
        results = list(ex.map(run_one, stems, [args.full] * len(stems)))
    print("\n".join(results))
    subprocess.run([str(Path(sys.executable).parent / "nbdev_clean")], cwd=ROOT, check=True)
    return 1 if any(r.startswith("FAILED") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
