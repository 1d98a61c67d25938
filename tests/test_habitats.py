"""Gate: on a small phantom v2 cohort the paper's VQ-VAE (K=2, N=3, z-score, shared codebook), trained on training
patients only, must split held-out tumours into several perfusion habitats. A collapsed codebook (one code sequence,
one coarse node per tumour: what the first phantom produced) fails this test; the second test shows the same
measurement does flag a collapsed model, so the gate can fail."""
import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("HIPERF_PROGRESS", "0")
from hiperf_nb.dsc import extract_tics  # noqa: E402
from hiperf_nb.cohorts import iter_cohort  # noqa: E402
from hiperf_nb.vqvae import (CodebookCollapseWarning, MIN_SEQUENCE_PERPLEXITY, TICBank, VQVAEConfig, codebook_stats,  # noqa: E402
                             habitat_agreement, train_vqvae)

N_TRAIN, N_TEST = 12, 5


@pytest.fixture(scope="module")
def cohort():
    "Tumour curves, coords and true habitats of a small internal cohort (3.6 mm grid to keep the test short)."
    out = []
    for pc in iter_cohort(N_TRAIN + N_TEST, "internal", seed=3, zoom=2):
        tics, coords = extract_tics(pc.loaded.dsc, pc.loaded.mask, norm="zscore")
        out.append((tics, coords, pc.habitats[tuple(coords.T)]))
    return out[:N_TRAIN], out[N_TRAIN:]


def habitat_gate(model, test) -> dict:
    "Median coarse nodes per held-out tumour and the sequence perplexity of their codes."
    rows, codes_all = [], []
    for tics, coords, hab in test:
        codes, _ = model.encode(tics)
        codes_all.append(codes)
        rows.append(habitat_agreement(codes, hab, coords, tics))
    st = codebook_stats(np.concatenate(codes_all), model.config.n_codes)
    return {"median_nodes": float(np.median([r["n_nodes"] for r in rows])), "sequence_perplexity": st["sequence_perplexity"]}


@pytest.fixture(scope="module")
def trained(cohort):
    train, _ = cohort
    bank = TICBank([t for t, _, _ in train], max_per_case=1500, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CodebookCollapseWarning)
        model, hist = train_vqvae(bank, VQVAEConfig(), steps=250, batch_size=256, lr=1e-3, seed=0, device="cpu")
    return model, caught


def test_codes_find_habitats(cohort, trained):
    model, caught = trained
    g = habitat_gate(model, cohort[1])
    assert not caught, f"the codebook collapsed during training: {caught[0].message}"
    assert g["median_nodes"] >= 5, f"held-out tumours have a median of {g['median_nodes']} coarse nodes: the hierarchy collapsed"
    assert g["sequence_perplexity"] >= MIN_SEQUENCE_PERPLEXITY, f"code-sequence perplexity {g['sequence_perplexity']:.2f}: one sequence dominates"


def test_gate_flags_a_collapsed_codebook(cohort, trained):
    model, _ = trained
    collapsed = type(model)(model.config)
    collapsed.load_state_dict(model.state_dict())
    with torch.no_grad(): collapsed.quantizer.embedding[:, 1:] = collapsed.quantizer.embedding[:, :1]  # every entry the same
    g = habitat_gate(collapsed, cohort[1])
    assert g["median_nodes"] < 5 and g["sequence_perplexity"] < MIN_SEQUENCE_PERPLEXITY  # both gates fail
