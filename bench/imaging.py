"""The powered HiPerfGNN benchmark on phantom v2 (issue 14): can the phantom results test the paper's claims?

One command, resumable at every step (kill it and run it again: finished work is read back, a training run resumes
from its last epoch), keeping only graphs on disk (patients are simulated in memory and streamed into graphs):

1. `vqvae`: a development cohort of phantom patients, disjoint from every evaluated cohort, trains the VQ-VAE
   ("fast" schedule), which is then frozen: no evaluated patient, in any fold, is seen by it.
2. `graphs`: the internal cohort (5-fold CV), the independent external site, and the two positive-control scenario
   cohorts (class signal in perfusion only / structure only); each patient's graphs in three fine partitions
   (`MODEL_PARTITION`: the paper's for the full model, a geometric one for Perf+Hier, tumour-wide SLIC for SG), with
   the structural crop of the image baseline and the true habitats for saliency.
3. `stability`: same-patient re-scans under the other site's acquisition: share of tumour voxels whose code sequence
   is unchanged.
4. `cv`: `run_benchmark` with 5-fold CV on the internal cohort: IDH with every model (paper Tables 1-2), 3 seeds for the
   full model and each ablation, one for the rCBV/TIC features and the image baseline (`ONE_SEED`);
   1p/19q and grade with one seed and the models of the paper's Table 1; the external site scored by every fold's
   model; paired comparisons with the full model.
5. `scenarios`: the same on the scenario cohorts (IDH; one model per modality, the full model and the rCBV/TIC
   features), plus the internal cohort as scenario "both". `ceiling`: the IDH signal of the phantom's true perfusion
   values in the scenario cohorts, which no measurement can exceed.
6. `saliency`, `tables`: saliency statistics and the result files under bench/results/ (imaging_*).

The graphs are rebuilt from the cohort seeds (deterministic), but training is hours of CPU: the script ends (also on an error
or Ctrl-C) by copying the small records of its finished work (each training run's predictions, the splits, re-scan agreement, saliency tables,
the stage log) into bench/results/imaging_runs/ (gzip, committed), with a fingerprint of the VQ-VAE and the graphs. A new
machine restores them into WORK, checks the fingerprint once its graphs are rebuilt, and trains only what is missing.

    python bench/imaging.py WORK [--stages vqvae,graphs,...] [--jobs 2] [--n-internal 1500] ...

WORK holds the frozen VQ-VAE, the graphs and every training run (several GB at full size).
"""
import argparse
import gzip
import hashlib
import json
import os
import resource
import time
import warnings
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402

from hiperf_nb.core import HiperfWarning, atomic_write_bytes, atomic_write_text, cpu_threads, figure_png  # noqa: E402
from hiperf_nb.dsc import extract_tics  # noqa: E402
from hiperf_nb.graphs import GraphConfig, build_hier_graph, code_keys  # noqa: E402
from hiperf_nb.graphs import HierGraph  # noqa: E402
from hiperf_nb.hgnn_bench import (MODEL_PARTITION, PAPER_PARTITION, BenchmarkLayout, paired_table, paper_table,  # noqa: E402
                                  plot_roc, run_benchmark, split_folds)
from hiperf_nb.saliency import rim_ratio_summary, saliency_table, signal_peak  # noqa: E402
from hiperf_nb.train import load_model  # noqa: E402
from hiperf_nb.io import HABITATS  # noqa: E402
from hiperf_nb.metrics import classification_metrics, delong_test, markdown_table, stratified_bootstrap  # noqa: E402
from hiperf_nb.cohorts import COHORT_PREFIX, iter_cohort  # noqa: E402
from hiperf_nb.phantom import rescan  # noqa: E402
from hiperf_nb.train import TrainConfig  # noqa: E402
from hiperf_nb.vqvae import (TICBank, VQVAEConfig, encode_case, load_vqvae, prepare_tics, save_vqvae, tics_from_cases,  # noqa: E402
                             train_vqvae, vqvae_schedule)

RESULTS = Path(__file__).resolve().parent / "results"
KEPT = RESULTS / "imaging_runs"  # the committed records of finished work (see the module docstring)
KEPT_FILES = ("cv/*/splits.csv", "scenarios/*/splits.csv", "cv/*/*/*/fold*/seed*/predictions.csv",
              "scenarios/*/*/*/fold*/seed*/predictions.csv", "code_stability.csv", "ceiling.csv", "saliency_*.csv", "log.json")
