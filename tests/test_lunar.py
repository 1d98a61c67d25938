"""LUNAR model, CORAL, training, SHAP and the real-data benchmark: acceptance and bad-input tests."""
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hiperf_nb.core import (HiperfError, InputError, MissingFileError, DataFormatError, ShapeMismatchError,
                            NonFiniteError, HiperfWarning, data_dir, data_path)
from hiperf_nb.core import test_raises as raises_with
from hiperf_nb.lunar import (LUNAR, PaperLUNAR, ATTENTIONS, MODALITIES, PAPER_DIMS, PAPER_WEIGHTS, coral_loss,
                             load_paper_lunar, make_lunar, paper_feature_names, random_paper_inputs, token_dependence)
from hiperf_nb.lunar_train import (LunarConfig, ModalityTensors, toy_tensors, train_lunar, predict_proba, save_lunar,
                                   load_lunar, modality_attention)
from hiperf_nb.lunar_bench import (BenchmarkOptions, DEFAULT_MODEL, model_config, published_results, preprocess, run_models, fit_baseline,
                                   baseline_model, lunar_benchmark, split_table, cv_table, tcga_cv_dataset,
                                   run_lunar, MODELS)
from hiperf_nb.explain import shap_values, modality_importance, attention_summary
from hiperf_nb.genomics import tcga_dataset

warnings.simplefilter("ignore", HiperfWarning)


@pytest.fixture(scope="module")
def toy():
    return toy_tensors()


@pytest.fixture(scope="module")
def toy_model(toy):
    return train_lunar(toy.subset(range(120)), toy.subset(range(120, 160)), LunarConfig(max_epochs=15, patience=15, max_lr=3e-3, base_lr=1e-3), show_progress=False).model


# ---- acceptance: the published architecture ------------------------------------------------------

@pytest.mark.parametrize("attention", ATTENTIONS)
def test_paper_variant_loads_published_weights_strictly(attention):
    sd = torch.load(data_path("lunar_reference", "weights", PAPER_WEIGHTS[attention]), map_location="cpu", weights_only=True)
    m = PaperLUNAR(*PAPER_DIMS, attention=attention)
    res = m.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert set(m.state_dict()) == set(sd)
    m2 = load_paper_lunar(attention)
    with torch.no_grad():
        out = m2(*random_paper_inputs(8))
    assert out.shape == (8,) and torch.isfinite(out).all()


def test_paper_feature_order_matches_weights():
    f = paper_feature_names()
    assert tuple(len(f[m]) for m in MODALITIES) == PAPER_DIMS
    assert f["clinical"][:3] == ["age", "grade", "sex"]


def test_paper_attention_near_published_medians():
    m = load_paper_lunar("both")
    with torch.no_grad():
        w = m.details(*random_paper_inputs(512, seed=3))["modality_weights"].numpy()
    med = np.median(w, 0)
    pub = pd.read_csv(data_path("lunar_reference", "tcga_attention_weights.csv")).median().to_numpy()
    assert np.abs(med - pub).max() < 0.01, (med, pub)
    assert np.allclose(med, [0.31, 0.34, 0.35], atol=0.015)


def test_paper_attention_is_degenerate_default_is_not():
    torch.manual_seed(0)
    xs = (torch.randn(16, 8), torch.randn(16, 6), torch.rand(16, 30))
    paper = token_dependence(make_lunar(8, 6, 30, variant="paper"), *xs)
    default = token_dependence(make_lunar(8, 6, 30, variant="default"), *xs)
    for m in MODALITIES:
        assert paper.loc[f"{m} token", f"{m} input"] == 0.0               # published: no token sees its own modality
        own = default.loc[f"{m} token", f"{m} input"]
        assert own > 1e-3 and own > default.loc[f"{m} token"].drop(f"{m} input").max()  # default: own modality dominates


