"""A tiny training driver for tests/test_ddp.py, launched as `python -m torch.distributed.run --nproc_per_node 2
--standalone tests/ddp_driver.py DATA OUT JOB...`: the same calls as a single process, which is the point (under
`torchrun`, `fit` and `train_vqvae` notice the launch and train with DistributedDataParallel).

Usage: `ddp_driver.py DATA OUT JOB...` with jobs (see `JOBS`) `hgnn` (train an HGNN into OUT/hgnn), `hgnn-interrupted`
(the same run into OUT/resumed, interrupted in its third epoch after epoch 2's checkpoint), `hgnn-resume` (the same
call again, which resumes), `vqvae` (train a VQ-VAE for two epochs with its training state in OUT/vqvae; rank 0 saves
OUT/vqvae.pt), `vqvae-interrupted` / `vqvae-resume` (the same run into OUT/vqvae-resumed, interrupted in its second
epoch after epoch 1's checkpoint, then resumed), `vqvae-killed` (the same into OUT/vqvae-killed, the process killed
with SIGKILL there instead) and `bench` (`run_benchmark` into OUT/bench, then again with rank 1 pointed at an empty
OUT/bench-elsewhere: rank 0 decides that every run is done). Every rank logs the files it wrote to
OUT/writes-rank{RANK}.txt, so a test can check that only rank 0 wrote."""
from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HIPERF_PROGRESS", "0")


def make_data(folder: str | Path, n_cases: int = 8) -> Path:
    "Tiny cases -> curves (tics.npz) and hierarchical graphs (graphs/) with IDH labels, in `folder`."
    from hiperf_nb.core import HiperfWarning
    from hiperf_nb.graphs import GraphConfig, build_graphs
    from hiperf_nb.io import write_test_case
    from hiperf_nb.vqvae import VQVAEConfig, tics_from_cases, train_vqvae
    folder = Path(folder)
    cases = [write_test_case(folder / "cases" / f"P{i}", shape=(16, 16, 8), patient_id=f"P{i}", seed=i) for i in range(n_cases)]
    for i, c in enumerate(cases): c.labels = {"idh": ("wildtype", "mutant")[i % 2], "grade": 4 - i % 2}
    bank, failed = tics_from_cases(cases, max_per_case=100, show_progress=False)
    assert not failed, failed
    np.savez(folder / "tics.npz", *[bank.groups[T] for T in bank.groups])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HiperfWarning)  # a collapsed codebook does not matter here
        vq, _ = train_vqvae(bank, VQVAEConfig(d_enc=8, hidden=8), epochs=1, batch_size=64, seed=0, show_progress=False)
    built = build_graphs(cases, vq, folder / "graphs", GraphConfig(supervoxel_voxels=20), show_progress=False)
    assert set(built.status) == {"built"}, built
    return folder


def hgnn_sets(data: str | Path):
    "Training (first 6 patients) and validation (the others) graph sets."
    from hiperf_nb.train import load_graph_set
    gs = load_graph_set(Path(data) / "graphs", "idh", show_progress=False)
    return gs.subset(gs.patient_ids[:6]), gs.subset(gs.patient_ids[6:])


HGNN_CONFIG = dict(epochs=4, patience=10, batch_size=2, lr=1e-2, seed=0, device="cpu")


class Interrupting(list):
    "A list of graphs that raises KeyboardInterrupt when it is read for the n-th time (validation graphs: once per epoch)."
    def __init__(self, items, n): super().__init__(items); self.n = n
    def __iter__(self):
        self.n -= 1
        if self.n == 0: raise KeyboardInterrupt
        return super().__iter__()


def digest(model, history, path: Path):
    "Write a hash of the model's weights and the history (one file per rank: the ranks must end with the same model and history)."
    import hashlib
    h = hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes() for v in model.state_dict().values()) + repr(history).encode())
    Path(f"{path}-rank{os.environ.get('RANK', '0')}.sha256").write_text(h.hexdigest())


def train_hgnn(data, out, interrupt_at: int | None = None):
    "Train a small HGNN with `fit`; with `interrupt_at`, the validation graphs raise KeyboardInterrupt in that epoch."
    from hiperf_nb.train import GraphSet, TrainConfig, fit, make_model
    tr, va = hgnn_sets(data)
    if interrupt_at is not None: va = GraphSet(Interrupting(va.graphs, interrupt_at), va.y, va.patient_ids, va.task)
    model = make_model("full", tr, seed=0, hidden_channels=8, dropout=0.1)
    try:
        model, hist = fit(model, tr, va, TrainConfig(**HGNN_CONFIG), out_dir=out, show_progress=False)
        digest(model, hist.to_dict("records"), out)
    except KeyboardInterrupt:
        if interrupt_at is None: raise
        print(f"rank {os.environ.get('RANK')}: interrupted", file=sys.stderr)


