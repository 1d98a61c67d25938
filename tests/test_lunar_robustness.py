"""Leave-site-out grouped CV and the cutoff sensitivity analysis (issue 15, points 4 and 6): acceptance and bad-input tests."""
import copy
import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from hiperf_nb.core import HiperfWarning, InputError
from hiperf_nb.core import test_raises as raises_with
from hiperf_nb.genomics_prep import GenomicPreprocessor, fitted_state, same_state
from hiperf_nb.lunar_bench import tcga_cv_dataset
from hiperf_nb.lunar_train import LunarConfig
from hiperf_nb.lunar_robustness import (add_target_batches, cutoff_cv, cutoff_datasets, cutoff_folds, cutoff_table,
                                        fold_summary, label_changes, leave_site_out, site_fold, site_groups, source_agreement,
                                        split_target, target_combat)

warnings.simplefilter("ignore", HiperfWarning)
pytestmark = pytest.mark.filterwarnings("ignore::hiperf_nb.core.HiperfWarning")
TINY = dict(models=("LUNAR", "LogReg"), n_bootstraps=5, config=LunarConfig(max_epochs=2, patience=1))


@pytest.fixture(scope="module")
def ds():
    return tcga_cv_dataset()


@pytest.fixture(scope="module")
def folds(ds):
    return site_groups(ds)


@pytest.fixture(scope="module")
def target(folds):
    return sorted(folds.index[folds == 2])


def _shuffle_labels(ds, ids, seed=1):
    "A copy of `ds` whose labels of `ids` are permuted (at least one changes)."
    coh = ds.cohort.copy()
    coh.loc[ids, "early"] = np.random.default_rng(seed).permutation(coh.loc[ids, "early"].to_numpy())
    out = dataclasses.replace(ds, cohort=coh)
    assert (out.y.loc[ids] != ds.y.loc[ids]).any()
    return out


def test_site_groups_keep_sites_whole_and_cover_every_patient_once(ds, folds):
    site = ds.cohort["tss"].astype(str)
    assert folds.groupby(site).nunique().max() == 1
    assert folds.index.is_unique and sorted(folds.index) == sorted(ds.cohort.index)
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    s = fold_summary(ds, folds)
    assert s.loc["all", "patients"] == len(ds.cohort) and s.drop("all")["patients"].sum() == len(ds.cohort)
    early = s.drop("all")["early rate"].astype(float)
    assert early.max() - early.min() < 0.15  # comparable case mix
    assert site_groups(ds).equals(folds)  # deterministic
    raises_with(InputError, lambda: site_groups(ds, n_folds=1), "n_folds")
    raises_with(InputError, lambda: site_groups(ds, n_folds=5, min_per_class=40), "fold")


def test_split_target_halves_within_sites_without_labels(ds, target):
    a, b = split_target(target, ds.batches, 0)
    assert sorted(a + b) == target and not set(a) & set(b)
    site = ds.batches.astype(str)
    for s, n in site.loc[target].value_counts().items():
        if n >= 2: assert site.loc[a].eq(s).any() and site.loc[b].eq(s).any()
    assert split_target(target, ds.batches, 0) == (a, b)


def test_target_combat_adjusts_only_the_target_sites(ds, folds, target):
    src = [p for p in ds.cohort.index if p not in set(target)]
    pre = GenomicPreprocessor(ds.batches, n_bootstraps=5).fit(ds.tables(), ds.y, src)
    before = fitted_state(pre)
    pt = target_combat(pre, ds.tables(), target)
    assert same_state(fitted_state(pre), before)  # the training fit is not modified
    cb = pt.expression_.named_steps["combat"]
    big = [s for s, n in ds.batches.loc[target].astype(str).value_counts().items() if n >= 2]
    assert cb.target_batches_ == sorted(big)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in ("clinical", "mutation", "expression"):
            np.testing.assert_array_equal(pt.transform(ds.tables(), src)[k].to_numpy(), pre.transform(ds.tables(), src)[k].to_numpy())
        assert not np.allclose(pt.transform(ds.tables(), target)["expression"].to_numpy(), pre.transform(ds.tables(), target)["expression"].to_numpy())
    # a target site's standardised mean shift shrinks after the adjustment
    X = pre.expression_[:2].transform(ds.expression.loc[target])
    rows = (ds.batches.loc[target].astype(str) == big[0]).to_numpy()
    z = lambda Z: ((np.asarray(Z) - cb.grand_mean_) / np.sqrt(cb.var_pooled_)).mean(0)
    assert np.abs(z(cb.transform(X)[rows])).mean() < 0.75 * np.abs(z(X[rows])).mean()  # empirical Bayes: shrunk, partial removal
    raw = copy.deepcopy(pre.expression_.named_steps["combat"]); raw.eb = False
    np.testing.assert_allclose(z(add_target_batches(raw, X).transform(X)[rows]), 0, atol=1e-9)  # without shrinkage: removed exactly
    # the ComBat step never sees labels: no `y` argument at all
    assert add_target_batches(pre.expression_.named_steps["combat"], X).target_batches_ == cb.target_batches_


