"""Benchmark the DSC phantom: time and peak memory to simulate (and write) one case and a 100-case cohort,
disk size of the cohort, and the perfusion-map time of one case. Writes the "Phantom" section of BENCHMARKS.md.

    python bench/phantom.py [--n 100] [--site internal]
"""
import argparse
import os
import platform
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
import numpy as np  # noqa: E402

from hiperf_nb.dsc import perfusion_maps
from hiperf_nb.phantom import simulate_case, simulate_cohort, write_phantom_case  # noqa: E402

from _report import write_section  # noqa: E402



def measure(fn):
    "Run `fn()` once; return (result, seconds, peak traced MiB)."
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, dt, peak


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--site", default="internal", choices=("internal", "external"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hiperf_bench_"))
    try:
        simulate_case(seed=0)  # warm caches (template, AIF)
        pc, t_case, m_case = measure(lambda: simulate_case("wildtype", False, 4, site=args.site, seed=1))
        _, t_write, _ = measure(lambda: write_phantom_case(pc, tmp / "one"))
        L = pc.loaded
        _, t_maps, m_maps = measure(lambda: perfusion_maps(L.dsc, L.brain_mask, L.tr_s, L.te_s, exclude=L.mask))
        _, t_coh, m_coh = measure(lambda: simulate_cohort(args.n, args.site, seed=0, out_dir=tmp / "cohort"))
        size = du(tmp / "cohort")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    grid = "x".join(map(str, L.dsc.shape))
    lines = [
        "## Phantom (`bench/phantom.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"NumPy {np.__version__}; one process. Grid {grid} (3.6 x 3.6 x 5 mm, `zoom=2`), site `{args.site}`. "
        "Peak memory is the Python-traced peak (tracemalloc) during the step.",
        "",
        "| step | time | peak memory |",
        "|---|---|---|",
        f"| simulate one case | {t_case:.2f} s | {m_case:.0f} MiB |",
        f"| write one case (NIfTI, deterministic gzip) | {t_write:.2f} s | - |",
        f"| `perfusion_maps` of one case (BSW-dispersion + oSVD) | {t_maps:.2f} s | {m_maps:.0f} MiB |",
        f"| simulate + write a {args.n}-case cohort | {t_coh:.1f} s ({t_coh / args.n:.2f} s/case) | {m_coh:.0f} MiB |",
        "",
        f"Cohort on disk: {size / 2**20:.0f} MiB for {args.n} cases ({size / args.n / 2**20:.1f} MiB/case), so a "
        f"few-hundred-case demo (e.g. 475 internal + 100 external) needs about {size / args.n * 575 / 2**30:.2f} GiB.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text)

if __name__ == "__main__":
    main()
