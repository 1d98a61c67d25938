"""LUNAR robustness (issue 15, points 4 and 6): leave-site-out grouped CV with and without CORAL, and the early/late cutoff.

1. Leave-site-out: the 201-patient TCGA cohort's tissue source sites are grouped into 5 folds of whole sites with a
   comparable case mix (`hiperf_nb.lunar_robustness.site_groups`); each fold in turn is the unseen target domain.
   Training on the other sites (15 % validation), ComBat effects of the target sites estimated from the unlabelled
   target rows, LUNAR-TA and LUNAR with and without CORAL (cross-fitted over two target halves), Clinical-LogReg,
   LogReg, XGBoost. One seed per fold. Writes bench/results/lunar_sites_grouped.{csv,md,png} (+ _predictions.csv).
2. Cutoff sensitivity: cutoffs 300, 330, 360, 390, 420, 450, 500 days, the same 5-fold partition (1 repeat by
   default) at every cutoff, Clinical-LogReg, LogReg, XGBoost, LUNAR-TA, LUNAR. Writes
   bench/results/lunar_cutoff.{csv,md,png} (+ _predictions.csv): first with every model but LUNAR-TA (the costly one),
   then again with LUNAR-TA added (same folds and seeds: identical numbers for the others).

Each (fold) and (cutoff, fold) cell is cached under bench/results/lunar_robustness_cells/ (the file name carries a
hash of the settings), so an interrupted run resumes where it stopped; `--fresh` ignores the cache.

Cost (measured on this machine, 1 thread, load average ~4 on 2 cores): one site fold ~60-80 s (6 LUNAR trainings:
with/without CORAL, two CORAL halves), one (cutoff, fold) cell ~20-25 s; about 6 + 14 = 20 minutes in all with the
defaults (5 site folds; 7 cutoffs x 5 folds x 1 repeat).

Run: OMP_NUM_THREADS=1 python bench/lunar_robustness.py [--repeats 1] [--quick] [--fresh] [--only sites|cutoff]
"""
import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np
import pandas as pd

from hiperf_nb.core import HiperfWarning, atomic_write_bytes, atomic_write_text, figure_png
from hiperf_nb.explain import plot_roc_pr
from hiperf_nb.lunar_bench import tcga_cv_dataset
from hiperf_nb.lunar_train import LunarConfig
from hiperf_nb.lunar_robustness import (CUTOFFS, CUTOFF_MODELS, SITE_MODELS, coral_effect, cutoff_cv, cutoff_datasets,
                                        cutoff_folds, cutoff_table, cutoff_wide, fold_summary, label_changes,
                                        leave_site_out, plot_cutoff, site_groups, site_table,
                                        source_agreement)
from hiperf_nb.metrics import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "lunar_robustness_cells"


def write(name, content):
    (atomic_write_text if isinstance(content, str) else atomic_write_bytes)(RESULTS / name, content)


def sites(a, cfg, nb):
    t0 = time.perf_counter()
    ds = tcga_cv_dataset()
    folds = site_groups(ds, a.site_folds)
    summ = fold_summary(ds, folds)
    pred = leave_site_out(ds, folds, SITE_MODELS, a.seed, cfg, nb, cache_dir=None if a.fresh else CELLS, show_progress=True)
    tab, eff = site_table(pred, n_boot=a.n_boot, seed=a.seed), coral_effect(pred, n_boot=a.n_boot, seed=a.seed)
    secs = time.perf_counter() - t0
    pred.to_csv(RESULTS / "lunar_sites_grouped_predictions.csv", index=False)
    write("lunar_sites_grouped.csv", tab.to_csv())
    write("lunar_sites_grouped_coral.csv", eff.to_csv())
    n_early = int(ds.y.sum())
    md = (f"**Leave-site-out grouped cross-validation** (`python bench/lunar_robustness.py`, {secs / 60:.1f} min incl. cached cells): "
          f"the {len(ds.cohort)} TCGA patients ({n_early} early) of {ds.cohort['tss'].nunique()} tissue source sites in "
          f"{a.site_folds} folds of whole sites with a comparable case mix (below). Each fold's sites in turn are the unseen target "
          f"domain: training on the other sites (15 % of them validate: early stopping, Youden threshold), preprocessing fitted on "
          f"the training rows, the target sites' ComBat effects estimated from the unlabelled target rows; \"+ CORAL\": CORAL "
          f"on the unlabelled target rows, cross-fitted (each half of a target fold, split within sites without labels, scored "
          f"by the model aligned to the other half). One seed per fold ({a.seed} + fold); {nb} stability-selection bootstraps; "
          f"pooled CIs: {a.n_boot} stratified bootstrap resamples of the out-of-fold predictions (each fold at its own threshold). "
          f"This replaces the LGG -> GBM stand-in of `lunar_sites.md`, whose target was all grade IV with the class balance "
          f"flipped.\n\n" + markdown_table(summ) + "\n\n" + markdown_table(tab) + "\n\n"
          f"**CORAL on vs off** (same models, same patients; fold diff: mean of the per-fold AUROC differences with the "
          f"corrected resampled t CI; pooled: DeLong and paired bootstrap on the pooled out-of-fold scores):\n\n"
          + markdown_table(eff) + "\n")
    write("lunar_sites_grouped.md", md)
    scores = {m: pred[pred.model == m].sort_values(["fold", "patient"]).score.to_numpy() for m in tab.index}
    y = pred[pred.model == tab.index[0]].sort_values(["fold", "patient"]).y.to_numpy()
    write("lunar_sites_grouped.png", figure_png(plot_roc_pr(scores, y, None, f"Leave-site-out, {a.site_folds} folds of whole TCGA sites (pooled out-of-fold)")))
    print(md, flush=True)


