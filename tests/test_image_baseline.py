"""The structure-only image baseline (`StructuralCNN`, model kind "cnn") through the shared training code: graphs with
structural crops written to disk and loaded by `load_graph_set`, a learnable FLAIR-blob problem, reset, checkpoints,
seeds, and graphs without crops."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from hiperf_nb.core import DataFormatError, cpu_threads
from hiperf_nb.core import test_raises as raises  # renamed so pytest does not collect it
from hiperf_nb.graphs import HierGraph
from hiperf_nb.hgnn import StructuralCNN
from hiperf_nb.metrics import classification_metrics
from hiperf_nb.train import TrainConfig, fit, load_graph_set, load_model, make_model, model_kind, predict_proba, save_model

CROP = (48, 48, 16)  # the crop shape of 06_graphs
SCALE = torch.tensor([1.0, 2.0, 0.5, 1.0]).view(1, 4, 1, 1, 1)  # per-channel noise SD (T1, T1CE, T2, FLAIR)
OFFSET = torch.tensor([0.0, 1.0, -1.0, 2.0]).view(1, 4, 1, 1, 1)
SIZES = {"train": 32, "val": 16, "test": 16}
CONFIG = TrainConfig(epochs=6, batch_size=4, monitor="val_auc", device="cpu")


def blob_crop(label: int, seed: int) -> torch.Tensor:
    "A synthetic (1, 4, 48, 48, 16) float16 crop; class 1 has a Gaussian blob, 3 noise SDs bright, in FLAIR near the centre."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, *CROP, generator=g) * SCALE + OFFSET
    if label:
        centre = [s / 2 + torch.randint(-j, j + 1, (1,), generator=g).item() for s, j in zip(CROP, (4, 4, 2))]
        grid = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in CROP], indexing="ij")
        r2 = sum(((a - c) / w) ** 2 for a, c, w in zip(grid, centre, (6, 6, 2)))
        x[0, 3] += 3 * SCALE[0, 3, 0, 0, 0] * torch.exp(-r2 / 2)
    return x.half()


def write_graphs(folder, crops: bool = True) -> dict:
    "Minimal graphs (one coarse node; the CNN reads only the crop) and a graphs.csv index; returns the split's patients."
    folder.mkdir(parents=True, exist_ok=True)
    rows, ids, k = [], {}, 0
    for split, n in SIZES.items():
        ids[split] = []
        for i in range(n):
            pid, label = f"{split[:2].upper()}{i:02d}", i % 2
            g = HierGraph()
            g["coarse"].x = torch.zeros(1, 3)
            g["voxel"].pos = torch.zeros(1, 3, dtype=torch.int32)  # dropped by load_graph_set, like the real voxel maps
            g.patient_id = pid
            if crops: g.crop = blob_crop(label, k)
            g.save(folder / f"{pid}.pt")
            rows.append({"patient_id": pid, "graph": f"{pid}.pt", "idh": ("wildtype", "mutant")[label]})
            ids[split].append(pid); k += 1
    pd.DataFrame(rows).to_csv(folder / "graphs.csv", index=False)
    return ids


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    "train/val/test GraphSets loaded from disk by `load_graph_set`."
    folder = tmp_path_factory.mktemp("crops")
    ids = write_graphs(folder)
    data = load_graph_set(folder, "idh")
    return {s: data.subset(ids[s]) for s in SIZES}


@pytest.fixture(scope="module")
def trained(sets, tmp_path_factory):
    "A CNN trained by `fit` with checkpoints, and its history and run folder."
    out = tmp_path_factory.mktemp("cnn_run")
    with cpu_threads(1):
        model, hist = fit(make_model("cnn", sets["train"]), sets["train"], sets["val"], CONFIG, out_dir=out)
    return model, hist, out


def test_load_graph_set_keeps_the_crop(sets):
    g = sets["train"].graphs[1]
    assert g.crop.dtype == torch.float16 and tuple(g.crop.shape) == (1, 4, *CROP)
    assert torch.equal(g.crop, blob_crop(1, 1)) and "voxel" not in g.node_types


def test_input_norm_is_fitted_on_the_training_crops(sets):
    m = make_model("cnn", sets["train"])
    x = torch.cat([g.crop for g in sets["train"].graphs]).float()
    assert torch.allclose(m.norm.mean, x.mean((0, 2, 3, 4)), atol=1e-5)
    assert torch.allclose(m.norm.std, x.std((0, 2, 3, 4), unbiased=False), atol=1e-5)
    assert m.norm.std[1] / m.norm.std[2] > 3  # the channels' scales (2 and 0.5) are seen per channel


def test_learns_a_flair_blob_within_a_few_epochs(sets, trained):
    model, hist, _ = trained
    assert len(hist) <= CONFIG.epochs
    for s in ("val", "test"):  # val chose the epoch; test was never seen
        auc = classification_metrics(sets[s].y, predict_proba(model, sets[s]))["auroc"]
        assert auc > 0.9, (s, auc, hist)


def test_checkpoint_round_trip_predicts_identically(sets, trained, tmp_path):
    model, _, out = trained
    p = predict_proba(model, sets["test"])
    best, meta = load_model(out / "best.pt")
    assert isinstance(best, StructuralCNN) and model_kind(best) == "cnn" and meta["task"] == "idh"
    assert np.array_equal(predict_proba(best, sets["test"]), p)
    again, _ = load_model(save_model(model, tmp_path / "cnn.pt"))
    assert again.hparams == model.hparams and np.array_equal(predict_proba(again, sets["test"]), p)


def test_same_seed_same_predictions(sets):
    cfg = CONFIG.replace(epochs=2)
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("other", 1)):
        m, _ = fit(make_model("cnn", sets["train"], seed=seed), sets["train"], sets["val"], cfg.replace(seed=seed))
        runs[name] = predict_proba(m, sets["test"])
    assert np.array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["other"])


def test_reset_forgets_training_and_every_weight(trained):
    model = copy.deepcopy(trained[0])
    fresh = StructuralCNN(**model.hparams)
    torch.manual_seed(3); fresh.reset_parameters()
    torch.manual_seed(3); model.reset_parameters()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert torch.equal(model.norm.mean, torch.zeros(4)) and torch.equal(model.norm.std, torch.ones(4))
    with torch.no_grad():
        for t in [*fresh.parameters(), *fresh.buffers()]:
            if t.is_floating_point(): t.fill_(7.0)
    fresh.reset_parameters()
    assert [n for n, t in fresh.state_dict().items() if t.is_floating_point() and bool((t == 7.0).all())] == []


def test_graphs_without_a_crop_are_refused_naming_the_patient(tmp_path, trained):
    ids = write_graphs(tmp_path / "old", crops=False)
    old = load_graph_set(tmp_path / "old", "idh")
    raises(DataFormatError, lambda: make_model("cnn", old), f"patient {ids['train'][0]}:", "rebuild the graphs")
    raises(DataFormatError, lambda: predict_proba(trained[0], old.subset(ids["test"][:2])),
           f"patients {ids['test'][0]}, {ids['test'][1]}:", "build-graphs --force")
