"""Survival benchmark on the real TCGA data (issue 15, point 5): time to progression (TCGA-CDR PFI, with censoring)
on every eligible patient, beyond the LUNAR paper's binary early/late task.

Repeated stratified K-fold cross-validation (default 5 folds x 3 repeats, one seed) of the models of
`hiperf_nb.survival` (nbs/16_survival.ipynb):

* cohort "all" (every eligible patient): the Kaplan-Meier reference (no features) and Cox PH on the clinical
  features;
* cohort "multimodal" (the eligible patients with mutation and expression data, same folds for every model):
  the Kaplan-Meier reference, Cox PH on the clinical features, CoxNet (elastic-net Cox, all modalities), a random survival forest
  (all modalities) and LUNAR's encoders with a Cox partial-likelihood head (all modalities).

Metrics per test fold: Harrell's C, Uno's C (tau = 1095 d), cumulative/dynamic AUC at 390 d, integrated Brier
score; 95 % CIs by the corrected resampled t (Nadeau & Bengio 2003); paired differences against clinical Cox on
the multimodal folds; Kaplan-Meier curves of out-of-fold risk groups (training-fold median split, first
repetition) with log-rank tests.

Writes bench/results/lunar_survival.csv (summary with CIs), lunar_survival.md (the tables as Markdown),
lunar_survival_folds.csv, lunar_survival_paired.csv, lunar_survival_logrank.csv and lunar_survival_km.png.

Run: OMP_NUM_THREADS=1 python bench/survival.py [--repeats 3] [--folds 5] [--seed 0] [--quick] [--no-write]
(about 7 minutes of CPU on one core with the defaults, longer wall time on a busy machine; --quick: one repeat, small models, nothing written unless
--write-quick).
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np
import pandas as pd
import sksurv
import torch
from threadpoolctl import threadpool_limits

from hiperf_nb.core import figure_png
from hiperf_nb.metrics import markdown_table
from hiperf_nb.survival import (METRICS, MODELS, cross_validate, format_summary, km_figure, paired_difference,
                                summary_table, tcga_survival_cohort, tcga_survival_data)

RESULTS = Path(__file__).resolve().parent / "results"
TAU = 1095


def run(n_splits: int, n_repeats: int, seed: int, quick: bool):
    "Fold metrics, out-of-fold risks and the data of both cohorts."
    data = tcga_survival_data("PFI")
    base = {k: MODELS[k] for k in ("Kaplan-Meier (no features)", "Cox (clinical)")}
    f1, o1 = cross_validate(data, base, "all", n_splits, n_repeats, seed, TAU, quick)
    f2, o2 = cross_validate(data.restrict(), MODELS, "multimodal", n_splits, n_repeats, seed, TAU, quick, show_progress=True)
    return data, pd.concat([f1, f2], ignore_index=True), pd.concat([o1, o2], ignore_index=True)


def report(data, folds, oof, n_splits, n_repeats, seed, seconds, cpu, quick) -> dict:
    "Summary, paired and log-rank tables, the KM figure and the Markdown text."
    frac = 1 / n_splits
    summary = summary_table(folds, frac)
    paired = pd.DataFrame([paired_difference(folds, m, "Cox (clinical)", k, frac)
                           for m in list(MODELS)[2:] for k in METRICS])
    mm = summary[summary.cohort == "multimodal"].set_index("model")
    best = mm.loc[list(MODELS)[2:], "harrell_c"].idxmax()  # the best all-modality model
    fig, logrank = km_figure(data, oof, [("all", "Cox (clinical)"), ("multimodal", "Cox (clinical)"), ("multimodal", best)])
    excl = tcga_survival_cohort("PFI")["excluded"].replace("", "eligible").value_counts()
    c = data.cohort
    pt = paired.copy()
    pt["metric"] = pt["metric"].map(METRICS)
    pt["difference (95 % CI)"] = [f"{r.diff:+.3f} ({r.lo:+.3f} to {r.hi:+.3f})" for r in pt.itertuples()]
    pt["p"] = pt["p"].map(lambda p: f"{p:.3f}")
    lr = logrank.assign(logrank_p=logrank["logrank_p"].map(lambda p: f"{p:.1e}"))
    md = "\n".join([
        "# Survival benchmark (TCGA PFI, repeated cross-validation)", "",
        f"Written by `python bench/survival.py` ({n_splits}-fold x {n_repeats} repeats, seed {seed}, "
        f"{'QUICK settings, ' if quick else ''}{cpu / 60:.1f} min CPU ({seconds / 60:.1f} min wall) on one "
        f"{platform.machine()} core, 1 thread; scikit-survival {sksurv.__version__}, torch {torch.__version__}).", "",
        f"Endpoint: TCGA-CDR progression-free interval (event = progression, recurrence or death with disease; censored "
        f"otherwise). Eligible: {len(c)} patients ({int(c.event.sum())} events, median follow-up {c.time.median():.0f} d); "
        f"multimodal (mutation + expression): {int(c.multimodal.sum())} ({int(c.event[c.multimodal].sum())} events). "
        "Exclusions: " + ", ".join(f"{k}: {v}" for k, v in excl.items() if k != "eligible") + ".", "",
        f"Mean over the {n_splits * n_repeats} test folds with the 95 % corrected resampled-t interval (Nadeau & Bengio 2003). "
        f"Uno's C truncated at tau = {TAU} d; td-AUC = cumulative/dynamic AUC at 390 d (the paper's early/late cutoff); "
        f"IBS = integrated Brier score from the 5th percentile of event times to tau (lower is better). IPCW metrics use "
        "the training fold as the censoring reference.", "",
        markdown_table(format_summary(summary), index=False), "",
        "## Paired differences against clinical Cox (multimodal patients, same folds)", "",
        markdown_table(pt[["a", "metric", "difference (95 % CI)", "p"]].rename(columns={"a": "model"}), index=False), "",
        "## Kaplan-Meier risk groups (out-of-fold, repeat 1; high = above the training fold's median risk)", "",
        markdown_table(lr, index=False), "",
        "![KM curves](lunar_survival_km.png)", ""])
    return {"summary": summary, "paired": paired, "logrank": logrank, "fig": fig, "md": md}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one repeat and small models (smoke test)")
    ap.add_argument("--no-write", action="store_true", help="print the tables, write nothing")
    ap.add_argument("--write-quick", action="store_true", help="write the --quick results to bench/results anyway")
    a = ap.parse_args()
    if a.quick: a.repeats = 1
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    with threadpool_limits(1):
        data, folds, oof = run(a.folds, a.repeats, a.seed, a.quick)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        r = report(data, folds, oof, a.folds, a.repeats, a.seed, seconds, cpu, a.quick)
    print(r["md"])
    if a.no_write or (a.quick and not a.write_quick): return
    RESULTS.mkdir(exist_ok=True)
    r["summary"].round(4).to_csv(RESULTS / "lunar_survival.csv", index=False)
    folds.round(4).to_csv(RESULTS / "lunar_survival_folds.csv", index=False)
    r["paired"].round(4).to_csv(RESULTS / "lunar_survival_paired.csv", index=False)
    r["logrank"].to_csv(RESULTS / "lunar_survival_logrank.csv", index=False)
    (RESULTS / "lunar_survival_km.png").write_bytes(figure_png(r["fig"]))
    (RESULTS / "lunar_survival.md").write_text(r["md"])
    print(f"wrote {RESULTS}/lunar_survival*  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
