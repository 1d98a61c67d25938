"""Survival analysis (nbs/16_survival.ipynb, issue 15 point 5): the metrics against hand computations, the Cox loss
against a hand computation and scikit-survival, leakage, the prognostic signal of the real cohort, and gates on the
committed benchmark (bench/results/lunar_survival*, `python bench/survival.py`)."""
import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from hiperf_nb.core import DataFormatError, InputError
from hiperf_nb.genomics_prep import fitted_state, same_state
from hiperf_nb.survival import (METRICS, MODELS, LunarCox, LunarCoxConfig, SurvivalPreprocessor, breslow, cox_loss,
                                corrected_t_ci, cross_validate, km_panel, make_model, surv_array, survival_metrics,
                                tcga_survival_data)

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
CLINICAL = {"Cox (clinical)": MODELS["Cox (clinical)"]}


@pytest.fixture(scope="module")
def data():
    return tcga_survival_data()


def test_cohort_keeps_the_censored_patients(data):
    c = data.cohort
    assert len(c) > 900 and 0.4 < c.event.mean() < 0.8  # censored patients are in (the binary task had 203 patients)
    assert (c.time > 0).all() and c.multimodal.sum() > 600
    assert set(data.expression.index) == set(c.index[c.multimodal])


def test_clinical_cox_is_prognostic_on_tcga(data):
    "Grade, IDH/codel and age are strongly prognostic in glioma: cross-validated C well above chance."
    f, oof = cross_validate(data, CLINICAL, "all", n_splits=5, n_repeats=1, seed=0)
    assert f.harrell_c.mean() > 0.7 and f.uno_c.mean() > 0.65 and f.auc_390.mean() > 0.7, f[list(METRICS)].mean()
    assert len(oof) == len(data.cohort)


def test_shuffled_outcomes_give_chance(data):
    g = np.random.default_rng(1)
    d = copy.copy(data)
    d.cohort = data.cohort.assign(time=g.permutation(data.cohort.time.to_numpy()), event=g.permutation(data.cohort.event.to_numpy()))
    f, _ = cross_validate(d, CLINICAL, "shuffled", n_splits=5, n_repeats=1, seed=0)
    assert abs(f.harrell_c.mean() - 0.5) < 0.06 and abs(f.uno_c.mean() - 0.5) < 0.08, f[list(METRICS)].mean()


def test_uno_and_harrell_match_a_hand_computation():
    "Censoring at 4 and 8 in training: G(3) = 1, G(5) = 0.75; Uno weights each event's pairs by 1 / G(T_i)^2."
    ytr = surv_array([1, 0, 1, 0, 1], [2, 4, 6, 8, 10])
    yte = surv_array([1, 1, 0, 1], [3, 5, 7, 9])
    risk = np.array([4.0, 1, 3, 2])  # patient at 3 ranked above all 3 later ones; patient at 5 below both later ones
    m = survival_metrics(ytr, yte, risk, np.tile([0.9, 0.8, 0.7], (4, 1)), [3.5, 4.5, 6], tau=9.5, t_auc=6)
    assert math.isclose(m["harrell_c"], 3 / 5)
    w5 = 1 / 0.75 ** 2
    assert math.isclose(m["uno_c"], 3 / (3 + 2 * w5), rel_tol=1e-9), m["uno_c"]


def test_cox_loss_matches_hand_and_sksurv():
    r, t, e = torch.tensor([0.1, 0.5, -0.2, 0.3]), torch.tensor([1., 2., 2., 3.]), torch.tensor([1., 1., 0., 1.])
    lse = lambda *v: math.log(sum(math.exp(x) for x in v))
    hand = -((0.1 - lse(0.1, 0.5, -0.2, 0.3)) + (0.5 - lse(0.5, -0.2, 0.3)) + 0.0) / 3
    assert math.isclose(float(cox_loss(r, t, e)), hand, rel_tol=1e-6)
    g = np.random.default_rng(3)
    X = g.normal(size=(100, 3))
    tt = np.round(g.exponential(np.exp(-X @ [1.0, -0.5, 0.0])) * 10) + 1  # coarse times: ties
    y = surv_array(g.random(100) < 0.6, tt)
    beta = torch.tensor(CoxPHSurvivalAnalysis(ties="breslow").fit(X, y).coef_, requires_grad=True)
    cox_loss(torch.tensor(X) @ beta, torch.tensor(tt), torch.tensor(y["event"].astype(float))).backward()
    assert beta.grad.abs().max() < 1e-5  # sksurv's Breslow maximum likelihood estimate is our stationary point