def train_vq(data, out, name: str = "vqvae", interrupt_at: int | None = None, kill: bool = False):
    """Train a small VQ-VAE for two epochs (two periods: dead entries are revived in between) with its training state in
    OUT/name; `vqvae` is saved from rank 0. With `interrupt_at`, the bank raises KeyboardInterrupt (with `kill`: the process
    SIGKILLs itself) when that epoch's batches are asked for."""
    from hiperf_nb.core import HiperfWarning
    from hiperf_nb.distributed import is_main_process, barrier
    from hiperf_nb.vqvae import TICBank, VQVAEConfig, save_vqvae, train_vqvae
    with np.load(Path(data) / "tics.npz") as z: arrays = [z[k] for k in z.files]
    bank = TICBank(arrays, seed=0)
    if interrupt_at is not None:
        batches = bank.batches
        def stop(batch_size, epoch=0):
            if epoch == interrupt_at:
                if kill: os.kill(os.getpid(), signal.SIGKILL)
                raise KeyboardInterrupt
            return batches(batch_size, epoch)
        bank.batches = stop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HiperfWarning)  # two epochs on noise curves: a collapsed codebook is expected
            model, hist = train_vqvae(bank, VQVAEConfig(d_enc=8, hidden=8, n_codes=4), epochs=2, batch_size=32,
                                      seed=0, device="cpu", show_progress=False, out_dir=Path(out) / name)
    except KeyboardInterrupt:
        print(f"rank {os.environ.get('RANK')}: interrupted", file=sys.stderr); return None
    digest(model, hist, Path(out) / name)
    if name == "vqvae" and is_main_process(): save_vqvae(model, Path(out) / "vqvae.pt", hist)
    barrier()
    return model, hist


BENCH_SPLITS = {"train": ["P0", "P1", "P2", "P3"], "val": ["P4", "P5"], "test": ["P6", "P7"]}  # both IDH classes in each


def bench(data, out):
    "`run_benchmark` of two small models into OUT/bench; then again, with rank 1 (only) given an empty folder: rank 0 decides."
    import hashlib
    import pandas as pd
    from hiperf_nb.hgnn_bench import run_benchmark
    from hiperf_nb.train import TrainConfig
    splits = pd.DataFrame([{"patient_id": p, "split": s} for s, ids in BENCH_SPLITS.items() for p in ids])
    rank = os.environ.get("RANK", "0")
    for n, folder in enumerate(["bench", "bench" if rank == "0" else "bench-elsewhere"]):
        long = run_benchmark(Path(data) / "graphs", Path(out) / folder, models=("perf", "features"), splits=splits, n_boot=50,
                             config=TrainConfig(**{**HGNN_CONFIG, "epochs": 2}), show_progress=False)
        (Path(out) / f"bench{n}-rank{rank}.sha256").write_text(hashlib.sha256(long.to_csv(index=False).encode()).hexdigest())


def log_writes(out: Path):
    "Record every file this rank writes (wrapping `save_checkpoint` and `atomic_write_text` where the library looks them up)."
    import hiperf_nb.distributed as distributed, hiperf_nb.hgnn_bench as hgnn_bench, hiperf_nb.train as train, hiperf_nb.vqvae as vqvae
    log = out / f"writes-rank{os.environ.get('RANK', '0')}.txt"
    def logged(orig, path_arg):
        def wrapped(*args):
            with open(log, "a") as f: f.write(f"{Path(args[path_arg]).relative_to(out)}\n")
            return orig(*args)
        return wrapped
    for mod, name, path_arg in [(train, "save_checkpoint", 1), (vqvae, "save_checkpoint", 1), (distributed, "save_checkpoint", 1),
                                (train, "atomic_write_text", 0), (hgnn_bench, "atomic_write_text", 0)]:
        setattr(mod, name, logged(getattr(mod, name), path_arg))


JOBS = {"hgnn": lambda data, out: train_hgnn(data, out / "hgnn"),  # an uninterrupted run
        "hgnn-interrupted": lambda data, out: train_hgnn(data, out / "resumed", interrupt_at=3),  # stops in epoch 3
        "hgnn-resume": lambda data, out: train_hgnn(data, out / "resumed"),  # the same call again: resumes from last.pt
        "vqvae": train_vq,  # an uninterrupted run
        "vqvae-interrupted": lambda data, out: train_vq(data, out, "vqvae-resumed", interrupt_at=1),  # stops in epoch 2
        "vqvae-resume": lambda data, out: train_vq(data, out, "vqvae-resumed"),  # the same call again: resumes from last.pt
        "vqvae-killed": lambda data, out: train_vq(data, out, "vqvae-killed", interrupt_at=1, kill=True),  # SIGKILL in epoch 2
        "bench": bench}

if __name__ == "__main__":
    data, out, jobs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    log_writes(out)
    for job in jobs: JOBS[job](data, out)
