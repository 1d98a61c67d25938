"""Benchmark of LUNAR on the real TCGA data: results tables and the cost of each model on the CPU.

1. Runs `hiperf_nb.lunar_bench.run_lunar` (the function behind `hiperf lunar`): every LUNAR variant and baseline
   on the published 133/29/29 split (with bootstrap CIs, next to the published numbers), repeated stratified
   5-fold cross-validation on the 201-patient cohort (with fold-paired comparisons against clinical-only
   logistic regression and the calibration of the out-of-fold probabilities). CORAL on held-out sites and the cutoff: bench/lunar_robustness.py.
   Tables and figures go to bench/results/lunar_*.{csv,md,png} (and bench/results/lunar_metrics.json).
2. Measures, on the published split's preprocessed features, the CPU training time per model (one seed,
   the benchmark's hyperparameters), the inference throughput (patients per second, batch = all 191
   patients, 1 thread) and the peak memory of training (tracemalloc: Python + NumPy + PyTorch CPU allocations).

Writes the "## LUNAR" section of BENCHMARKS.md.

Run: python bench/lunar.py [--quick] [--no-write] [--skip-run]
"""
import argparse
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np
import pandas as pd
import torch

from hiperf_nb.core import HiperfWarning
from hiperf_nb.genomics import tcga_dataset
from threadpoolctl import threadpool_limits
from hiperf_nb.lunar_train import LunarConfig, predict_proba, train_lunar
from hiperf_nb.lunar_bench import (BASELINES, LUNAR_MODELS, baseline_model, baseline_scores,
                                   fit_baseline, model_config, preprocess, run_lunar)
from hiperf_nb.metrics import markdown_table

from _report import write_section

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    "Peak resident memory of this process above its level at entry, sampled every 2 ms by a thread (captures PyTorch's allocator)."
    def __enter__(self):
        import threading, psutil
        self.proc, self.base, self.peak, self.stop = psutil.Process(), None, 0, threading.Event()
        self.base = self.proc.memory_info().rss
        def run():
            while not self.stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss - self.base); self.stop.wait(0.002)
        self.t = threading.Thread(target=run, daemon=True); self.t.start()
        return self
    def __exit__(self, *a):
        self.stop.set(); self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss - self.base)


def cost_table(n_repeat=3):
    "Training seconds, inference throughput and peak traced memory per model on the published split."
    ds = tcga_dataset("lunar")
    data = preprocess(ds, ds.splits["train"], {"val": ds.splits["val"], "test": ds.splits["test"]})
    allp = preprocess(ds, ds.splits["train"], {"all": list(ds.cohort.index)})["all"]
    cfg = LunarConfig()
    rows = {}
    for name in LUNAR_MODELS:
        tracemalloc.start()
        with PeakRSS() as mem:
            r = train_lunar(data["train"], data["val"], model_config(name, cfg), show_progress=False)
        _, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
        torch.set_num_threads(1)
        predict_proba(r.model, allp)  # warm-up
        t0 = time.perf_counter()
        for _ in range(20): predict_proba(r.model, allp)
        thr = 20 * len(allp) / (time.perf_counter() - t0)
        rows[name] = {"train s (1 thread)": r.seconds, "epochs run (best)": f"{len(r.history)} ({r.best_epoch})",
                      "s / epoch": r.seconds / len(r.history), "parameters": sum(p.numel() for p in r.model.parameters()),
                      "inference patients/s": thr, "peak train memory MB (traced)": peak / 2**20, "peak RSS increase MB": mem.peak / 2**20}
    for name in BASELINES:
        tracemalloc.start()
        with PeakRSS() as mem:
            secs = min(fit_baseline(name, data["train"], {}, 0)[1] for _ in range(n_repeat))
        _, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
        cols = data["train"].features["clinical"] if name == "Clinical-LogReg" else None
        X, Xa = data["train"].frame(), allp.frame()
        if cols is not None: X, Xa = X[cols], Xa[cols]
        with threadpool_limits(1):
            m = baseline_model(name, 0).fit(X, data["train"].y.numpy().astype(int))
            baseline_scores(m, Xa)  # warm-up
            t0 = time.perf_counter()
            for _ in range(20): baseline_scores(m, Xa)
            thr = 20 * len(Xa) / (time.perf_counter() - t0)
        rows[name] = {"train s (1 thread)": secs, "epochs run (best)": "-", "s / epoch": np.nan, "parameters": np.nan,
                      "inference patients/s": thr, "peak train memory MB (traced)": peak / 2**20, "peak RSS increase MB": mem.peak / 2**20}
    out = pd.DataFrame(rows).T
    out.attrs["dims"] = data["train"].dims
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="run_lunar(quick=True): one seed, no CV")
    ap.add_argument("--skip-run", action="store_true", help="only the cost measurements (keeps the tables already in bench/results)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    warnings.simplefilter("ignore", HiperfWarning)
    lines = ["## LUNAR (`bench/lunar.py`)", ""]
    if not a.skip_run:
        run_lunar(out_dir=RESULTS, quick=a.quick, metrics_name="lunar_metrics.json")
    mp = RESULTS / "lunar_metrics.json"
    if mp.exists():
        import json
        m = json.loads(mp.read_text())
        o = m["options"]
        lines += [f"`run_lunar` (the function behind `hiperf lunar`) on the real TCGA data took **{m['seconds'] / 60:.1f} min** "
                  f"({o['n_seeds']} LUNAR seed(s), CV {o['cv_folds']}-fold x {o['cv_repeats']} repeats, {o['n_boot']} bootstrap "
                  f"resamples; 2 shared CPU cores, load average 4-7 from other jobs during the run). Tables and figures: "
                  f"`bench/results/lunar_*`; discussed in `nbs/14_lunar.ipynb` and `nbs/17_explain.ipynb`.", ""]
        for name in ("lunar_test.md", "lunar_cv.md", "lunar_cv_comparisons.md", "lunar_sites_grouped.md", "lunar_cutoff.md"):
            p = RESULTS / name
            if p.exists(): lines += [p.read_text().strip(), ""]
    cost = cost_table()
    fmt = cost.copy()
    for c in ("train s (1 thread)", "s / epoch"): fmt[c] = fmt[c].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
    fmt["inference patients/s"] = fmt["inference patients/s"].map(lambda v: f"{v:,.0f}")
    for c in ("peak train memory MB (traced)", "peak RSS increase MB"): fmt[c] = fmt[c].map(lambda v: f"{v:.1f}")
    fmt["parameters"] = fmt["parameters"].map(lambda v: "-" if pd.isna(v) else f"{int(v):,}")
    dc, de, dm = cost.attrs["dims"]
    lines += [f"**Cost per model** on the published split (133 training patients; {dc} clinical, {de} expression and {dm} "
              "mutation features after preprocessing), one seed, one CPU thread. Inference: all 191 "
              "patients in one batch (LUNAR: `predict_proba`; baselines: scoring time of the fitted model). Memory: peak of "
              "tracemalloc during training (Python and NumPy allocations; PyTorch's CPU allocator is not traced) and the peak "
              "increase of the process's resident memory during training (sampled every 2 ms; includes PyTorch; the first "
              "model also pays one-off allocator growth). "
              f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}, torch "
              f"{torch.__version__}.", "", markdown_table(fmt), ""]
    text = "\n".join(lines)
    print(text)
    cost.to_csv(RESULTS / "lunar_cost.csv")
    if not a.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
