"""Benchmark of HiPerfGNN training and inference: seconds per training epoch and per patient at inference,
and peak memory, for HiPerfGNN, its ablations and the PerfGAT-style baseline, on a folder of graphs (for
example the internal cohort of a full `hiperf demo` run: runs/demo-*/graphs/internal). Each model runs in its
own process so peak resident memory (ru_maxrss) is its own. On a machine with CUDA the GPU is measured too.

Run: python bench/hgnn.py GRAPH_DIR [--epochs 3] [--device cpu,cuda] [--threads 2] [--no-write]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("HIPERF_PROGRESS", "0")
import torch

from hiperf_nb.train import TrainConfig, fit, load_graph_set, make_model, patient_splits, predict_proba
from hiperf_nb.hgnn_bench import MODEL_LABELS
from hiperf_nb.hgnn import HGNN_VARIANTS

from _report import write_section

MODELS = HGNN_VARIANTS + ("perfgat",)


def worker(graph_dir, kind, epochs, device, threads):
    "Train `kind` for `epochs` and time inference; print one JSON line."
    torch.set_num_threads(threads)
    data = load_graph_set(graph_dir, "idh")
    import pandas as pd
    sp = patient_splits(pd.DataFrame({"patient_id": data.patient_ids, "idh": data.y}), stratify=("idh",))
    ids = {s: sp.patient_id[sp.split == s].tolist() for s in ("train", "val")}
    tr, va = data.subset(ids["train"]), data.subset(ids["val"])
    model = make_model(kind, tr)
    cfg = TrainConfig(epochs=epochs, patience=epochs + 1, device=device)
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, hist = fit(model, tr, va, cfg)
    if device == "cuda": torch.cuda.synchronize()
    per_epoch = (time.perf_counter() - t0) / len(hist)
    predict_proba(model, data.graphs[:8], device=device)  # warm-up
    t0 = time.perf_counter()
    for _ in range(3): predict_proba(model, data, device=device)
    if device == "cuda": torch.cuda.synchronize()
    per_patient = (time.perf_counter() - t0) / (3 * len(data))
    out = {"model": kind, "device": device, "n_train": len(tr), "epoch_s": per_epoch, "infer_ms_per_patient": 1000 * per_patient,
           "params": sum(p.numel() for p in model.parameters()), "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda": out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graphs")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu" + (",cuda" if torch.cuda.is_available() else ""))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, device = a.worker.split(":")
        return worker(a.graphs, kind, a.epochs, device, a.threads)
    rows = []
    for device in a.device.split(","):
        for kind in MODELS:
            r = subprocess.run([sys.executable, __file__, a.graphs, "--epochs", str(a.epochs), "--threads", str(a.threads),
                                "--worker", f"{kind}:{device}"], capture_output=True, text=True, check=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    lines = ["## HiPerfGNN training and inference", "",
             f"`python bench/hgnn.py {a.graphs} --epochs {a.epochs}`: each model trained for {a.epochs} epochs on the "
             f"{rows[0]['n_train']} training patients of the graph folder (IDH, batch 16), then inference on every patient "
             f"(3 passes, after a warm-up), each model in its own process; training on one thread (the reproducible default of `fit`), "
             f"inference on {a.threads}; {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}. Peak memory is the process's maximum resident set (includes Python, torch and the loaded graphs).", "",
             "| model | device | parameters | s / epoch | ms / patient (inference) | peak RSS MiB | peak GPU MiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {MODEL_LABELS.get(r['model'], r['model'])} | {r['device']} | {r['params']:,} | {r['epoch_s']:.2f} | "
                     f"{r['infer_ms_per_patient']:.2f} | {r['maxrss_mib']:.0f} | {r['gpu_peak_mib']:.0f} |" if "gpu_peak_mib" in r else
                     f"{r['infer_ms_per_patient']:.2f} | {r['maxrss_mib']:.0f} | - |")
    text = "\n".join(lines)
    print(text)
    if not a.no_write: write_section(text)


if __name__ == "__main__":
    main()