def test_paper_cross_attention_ignores_query():
    m = make_lunar(8, 6, 30, variant="paper", attention="cross").eval()
    a, b = torch.randn(5, 64), torch.randn(5, 64)
    with torch.no_grad():
        o1 = m.cross_ce(a, b)[0]; o2 = m.cross_ce(torch.randn(5, 64), b)[0]
    assert torch.allclose(o1, o2, atol=1e-5)
    d = LUNAR(8, 6, 30).eval()
    sa, sb = torch.randn(5, 4, 64), torch.randn(5, 6, 64)
    with torch.no_grad():
        assert not torch.allclose(d.cross_ce(sa, sb)[0], d.cross_ce(sa + 1, sb)[0])


# ---- acceptance: CORAL, gates, SHAP ----------------------------------------------------------------

def test_coral_zero_for_identical_covariance_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(64, 8, generator=g)
    assert coral_loss(s, s).item() == pytest.approx(0.0, abs=1e-10)
    assert coral_loss(s, s + 5.0).item() == pytest.approx(0.0, abs=1e-6)        # same covariance, shifted mean
    assert coral_loss(s, s[torch.randperm(64, generator=g)]).item() == pytest.approx(0.0, abs=1e-6)  # row order irrelevant
    assert coral_loss(s, 2 * s).item() > 0
    assert coral_loss(s, torch.randn(50, 8, generator=g)).item() > 0
    # scale: ||C_s - C_t||_F^2 / (4 d^2)
    cs, ct = torch.cov(s.T), torch.cov((2 * s).T)
    assert coral_loss(s, 2 * s).item() == pytest.approx(((cs - ct) ** 2).sum().item() / (4 * 64), rel=1e-5)


def test_gate_penalty_drives_unused_gates_down(toy):
    cfg = LunarConfig(attention="none", max_epochs=150, patience=1000, gate_weight=0.02, batch_size=16, max_lr=1e-2, base_lr=5e-3)
    res = train_lunar(toy.subset(range(120)), toy.subset(range(120, 160)), cfg, show_progress=False)
    g = res.model.sel_e.gates().detach().numpy()
    start = 1 / (1 + np.exp(-1))
    assert g[3:].max() < 0.5 < g[:3].min()
    assert g[3:].mean() < start - 0.3
    off = train_lunar(toy.subset(range(120)), toy.subset(range(120, 160)), cfg.replace(gate_weight=0.0), show_progress=False)
    assert off.model.sel_e.gates().detach().numpy()[3:].mean() > g[3:].mean() + 0.2   # the penalty, not the task, closes them


def test_shap_values_sum_to_output_minus_expected_value(toy, toy_model):
    ex, bg = toy.subset(range(120, 128)), toy.subset(range(30))
    r = shap_values(toy_model, ex, bg, steps=128, max_background=None)  # midpoint quadrature: the gap shrinks ~1/steps
    with torch.no_grad():
        f = toy_model(*ex.inputs).numpy()
        ev = toy_model(*bg.inputs).mean().item()
    assert np.allclose(r.output, f, atol=1e-6) and r.expected_value == pytest.approx(ev, abs=1e-6)
    gap = np.abs(r.values.sum(axis=1).to_numpy() - (f - ev))
    assert gap.max() < 0.05 * np.abs(f - ev).mean() + 1e-3, (gap.max(), np.abs(f - ev).mean())
    assert set(r.importance().index[:3]) == {"E0", "E1", "E2"}
    mi = modality_importance(r)
    assert list(mi.index) == list(MODALITIES) and (mi["median_feature_importance"] >= 0).all()


def test_shap_on_paper_variant_weights():
    m = load_paper_lunar("none")
    xs = random_paper_inputs(10, seed=1)
    f = paper_feature_names()
    ids = [f"p{i}" for i in range(10)]
    tabs = {k: pd.DataFrame(x.numpy(), index=ids, columns=f[k]) for k, x in zip(MODALITIES, xs)}
    mt = ModalityTensors.from_tables(tabs)
    r = shap_values(m, mt.subset(range(4)), mt.subset(range(4, 10)), steps=32)
    assert r.values.shape == (4, sum(PAPER_DIMS))
    assert r.additivity_gap < 0.05 * np.abs(r.output - r.expected_value).mean() + 1e-3


# ---- training: determinism, checkpoints, CORAL path, every row every epoch --------------------------