def test_target_labels_never_reach_a_fitted_step(ds, target):
    p = site_fold(ds, target, **TINY)
    shuffled = _shuffle_labels(ds, target)
    pd.testing.assert_frame_equal(site_fold(shuffled, target, **TINY), p)
    assert set(p.model) == {"LUNAR", "LUNAR + CORAL", "LogReg"} and len(p) == 3 * len(target)
    assert "y" not in p.columns  # site_fold returns no labels


def test_leave_site_out_is_deterministic_and_scores_every_patient_once(ds, folds, tmp_path):
    two = folds[folds.isin([3, 4])]
    a = leave_site_out(ds, two, **TINY, show_progress=False)
    b = leave_site_out(ds, two, **TINY, cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(a.score.to_numpy(), b.score.to_numpy())
    c = leave_site_out(ds, two, **TINY, cache_dir=tmp_path, show_progress=False)  # from the cache
    np.testing.assert_allclose(c.score.to_numpy(), a.score.to_numpy(), rtol=0, atol=1e-12)
    assert len(list(tmp_path.glob("sites_fold*.csv"))) == 2
    assert (a.groupby("model").patient.nunique() == len(two)).all() and not a.duplicated(["model", "patient"]).any()
    assert (a.y.to_numpy() == ds.y.loc[a.patient].to_numpy()).all()


def test_bad_inputs_name_the_culprit(ds, target):
    raises_with(InputError, lambda: site_fold(ds, target, models=("LUNAR-XL",)), "LUNAR-XL")
    raises_with(InputError, lambda: site_fold(ds, target + ["TCGA-XX-0000"]), "TCGA-XX-0000")
    raises_with(InputError, lambda: site_fold(ds, target[:1]), "both the target and the source")
    raises_with(InputError, lambda: cutoff_datasets((390, 5000)), "5000")
    raises_with(InputError, lambda: cutoff_datasets(("390",)), "390")


def test_cutoff_sensitivity_small(ds):
    dss = cutoff_datasets((330, 450))
    assert all(d.y.index.equals(ds.y.index) for d in dss.values())
    assert (dss[330].y <= ds.y).all() and (ds.y <= dss[450].y).all()  # later cutoff: late -> early only
    ch = label_changes({330: dss[330], 390: ds, 450: dss[450]})
    assert int(ch.loc[390, "late -> early"]) == int((ds.y - dss[330].y).sum()) and int(ch.loc[390, "early -> late"]) == 0
    f = cutoff_folds(dss, 5, 1)
    assert sorted(p for *_, te in f for p in te) == sorted(ds.cohort.index)
    assert cutoff_folds(dss, 5, 1) == f
    pred = cutoff_cv(dss, f[:2], ("Clinical-LogReg",), n_bootstraps=5, show_progress=False)
    t = cutoff_table(pred)
    assert sorted(t.cutoff) == [330, 450] and ((t.lo <= t.auroc) & (t.auroc <= t.hi)).all()
    raises_with(InputError, lambda: cutoff_cv(dss, f[:1], ("Clinical-LogReg",), cutoffs=(390,)), "390")
    raises_with(InputError, lambda: cutoff_cv(dss, f[:1], ("Lasso",)), "Lasso")


def test_source_agreement_counts_tcga_glass_label_disagreements():
    both, agree = source_agreement((300, 390, 500))
    # the 27 TCGA patients GLASS re-sequenced, each with a time to recurrence in both sources
    assert len(both) == 27 and both.index.str.startswith("TCGA-").all() and both.notna().all().all()
    for c in (300, 390, 500):
        assert agree.loc[c, "disagree"] == int(((both.ttr_tcga < c) != (both.ttr_glass < c)).sum())
    assert agree.loc[390, "disagree"] == 5  # about one in five, as the issue reported
    raises_with(InputError, lambda: source_agreement((10,)), "10")
