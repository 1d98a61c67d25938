"""Training across processes (issue 16): `torchrun --nproc_per_node 2` with gloo on the CPU trains a small HGNN
(`fit`, 4 epochs) and a VQ-VAE (`train_vqvae`, 2 epochs) through tests/ddp_driver.py, the same calls as a single process. The checkpoints
load and predict, only rank 0 wrote them, both ranks end with the same weights and history, and a run interrupted after its
second epoch and launched again ends with exactly the weights of the uninterrupted run."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

import ddp_driver
from hiperf_nb.distributed import launch_env
from hiperf_nb.train import load_graph_set, load_model, predict_proba
from hiperf_nb.vqvae import TICBank, load_vqvae

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")

DRIVER = Path(ddp_driver.__file__)


def torchrun(data: Path, out: Path, *jobs: str) -> subprocess.CompletedProcess:
    "Launch the driver on 2 CPU processes (gloo) and fail with its output if it fails."
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HIPERF_PROGRESS="0", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DRIVER),
                        str(data), str(out), *jobs], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"torchrun failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Tiny graphs and curves; one launch trains an HGNN and a VQ-VAE and interrupts a second HGNN run, a second launch resumes it."
    data = ddp_driver.make_data(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs")
    first = torchrun(data, out, "hgnn", "vqvae", "hgnn-interrupted")
    assert "rank 0: interrupted" in first.stderr and "rank 1: interrupted" in first.stderr
    interrupted = torch.load(out / "resumed" / "last.pt", weights_only=True)
    torchrun(data, out, "hgnn-resume")
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
    assert writes == ["hgnn/last.pt"] * 4 + ["hgnn/best.pt", "vqvae.pt"] + ["resumed/last.pt"] * 2 + ["resumed/last.pt"] * 2 + ["resumed/best.pt"]
    assert not list(out.rglob("*.tmp"))  # no partial files
    for name in ("hgnn", "vqvae", "resumed"):  # every rank returns the same model
        digests = {p.read_text() for p in out.glob(f"{name}-rank*.sha256")}
        assert len(list(out.glob(f"{name}-rank*.sha256"))) == 2 and len(digests) == 1, name


def test_exact_resume(runs):
    _, out, interrupted = runs
    assert interrupted["state"]["epoch"] == 2
    a = torch.load(out / "hgnn" / "last.pt", weights_only=True)
    b = torch.load(out / "resumed" / "last.pt", weights_only=True)
    assert a["state"]["history"] == b["state"]["history"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert (out / "hgnn-rank0.sha256").read_text() == (out / "resumed-rank0.sha256").read_text()