def test_same_seed_same_model(toy):
    cfg = LunarConfig(max_epochs=3, patience=3)
    tr, va = toy.subset(range(120)), toy.subset(range(120, 160))
    a = predict_proba(train_lunar(tr, va, cfg, show_progress=False).model, toy)
    b = predict_proba(train_lunar(tr, va, cfg, show_progress=False).model, toy)
    c = predict_proba(train_lunar(tr, va, cfg.replace(seed=1), show_progress=False).model, toy)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_training_with_coral_target_never_uses_target_labels(toy):
    tr, va = toy.subset(range(100)), toy.subset(range(100, 130))
    tgt = toy.subset(range(130, 160))
    cfg = LunarConfig(max_epochs=3, patience=3, coral_weight=0.5)
    r1 = train_lunar(tr, va, cfg, target=tgt, target_val=tgt, show_progress=False)
    scrambled = ModalityTensors(tgt.clinical, tgt.expression, tgt.mutation, 1 - tgt.y, tgt.ids, tgt.features)
    r2 = train_lunar(tr, va, cfg, target=scrambled, target_val=scrambled, show_progress=False)
    r3 = train_lunar(tr, va, cfg, target=None, show_progress=False)
    assert np.array_equal(predict_proba(r1.model, toy), predict_proba(r2.model, toy))  # labels of target rows are ignored
    assert r1.history["train_coral"].gt(0).all() and r3.history["train_coral"].eq(0).all()
    assert not np.array_equal(predict_proba(r1.model, toy), predict_proba(r3.model, toy))


def test_every_training_row_every_epoch(toy, monkeypatch):
    import hiperf_nb.lunar_train as L
    seen = []
    orig = L._losses
    def spy(model, data, idx, *a, **k):
        if model.training: seen.append(idx.clone())
        return orig(model, data, idx, *a, **k)
    monkeypatch.setattr(L, "_losses", spy)
    tr, va, tgt = toy.subset(range(133)), toy.subset(range(133, 150)), toy.subset(range(150, 160))  # target much smaller
    L.train_lunar(tr, va, LunarConfig(max_epochs=1, patience=1, batch_size=16), target=tgt, show_progress=False)
    assert sorted(torch.cat(seen).tolist()) == list(range(133))


def test_checkpoint_loads_with_weights_only(toy, tmp_path):
    r = train_lunar(toy.subset(range(120)), toy.subset(range(120, 160)), LunarConfig(max_epochs=2), checkpoint=tmp_path / "ck.pt",
                    show_progress=False)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert set(ck) >= {"state_dict", "dims", "variant", "attention", "config"}
    m, cfg, meta = load_lunar(tmp_path / "ck.pt")
    assert np.array_equal(predict_proba(m, toy), predict_proba(r.model, toy)) and meta["epoch"] == r.best_epoch
    p = save_lunar(load_paper_lunar("self"), tmp_path / "paper_self.pt")
    m2, _, _ = load_lunar(p)
    assert m2.variant == "paper" and m2.attention == "self"


# ---- real data ---------------------------------------------------------------------------------------

def test_published_results_table():
    pub = published_results()
    assert pub.loc["LUNAR", "auroc"] == pytest.approx(0.8284, abs=1e-4)
    assert pub.loc["XGBoost", "auroc"] == pytest.approx(0.6863, abs=1e-4)
    assert (pub[["tp", "fp", "tn", "fn"]].sum(1) == 29).all()
    assert (published_results("glass")[["tp", "fp", "tn", "fn"]].sum(1) == 16).all()


def test_default_model_is_the_cv_winner():
    "`DEFAULT_MODEL` must be whichever of the published LUNAR and LUNAR-TA wins the committed repeated CV."
    cv = pd.read_csv(Path(__file__).resolve().parents[1] / "bench" / "results" / "lunar_cv.csv", index_col=0)
    assert {"LUNAR", "LUNAR-TA"} <= set(cv.index), "re-run `python bench/lunar.py`: the CV table predates the model names"
    assert DEFAULT_MODEL == cv.loc[["LUNAR", "LUNAR-TA"], "auroc_mean"].idxmax()


