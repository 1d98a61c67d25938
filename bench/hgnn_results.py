"""The HiPerfGNN results tables (issue: ablations and baselines, paper Tables 1-2) from a full demo run.

Uses the demo's phantom cohorts and graphs (internal: 300 patients, external site: 100, another protocol),
its splits and its IDH models, and adds 1p/19q and WHO grade (3-class) on the internal test patients, with the
same models and training protocol. Writes bench/results/hgnn_results.{csv,md} and the ROC figures.

Run: python bench/hgnn_results.py DEMO_DIR [--tasks idh,codel,grade]
"""
import argparse
import os
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
import json


from hiperf_nb.metrics import markdown_table
from hiperf_nb.train import TrainConfig, load_splits
from hiperf_nb.hgnn_bench import BENCH_MODELS, PAPER_IDH_AUC, paper_table, plot_roc, run_benchmark

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo")
    ap.add_argument("--tasks", default="idh,codel,grade")
    ap.add_argument("--out", default=None, help="benchmark folder (default DEMO/hgnn; the demo's splits are used either way)")
    a = ap.parse_args()
    demo = Path(a.demo)
    cfg = json.loads((demo / "demo.json").read_text())["config"]
    tc = TrainConfig(epochs=cfg["hgnn_epochs"], patience=cfg["patience"], seed=cfg["seed"], device="cpu")
    out = Path(a.out) if a.out else demo / "hgnn"
    res = run_benchmark(demo / "graphs" / "internal", out, a.tasks.split(","), BENCH_MODELS, external_dir=demo / "graphs" / "external",
                        splits=load_splits(demo / "hgnn" / "splits.csv"), config=tc, n_boot=cfg["n_boot"], seed=cfg["seed"])
    RESULTS.mkdir(exist_ok=True)
    res.to_csv(RESULTS / "hgnn_results.csv", index=False)
    auc = res[res.metric == "auroc"].pivot_table(index="model", columns=["task", "dataset"], values="value").reindex(BENCH_MODELS)
    auc[("idh", "paper test")] = [PAPER_IDH_AUC.get((m, "test")) for m in auc.index]
    auc[("idh", "paper external")] = [PAPER_IDH_AUC.get((m, "external")) for m in auc.index]
    secs = res.groupby(["task", "model"]).train_seconds.first().unstack(0).reindex(BENCH_MODELS)
    auc.columns = [" ".join(c) for c in auc.columns]
    secs.columns = [f"{c} train s" for c in secs.columns]
    text = (f"# HiPerfGNN on phantom cohorts: ablations and baselines\n\nFrom `python bench/hgnn_results.py {demo}` "
            f"(full demo: {cfg['n_internal']} internal / {cfg['n_external']} external phantom patients, seed {cfg['seed']}). "
            f"95 % CIs: stratified bootstrap, percentile, {cfg['n_boot']} resamples. Binary thresholds chosen on the validation "
            "patients (Youden); grade is 3-class (macro one-vs-rest AUC, arg-max class).\n\n"
            + paper_table(res) + "\n\n## AUC summary (the paper's numbers are on real patients)\n\n"
            + markdown_table(auc.round(3).join(secs.round(0))) + "\n")
    (RESULTS / "hgnn_results.md").write_text(text)
    for t in a.tasks.split(","):
        if t == "grade": continue
        fig = plot_roc(out, t, ("test", "external") if t == "idh" else ("test",))
        fig.savefig(RESULTS / f"hgnn_roc_{t}.png", dpi=110, bbox_inches="tight")
    print(text)


if __name__ == "__main__":
    main()
