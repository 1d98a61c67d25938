"""Wall time of `hiperf demo --quick` and of the full demo, per stage, with peak memory.

Runs the demo in a fresh process (so the time includes imports and every stage, from nothing), reads the
per-stage times the demo records in timings.json, and takes the peak resident memory of the demo process
(ru_maxrss of the child). `--full` runs the full demo too (up to 30 minutes); `--full-from DIR` instead
reports a full demo already run into DIR (its stage records) without running it again.

Run: python bench/demo.py [--full | --full-from DIR] [--no-write]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import write_section


def run(quick: bool, out: Path) -> dict:
    "Run the demo into `out` from scratch; return wall seconds, peak RSS and the stage timings."
    env = {**os.environ, "HIPERF_PROGRESS": "0", "MPLBACKEND": "Agg"}
    cmd = [str(Path(sys.executable).parent / "hiperf"), "demo", "--force", "--out", str(out)] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "maxrss_mib": rss, **recorded(out)}


def recorded(out: Path) -> dict:
    "Stage timings and sizes recorded by a finished demo in `out`."
    t = json.loads((out / "timings.json").read_text())
    cfg = json.loads((out / "demo.json").read_text())["config"]
    return {"stages": t["stages_seconds"], "config": cfg}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="also run the full demo")
    g.add_argument("--full-from", default=None, metavar="DIR", help="report the finished full demo in DIR")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        rows["quick"] = run(True, Path(d) / "quick")
        if a.full: rows["full"] = run(False, Path(d) / "full")
    if a.full_from: rows["full"] = {"wall_s": None, "maxrss_mib": None, **recorded(Path(a.full_from))}
    stages = list(next(iter(rows.values()))["stages"])
    lines = ["## Demo", "",
             f"`python bench/demo.py{' --full' if a.full else ''}`: `hiperf demo` from nothing (fresh process, `--force`), "
             f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}. Stage times are what the demo "
             "records; wall time includes start-up and the report.", "",
             "| demo | cohorts (internal / external) | " + " | ".join(stages) + " | sum of stages | wall | peak RSS MiB |",
             "|---|---|" + "---|" * (len(stages) + 3)]
    for name, r in rows.items():
        c = r["config"]
        total = sum(r["stages"].values())
        wall = "-" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f} min"
        rss = "-" if r["maxrss_mib"] is None else f"{r['maxrss_mib']:.0f}"
        lines.append(f"| {name} | {c['n_internal']} / {c['n_external']} | " + " | ".join(f"{r['stages'].get(s, 0):.0f} s" for s in stages)
                     + f" | {total / 60:.1f} min | {wall} | {rss} |")
    text = "\n".join(lines)
    print(text)
    if not a.no_write: write_section(text)


if __name__ == "__main__":
    main()