STAGES = ("vqvae", "graphs", "stability", "cv", "scenarios", "ceiling", "saliency", "tables")
PARTITIONS = (PAPER_PARTITION, *sorted(set(MODEL_PARTITION.values())))
# cohort -> (site, scenario, cohort seed); the seeds keep every cohort's patients distinct from the others'
COHORTS = {"dev": ("internal", "both", 101), "internal": ("internal", "both", 1), "external": ("external", "both", 2),
           "perfusion": ("internal", "perfusion", 3), "structure": ("internal", "structure", 4)}
VQVAE_PER_CASE = vqvae_schedule("fast", tics_from_cases)["max_per_case"]  # curves per development patient
IDH_MODELS = ("full", "perf", "perf_hier", "sg", "perfgat", "features", "cnn")  # paper Tables 1 and 2, and the rCBV/TIC features
ONE_SEED = ("features", "cnn")  # deterministic given the fold (features), or the costly image baseline: one training seed
TABLE1_MODELS = ("full", "perfgat", "cnn")  # 1p/19q and grade: the models of the paper's Table 1 (HiPerfGNN, PerfGAT, GlioMT)
SCENARIO_MODELS = ("full", "perf", "sg", "cnn", "features")  # one model per modality (perfusion, structure: graph and image), both, and the
# rCBV/TIC features: the only model that sees the curves' amplitude, which the z-scored codes do not


def graph_config(partition: str) -> GraphConfig:
    """The benchmark's graph options: the paper's (supervoxels of 125 voxels: 2 ml on the 1.8 x 1.8 x 5 mm grid, about 40 per
    tumour, which keeps CPU training to minutes per model), the crop only with the paper's graphs."""
    return GraphConfig(fine_partition=partition, **({} if partition == PAPER_PARTITION else {"crop_mm": None}))


def patient_id(cohort: str, i: int) -> str:
    "ID of patient i of a cohort, as `iter_cohort` names it (its site's prefix)."
    return f"{COHORT_PREFIX[COHORTS[cohort][0]]}-{i + 1:04d}"


def patient(cohort: str, n: int, i: int):
    "Patient i of a cohort of n, simulated in memory."
    site, scenario, seed = COHORTS[cohort]
    return next(iter_cohort(n, site, seed, start=i, scenario=scenario))


# ---------------------------------------------------------------- VQ-VAE on the development cohort
def stage_vqvae(work: Path, a) -> None:
    path = work / "vqvae.pt"
    if path.exists(): return print(f"vqvae: {path} exists")
    cfg = VQVAEConfig(resample_tr_s=1.5)
    fast = vqvae_schedule("fast", train_vqvae)
    t0 = time.perf_counter()

    def curves(i):
        with cpu_threads(1):
            L = patient("dev", a.n_dev, i).loaded
            t, _ = extract_tics(L.dsc, L.mask, norm=cfg.norm)
            t = prepare_tics(t, L.tr_s, cfg.norm, cfg.resample_tr_s, cfg.align)
            return t[np.random.default_rng(i).permutation(len(t))[:VQVAE_PER_CASE]]
    arrays = Parallel(n_jobs=a.jobs)(delayed(curves)(i) for i in range(a.n_dev))
    bank = TICBank(arrays, max_per_case=VQVAE_PER_CASE, seed=0,
                   preprocessing={"norm": cfg.norm, "resample_tr_s": cfg.resample_tr_s, "align": cfg.align})
    t1 = time.perf_counter()
    model, hist = train_vqvae(bank, cfg, steps=fast["steps"], batch_size=fast["batch_size"], lr=fast["lr"], seed=0, device="cpu")
    save_vqvae(model, path, hist)
    kept = next(h for h in hist if h["kept"])
    log(work, "vqvae", {"patients": a.n_dev, "curves": len(bank), "simulate_s": t1 - t0, "train_s": time.perf_counter() - t1,
                        **{k: kept[k] for k in ("loss", "recon_loss", "perplexity", "sequence_perplexity")}})




# ---------------------------------------------------------------- graphs, streamed
def graph_dirs(work: Path, cohort: str) -> dict:
    return {p: work / "graphs" / cohort / p for p in PARTITIONS}


