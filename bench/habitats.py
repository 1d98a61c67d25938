"""Do the VQ-VAE codes find the perfusion habitats? On a phantom v2 cohort at clinical size, train the VQ-VAE on
the training patients only, encode held-out tumours, and compare their code sequences with the true habitats
(adjusted Rand index) next to k-means with as many clusters on the same curves; the paper's configuration
(K=2, N=3, z-score, one shared codebook) at several training lengths, and ablations (normalisation, K, N,
bolus alignment, per-position codebooks). Resumable: the cohort's curves and every finished configuration are
kept, so a killed run goes on where it stopped. Writes bench/results/vqvae_habitats.{csv,md} and the
"VQ-VAE habitats" section of BENCHMARKS.md.

    python bench/habitats.py [--n-train 120] [--n-test 30] [--work DIR]
"""
import argparse
import os
import pickle
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("HIPERF_PROGRESS", "0")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hiperf_nb.core import atomic_write_bytes, atomic_write_text, cpu_threads  # noqa: E402
from hiperf_nb.dsc import extract_tics, normalize_tics  # noqa: E402
from hiperf_nb.metrics import markdown_table  # noqa: E402
from hiperf_nb.cohorts import iter_cohort  # noqa: E402
from hiperf_nb.vqvae import (CodebookCollapseWarning, TICBank, VQVAEConfig, codebook_stats, habitat_agreement,  # noqa: E402
                             prepare_tics, train_vqvae)

from _report import write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PAPER = dict(n_codes=2, n_positions=3, norm="zscore", codebooks="shared", align="none")
# name -> (config changes from the paper's, optimiser steps)
RUNS = {
    "paper 300 steps": ({}, 300),
    "paper 1000 steps": ({}, 1000),
    "paper 3000 steps": ({}, 3000),
    "align=case": ({"align": "case"}, 1000),
    "norm=baseline (S/S0)": ({"norm": "baseline"}, 1000),
    "norm=p995 (released code)": ({"norm": "p995"}, 1000),
    "K=4": ({"n_codes": 4}, 1000),
    "N=4": ({"n_positions": 4}, 1000),
    "per-position codebooks": ({"codebooks": "per_position"}, 1000),
}
BATCH, LR, PER_CASE, N_BOOT = 256, 1e-4, 5000, 1000


def cohort(work: Path, n: int) -> list:
    "The cohort's raw tumour curves, coords and true habitats, simulated once (internal site, clinical grid) and cached."
    path = work / f"cohort_{n}.pkl"
    if path.exists(): return pickle.loads(path.read_bytes())
    recs, t0 = [], time.perf_counter()
    for pc in iter_cohort(n, "internal", seed=0, zoom=1):
        L = pc.loaded
        raw, coords = extract_tics(L.dsc, L.mask, norm="none")
        recs.append({"pid": L.patient_id, "labels": pc.labels, "phenotype": pc.tumour["phenotype"], "tr_s": L.tr_s,
                     "raw": raw.astype(np.float32), "coords": coords, "habitats": pc.habitats[tuple(coords.T)]})
        print(f"\rsimulated {len(recs)}/{n} ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
    print()
    atomic_write_bytes(path, pickle.dumps(recs))
    return recs


def boot_ci(values: np.ndarray, stat=np.mean, seed: int = 0) -> tuple:
    "Statistic and percentile bootstrap 95 % CI over patients."
    rng = np.random.default_rng(seed)
    b = [stat(values[rng.integers(len(values), size=len(values))]) for _ in range(N_BOOT)]
    return float(stat(values)), float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))


def run(name: str, changes: dict, steps: int, train: list, test: list) -> tuple:
    "Train one configuration on the training patients and score it on the held-out ones: (summary row, per-patient rows)."
    cfg = VQVAEConfig(**{**PAPER, **changes})
    prep = lambda r: prepare_tics(normalize_tics(r["raw"], cfg.norm), r["tr_s"], cfg.norm, None, cfg.align)
    bank = TICBank([prep(r) for r in train], max_per_case=PER_CASE, seed=0,
                   preprocessing={"norm": cfg.norm, "resample_tr_s": None, "align": cfg.align})
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CodebookCollapseWarning)
        model, hist = train_vqvae(bank, cfg, steps=steps, batch_size=BATCH, lr=LR, seed=0, device="cpu")
    seconds = time.perf_counter() - t0
    rows, all_codes = [], []
    for r in test:
        x = prep(r)
        codes, _ = model.encode(normalize_tics(r["raw"], cfg.norm), tr_s=r["tr_s"])  # `encode` prepares (aligns) as training did
        all_codes.append(codes)
        rows.append({"run": name, "patient_id": r["pid"], "phenotype": r["phenotype"],
                     **habitat_agreement(codes, r["habitats"], r["coords"], x, seed=0)})
    per = pd.DataFrame(rows)
    multi = per[per.n_habitats >= 2]  # the Rand index needs two true habitats to say anything
    nodes = boot_ci(per.n_nodes.to_numpy(float), np.median)
    ari, ari_km = boot_ci(multi.ari_codes.to_numpy()), boot_ci(multi.ari_kmeans.to_numpy())
    rng = np.random.default_rng(1)
    a, k = multi.ari_codes.to_numpy(), multi.ari_kmeans.to_numpy()
    ratios = [(lambda i: a[i].mean() / k[i].mean())(rng.integers(len(a), size=len(a))) for _ in range(N_BOOT)]
    st = codebook_stats(np.concatenate(all_codes), cfg.n_codes)
    summary = {"run": name, **changes, "steps": steps, "train_s": round(seconds, 1), "train_patients": len(train), "test_patients": len(test),
               "median_nodes": nodes[0], "median_nodes_lo": nodes[1], "median_nodes_hi": nodes[2],
               "median_sequences": float(per.n_sequences.median()), "single_node_fraction": float((per.n_nodes == 1).mean()),
               "sequence_perplexity": st["sequence_perplexity"], "ari_codes": ari[0], "ari_codes_lo": ari[1], "ari_codes_hi": ari[2],
               "ari_kmeans": ari_km[0], "ari_kmeans_lo": ari_km[1], "ari_kmeans_hi": ari_km[2],
               "ari_ratio": float(a.mean() / k.mean()), "ari_ratio_lo": float(np.percentile(ratios, 2.5)), "ari_ratio_hi": float(np.percentile(ratios, 97.5)),
               "collapse_warning": bool(caught)}
    return summary, per


