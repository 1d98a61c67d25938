"""Training across processes (issue 16): `torchrun --nproc_per_node 2` with gloo on the CPU trains a small HGNN
(`fit`, 4 epochs) and a VQ-VAE (`train_vqvae`, 2 epochs) through tests/ddp_driver.py, the same calls as a single process, and
runs a small `run_benchmark`. The checkpoints load and predict, only rank 0 wrote files, both ranks end with the same weights,
history and tables, and an HGNN run interrupted after its second epoch and a VQ-VAE run interrupted after its first, launched
again, end with exactly the weights of the uninterrupted runs; so does a single-process VQ-VAE run killed with SIGKILL."""
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist

import ddp_driver
from hiperf_nb.distributed import launch_env
from hiperf_nb.train import load_graph_set, load_model, predict_proba
from hiperf_nb.vqvae import TICBank, load_vqvae

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")

DRIVER = Path(ddp_driver.__file__)


def plain_env() -> dict:
    "This process's environment without any launch variables, on one CPU thread."
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HIPERF_PROGRESS="0", CUDA_VISIBLE_DEVICES="")
    return env


def torchrun(data: Path, out: Path, *jobs: str) -> subprocess.CompletedProcess:
    "Launch the driver on 2 CPU processes (gloo) and fail with its output if it fails."
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER),
                        str(data), str(out), *jobs], env=plain_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny graphs and curves; one launch trains an HGNN and a VQ-VAE, interrupts a second run of each and runs the benchmark,
    a second launch resumes the interrupted runs."""
    data = ddp_driver.make_data(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs")
    first = torchrun(data, out, "hgnn", "vqvae", "hgnn-interrupted", "vqvae-interrupted", "bench")
    assert first.stderr.count("rank 0: interrupted") == 2 and first.stderr.count("rank 1: interrupted") == 2
    interrupted = {name: torch.load(out / name / "last.pt", weights_only=True) for name in ("resumed", "vqvae-resumed")}
    torchrun(data, out, "hgnn-resume", "vqvae-resume")
    return data, out, interrupted


def test_a_plain_process_is_not_a_launch():
    assert launch_env({}) is None and launch_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None


def test_hgnn_checkpoint_loads_and_predicts(runs):
    data, out, _ = runs
    model, meta = load_model(out / "hgnn" / "best.pt")
    graphs = load_graph_set(data / "graphs", "idh", show_progress=False)
    P = predict_proba(model, graphs)
    assert P.shape == (len(graphs), 2) and np.isfinite(P).all() and np.allclose(P.sum(1), 1)
    ck = torch.load(out / "hgnn" / "last.pt", weights_only=True)
    hist = ck["state"]["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and meta["best_epoch"] in (1, 2, 3, 4)
    assert len(ck["rng_ranks"]) == 2  # every rank's random state, for an exact resume
    assert not torch.equal(ck["rng_ranks"][0]["cpu"], ck["rng_ranks"][1]["cpu"])  # ranks draw their own dropout masks
    assert (out / "hgnn" / "history.csv").read_text().count("\n") == 5


def test_vqvae_checkpoint_loads_and_encodes(runs):
    data, out, _ = runs
    vq = load_vqvae(out / "vqvae.pt")
    with np.load(data / "tics.npz") as z: arrays = [z[k] for k in z.files]
    codes, lat = vq.encode(arrays[0][:50])
    assert codes.shape == (50, 3) and codes.min() >= 0 and codes.max() < 4 and lat.shape == (50, 3, 8)
    hist = torch.load(out / "vqvae.pt", weights_only=True)["history"]
    per_rank = math.ceil(TICBank(arrays).n_batches(32) / 2)  # one epoch = every batch once, dealt over 2 ranks
    assert [(h["epoch"], h["steps"]) for h in hist] == [(1, per_rank), (2, 2 * per_rank)]
    assert sum(h["kept"] for h in hist) == 1 and hist[-1]["reset_codes"] == 0  # no revival after the last period
    assert hist[0]["reset_codes"] > 0  # entries were revived between the epochs (computed from both ranks' codes, then broadcast)


def test_only_rank_0_writes_and_ranks_agree(runs):
    _, out, _ = runs
    assert not (out / "writes-rank1.txt").exists()
    writes = (out / "writes-rank0.txt").read_text().split()
    train = [w for w in writes if not w.startswith("bench")]
    assert train == (["hgnn/last.pt"] * 4 + ["hgnn/best.pt", "hgnn/history.csv"] + ["vqvae/last.pt"] * 2 + ["vqvae.pt"]
                     + ["resumed/last.pt"] * 2 + ["vqvae-resumed/last.pt"]  # first launch: interrupted after epoch 2 / period 1
                     + ["resumed/last.pt"] * 2 + ["resumed/best.pt", "resumed/history.csv", "vqvae-resumed/last.pt"])  # resumed
    run = "bench/idh/perf/fold0/seed0"
    assert [w for w in writes if w.startswith("bench")] == (
        ["bench/splits.csv"] + [f"{run}/last.pt"] * 2 + [f"{run}/best.pt", f"{run}/history.csv", f"{run}/best.pt", f"{run}/predictions.csv",
         "bench/idh/perf/predictions.csv", "bench/idh/features/fold0/seed0/predictions.csv", "bench/idh/features/predictions.csv",
         "bench/results.csv", "bench/results.md"]  # the first run
        + ["bench/splits.csv", "bench/idh/perf/predictions.csv", "bench/idh/features/predictions.csv", "bench/results.csv", "bench/results.md"])
    assert not list(out.rglob("*.tmp"))  # no partial files
    for name in ("hgnn", "vqvae", "resumed", "vqvae-resumed", "bench0", "bench1"):  # every rank returns the same model, or table
        digests = {p.read_text() for p in out.glob(f"{name}-rank*.sha256")}
        assert len(list(out.glob(f"{name}-rank*.sha256"))) == 2 and len(digests) == 1, name


def test_benchmark_decisions_are_rank_0s(runs):
    "Run again with rank 1 pointed at an empty folder, the benchmark trains nothing: rank 0 says every run is done."
    _, out, _ = runs
    assert (out / "bench0-rank0.sha256").read_text() == (out / "bench1-rank0.sha256").read_text()  # the same tables again
    assert not [p for p in (out / "bench-elsewhere").rglob("*") if p.is_file()]  # rank 1 wrote nothing there
    res = pd.read_csv(out / "bench" / "results.csv")
    assert set(res.model) == {"perf", "features"} and set(res.dataset) == {"test"}


def test_exact_resume(runs):
    _, out, interrupted = runs
    assert interrupted["resumed"]["state"]["epoch"] == 2
    a = torch.load(out / "hgnn" / "last.pt", weights_only=True)
    b = torch.load(out / "resumed" / "last.pt", weights_only=True)
    assert a["state"]["history"] == b["state"]["history"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert (out / "hgnn-rank0.sha256").read_text() == (out / "resumed-rank0.sha256").read_text()


def test_vqvae_exact_resume(runs):
    "The VQ-VAE run interrupted in its second epoch, launched again, ends with the uninterrupted run's weights and history."
    data, out, interrupted = runs
    with np.load(data / "tics.npz") as z: arrays = [z[k] for k in z.files]
    assert interrupted["vqvae-resumed"]["step"] == math.ceil(TICBank(arrays).n_batches(32) / 2)  # one epoch, on 2 ranks
    assert len(interrupted["vqvae-resumed"]["rng_ranks"]) == 2
    a, b = (torch.load(out / name / "last.pt", weights_only=True) for name in ("vqvae", "vqvae-resumed"))
    assert a["history"] == b["history"] and a["step"] == b["step"] and a["kept"][:3] == b["kept"][:3]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) and torch.equal(a["kept"][3][k], b["kept"][3][k]) for k in a["state_dict"])
    assert (out / "vqvae-rank0.sha256").read_text() == (out / "vqvae-resumed-rank0.sha256").read_text()


def test_vqvae_resumes_after_sigkill(runs, tmp_path):
    "A single process killed with SIGKILL in its second epoch; the same call in this process resumes and ends bit-identical."
    data, _, _ = runs
    r = subprocess.run([sys.executable, str(DRIVER), str(data), str(tmp_path), "vqvae-killed"], env=plain_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert torch.load(tmp_path / "vqvae-killed" / "last.pt", weights_only=True)["history"][0]["epoch"] == 1  # epoch 1 was saved
    resumed, h_resumed = ddp_driver.train_vq(data, tmp_path, "vqvae-killed")
    whole, h_whole = ddp_driver.train_vq(data, tmp_path, "vqvae-whole")
    assert h_resumed == h_whole and len(h_whole) == 2
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
