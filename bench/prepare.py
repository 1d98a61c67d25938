"""Benchmark: preparing real exams (`hiperf_nb.prepare`, `hiperf_nb.dicom`), seconds and peak memory per case.

Three cases, each measured in a fresh process (so peak resident memory is the case's own), on one thread of ITK
(registration is single-threaded by design: one seed, one result; cohorts run cases in parallel instead):

- the real TCGA-FG-6692 exam (T1, T1CE, T2, FLAIR on three grids of about 256x224x26, no DSC): three rigid
  registrations to T1CE, with the T2/FLAIR-to-T1CE brain-mask Dice (HD-BET masks) before and after; once as bundled
  (skull-stripped, with its brain mask) and once from the scanner's unstripped images in ../shared/data (as a user's
  exam arrives: no brain mask, so the simple one);
- a phantom exam at clinical resolution (88x102x20 voxels of 1.8x1.8x5 mm, 60 DSC frames, four structural
  sequences on the DSC grid) with 2-3 mm / 2-3 degrees of injected head motion: the whole `prepare_case`, and
  the same without motion correction (the difference is the motion correction's cost, 60 frame registrations);
- the same phantom exam written as DICOM series (pydicom, one file per slice and frame) and converted back with
  dcm2niix (`convert_dicom`).

Results go to bench/results/prepare.csv and section "Preparing real exams" of BENCHMARKS.md.

    python bench/prepare.py /tmp/hiperf_prepare
"""
import argparse
import multiprocessing as mp
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from hiperf_nb.metrics import markdown_table

from _report import write_section

ROOT = Path(__file__).resolve().parent.parent


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


SHARED_MRI = ROOT.parent / "shared" / "data" / "mri" / "TCGA-FG-6692"  # the unstripped originals (../shared/data/SOURCES.md)


def tcga(work: Path, raw: bool = False) -> dict:
    "The bundled skull-stripped exam, or (raw) the scanner's unstripped images of the same exam with the simple brain mask."
    from hiperf_nb.core import data_path
    from hiperf_nb.io import Case, read_image, read_manifest, resample_to_grid
    from hiperf_nb.prepare import prepare_case
    if raw:
        case = Case("TCGA-FG-6692-raw", **{s: SHARED_MRI / f"raw_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")})
    else: case = read_manifest(data_path("mri", "TCGA-FG-6692.csv"))[0]
    t0 = time.perf_counter()
    out = prepare_case(case, work / "tcga", overwrite=True, show_progress=False)
    seconds = time.perf_counter() - t0
    ref = read_image(data_path("mri", "TCGA-FG-6692", "brainmask_t1ce.nii.gz"))
    row = dict(case=f"TCGA-FG-6692 (real, {'unstripped, simple mask' if raw else 'skull-stripped'}; T1, T2, FLAIR -> T1CE)", seconds=seconds)
    for s in ("t2", "flair"):
        m = read_image(data_path("mri", "TCGA-FG-6692", f"brainmask_{s}.nii.gz"))  # the raw images share these masks' grids
        on_ref = lambda aff: _dice(resample_to_grid(m.data, aff, ref.data.shape, ref.affine, order=0), ref.data)
        row[f"{s}_dice"] = f"{on_ref(m.affine):.3f} -> {on_ref(read_image(getattr(out, s)).affine):.3f}"
    return row


def phantom_case(work: Path):
    "The clinical-resolution phantom exam with injected motion (made once)."
    from hiperf_nb.cohorts import write_phantom_case
    from hiperf_nb.io import case_from_dir, read_image, save_nifti
    from hiperf_nb.phantom import simulate_case
    from hiperf_nb.prepare import dsc_reference, from_sitk, to_sitk
    folder = work / "phantom" / "PH-1"
    if not (folder / ".complete").exists():
        pc = simulate_case(seed=1, zoom=1)
        case = write_phantom_case(pc, folder, truth=False)
        dsc = read_image(case.dsc)
        _, base = dsc_reference(dsc.data, read_image(case.brain_mask).data > 0)
        frames = []
        for t in range(dsc.data.shape[-1]):
            s = min(1, max(0, t - base.stop) / 15)
            e = sitk.Euler3DTransform((0.0, 0.0, 0.0), *np.radians([2.0 * s, -1.5 * s, 3.0 * s]), (2.5 * s, -2.0 * s, 1.5 * s))
            f = to_sitk(dsc.data[..., t], dsc.affine)
            frames.append(from_sitk(sitk.Resample(f, f, e, sitk.sitkBSpline, 0.0)))
        save_nifti(np.stack(frames, -1).astype(np.float32), dsc.affine, case.dsc, tr_s=dsc.tr_s)
        (folder / ".complete").touch()
    case = case_from_dir(folder)
    case.tr_s = read_image(case.dsc).tr_s
    return case