def test_published_rows_train_with_the_released_schedule():
    c = model_config("LUNAR-SAtt", LunarConfig(max_epochs=60, patience=8), seed=3)
    assert (c.variant, c.attention, c.max_epochs, c.patience, c.max_lr, c.seed) == ("paper", "self", 20, 3, 5e-4, 3)
    t = model_config("LUNAR-TA", LunarConfig(max_epochs=60, patience=8))
    assert (t.variant, t.attention, t.max_epochs, t.tokens) == ("default", "both", 60, "chromosome_arm")


def test_cv_cohort():
    ds = tcga_cv_dataset()
    assert len(ds.cohort) == 201 and ds.cohort.index.is_unique  # 191 published + 10 more eligible with a primary-tumour expression sample
    assert set(tcga_dataset("lunar").cohort.index) <= set(ds.cohort.index)


def test_benchmark_smoke_is_deterministic_and_leak_free():
    o = BenchmarkOptions(n_seeds=1, cv_repeats=1, cv_folds=3, n_boot=20, n_bootstraps=5, max_epochs=2, patience=2)
    models = ("LUNAR-TA", "LUNAR", "LogReg", "Clinical-LogReg")
    a = lunar_benchmark(o, models=models, show_progress=False)
    b = lunar_benchmark(o, models=models, show_progress=False)
    for name in a["split_metrics"]:
        pd.testing.assert_frame_equal(a["split_metrics"][name], b["split_metrics"][name])
    pd.testing.assert_frame_equal(a["cv"].drop(columns="seconds"), b["cv"].drop(columns="seconds"))
    assert len(a["cv"]) == 3 * len(models)
    assert {len(v) for k, v in a["split_data"].items()} == {133, 29}
    t = split_table(a["split_metrics"], published_results())
    assert t.loc["LUNAR", "pub auroc"] == "0.828" and t.loc["LUNAR-TA", "pub auroc"] == "-" and t.loc["Clinical-LogReg", "pub auroc"] == "-"
    assert not cv_table(a["cv"]).empty