def build_one(work: Path, cohort: str, n: int, i: int, vq) -> dict:
    "Simulate patient i, encode it, build and save its graphs in every partition; the sidecar JSON marks it done."
    dirs = graph_dirs(work, cohort)
    site, scenario, seed = COHORTS[cohort]
    pid = patient_id(cohort, i)
    side = work / "graphs" / cohort / "done" / f"{pid}.json"
    if side.exists(): return {**json.loads(side.read_text()), "resumed": True}
    with cpu_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", HiperfWarning)
        t0 = time.perf_counter()
        pc = patient(cohort, n, i)
        t1 = time.perf_counter()
        L = pc.loaded
        codes, lat, coords = encode_case(vq, L)
        row = {"patient_id": L.patient_id, **{k: pc.labels[k] for k in ("idh", "codel", "grade")},
               "phenotype": pc.tumour.get("phenotype"), "n_voxels": int(len(coords)), "simulate_s": round(t1 - t0, 3)}
        for part, d in dirs.items():
            t2 = time.perf_counter()
            g = build_hier_graph(L, codes, lat, coords=coords, config=graph_config(part), n_codes=vq.config.n_codes, truth=pc.habitats)
            d.mkdir(parents=True, exist_ok=True)
            g.save(d / f"{L.patient_id}.pt")
            row.update({"n_coarse": g.n_coarse, f"n_fine_{part}": g.n_fine, f"build_s_{part}": round(time.perf_counter() - t2, 3)})
    side.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(side, json.dumps(row))
    return row


