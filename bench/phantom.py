"""Benchmark the DSC phantom at clinical size (1.8 x 1.8 x 5 mm, `zoom=1`): time and peak memory to simulate one
case per site, a written cohort's time and disk, the in-memory cohort stream (`iter_cohort`, nothing on disk), and
the projection to a 1,500-case cohort. Writes the "Phantom" section of BENCHMARKS.md.

    python bench/phantom.py [--n 100] [--zoom 1]
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

from hiperf_nb.core import cpu_threads  # noqa: E402
from hiperf_nb.dsc import perfusion_maps, extract_tics  # noqa: E402
from hiperf_nb.phantom import simulate_case  # noqa: E402
from hiperf_nb.cohorts import iter_cohort, simulate_cohort, write_phantom_case  # noqa: E402

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


def per_case(site, zoom, reps=5):
    "Median seconds and max peak MiB of `simulate_case` over `reps` patients of one site."
    runs = [measure(lambda s=s: simulate_case("wildtype", False, 4, site=site, seed=100 + s, zoom=zoom)) for s in range(reps)]
    return runs[0][0], float(np.median([r[1] for r in runs])), max(r[2] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="cases in the written cohort")
    ap.add_argument("--zoom", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hiperf_bench_"))
    with cpu_threads(1):  # one core, as the target says
        try:
            simulate_case(seed=0, zoom=args.zoom)  # warm caches (template, depth, AIF)
            pc, t_int, m_int = per_case("internal", args.zoom)
            _, t_ext, m_ext = per_case("external", args.zoom)
            _, t_write, _ = measure(lambda: write_phantom_case(pc, tmp / "one"))
            L = pc.loaded
            _, t_maps, m_maps = measure(lambda: perfusion_maps(L.dsc, L.brain_mask, L.tr_s, L.te_s, exclude=L.mask))
            _, t_coh, m_coh = measure(lambda: simulate_cohort(args.n, "internal", seed=0, out_dir=tmp / "cohort", zoom=args.zoom))
            size = du(tmp / "cohort")
            n_stream = max(args.n // 4, 5)
            def stream():
                return sum(extract_tics(p.loaded.dsc, p.loaded.mask, norm="none")[0].nbytes for p in iter_cohort(n_stream, "internal", seed=1, zoom=args.zoom))
            curves, t_stream, m_stream = measure(stream)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    grid = "x".join(map(str, L.dsc.shape))
    per = t_coh / args.n
    lines = [
        "## Phantom (`bench/phantom.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"NumPy {np.__version__}; one process, one thread. Grid {grid} ({' x '.join(f'{s:g}' for s in L.spacing_mm)} mm, "
        f"`zoom={args.zoom}`). Peak memory is the Python-traced peak (tracemalloc) during the step; per-case times are "
        "medians of 5 glioblastoma patients. Target: <= 2 s per case on one core at clinical size.",
        "",
        "| step | time | peak memory |",
        "|---|---|---|",
        f"| simulate one case, internal site (3 T, T=60) | {t_int:.2f} s | {m_int:.0f} MiB |",
        f"| simulate one case, external site (1.5 T, T=45) | {t_ext:.2f} s | {m_ext:.0f} MiB |",
        f"| write one case (NIfTI, deterministic gzip) | {t_write:.2f} s | - |",
        f"| `perfusion_maps` of one case (BSW-dispersion + oSVD) | {t_maps:.2f} s | {m_maps:.0f} MiB |",
        f"| simulate + write a {args.n}-case cohort | {t_coh:.1f} s ({per:.2f} s/case) | {m_coh:.0f} MiB |",
        f"| stream {n_stream} cases in memory (`iter_cohort` + tumour curves, nothing written) | {t_stream:.1f} s ({t_stream / n_stream:.2f} s/case) | {m_stream:.0f} MiB |",
        "",
        f"Written cohort: {size / 2**20:.0f} MiB for {args.n} cases ({size / args.n / 2**20:.1f} MiB/case). "
        f"**A 1,500-case cohort** (projected from these measured per-case numbers, not run): about "
        f"{per * 1500 / 60:.0f} min on one core and {size / args.n * 1500 / 2**30:.1f} GiB written, or, streamed "
        f"with `iter_cohort` straight into curves, {t_stream / n_stream * 1500 / 60:.0f} min and "
        f"{curves / n_stream * 1500 / 2**30:.2f} GiB of float32 tumour curves (graphs instead of curves: a few MiB).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