def write_cutoff(a, pred, changes, n_folds, secs, pending=()):
    "Tables and figure of the cutoff analysis from the predictions so far."
    tab = cutoff_table(pred)
    pred.to_csv(RESULTS / "lunar_cutoff_predictions.csv", index=False)
    write("lunar_cutoff.csv", tab.round(4).to_csv(index=False))
    wide = cutoff_wide(tab)
    lun = tab.pivot(index="cutoff", columns="model", values="auroc")
    both, agree = source_agreement(sorted(changes.index))
    rng = {m: f"{lun[m].min():.3f}-{lun[m].max():.3f} (at {int(lun[m].idxmin())} / {int(lun[m].idxmax())} days)" for m in lun.columns}
    md = (f"**Sensitivity of AUROC to the early/late cutoff** (`python bench/lunar_robustness.py`, {secs / 60:.1f} min incl. cached "
          f"cells): the same {n_folds // a.repeats}-fold partition ({a.repeats} repeat(s); strata: the number of cutoffs at which "
          f"a patient is early) at every cutoff; preprocessing refit per fold and cutoff; one LUNAR seed per fold; mean fold AUROC "
          f"with the corrected resampled t 95 % CI. The {len(both)} TCGA patients that GLASS re-sequenced have a time to recurrence "
          f"in both sources (median difference {both.difference.abs().median():.0f} days); {agree.loc[390, 'disagree']} of them "
          f"({agree.loc[390, 'disagree rate']:.0%}) change label at 390 days between the two, so labels near the cutoff are fragile "
          f"(`source_agreement`). First table: the cohort at each cutoff, the labels that changed since the previous one, and the "
          f"TCGA/GLASS disagreements.\n\n"
          + markdown_table(changes.assign(**{f"TCGA vs GLASS disagree (of {len(both)})": agree.disagree.astype(str)})) + "\n\n"
          + markdown_table(wide) + "\n\n"
          f"Range of the mean fold AUROC over the cutoffs (lowest-highest, at which cutoff): " + "; ".join(f"{k} {v}" for k, v in rng.items()) + ".\n"
          + (f"\nNot run (CPU budget): {', '.join(pending)}.\n" if pending else ""))
    write("lunar_cutoff.md", md)
    write("lunar_cutoff.png", figure_png(plot_cutoff(tab, changes, f"AUROC against the early/late cutoff ({n_folds} folds per cutoff)")))
    print(md, flush=True)


def cutoff(a, cfg, nb):
    "Two passes sharing the folds: the fast models first (tables written), then LUNAR-TA (tables rewritten)."
    t0 = time.perf_counter()
    dss = cutoff_datasets(CUTOFFS, show_progress=False)
    changes = label_changes(dss)
    folds = cutoff_folds(dss, 5, a.repeats, a.seed)
    cache = None if a.fresh else CELLS
    slow = [m for m in CUTOFF_MODELS if m == "LUNAR-TA"]
    fast = [m for m in CUTOFF_MODELS if m not in slow]
    pred = cutoff_cv(dss, folds, fast, a.seed, cfg, nb, cache_dir=cache, show_progress=True)
    write_cutoff(a, pred, changes, len(folds), time.perf_counter() - t0, pending=slow)
    if slow:
        pred = pd.concat([pred, cutoff_cv(dss, folds, slow, a.seed, cfg, nb, cache_dir=cache, show_progress=True)], ignore_index=True)
        write_cutoff(a, pred, changes, len(folds), time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("sites", "cutoff"), help="run one experiment")
    ap.add_argument("--site-folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1, help="repeats of 5-fold CV per cutoff")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="2 LUNAR epochs, 10 stability bootstraps (smoke test; separate cache keys)")
    ap.add_argument("--fresh", action="store_true", help="ignore the per-cell cache")
    a = ap.parse_args()
    warnings.simplefilter("ignore", HiperfWarning)
    warnings.simplefilter("ignore", FutureWarning)
    cfg = LunarConfig(max_epochs=2, patience=1) if a.quick else LunarConfig()
    nb = 10 if a.quick else 100
    if a.quick: a.n_boot = 100
    if a.only in (None, "sites"): sites(a, cfg, nb)
    if a.only in (None, "cutoff"): cutoff(a, cfg, nb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