def stage_graphs(work: Path, a) -> None:
    vq = load_vqvae(work / "vqvae.pt")
    sizes = {"internal": a.n_internal, "external": a.n_external, "perfusion": a.n_scenario, "structure": a.n_scenario}
    for cohort in a.cohorts.split(","):
        n = sizes[cohort]
        t0 = time.perf_counter()
        rows = []
        for r in Parallel(n_jobs=a.jobs, return_as="generator")(delayed(build_one)(work, cohort, n, i, vq) for i in range(n)):
            rows.append(r)
            if len(rows) % 25 == 0 or len(rows) == n:
                print(f"\rgraphs {cohort}: {len(rows)}/{n} ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
        print()
        df = pd.DataFrame(rows)
        resumed = df.pop("resumed").eq(True) if "resumed" in df else pd.Series(False, index=df.index)
        for part, d in graph_dirs(work, cohort).items():
            index = df[["patient_id", "idh", "codel", "grade"]].assign(graph=df.patient_id + ".pt")
            atomic_write_text(d / "graphs.csv", index[["patient_id", "graph", "idh", "codel", "grade"]].to_csv(index=False))
        atomic_write_text(work / "graphs" / cohort / "patients.csv", df.to_csv(index=False))
        per_patient = df.simulate_s + df.filter(like="build_s_").sum(axis=1)  # one thread each; VQ-VAE encoding not included
        if resumed.all(): print(f"graphs {cohort}: all {n} patients read back"); continue  # keep the record of the run that built them
        log(work, f"graphs_{cohort}", {"n": n, "built": int((~resumed).sum()), "wall_s": time.perf_counter() - t0, "jobs": a.jobs,
                                       "simulate_build_s": float(per_patient.sum())})


# ---------------------------------------------------------------- code stability across acquisitions
def rescan_agreement(work: Path, cohort: str, n: int, i: int, other: str, vq) -> dict:
    """Patient i scanned at its own site and re-scanned with `other`'s acquisition ("repeat": its own, in a second session,
    i.e. new protocol jitter and noise): share of tumour voxels whose codes agree."""
    with cpu_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", HiperfWarning)
        pc = patient(cohort, n, i)
        again = rescan(pc, session=1) if other == "repeat" else rescan(pc, other)
        (ca, _, xa), (cb, _, xb) = encode_case(vq, pc.loaded), encode_case(vq, again.loaded)
    if not np.array_equal(xa, xb): raise RuntimeError(f"{pc.loaded.patient_id}: the re-scan's tumour voxels differ")
    seq_a, seq_b = code_keys(ca, vq.config.n_codes), code_keys(cb, vq.config.n_codes)
    pa, pb = (np.bincount(s, minlength=vq.config.n_codes ** ca.shape[1]) / len(s) for s in (seq_a, seq_b))
    return {"patient_id": pc.loaded.patient_id, "cohort": cohort, "rescan_with": other, "idh": pc.labels["idh"], "n_voxels": len(xa),
            "sequence_same": float((seq_a == seq_b).mean()), "chance": float(pa @ pb),
            **{f"position{k}_same": float((ca[:, k] == cb[:, k]).mean()) for k in range(ca.shape[1])}}


def stage_stability(work: Path, a) -> None:
    """Same-patient re-scans: with the other site's acquisition in both directions, and a repeat scan at the patient's own
    site (the noise-only reference); chance is the agreement of two independent draws with the scans' code frequencies."""
    vq = load_vqvae(work / "vqvae.pt")
    t0 = time.perf_counter()
    path = work / "code_stability.csv"
    done = pd.read_csv(path, dtype={"patient_id": str}) if path.exists() else pd.DataFrame(columns=["cohort", "rescan_with", "patient_id"])
    have = set(zip(done.cohort, done.rescan_with, done.patient_id))
    sizes = {"internal": a.n_internal, "external": a.n_external}
    jobs = [(c, sizes[c], i, o) for c, others in (("internal", ("external", "repeat")), ("external", ("internal", "repeat")))
            for o in others for i in range(a.n_stability)
            if (c, o, patient_id(c, i)) not in have]
    rows = Parallel(n_jobs=a.jobs)(delayed(rescan_agreement)(work, c, n, i, o, vq) for c, n, i, o in jobs)
    df = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if rows else done
    atomic_write_text(path, df.to_csv(index=False))
    summary = []
    for (cohort, other), g in df.groupby(["cohort", "rescan_with"]):
        for col in ("sequence_same", "chance"):
            boot = [g[col].sample(len(g), replace=True, random_state=b).mean() for b in range(1000)]
            summary.append({"patients": cohort, "rescanned_with": other, "measure": col, "n": len(g), "mean": g[col].mean(),
                            "lo": float(np.quantile(boot, 0.025)), "hi": float(np.quantile(boot, 0.975))})
    RESULTS.mkdir(exist_ok=True)
    pd.DataFrame(summary).to_csv(RESULTS / "imaging_code_stability.csv", index=False)
    if rows: log(work, "stability", {"wall_s": time.perf_counter() - t0, "n": len(df), "new": len(rows), "jobs": a.jobs})


# ---------------------------------------------------------------- training
def train_config(a) -> TrainConfig:
    return TrainConfig(epochs=a.epochs, patience=a.patience, device="auto")  # a GPU when present; a CPU run resumes on it


def stage_cv(work: Path, a) -> None:
    models = tuple(a.models.split(",")) if a.models else IDH_MODELS
    t0 = time.perf_counter()
    check_fingerprint(work, ("internal", "external"))
    idh_seeds = tuple(int(x) for x in a.only_seeds.split(",")) if a.only_seeds else tuple(range(a.seeds))
    seeds = {m: (0,) if m in ONE_SEED else idh_seeds for m in models}
    run_benchmark(graph_dirs(work, "internal"), work / "cv" / "idh", ("idh",), models, external_dir=graph_dirs(work, "external"),
                  n_folds=a.folds, seeds=seeds, config=train_config(a), seed=0)
    other = tuple(a.other_tasks.split(",")) if a.other_tasks else () if a.models else ("codel", "grade")
    if other:
        run_benchmark(graph_dirs(work, "internal"), work / "cv" / "codel_grade", other, [m for m in models if m in TABLE1_MODELS],
                      splits=pd.read_csv(work / "cv" / "idh" / "splits.csv", dtype={"patient_id": str}),
                      seeds=(0,), config=train_config(a), seed=0)
    log(work, "cv" + (f"_{a.models}" if a.models else ""), {"wall_s": time.perf_counter() - t0})


def stage_scenarios(work: Path, a) -> None:
    models = tuple(a.models.split(",")) if a.models else SCENARIO_MODELS
    t0 = time.perf_counter()
    cohorts = [c for c in ("perfusion", "structure") if c in a.cohorts.split(",")]
    check_fingerprint(work, cohorts)
    for cohort in cohorts:
        run_benchmark(graph_dirs(work, cohort), work / "scenarios" / cohort, ("idh",), models, n_folds=a.folds, seeds=(0,),
                      config=train_config(a), seed=0)
    log(work, "scenarios" + (f"_{a.models}" if a.models else ""), {"wall_s": time.perf_counter() - t0})


# ---------------------------------------------------------------- what the scenario cohorts carry
def truth_row(cohort: str, n: int, i: int) -> dict:
    "Patient i's phantom ground truth: mean true rCBV and Ktrans over its tumour and within each true habitat."
    with cpu_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", HiperfWarning)
        pc = patient(cohort, n, i)
    h, t = pc.habitats, pc.truth
    row = {"cohort": cohort, "patient_id": pc.loaded.patient_id, "mutant": int(pc.labels["idh"] == "mutant"),
           "rcbv_tumour": float(t["rcbv"][h > 0].mean()), "ktrans_tumour": float(t["ktrans"][h > 0].mean())}
    for k, name in HABITATS.items():
        if k and (h == k).any(): row.update({f"rcbv_{name}": float(t["rcbv"][h == k].mean()), f"ktrans_{name}": float(t["ktrans"][h == k].mean())})
    return row


def stage_ceiling(work: Path, a) -> None:
    """The perfusion signal each scenario cohort carries before any measurement: the IDH AUC of one number of the
    phantom's ground truth (true rCBV or Ktrans, over the tumour or within a true habitat; lower values predict
    IDH-mutant), for the first `--n-ceiling` patients. A perfusion model far below this ceiling has lost the signal in the
    DSC measurement or in its representation, not in the phantom; in the structure scenario it should sit at chance."""
    path = work / "ceiling.csv"
    done = pd.read_csv(path, dtype={"patient_id": str}) if path.exists() else pd.DataFrame(columns=["cohort", "patient_id"])
    have = set(zip(done.cohort, done.patient_id))
    jobs = [(c, i) for c in ("perfusion", "structure") for i in range(a.n_ceiling) if (c, patient_id(c, i)) not in have]
    rows = Parallel(n_jobs=a.jobs)(delayed(truth_row)(c, a.n_scenario, i) for c, i in jobs)
    df = pd.concat([done, pd.DataFrame(rows)], ignore_index=True) if rows else done
    atomic_write_text(path, df.to_csv(index=False))
    auc = lambda y, s: {"auroc": classification_metrics(y, s)["auroc"]}
    out = []
    for cohort, g in df.groupby("cohort"):
        for col in [c for c in g.columns if c.startswith(("rcbv_", "ktrans_"))]:
            d = g[["mutant", col]].dropna()
            r = stratified_bootstrap(d.mutant, -d[col].to_numpy(), auc).loc["auroc"]
            out.append({"scenario": cohort, "truth": col, "n": len(d), "n_mutant": int(d.mutant.sum()), "auc": r.value, "lo": r.lo, "hi": r.hi})
    RESULTS.mkdir(exist_ok=True)
    pd.DataFrame(out).round(4).to_csv(RESULTS / "imaging_scenario_ceiling.csv", index=False)


# ---------------------------------------------------------------- saliency
def oof_saliency(work: Path, folder: Path, cohort: str) -> pd.DataFrame:
    "Saliency table of every patient of a cohort, explained by the full model (seed 0) of the fold that held it out."
    lay = BenchmarkLayout(folder)
    folds = split_folds(pd.read_csv(lay.splits, dtype={"patient_id": str}))
    labels = pd.read_csv(graph_dirs(work, cohort)[PAPER_PARTITION] / "graphs.csv", dtype={"patient_id": str}).set_index("patient_id")
    frames = []
    for k, f in folds.items():
        model, _ = load_model(lay.checkpoint("idh", "full", k, 0))
        graphs = [HierGraph.load(graph_dirs(work, cohort)[PAPER_PARTITION] / f"{pid}.pt") for pid in f["test"]]
        frames.append(saliency_table(model, graphs, groups=labels.loc[f["test"], "idh"].tolist()).assign(fold=k))
    return pd.concat(frames, ignore_index=True)


def stage_saliency(work: Path, a) -> None:
    """Rim ratio (IDH-wildtype / IDH-mutant) on the internal cohort; peak-in-signal-habitat check on scenario (a). The
    per-patient tables are kept in WORK (the fold models they explain never change) and read back on a re-run."""
    RESULTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    tables, computed = {}, 0
    for cohort, folder in (("internal", work / "cv" / "idh"), ("perfusion", work / "scenarios" / "perfusion")):
        path = work / f"saliency_{cohort}.csv"
        if not path.exists():
            lay = BenchmarkLayout(folder)
            if not lay.splits.exists() or not all(lay.checkpoint("idh", "full", k, 0).exists() for k in range(a.folds)):
                print(f"saliency {cohort}: the full model's fold checkpoints are not all there yet (train it first)"); continue
            atomic_write_text(path, oof_saliency(work, folder, cohort).to_csv(index=False)); computed += 1
        tables[cohort] = pd.read_csv(path, dtype={"patient_id": str})
    if "internal" in tables: rim_ratio_summary(tables["internal"]).reset_index().to_csv(RESULTS / "imaging_saliency_rim_ratio.csv", index=False)
    if "perfusion" in tables: signal_peak(tables["perfusion"])[1].reset_index().to_csv(RESULTS / "imaging_saliency_signal_peak.csv", index=False)
    if computed: log(work, "saliency", {"wall_s": time.perf_counter() - t0, "n": sum(map(len, tables.values()))})


# ---------------------------------------------------------------- result files
SCENARIO_EXPECTATIONS = {"perfusion": [("perf", "sg"), ("full", "sg")], "structure": [("sg", "perf"), ("full", "perf")]}


def pooled(folder: Path, task: str, model: str) -> pd.DataFrame:
    return pd.read_csv(BenchmarkLayout(folder).predictions(task, model), dtype={"patient_id": str})


def scenario_table(work: Path) -> pd.DataFrame:
    "Per scenario: each model's out-of-fold IDH AUC with CI, and the expected orderings tested (DeLong, same patients)."
    rows, checks = [], []
    folders = {"both": work / "cv" / "idh", **{c: work / "scenarios" / c for c in ("perfusion", "structure")}}
    for scen, folder in folders.items():
        if not BenchmarkLayout(folder).results_csv.exists(): continue  # not run (yet)
        res = pd.read_csv(BenchmarkLayout(folder).results_csv)
        for _, r in res[(res.metric == "auroc") & (res.dataset == "test") & res.model.isin(SCENARIO_MODELS)].iterrows():
            rows.append({"scenario": scen, "model": r.model, "n": r.n, "auc": r.value, "lo": r.lo, "hi": r.hi})
        for better, worse in SCENARIO_EXPECTATIONS.get(scen, []):
            if not all(BenchmarkLayout(folder).predictions("idh", m).exists() for m in (better, worse)): continue
            a, b = pooled(folder, "idh", better), pooled(folder, "idh", worse)
            a, b = a[a.split == "test"].set_index("patient_id"), b[b.split == "test"].set_index("patient_id")
            d = delong_test(a.y, a.p1, b.loc[a.index].p1)
            checks.append({"scenario": scen, "expected": f"{better} > {worse}", "diff": d["diff"], "lo": d["lo"], "hi": d["hi"],
                           "p_value": d["p_value"], "holds": bool(d["lo"] > 0)})
    return pd.DataFrame(rows), pd.DataFrame(checks)


RESULT_KEYS = {"internal_cv": ["task", "model", "dataset", "metric"], "external": ["task", "model", "dataset", "metric"],
               "paired": ["task", "dataset", "model"], "scenarios": ["scenario", "model"], "scenario_checks": ["scenario", "expected"]}


def update_result(name: str, new: pd.DataFrame) -> pd.DataFrame:
    """Write bench/results/imaging_{name}.csv: the rows of `new` replace the committed rows with the same keys
    (`RESULT_KEYS`), the others stay, so a run of some models or stages updates their rows and leaves the rest."""
    path = RESULTS / f"imaging_{name}.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=RESULT_KEYS[name])
    if not new.empty:
        keys = RESULT_KEYS[name]
        stale = old[keys].astype(str).agg("|".join, axis=1).isin(new[keys].astype(str).agg("|".join, axis=1))
        old = pd.concat([old[~stale], new], ignore_index=True)
        atomic_write_text(path, old.to_csv(index=False))
    return old


def run_costs(work: Path) -> pd.DataFrame:
    "Training runs finished in WORK (kept ones included) and their CPU cost: runs, epochs-to-stop aside, seconds per run."
    rows = []
    for f in sorted(work.glob("*/*/*/*/fold*/seed*/predictions.csv")):
        stage, cohort, task, model = f.relative_to(work).parts[:4]
        rows.append({"stage": stage, "cohort": cohort, "task": task, "model": model,
                     "train_s": float(pd.read_csv(f, usecols=["train_seconds"]).train_seconds.iloc[0])})
    if not rows: return pd.DataFrame()
    df = pd.DataFrame(rows).groupby(["stage", "cohort", "task", "model"]).train_s.agg(runs="size", s_per_run="mean", cpu_h="sum")
    return df.assign(s_per_run=df.s_per_run.round(), cpu_h=(df.cpu_h / 3600).round(2)).reset_index()


def stage_tables(work: Path, a) -> None:
    """The result files under bench/results/ (imaging_*) and their summary imaging.md: rows of the stages and models WORK
    has finished replace the committed ones (`update_result`)."""
    RESULTS.mkdir(exist_ok=True)
    cv = [BenchmarkLayout(work / "cv" / t) for t in ("idh", "codel_grade")]
    read = lambda paths: pd.concat([pd.read_csv(p) for p in paths if p.exists()] or [pd.DataFrame()], ignore_index=True)
    res, paired = read([l.results_csv for l in cv]), read([l.paired_csv for l in cv])
    scen, checks = scenario_table(work)
    internal = update_result("internal_cv", res[res.dataset == "test"] if len(res) else res)
    external = update_result("external", res[res.dataset == "external"] if len(res) else res)
    paired, scen, checks = update_result("paired", paired), update_result("scenarios", scen), update_result("scenario_checks", checks)
    if internal.empty: raise SystemExit("tables: no cross-validation results yet (run the cv stage)")
    idh_seeds = "/".join(map(str, sorted(internal[internal.task == "idh"].seeds.unique())))
    for lay, task, models in ((cv[0], "idh", IDH_MODELS), (cv[1], "codel", TABLE1_MODELS)):
        if all(lay.predictions(task, m).exists() for m in models):  # the ROC figure shows every model or none
            atomic_write_bytes(RESULTS / f"imaging_roc_{task}.png", figure_png(plot_roc(lay.root, task)))
    logd = json.loads((work / "log.json").read_text())
    fmt = lambda df: markdown_table(df, index=False)
    section = lambda title, body: [f"## {title}", "", body if body is not None else "Not run yet.", ""]
    scen_md = None if scen.empty else fmt(scen.assign(auc=[f"{v:.3f} ({lo:.3f}-{hi:.3f})" for v, lo, hi in zip(scen.auc, scen.lo, scen.hi)]).drop(columns=["lo", "hi"]))
    text = ["# The powered HiPerfGNN benchmark on phantom v2", "",
            f"From `python bench/imaging.py WORK` (issue 14). Internal: {a.n_internal} phantom patients, {a.folds}-fold stratified CV "
            f"(pooled out-of-fold predictions; IDH: {idh_seeds} training seed(s) per fold, probabilities averaged; 1p/19q and grade: 1 seed); "
            f"external: {a.n_external} patients of an independently configured site, scored by every fold's model (never trained on); "
            f"scenarios: {a.n_scenario} patients each. VQ-VAE trained on {a.n_dev} separate development patients and frozen. "
            "95 % CIs: stratified bootstrap (1000). Thresholds: Youden on each fold's validation patients. Phantom patients: "
            "these numbers compare models on the same synthetic data; they are not estimates for real patients.", "",
            *section("Internal cohort (Table 1 layout)", paper_table(internal)),
            *section("Paired comparisons with HiPerfGNN (same patients)", None if paired.empty else paired_table(paired)),
            *section("External site", None if external.empty else paper_table(external)),
            *section("Positive-control scenarios (IDH AUC, out-of-fold)", scen_md and (scen_md + ("" if checks.empty else "\n\n" + fmt(checks.round(4))))),
            *[part for title, name in (("Code stability: same patients re-scanned with the other site's acquisition", "imaging_code_stability.csv"),
                                       ("What the scenario cohorts carry: IDH AUC of one true perfusion value (phantom ground truth)", "imaging_scenario_ceiling.csv"),
                                       ("Saliency: enhancing-rim ratio, IDH-wildtype / IDH-mutant (multi-habitat tumours)", "imaging_saliency_rim_ratio.csv"),
                                       ("Saliency: peak in the signal habitat, scenario (a)", "imaging_saliency_signal_peak.csv"))
              for part in section(title, fmt(pd.read_csv(RESULTS / name).round(4)) if (RESULTS / name).exists() else None)],
            *section("Wall time", fmt(pd.DataFrame([{"stage": k, **{c: v.get(c) for c in ("wall_s", "n", "jobs", "peak_rss_mib", "finished")}} for k, v in logd.items()]))),
            *section("Training cost (one thread per run; `train_s` of every finished run)", None if (costs := run_costs(work)).empty else fmt(costs))]
    atomic_write_text(RESULTS / "imaging.md", "\n".join(text) + "\n")
    print("\n".join(text))


# ---------------------------------------------------------------- records kept across machines
def fingerprint(work: Path, cohorts=tuple(COHORTS)) -> dict:
    """SHA-256 of what the kept runs depend on: the frozen VQ-VAE's weights, and per cohort (those with graphs) its patient
    table (labels, node and voxel counts; not the timings) and the node features of its first three graphs in every partition."""
    h = lambda *arrays: hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in arrays)).hexdigest()
    vq = load_vqvae(work / "vqvae.pt")
    out = {"vqvae": h(*[p.detach().numpy() for p in vq.state_dict().values()])}
    for cohort in cohorts:
        table = work / "graphs" / cohort / "patients.csv"
        if not table.exists(): continue
        df = pd.read_csv(table, dtype={"patient_id": str})
        df = df.drop(columns=[c for c in df.columns if c.endswith("_s") or c.startswith("build_s_")])
        graphs = [HierGraph.load(d / f"{pid}.pt") for d in graph_dirs(work, cohort).values() for pid in df.patient_id[:3]]
        out[cohort] = h(df.to_csv(index=False).encode(), *[g[t].x.numpy() for g in graphs for t in ("coarse", "fine")])
    return out