def phantom(work: Path, motion: bool) -> dict:
    from hiperf_nb.io import read_image
    from hiperf_nb.prepare import prepare_case
    case = phantom_case(work)
    shape = read_image(case.dsc).data.shape
    t0 = time.perf_counter()
    out = prepare_case(case, work / f"phantom_out_{motion}", motion=motion, overwrite=True, show_progress=False)
    row = dict(case=f"phantom {'x'.join(map(str, shape[:3]))} x {shape[3]} frames; " + ("motion + 4 registrations" if motion else "4 registrations only"),
               seconds=time.perf_counter() - t0)
    if motion:
        table = pd.read_csv(out.dsc.parent / "motion.csv")
        row["flagged_frames"] = f"{int(table.flagged.sum())} of {len(table)}"
    return row


def dicom(work: Path) -> dict:
    from hiperf_nb.dicom import convert_dicom, dicom_series, write_dicom_case
    case = phantom_case(work)
    src = work / "dicom_in"
    shutil.rmtree(src, ignore_errors=True); shutil.rmtree(work / "dicom_out", ignore_errors=True)
    t0 = time.perf_counter()
    write_dicom_case(case, src)
    t1 = time.perf_counter()
    dicom_series(src, show_progress=False)
    t2 = time.perf_counter()
    convert_dicom(src, work / "dicom_out", show_progress=False)
    n = sum(1 for p in src.rglob("*") if p.is_file())
    return dict(case=f"phantom as DICOM ({n} files) -> case folder: dcm2niix x5 + checks", seconds=time.perf_counter() - t2,
                write_dicom_s=t1 - t0, read_headers_s=t2 - t1)


def _measure(job: str, work: str, q):
    "Run one measurement in this (fresh) process; send back its row and peak resident memory."
    fn = {"tcga": lambda w: tcga(w), "tcga_raw": lambda w: tcga(w, raw=True), "phantom": lambda w: phantom(w, True), "phantom_static": lambda w: phantom(w, False),
          "dicom": lambda w: dicom(w)}[job]
    row = fn(Path(work))
    hwm = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    row["peak_rss_mib"] = int(hwm.split()[1]) / 1024  # this process's own peak (ru_maxrss would include the parent's, kept across exec)
    q.put(row)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path, help="working folder (cases are made once and reused)")
    ap.add_argument("--jobs", nargs="+", default=["tcga", "tcga_raw", "phantom", "phantom_static", "dicom"])
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    phantom_case(args.work)  # made outside the timed processes
    ctx, rows = mp.get_context("spawn"), []
    for job in args.jobs:
        q = ctx.Queue(); p = ctx.Process(target=_measure, args=(job, str(args.work), q)); p.start()
        row = q.get(); p.join()
        print(row, flush=True); rows.append(row)
    df = pd.DataFrame(rows)
    out = ROOT / "bench" / "results" / "prepare.csv"
    df.round(2).to_csv(out, index=False)
    motion_s = df.seconds[df.case.str.contains("motion \\+")].iloc[0] - df.seconds[df.case.str.contains("registrations only")].iloc[0] \
        if {"phantom", "phantom_static"} <= set(args.jobs) else float("nan")
    md = ["## Preparing real exams (`bench/prepare.py`)", "",
          "Seconds and peak resident memory per case, each case in a fresh process, ITK on one thread (registration is "
          "single-threaded so that one seed gives one result; a cohort runs cases in parallel over `--jobs` workers instead). "
          f"Machine: {platform.machine()}, {mp.cpu_count()} cores, Python {platform.python_version()}, SimpleITK {sitk.Version.VersionString()}.", "",
          markdown_table(df.round(2).astype(object).where(df.notna(), "-"), index=False), ""]
    if np.isfinite(motion_s):
        md.append(f"DSC motion correction alone (60 rigid frame registrations and B-spline resampling): {motion_s:.1f} s per case, "
                  f"{motion_s / 60:.2f} s per frame.")
    write_section("\n".join(md))


if __name__ == "__main__":
    main()