def test_run_lunar_writes_everything_and_is_reproducible(tmp_path):
    tiny = BenchmarkOptions(n_seeds=1, cv_repeats=1, cv_folds=3, n_boot=20, n_bootstraps=5, max_epochs=2, patience=2,
                            shap_background=6, shap_steps=2)
    models = ("LUNAR-TA", "LUNAR-NAtt", "LUNAR", "LogReg", "XGBoost", "Clinical-LogReg")
    r1 = run_lunar(out_dir=tmp_path / "a", options=tiny, models=models, seed=0)
    r2 = run_lunar(out_dir=tmp_path / "b", options=tiny, models=models, seed=0)
    names = {"lunar_test.csv", "lunar_test.md", "lunar_cv.csv", "lunar_cv.md", "lunar_cv_folds.csv",
             "lunar_shap.csv", "lunar_shap_importance.md", "lunar_attention.csv", "lunar_attention.md", "lunar_roc_pr.png",
             "lunar_shap_summary.png", "lunar_attention.png", "metrics.json",
             "lunar_cv_paired.csv", "lunar_calibration.csv", "lunar_cv_comparisons.md", "lunar_calibration.png", "lunar_cv_predictions.csv"}
    assert set(r1["paths"]) == names and all(Path(p).exists() for p in r1["paths"].values())
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert set(m["test"]) == set(models) and "published_tcga" in m and m["cv"] and "sites" not in m
    strip = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "train_seconds", "cv")}
    assert json.dumps(strip(r1["metrics"]), sort_keys=True) == json.dumps(strip(r2["metrics"]), sort_keys=True)
    assert not list((tmp_path / "a").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_dataset_from_an_explicit_folder_is_the_bundled_one():
    for split in ("lunar", "all"):
        a, b = tcga_dataset(split, data_dir=data_dir()), tcga_dataset(split)
        for k in ("cohort", "clinical", "mutation", "expression"):
            pd.testing.assert_frame_equal(getattr(a, k), getattr(b, k))
        assert a.splits == b.splits


def test_run_lunar_reads_the_data_folder_it_is_given(tmp_path, monkeypatch):
    bundled = data_dir()
    d = tmp_path / "data"
    (d / "lunar_reference").mkdir(parents=True)
    for sub in ("tcga_glioma", "hgnc"):
        (d / sub).symlink_to(bundled / sub)
    for f in (bundled / "lunar_reference").iterdir():
        if f.name != "lunar_results_dict.json":
            (d / "lunar_reference" / f.name).symlink_to(f)
    pub = json.loads((bundled / "lunar_reference" / "lunar_results_dict.json").read_text())
    pub["tcga"]["LUNAR"]["auc"] = 0.5  # a value only this folder has
    (d / "lunar_reference" / "lunar_results_dict.json").write_text(json.dumps(pub))
    def no_bundled():
        raise AssertionError("the bundled data folder was looked up")
    import hiperf_nb.core, hiperf_nb.lunar_bench
    monkeypatch.setattr(hiperf_nb.core, "data_dir", no_bundled)
    monkeypatch.setattr(hiperf_nb.lunar_bench, "bundled_data_dir", no_bundled)
    monkeypatch.delenv("HIPERF_DATA", raising=False)
    tiny = BenchmarkOptions(n_seeds=1, cv_repeats=0, n_boot=20, n_bootstraps=5, max_epochs=1, patience=1)
    r = run_lunar(data_dir=d, out_dir=tmp_path / "out", options=tiny, models=("LogReg",))
    assert r["metrics"]["published_tcga"]["LUNAR"]["auroc"] == 0.5
    assert "HIPERF_DATA" not in os.environ  # the folder travels as an argument, not through the environment


# ---- bad inputs: every one a HiperfError naming the file, patient or column ----------------------------

def _tables(n=6):
    ids = [f"P{i}" for i in range(n)]
    r = np.random.default_rng(0)
    return ({"clinical": pd.DataFrame(r.normal(size=(n, 3)), index=ids, columns=["age", "sex_male", "grade"]),
             "expression": pd.DataFrame(r.normal(size=(n, 2)), index=ids, columns=["G1", "G2"]),
             "mutation": pd.DataFrame(r.random((n, 4)), index=ids, columns=["M1", "M2", "M3", "M4"])},
            pd.Series([0, 1] * (n // 2), index=ids))


def test_bad_modality_tables():
    t, y = _tables()
    e = raises_with(NonFiniteError, lambda: ModalityTensors.from_tables({**t, "mutation": t["mutation"].assign(M3=[0, 0, 0, np.inf, 0, 0])}, y),
                    "P3", "M3", "mutation")
    assert isinstance(e, HiperfError)
    raises_with(InputError, lambda: ModalityTensors.from_tables({**t, "expression": t["expression"].drop("P5")}, y), "expression", "P5")
    raises_with(DataFormatError, lambda: ModalityTensors.from_tables({**t, "clinical": t["clinical"].assign(sex_male="M")}, y), "sex_male")
    raises_with(InputError, lambda: ModalityTensors.from_tables({"clinical": t["clinical"], "mutation": t["mutation"]}, y), "expression")
    raises_with(InputError, lambda: ModalityTensors.from_tables(t, y.drop("P2")), "P2")
    raises_with(DataFormatError, lambda: ModalityTensors.from_tables(t, y.replace(1, 3)), "P1", "0 or 1")
    raises_with(InputError, lambda: ModalityTensors.from_tables({**t, "clinical": t["clinical"].to_numpy()}, y), "clinical", "DataFrame")
    raises_with(InputError, lambda: ModalityTensors.from_tables([1, 2]), "dict")


def test_bad_model_inputs():
    m = LUNAR(3, 2, 4)
    x = (torch.randn(5, 3), torch.randn(5, 2), torch.rand(5, 4))
    raises_with(ShapeMismatchError, lambda: m(x[0], torch.randn(5, 3), x[2]), "expression", "3", "2")
    raises_with(ShapeMismatchError, lambda: m(x[0], x[1], torch.rand(4, 4)), "patients")
    raises_with(ShapeMismatchError, lambda: m(x[0], x[1], torch.rand(5)), "mutation", "2-D")
    raises_with(InputError, lambda: LUNAR(3, 2, 4, attention="both-ways"), "attention")
    raises_with(InputError, lambda: LUNAR(3, -1, 4), "n_expression")
    raises_with(InputError, lambda: make_lunar(3, 2, 4, variant="v2"), "variant")
    raises_with(ShapeMismatchError, lambda: coral_loss(torch.randn(5, 3), torch.randn(5, 4)), "(5, 4)")
    raises_with(InputError, lambda: coral_loss(torch.randn(1, 3), torch.randn(5, 3)), "at least 2")


def test_bad_weight_and_checkpoint_files(tmp_path):
    raises_with(MissingFileError, lambda: load_paper_lunar(path=tmp_path / "missing.pth"), "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    raises_with(DataFormatError, lambda: load_paper_lunar(path=tmp_path / "junk.pth"), "junk.pth")
    sd = torch.load(data_path("lunar_reference", "weights", "may7_lunar.pth"), map_location="cpu", weights_only=True)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    raises_with(DataFormatError, lambda: load_paper_lunar(path=tmp_path / "extra.pth"), "extra.pth", "extra.weight")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pth")
    raises_with(DataFormatError, lambda: load_paper_lunar(path=tmp_path / "other.pth"), "other.pth")
    raises_with(DataFormatError, lambda: load_lunar(tmp_path / "other.pth"), "other.pth", "checkpoint")
    raises_with(MissingFileError, lambda: load_lunar(tmp_path / "nope.pt"), "nope.pt")
    raises_with(InputError, lambda: load_paper_lunar("sideways"), "sideways")


def test_bad_published_results(tmp_path):
    raises_with(MissingFileError, lambda: published_results(folder=tmp_path), "lunar_results_dict.json")
    (tmp_path / "lunar_results_dict.json").write_text("{broken")
    raises_with(DataFormatError, lambda: published_results(folder=tmp_path), "lunar_results_dict.json")
    (tmp_path / "lunar_results_dict.json").write_text('{"glass": {}}')
    raises_with(DataFormatError, lambda: published_results(folder=tmp_path), "lunar_results_dict.json", "tcga")
    raises_with(InputError, lambda: published_results("upenn"), "upenn")


def test_bad_training_and_config(toy, tmp_path):
    tr, va = toy.subset(range(120)), toy.subset(range(120, 160))
    one = ModalityTensors(tr.clinical, tr.expression, tr.mutation, torch.zeros(len(tr)), tr.ids, tr.features)
    raises_with(InputError, lambda: train_lunar(one, va), "one class")
    nol = ModalityTensors(va.clinical, va.expression, va.mutation, None, va.ids, va.features)
    raises_with(InputError, lambda: train_lunar(tr, nol), "labels")
    raises_with(ShapeMismatchError, lambda: train_lunar(tr, va, target=toy_tensors(20, n_mutation=3)), "target")
    raises_with(InputError, lambda: train_lunar(tr, va, LunarConfig(batch_size=1)), "batch_size")
    raises_with(InputError, lambda: train_lunar(tr, va, LunarConfig(base_lr=1e-2, max_lr=1e-3)), "base_lr")
    raises_with(InputError, lambda: train_lunar(tr, va, LunarConfig(gate_penalty="l2")), "gate_penalty")
    (tmp_path / "cfg.json").write_text('{"variant": "paper", "epochs": 3}')
    raises_with(InputError, lambda: LunarConfig.load(tmp_path / "cfg.json"), "cfg.json", "epochs")
    raises_with(InputError, lambda: run_models({"train": tr, "val": va}, models=("LUNAR", "SVM-RBF")), "SVM-RBF")
    raises_with(InputError, lambda: baseline_model("RandomForest"), "RandomForest")
    raises_with(InputError, lambda: run_models({"train": tr, "val": va}, models=("LUNAR",), seeds=()), "seed")


def test_bad_explain_and_run_inputs(toy, toy_model, tmp_path):
    ex, bg = toy.subset(range(4)), toy.subset(range(4, 20))
    raises_with(InputError, lambda: shap_values(toy_model, ex, bg, method="kernel"), "kernel")
    raises_with(ShapeMismatchError, lambda: shap_values(toy_model, toy_tensors(8, n_expression=4), bg), "explain", "features")
    raises_with(InputError, lambda: shap_values(toy_model, ex, bg.subset([0])), "background")
    raises_with(InputError, lambda: shap_values(torch.nn.Linear(2, 1), ex, bg), "Linear")
    raises_with(MissingFileError, lambda: run_lunar(data_dir=tmp_path / "nodata", out_dir=tmp_path / "o"), "nodata")
    raises_with(MissingFileError, lambda: run_lunar(data_dir=tmp_path, out_dir=tmp_path / "o"), str(tmp_path), "tcga_glioma")
    (tmp_path / "file").write_text("x")
    raises_with(InputError, lambda: run_lunar(out_dir=tmp_path / "file"), "file", "not a folder")
    raises_with(InputError, lambda: run_lunar(out_dir=tmp_path / "o", n_seeds=0), "n_seeds")
    raises_with(InputError, lambda: run_lunar(out_dir=tmp_path / "o", models=("LUNAR", "GPT")), "GPT")
    ds = tcga_dataset("lunar")
    raises_with(InputError, lambda: preprocess(ds, ds.splits["train"], {"test": ["TCGA-XX-0000"]}), "TCGA-XX-0000")


def test_run_lunar_options_seed_is_the_seed_of_every_step(tmp_path):
    "With `options`, its seed drives training, SHAP and attention; the `seed` argument is then ignored everywhere."
    tiny = BenchmarkOptions(seed=3, n_seeds=1, cv_repeats=0, n_boot=10, n_bootstraps=3, max_epochs=1, patience=1,
                            shap_background=4, shap_steps=2)
    a = run_lunar(out_dir=tmp_path / "a", options=tiny, models=("LUNAR",), seed=0)
    b = run_lunar(out_dir=tmp_path / "b", options=tiny, models=("LUNAR",), seed=11)
    assert (tmp_path / "a" / "lunar_shap.csv").read_text() == (tmp_path / "b" / "lunar_shap.csv").read_text()
    assert (tmp_path / "a" / "lunar_attention.csv").read_text() == (tmp_path / "b" / "lunar_attention.csv").read_text()
    assert "(seed 3)" in (tmp_path / "b" / "lunar_shap_importance.md").read_text()
    assert a["metrics"]["shap"] == b["metrics"]["shap"]


def test_run_lunar_on_user_files_matches_the_bundled_run(tmp_path):
    "The bundled expression written as a UCSC Xena log2(x + 1) matrix (symbols x -01 samples) runs the same pipeline to the same result."
    from hiperf_nb.genomics import HGNCMapper, load_expression, primary_samples
    expr = load_expression()
    prim = primary_samples(expr.columns)  # patient -> primary sample column
    sym = HGNCMapper().map(expr.index)["symbol"]
    x = expr.loc[sym.notna().to_numpy(), list(prim.values())]
    x.index, x.columns = sym.dropna().to_numpy(), [f"{p}-01" for p in prim]
    x = x[~x.index.duplicated()]
    path = tmp_path / "HiSeqV2"
    np.log2(x + 1).rename_axis("sample").to_csv(path, sep="\t", float_format="%.17g")
    tiny = BenchmarkOptions(n_seeds=1, cv_repeats=0, n_boot=20, n_bootstraps=5, max_epochs=2, patience=2,
                            shap_background=6, shap_steps=2)
    models = ("LUNAR-TA", "LogReg")
    mine = run_lunar(out_dir=tmp_path / "mine", options=tiny, models=models, dataset_files={"expression": path})["metrics"]
    ref = run_lunar(out_dir=tmp_path / "ref", options=tiny, models=models)["metrics"]
    assert mine["sources"]["expression"]["format"] == "xena" and mine["sources"]["expression"]["file_scale"] == "log2"
    for m in models:
        assert mine["test"][m]["auroc"]["value"] == pytest.approx(ref["test"][m]["auroc"]["value"], abs=1e-9)
