"""Outputs respect the user's umask: under umask 022 every file a pipeline stage writes is 0644 (readable by the
lab group), not the 0600 of a temporary file."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from check_modes import wrong_modes  # noqa: E402
from hiperf_nb.graphs import GraphConfig, build_graphs
from hiperf_nb.cohorts import simulate_cohort
from hiperf_nb.vqvae import VQVAEConfig, save_vqvae, tics_from_cases, train_vqvae


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_stage_outputs_follow_umask(tmp_path, umask022):
    cases = simulate_cohort(2, "internal", seed=1, out_dir=tmp_path / "cohort", zoom=3)
    bank, _ = tics_from_cases(cases, max_per_case=100)
    vq, hist = train_vqvae(bank, VQVAEConfig(d_enc=8, hidden=8), epochs=1, batch_size=128)
    save_vqvae(vq, tmp_path / "models" / "vqvae.pt", hist)
    build_graphs(cases, vq, tmp_path / "graphs", GraphConfig(supervoxel_voxels=20), n_jobs=1)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert wrong_modes(tmp_path) == []
