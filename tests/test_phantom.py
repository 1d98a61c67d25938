"""Integration and bad-input tests of the DSC phantom, its cohorts and the perfusion maps."""
import hashlib
import numpy as np
import pytest

from hiperf_nb.core import HiperfError, InputError, ShapeMismatchError, DataFormatError
from hiperf_nb.io import read_manifest, load_case, find_cases
from hiperf_nb.io import HABITATS
from hiperf_nb.dsc import perfusion_maps, osvd
from hiperf_nb.phantom import simulate_case, simulate_cohort, cohort_labels, Protocol, SITES


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "internal"
    cases = simulate_cohort(3, "internal", seed=5, out_dir=out, show_progress=False)
    return out, cases


def test_cohort_round_trip(cohort):
    out, cases = cohort
    m = read_manifest(out / "manifest.csv")
    assert [c.patient_id for c in m] == [c.patient_id for c in cases]
    for c in m:
        assert set(c.labels) == {"idh", "codel", "grade", "site"}
        L = load_case(c, require_structural=True)
        assert L.dsc.shape[3] == SITES["internal"].frames and L.tr_s == 1.5 and L.te_s == pytest.approx(0.03)
        assert L.mask.any() and L.brain_mask[L.mask].all()
        hab = (out / c.patient_id / "habitats.nii.gz")
        assert hab.exists()
    assert len(find_cases(out)) == 3  # folders are readable without the manifest too


def test_same_seed_identical_bytes(cohort, tmp_path):
    out, _ = cohort
    again = tmp_path / "again"
    simulate_cohort(3, "internal", seed=5, out_dir=again, show_progress=False)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files
    for f in files:
        assert hashlib.sha256((out / f).read_bytes()).digest() == hashlib.sha256((again / f).read_bytes()).digest(), f


def test_different_seed_differs():
    a = simulate_case(seed=1).loaded.dsc
    b = simulate_case(seed=2).loaded.dsc
    assert not np.array_equal(a, b)


def test_recovered_rcbv_tracks_truth():
    pc = simulate_case("wildtype", False, 4, site="external", seed=31)
    L = pc.loaded
    pm = perfusion_maps(L.dsc, L.brain_mask, L.tr_s, L.te_s, exclude=L.mask)  # automatic AIF and white matter
    for h in (1, 3, 4):
        m = pc.habitats == h
        if m.sum() >= 10:
            true, rec = pc.truth["rcbv"][m].mean(), pm["rcbv"][m].mean()
            assert abs(rec / true - 1) <= 0.25, (HABITATS[h], true, rec)


@pytest.mark.parametrize("kw, exc, words", [
    (dict(idh="IDH1"), InputError, ["idh"]),
    (dict(idh="mutant", codel=True, grade=4), InputError, ["grade"]),
    (dict(site="nowhere"), InputError, ["site"]),
    (dict(seed=1.5), InputError, ["seed"]),
])
def test_simulate_case_bad_input(kw, exc, words):
    with pytest.raises(exc) as e: simulate_case(**kw)
    assert all(w in str(e.value) for w in words)


