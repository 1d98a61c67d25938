"""LUNAR on real GLASS patients from clinical data (issue 15, point 3).

Trains Clinical-LogReg and LUNAR-TA / LUNAR (with and without modality dropout) on the 201-patient TCGA cohort
(`hiperf_nb.lunar_external.glass_clinical_external`), scores the 101 published GLASS patients with only their
clinical data, and writes bench/results/lunar_glass_clinical.{csv,md,png}: AUROC, AUPRC, balanced accuracy,
sensitivity and specificity with 95 % stratified-bootstrap CIs on all 101 patients, AUROC on the paper's 16 test
patients next to the published GLASS numbers, and each model paired against Clinical-LogReg on the same patients
(DeLong).

Run: python bench/lunar_external.py
"""
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
import pandas as pd

from hiperf_nb.core import HiperfWarning, atomic_write_bytes, atomic_write_text, figure_png
from hiperf_nb.explain import plot_roc_pr
from hiperf_nb.lunar_external import external_table, glass_clinical_external
from hiperf_nb.metrics import delong_test, markdown_table

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    warnings.simplefilter("ignore", HiperfWarning)
    t0 = time.perf_counter()
    r = glass_clinical_external(show_progress=False)
    tab = external_table(r["metrics"])
    y = r["data"]["glass"].y.numpy().astype(int)
    ref = r["runs"]["Clinical-LogReg"].scores["glass"]
    paired = {}
    for name, run in r["runs"].items():
        if name == "Clinical-LogReg": continue
        d = delong_test(y, run.scores["glass"], ref)
        paired[name] = f"{d['diff']:+.3f} ({d['lo']:+.3f} to {d['hi']:+.3f}), p = {d['p_value']:.2g}"
    tab["auroc - Clinical-LogReg (101, DeLong)"] = pd.Series(paired)
    tab = tab.fillna("-")
    c = r["cohort"]
    n_early = int(c["early"].sum())
    md = (f"**TCGA-trained models on the 101 published GLASS patients, clinical data only** (`python bench/lunar_external.py`, "
          f"{time.perf_counter() - t0:.0f} s). Training: the 201-patient TCGA cohort ({r['n_train']} training, {r['n_val']} validation "
          f"rows for early stopping and the Youden threshold). GLASS: {len(c)} patients ({n_early} early, {len(c) - n_early} late; "
          f"{int((c['grade'] == 4).sum())} grade 4), none used for training or tuning; the paper's 16 test patients (9 early) are a "
          f"subset. LUNAR rows: 3 seeds, mean probability; on GLASS their expression and mutation inputs are missing (training "
          f"means, `ModalityTensors.without`); \"modality dropout\": trained with `missing_rate=0.5`. 95 % stratified-bootstrap CIs "
          f"(1,000 resamples). The published rows are the paper's GLASS test results, from models that had GLASS expression and "
          f"mutation data and trained on GLASS rows; ours had GLASS clinical data only.\n\n" + markdown_table(tab) + "\n")
    fig = plot_roc_pr({k: v.scores["glass"] for k, v in r["runs"].items()}, y, None, "GLASS, 101 published patients, clinical data only")
    atomic_write_text(RESULTS / "lunar_glass_clinical.csv", tab.to_csv())
    atomic_write_text(RESULTS / "lunar_glass_clinical.md", md)
    atomic_write_bytes(RESULTS / "lunar_glass_clinical.png", figure_png(fig))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