def report(df: pd.DataFrame, n_train: int, n_test: int) -> str:
    f = lambda v, lo, hi, d=2: f"{v:.{d}f} ({lo:.{d}f}-{hi:.{d}f})"
    tab = pd.DataFrame({"run": df.run, "steps": df.steps, "train (s)": df.train_s.round(0).astype(int),
                        "median coarse nodes": [f(*r, d=1) for r in df[["median_nodes", "median_nodes_lo", "median_nodes_hi"]].to_numpy()],
                        "median sequences": df.median_sequences, "single-node tumours": df.single_node_fraction.map("{:.0%}".format),
                        "sequence perplexity": df.sequence_perplexity.round(2),
                        "ARI codes": [f(*r) for r in df[["ari_codes", "ari_codes_lo", "ari_codes_hi"]].to_numpy()],
                        "ARI k-means": [f(*r) for r in df[["ari_kmeans", "ari_kmeans_lo", "ari_kmeans_hi"]].to_numpy()],
                        "ARI ratio": [f(*r) for r in df[["ari_ratio", "ari_ratio_lo", "ari_ratio_hi"]].to_numpy()]})
    return "\n".join([
        "## VQ-VAE habitats (`bench/habitats.py`)", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), one training thread. Phantom v2, internal "
        f"site, clinical grid (1.8 x 1.8 x 5 mm); the VQ-VAE is trained on {n_train} training patients only (up to "
        f"{PER_CASE} curves each, batch {BATCH}, Adam lr {LR:g}) and scored on {n_test} held-out tumours. Coarse nodes: "
        "connected components (26-connectivity) of voxels sharing a code sequence. ARI: adjusted Rand index of the code "
        "sequences against the true (majority) habitats, over held-out tumours with at least two habitats, next to "
        "k-means with as many clusters on the same curves; the ratio is ARI(codes) / ARI(k-means). 95 % bootstrap CIs "
        "over patients. Acceptance (paper configuration): median coarse nodes >= 5 and ARI ratio >= 0.8.", "",
        markdown_table(tab.set_index("run")), ""])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=120)
    ap.add_argument("--n-test", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "hiperf_nb" / "bench_habitats")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated run names (default: all)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    with cpu_threads(1):
        recs = cohort(args.work, args.n_train + args.n_test)
    train, test = recs[:args.n_train], recs[args.n_train:]
    out_csv, per_csv = RESULTS / "vqvae_habitats.csv", RESULTS / "vqvae_habitats_patients.csv"
    done = pd.read_csv(out_csv) if out_csv.exists() else pd.DataFrame()
    per_all = pd.read_csv(per_csv) if per_csv.exists() else pd.DataFrame()
    for name in args.runs.split(","):
        if len(done) and name in set(done.run): continue
        print(f"[{name}] training ...", flush=True)
        changes, steps = RUNS[name]
        summary, per = run(name, changes, steps, train, test)
        done = pd.concat([done, pd.DataFrame([summary])], ignore_index=True)
        per_all = pd.concat([per_all, per], ignore_index=True)
        atomic_write_text(out_csv, done.to_csv(index=False))  # after every run: a killed benchmark resumes here
        atomic_write_text(per_csv, per_all.to_csv(index=False))
        print(f"[{name}] {summary['train_s']:.0f} s: median nodes {summary['median_nodes']}, ARI ratio {summary['ari_ratio']:.2f}", flush=True)
    order = [r for r in RUNS if r in set(done.run)]
    done = done.set_index("run").loc[order].reset_index()
    text = report(done, len(train), len(test))
    atomic_write_text(RESULTS / "vqvae_habitats.md", text)
    write_section(text)
    print(text)


if __name__ == "__main__":
    main()