def check_fingerprint(work: Path, cohorts) -> None:
    "Refuse to mix kept training runs with graphs that differ from the ones they were trained on."
    path = KEPT / "fingerprint.json"
    if not path.exists(): return
    kept, now = json.loads(path.read_text()), fingerprint(work, cohorts)
    bad = [k for k in ("vqvae", *cohorts) if k in kept and kept[k] != now.get(k)]
    if bad: raise SystemExit(f"{path}: the kept runs were trained on other {', '.join(bad)} than WORK holds now (the code that builds "
                             f"them changed?); move {KEPT} away to train everything again")


def keep(work: Path) -> None:
    "Copy the records of finished work into `KEPT` (gzip without a timestamp, so unchanged files stay byte-identical)."
    n = 0
    for f in sorted(f for pat in KEPT_FILES for f in work.glob(pat)):
        dst = KEPT / f"{f.relative_to(work)}.gz"
        data = gzip.compress(f.read_bytes(), mtime=0)
        if not dst.exists() or dst.read_bytes() != data:
            dst.parent.mkdir(parents=True, exist_ok=True); atomic_write_bytes(dst, data); n += 1
    if (work / "vqvae.pt").exists():
        kept = json.loads((KEPT / "fingerprint.json").read_text()) if (KEPT / "fingerprint.json").exists() else {}
        fp = {**fingerprint(work, [c for c in COHORTS if c not in kept]), **kept}  # a kept entry stays: the kept runs were trained on it
        atomic_write_text(KEPT / "fingerprint.json", json.dumps(fp, indent=1) + "\n")
    print(f"kept: {n} new or changed file(s) in {KEPT}")


