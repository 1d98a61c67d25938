"""Benchmark: load a 128x128x24x60 DSC case and extract its tumour TICs.

Compares `load_case` + `extract_tics` with a straightforward baseline (nibabel `get_fdata()`, i.e. the full
series as float64, then boolean indexing and a float64 z-score). Each variant runs in its own fresh
process; peak memory is tracemalloc's peak over the load (NumPy reports its buffers to tracemalloc), so
interpreter and import footprints do not blur it.
Writes the results into BENCHMARKS.md (section "I/O"). Usage: python bench/io.py [--repeats 5]
"""
import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from _report import write_section

SHAPE, FRAMES, TR = (128, 128, 24), 60, 1.5


def make_case(folder: Path, compressed: bool) -> dict:
    "A 128x128x24x60 int16 DSC series (scanner-like, 1.875x1.875x5 mm) with a ~49 ml ellipsoid tumour mask."
    ext = ".nii.gz" if compressed else ".nii"
    rng = np.random.default_rng(0)
    aff = np.diag([1.875, 1.875, 5.0, 1.0]); aff[:3, 3] = [-120, -120, -60]
    t = np.arange(FRAMES) * TR
    bolus = np.where(t > 15, ((t - 15) / 4) ** 3 * np.exp(-(t - 15) / 1.5), 0); bolus /= bolus.max()
    g = np.indices(SHAPE).astype(np.float32)
    r = np.sqrt(((g[0] - 70) / 14) ** 2 + ((g[1] - 60) / 12) ** 2 + ((g[2] - 12) / 4) ** 2)
    tumour = r <= 1
    depth = np.where(tumour, 0.45, 0.2).astype(np.float32)[..., None]
    sig = 800 * (1 - depth * bolus.astype(np.float32)) + rng.normal(0, 8, SHAPE + (FRAMES,)).astype(np.float32)
    img = nib.Nifti1Image(np.round(sig).astype(np.int16), aff)
    img.header.set_xyzt_units("mm", "sec"); img.header["pixdim"][4] = TR
    nib.save(img, folder / f"dsc{ext}")
    nib.save(nib.Nifti1Image(tumour.astype(np.uint8), aff), folder / f"tumor_mask{ext}")
    return {"dsc": str(folder / f"dsc{ext}"), "mask": str(folder / f"tumor_mask{ext}"), "n_tumour": int(tumour.sum())}


def run_variant(variant: str, dsc: str, mask: str) -> dict:
    "Runs in a child process: time one load + extraction and its peak traced allocation (NumPy arrays included)."
    import tracemalloc
    from hiperf_nb.io import Case, load_case
    from hiperf_nb.dsc import extract_tics
    tracemalloc.start()
    t0 = time.perf_counter()
    if variant == "baseline":
        data = nib.load(dsc).get_fdata()
        m = nib.load(mask).get_fdata() > 0.5
        tics = data[m]
        tics = (tics - tics.mean(1, keepdims=True)) / tics.std(1, keepdims=True)
    else:
        lc = load_case(Case("bench", dsc=dsc, tumor_mask=mask))
        tics, _ = extract_tics(lc.dsc, lc.mask)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    return {"seconds": dt, "peak_mb": peak / 2**20, "tics_shape": list(tics.shape), "tics_dtype": str(tics.dtype)}


def measure(variant, case, repeats):
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", variant, case["dsc"], case["mask"]],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"seconds": float(np.median([r["seconds"] for r in runs])), "peak_mb": float(np.median([r["peak_mb"] for r in runs])),
            "tics": runs[0]["tics_shape"], "dtype": runs[0]["tics_dtype"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=3, metavar=("VARIANT", "DSC", "MASK"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_variant(*a.child))); return
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for compressed in (True, False):
            sub = Path(d) / ("gz" if compressed else "nii"); sub.mkdir()
            case = make_case(sub, compressed)
            base = measure("baseline", case, a.repeats)
            ours = measure("hiperf", case, a.repeats)
            rows.append((".nii.gz" if compressed else ".nii", case["n_tumour"], base, ours))
            print(rows[-1], flush=True)
    lines = ["## I/O", "",
             f"`bench/io.py`: load one 128x128x24x60 int16 DSC series ({'x'.join(map(str, SHAPE))} x {FRAMES}, "
             f"{np.prod(SHAPE) * FRAMES * 2 / 2**20:.0f} MiB of voxels) and its tumour mask, extract and z-score the tumour TICs. "
             f"Baseline: `nib.load(...).get_fdata()` (float64) + boolean indexing + float64 z-score. hiperf: `load_case` "
             f"(validation, float32) + `extract_tics`. Median of {a.repeats} runs, each in a fresh process; peak = "
             "tracemalloc peak during the load (NumPy buffers included).", "",
             f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}, "
             f"numpy {np.__version__}, nibabel {nib.__version__}.", "",
             "| file | tumour voxels | baseline s | hiperf s | speed-up | baseline peak MiB | hiperf peak MiB | memory ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for ext, n, b, o in rows:
        lines.append(f"| {ext} | {n} | {b['seconds']:.3f} | {o['seconds']:.3f} | {b['seconds'] / o['seconds']:.2f}x | "
                     f"{b['peak_mb']:.0f} | {o['peak_mb']:.0f} | {b['peak_mb'] / max(o['peak_mb'], 1e-9):.2f}x |")
    lines += ["", f"TICs: baseline {rows[0][2]['tics']} {rows[0][2]['dtype']}, hiperf {rows[0][3]['tics']} {rows[0][3]['dtype']}."]
    write_section("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