def test_bad_protocol_and_cohort(tmp_path):
    with pytest.raises(InputError, match="flip_deg"): Protocol(flip_deg=120)
    with pytest.raises(InputError, match="frames"): Protocol(frames=10)
    with pytest.raises(InputError, match="n must be"): cohort_labels(-3)
    with pytest.raises(InputError, match="site"): simulate_cohort(2, "mars", out_dir=tmp_path / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"): simulate_cohort(1, out_dir=tmp_path / "file")


def test_perfusion_bad_input():
    dsc = np.ones((5, 5, 5, 30), np.float32)
    with pytest.raises(ShapeMismatchError, match="aif"):
        perfusion_maps(dsc, np.ones((5, 5, 5), bool), 1.5, 0.03, aif=np.ones(10))
    with pytest.raises(ShapeMismatchError, match="ref_mask"):
        perfusion_maps(dsc, np.ones((5, 5, 5), bool), 1.5, 0.03, ref_mask=np.ones((2, 2, 2), bool))
    bad = dsc.copy(); bad[0, 0, 0, 3] = np.nan
    with pytest.raises(DataFormatError, match="NaN"): perfusion_maps(bad, np.ones((5, 5, 5), bool), 1.5, 0.03)
    with pytest.raises(DataFormatError, match="aif"): osvd(np.ones((2, 30)), np.zeros(30), 1.5)
    with pytest.raises(HiperfError): perfusion_maps(dsc, np.ones((5, 5, 5), bool), 0, 0.03)


def test_cli_phantom(tmp_path):
    from hiperf_nb.cli import main
    out = tmp_path / "ext"
    assert main(["phantom", "--n", "1", "--site", "external", "--out", str(out)]) == 0
    m = read_manifest(out / "manifest.csv")
    assert m[0].labels["site"] == "external" and m[0].labels["grade"] == 4
    assert main(["phantom", "--n", "1", "--out", str(out)]) == 1  # a cohort is there and --overwrite was not given
    assert main(["phantom", "--n", "1", "--out", str(out), "--overwrite"]) == 0


def test_stream_equals_written_cohort(cohort):
    "`iter_cohort` (in memory, nothing written) gives exactly the cases `simulate_cohort` writes."
    from hiperf_nb.phantom import iter_cohort
    out, cases = cohort
    for pc, case in zip(iter_cohort(3, "internal", seed=5), cases):
        L = load_case(case)
        assert pc.loaded.patient_id == case.patient_id
        assert np.array_equal(pc.loaded.dsc, L.dsc) and np.array_equal(pc.loaded.mask, L.mask)


def test_rescan_changes_only_the_acquisition():
    "The same patient under the external protocol: same anatomy, habitats and physiology; other signal."
    a = simulate_case("mutant", False, 3, seed=8, zoom=2)
    b = simulate_case("mutant", False, 3, seed=8, zoom=2, protocol=SITES["external"].replace(orientation="RAS"))
    assert np.array_equal(a.habitats, b.habitats) and np.array_equal(a.truth["cbv"], b.truth["cbv"])
    assert a.loaded.dsc.shape[3] == 60 and b.loaded.dsc.shape[3] == 45


def test_partial_volume_and_noise_scale_with_voxel_size():
    "Boundary voxels are mixtures, and the thermal noise of the baseline falls as voxels grow (zoom 2: 4x the volume)."
    fine, coarse = simulate_case(seed=4, zoom=1), simulate_case(seed=4, zoom=2)
    fr = fine.truth["fractions"]
    assert ((fr.sum(-1) > 0) & (fr.max(-1) < 0.99)).mean() > 0
    def baseline_cv(pc):
        ref = pc.truth["ref_mask"]
        base = pc.loaded.dsc[ref][:, 2:12]
        return float((base.std(1) / base.mean(1)).mean())
    assert baseline_cv(coarse) < 0.7 * baseline_cv(fine)
    with pytest.raises(InputError, match="physio_noise"): Protocol(physio_noise=0.5)


def test_scenario_controls_keep_default_patients(tmp_path):
    "A positive-control scenario changes only where the label signal lives; the default patient is bit-identical."
    from hiperf_nb.phantom import SCENARIOS
    base = simulate_case("mutant", False, 2, seed=12, zoom=3)
    again = simulate_case("mutant", False, 2, seed=12, zoom=3, scenario="both")
    assert np.array_equal(base.loaded.dsc, again.loaded.dsc)
    for sc in SCENARIOS[1:]:
        pc = simulate_case("mutant", False, 2, seed=12, zoom=3, scenario=sc)
        assert pc.tumour["scenario"] == sc and pc.labels == base.labels
    with pytest.raises(InputError, match="scenario"): simulate_case(scenario="imaging")
    cases = simulate_cohort(2, "internal", seed=2, out_dir=tmp_path / "c", zoom=4, scenario="perfusion", show_progress=False)
    assert len(cases) == 2