def test_breslow_is_nelson_aalen_at_zero_risk():
    y = surv_array([1, 0, 1, 1], [1, 2, 3, 3])
    times, h = breslow(np.zeros(4), y)
    assert times.tolist() == [1, 3] and np.allclose(h, [1 / 4, 1 / 4 + 2 / 2])


def test_preprocessing_does_not_leak(data):
    mm = data.restrict()
    tr, te = mm.folds(5, 1, seed=2)[0]
    pre = SurvivalPreprocessor(mm.cohort.tss).fit(mm.tables(), tr)
    before = {m: fitted_state(s) for m, s in pre.steps_.items()}
    pre.transform(mm.tables(), te)
    assert all(same_state(before[m], fitted_state(s)) for m, s in pre.steps_.items())
    poisoned = {m: t.copy() for m, t in mm.tables().items()}
    poisoned["expression"].loc[te] = 5e5
    poisoned["mutation"].loc[te] = 9
    poisoned["clinical"].loc[te, "age"] = 1
    pre2 = SurvivalPreprocessor(mm.cohort.tss).fit(poisoned, tr)
    assert all(same_state(before[m], fitted_state(s)) for m, s in pre2.steps_.items())


def _toy(n=240, seed=0):
    g = np.random.default_rng(seed)
    ids = [f"T{i:03d}" for i in range(n)]
    e = g.normal(size=(n, 10))
    tt, cens = g.exponential(200 * np.exp(-(e[:, 0] - e[:, 1]))), g.exponential(400, n)
    tabs = {"clinical": pd.DataFrame(g.normal(size=(n, 2)), ids, ["c0", "c1"]),
            "expression": pd.DataFrame(e, ids, [f"E{i}" for i in range(10)]),
            "mutation": pd.DataFrame((g.random((n, 4)) < 0.2).astype(float), ids, [f"M{i}" for i in range(4)])}
    return tabs, surv_array(tt <= cens, np.maximum(np.minimum(tt, cens), 1))


def test_lunar_cox_learns_and_is_seeded():
    tabs, y = _toy()
    head, tail = ({k: v.iloc[s] for k, v in tabs.items()} for s in (slice(0, 180), slice(180, None)))
    cfg = LunarCoxConfig(attention="none", max_epochs=60)
    a = LunarCox(cfg).fit(head, y[:180]).predict(tail)
    assert concordance_index_censored(y["event"][180:], y["time"][180:], a)[0] > 0.62
    assert np.array_equal(a, LunarCox(cfg).fit(head, y[:180]).predict(tail))


def test_bad_input_is_named():
    with pytest.raises(DataFormatError, match="'p2'"): surv_array([1, 0], [3, -1], ["p1", "p2"])
    with pytest.raises(InputError, match="rsf2"): make_model("rsf2")
    with pytest.raises(InputError, match=">= 2"): corrected_t_ci([0.7], 0.2)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    with pytest.raises(InputError, match="empty"): km_panel(ax, surv_array([1, 0], [3, 4]), np.array([True, True]), "x")
    plt.close(fig)


# ---- gates on the committed benchmark -------------------------------------------------------------------------------

def read(name: str) -> pd.DataFrame:
    p = RESULTS / f"lunar_survival{name}.csv"
    if not p.exists(): pytest.fail(f"{p} is missing: run `python bench/survival.py` (see its docstring)")
    return pd.read_csv(p)


def test_the_survival_table_is_complete():
    "Issue 15.5's acceptance: every model with C-index, Uno's C, td-AUC at 390 d and IBS, each with a CI; the KM figure."
    t = read("")
    assert set(MODELS) <= set(t.model[t.cohort == "multimodal"]) and {"Cox (clinical)"} <= set(t.model[t.cohort == "all"])
    for k in METRICS:
        assert t[[k, f"{k}_lo", f"{k}_hi"]].notna().all().all() and (t[f"{k}_lo"] <= t[k]).all() and (t[k] <= t[f"{k}_hi"]).all()
    assert (RESULTS / "lunar_survival_km.png").stat().st_size > 10_000
    assert (RESULTS / "lunar_survival.md").exists()


def test_committed_models_beat_the_reference():
    "Every fitted model's Harrell C interval lies above chance, and clinical Cox's Brier score beats Kaplan-Meier."
    t = read("").set_index(["cohort", "model"])
    fitted = t.drop(index="Kaplan-Meier (no features)", level="model")
    assert (fitted.harrell_c_lo > 0.6).all(), fitted.harrell_c_lo
    for cohort in ("all", "multimodal"):
        assert t.loc[(cohort, "Cox (clinical)"), "ibs"] < t.loc[(cohort, "Kaplan-Meier (no features)"), "ibs"]
    lr = read("_logrank")
    assert (lr.logrank_p < 1e-6).all(), lr