def restore(work: Path) -> None:
    "Put the kept records back into WORK where it lacks them (the stage log is merged: WORK's entries win)."
    for src in sorted(KEPT.rglob("*.gz")):
        dst = work / src.relative_to(KEPT).with_suffix("")
        data = gzip.decompress(src.read_bytes())
        if dst.name == "log.json" and dst.exists():
            atomic_write_text(dst, json.dumps({**json.loads(data), **json.loads(dst.read_text())}, indent=1))
        elif not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True); atomic_write_bytes(dst, data)


def log(work: Path, stage: str, record: dict) -> None:
    "Append a stage's record (wall time, sizes; peak resident memory of this process or its largest finished worker) to WORK/log.json."
    path = work / "log.json"
    d = json.loads(path.read_text()) if path.exists() else {}
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024  # KiB -> MiB (Linux)
    d[stage] = {**record, "peak_rss_mib": round(peak), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(path, json.dumps(d, indent=1, default=float))
    print(stage, d[stage])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated; `keep` only copies finished work into bench/results/imaging_runs")
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes for per-patient work")
    ap.add_argument("--n-dev", type=int, default=200)
    ap.add_argument("--n-internal", type=int, default=1500)
    ap.add_argument("--n-external", type=int, default=500)
    ap.add_argument("--n-scenario", type=int, default=600)
    ap.add_argument("--cohorts", default="internal,external,perfusion,structure", help="cohorts of the graphs and scenarios stages")
    ap.add_argument("--n-stability", type=int, default=100, help="re-scanned patients per direction")
    ap.add_argument("--n-ceiling", type=int, default=150, help="patients per scenario cohort for the ground-truth ceiling")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds for IDH (1p/19q, grade and scenarios: 1)")
    ap.add_argument("--only-seeds", default=None,
                    help="comma-separated IDH seeds to train in this process (to share the seeds of one model between processes; "
                         "the tables stage reads every seed on disk)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--models", default=None, help="comma-separated subset (to share the models between processes)")
    ap.add_argument("--other-tasks", nargs="?", const="codel,grade", default=None,
                    help="with --models: also 1p/19q and grade (or one of them: `--other-tasks codel`, to share them between processes)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    restore(a.work)
    try:
        for s in a.stages.split(","):
            {"vqvae": stage_vqvae, "graphs": stage_graphs, "stability": stage_stability, "cv": stage_cv, "scenarios": stage_scenarios, "ceiling": stage_ceiling,
             "saliency": stage_saliency, "tables": stage_tables, "keep": lambda w, a: None}[s](a.work, a)
    finally:
        keep(a.work)  # once, also when a stage fails or is interrupted: its finished runs are kept


if __name__ == "__main__":
    main()
