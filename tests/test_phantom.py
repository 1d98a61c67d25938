"""Integration and bad-input tests of the DSC phantom, its two sites, same-patient re-scans, its cohorts and the perfusion maps."""
import hashlib
import json
import numpy as np
import pytest
from scipy import special

from hiperf_nb.core import HiperfError, InputError, ShapeMismatchError, DataFormatError
from hiperf_nb.io import read_manifest, load_case, find_cases
from hiperf_nb.io import HABITATS
from hiperf_nb.dsc import perfusion_maps, osvd, psr, delta_r2s, baseline_window, real_tissue_curves
from hiperf_nb.phantom import (simulate_case, rescan, patient_anatomy, brain_template, site_aif, _coil_sum, Protocol, SiteConfig,
                               Geometry, SITES, SCENARIOS)
from hiperf_nb.cohorts import simulate_cohort, cohort_labels, iter_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "internal"
    cases = simulate_cohort(3, "internal", seed=5, out_dir=out, show_progress=False)
    return out, cases


def case_digest(pc) -> str:
    "Digest of everything a simulated patient holds: raw int16 images, ground truth, tumour summary, labels, id and affine."
    h = hashlib.sha256()
    for part in (pc._raw, pc.truth):
        for k in sorted(part): h.update(k.encode()); h.update(np.ascontiguousarray(part[k]).tobytes())
    h.update(json.dumps([pc.tumour, pc.labels, pc.loaded.patient_id], sort_keys=True).encode()); h.update(pc.loaded.affine.tobytes())
    return h.hexdigest()[:16]


def test_internal_site_is_bit_identical():
    "Digests taken before the external site was redesigned (numpy 2 / scipy 1.17 on x86-64): the internal cohort is unchanged."
    I = SITES["internal"].protocol
    assert case_digest(simulate_case("wildtype", False, 4, seed=3)) == "bf0868bbc8422318"
    assert case_digest(simulate_case("mutant", True, 2, seed=4, zoom=2)) == "2c388479185ce445"
    assert case_digest(simulate_case("mutant", False, 3, seed=8, zoom=3, scenario="perfusion")) == "dfa80a167ff0070e"
    assert case_digest(simulate_case("mutant", False, 4, seed=12, zoom=2, acquisition=I.replace(aif="gamma"))) == "c6011309a608e7bd"
    assert case_digest(simulate_case(seed=21, zoom=3, acquisition=I.replace(preload=False, frames=80))) == "09bd0dc47ece59ca"
    assert [case_digest(pc) for pc in iter_cohort(3, "internal", seed=5, zoom=4)] == ["3aec9592db48432c", "fc239067db4ab777", "0ca9bcab589adba8"]


def test_cohort_round_trip(cohort):
    out, cases = cohort
    m = read_manifest(out / "manifest.csv")
    assert [c.patient_id for c in m] == [c.patient_id for c in cases]
    for c in m:
        assert set(c.labels) == {"idh", "codel", "grade", "site"}
        L = load_case(c, require_structural=True)
        assert L.dsc.shape[3] == SITES["internal"].protocol.frames and L.tr_s == 1.5 and L.te_s == pytest.approx(0.03)
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
    a = simulate_case(seed=1, zoom=2).loaded.dsc
    b = simulate_case(seed=2, zoom=2).loaded.dsc
    assert not np.array_equal(a, b)


def test_recovered_rcbv_tracks_truth():
    "The external site (1.5 T, 8-channel noise floor, its own AIF and brain): rCBV from `perfusion_maps` with automatic AIF and white matter."
    pc = simulate_case("wildtype", False, 4, site="external", seed=31)
    L = pc.loaded
    pm = perfusion_maps(L.dsc, L.brain_mask, L.tr_s, L.te_s, exclude=L.mask)  # automatic AIF and white matter
    for h in (1, 3, 4):
        m = pc.habitats == h
        if m.sum() >= 10:
            true, rec = pc.truth["rcbv"][m].mean(), pm["rcbv"][m].mean()
            assert abs(rec / true - 1) <= 0.25, (HABITATS[h], true, rec)


def test_rescan_changes_only_the_acquisition():
    "The same patient under the other site's acquisition: same truth and voxel grid, other signal; an internal re-scan is the patient."
    ext = simulate_case("mutant", False, 3, site="external", seed=8, zoom=3)
    b = rescan(ext, "internal")
    for k in ("cbv", "cbf", "ktrans", "rcbv", "fractions", "tissue", "ref_mask"): assert np.array_equal(ext.truth[k], b.truth[k]), k
    assert np.array_equal(ext.habitats, b.habitats) and np.array_equal(ext.loaded.affine, b.loaded.affine)
    assert ext.loaded.dsc.shape[3] == 45 and b.loaded.dsc.shape[3] == 60 and b.protocol.aif == "toolbox" and b.protocol.field_t == 3.0
    assert ext.loaded.spacing_mm[2] == b.loaded.spacing_mm[2] == 5.5             # the patient's own template and grid
    assert not np.array_equal(ext.loaded.structural, b.loaded.structural)        # another scanner's noise
    pc = simulate_case("mutant", False, 3, seed=8, zoom=3)
    again = rescan(pc, "internal")
    for k in pc._raw: assert np.array_equal(pc._raw[k], again._raw[k]), k
    assert case_digest(again) == case_digest(pc)
    with pytest.raises(InputError, match="site"): rescan(pc, "mars")


def test_external_aif_is_another_real_curve():
    "The BNI exam's measured AIF: a first pass about twice as wide and a higher recirculation plateau than the toolbox AIF."
    t = np.arange(0, 170, 0.1)
    a, b = (site_aif(Protocol(aif=k), 20.0)(t) for k in ("toolbox", "bni"))
    assert a[t < 18].max() == 0 and b[t < 18].max() == 0                      # nothing before the bolus arrives (at 20 s)
    fwhm = lambda c: (c >= c.max() / 2).sum() * 0.1
    assert fwhm(b) > 1.5 * fwhm(a)
    late = np.searchsorted(t, 80.0)
    assert b[late] / b.max() > 2 * a[late] / a.max()
    assert SITES["external"].protocol.aif == "bni" and SITES["internal"].protocol.aif == "toolbox"


def wm_peak(pc) -> float:
    s = pc.loaded.dsc[pc.truth["ref_mask"]].mean(0)
    return float(delta_r2s(s, pc.loaded.te_s, baseline_window(s)).max())


def test_field_strength_scales_susceptibility():
    "The same external patient at 3 T: white matter's first-pass Delta-R2* doubles (relaxivity proportional to B0)."
    pc = simulate_case("wildtype", False, 4, site="external", seed=5, zoom=3)
    assert SITES["external"].protocol.field_t == 1.5
    assert wm_peak(rescan(pc, SITES["external"].protocol.replace(field_t=3.0))) / wm_peak(pc) == pytest.approx(2.0, rel=0.1)


def test_preload_and_low_flip_suppress_t1_leakage():
    "Rim signal recovery: a pre-load (internal) and a low flip without pre-load (external) both keep it below the unsuppressed scan's."
    gbm = simulate_case("wildtype", False, 4, seed=21, zoom=3)
    I, E = SITES["internal"].protocol, SITES["external"].protocol
    rim = lambda pc: psr(pc.loaded.dsc[pc.habitats == 1].mean(0), tail=10)
    assert (I.preload, E.preload, E.flip_deg) == (True, False, 30.0)
    assert rim(rescan(gbm, I.replace(preload=False))) > rim(gbm) + 0.02
    assert rim(rescan(gbm, E.replace(flip_deg=90.0))) > rim(rescan(gbm, E)) + 0.05


def test_geometry_priors_differ():
    "The anatomy stream of the same labels: external necrotic tumours hold more oedema and necrosis, and more lobes."
    tum = {s: [patient_anatomy("wildtype", False, 4, seed=300 + i, zoom=4, site=s) for i in range(12)] for s in SITES}
    def mean(site, f): return np.mean([f(fr, t) for _, _, _, fr, t in tum[site] if t["phenotype"] == "necrotic"])
    oed, nec = (lambda fr, t: t["oedema_ratio"]), (lambda fr, t: fr[..., 1].sum() / fr[..., :3].sum())
    assert mean("external", oed) > mean("internal", oed) + 0.2                  # expected: 1.9 against 1.3
    assert mean("external", nec) > 1.3 * mean("internal", nec)
    assert np.mean([t["lobes"] for *_, t in tum["external"]]) > np.mean([t["lobes"] for *_, t in tum["internal"]])
    with pytest.raises(InputError, match="lobes"): Geometry(lobes=(0.5, 0.6))


def test_noise_model_differs():
    "External: lower thermal SNR and physiological noise as the protocol says, a stronger bias field, and a sum-of-squares floor."
    zoom = 2
    pc = simulate_case("wildtype", False, 4, seed=5, zoom=zoom)
    ext = rescan(pc, "external")
    def noise(p):
        b = p.loaded.dsc[p.truth["ref_mask"]][:, 2:10]
        return float((b.std(1) / b.mean(1)).mean()), float(np.log(b.mean(1)).std())
    (cv_i, bias_i), (cv_e, bias_e) = noise(pc), noise(ext)
    I, E = SITES["internal"].protocol, SITES["external"].protocol
    expected = np.hypot(1 / (E.snr * zoom ** 2), E.physio_noise) / np.hypot(1 / (I.snr * zoom ** 2), I.physio_noise)
    assert cv_e / cv_i == pytest.approx(expected, rel=0.25)
    assert bias_e > 1.4 * bias_i
    rng = np.random.default_rng(0)
    z = np.hypot(rng.standard_normal(100_000), rng.standard_normal(100_000))
    assert _coil_sum(z, 1.0, 1, rng) is z
    assert _coil_sum(z, 1.0, 8, rng).mean() == pytest.approx(np.sqrt(2) * special.gamma(8.5) / special.gamma(8), rel=0.01)  # chi, 16 dof


def test_templates_differ():
    "Each site's own real brain on its own grid, arterial voxels inside it."
    grids = {}
    for name, cfg in SITES.items():
        brain, artery, sp = brain_template(1, cfg.template)
        assert artery.any() and brain[artery].all()
        grids[name] = (brain.shape, sp, brain.sum() * np.prod(sp) / 1000)
    assert grids["internal"][:2] == ((84, 96, 20), (1.8, 1.8, 5.0))
    assert grids["external"][:2] == ((86, 96, 20), (1.796875, 1.796875, 5.5))
    assert simulate_case("mutant", True, 2, site="external", seed=1, zoom=4).loaded.dsc.shape[:3] == brain_template(4, "tcga-fg-6692")[0].shape


def test_external_labels_do_not_follow_grade():
    "500 external patients: >= 100 IDH-mutant, of grade 4 and lower; IDH-wildtype lower grades too; every grade holds both classes."
    lab = cohort_labels(500, "external")
    mut = [g for i, c, g in lab if i == "mutant"]
    assert len(mut) >= 100 and mut.count(4) >= 15 and sum(g < 4 for g in mut) >= 100
    assert sum(g < 4 for i, c, g in lab if i == "wildtype") >= 30
    for g in (2, 3, 4): assert {i for i, c, gg in lab if gg == g} == {"wildtype", "mutant"}
    assert simulate_case("wildtype", False, 3, site="external", seed=2, zoom=4).labels["grade"] == 3
    with pytest.raises(InputError, match="histological"): simulate_case("wildtype", False, 3, site="internal")


def aligned(y, before=12, after=45):
    y = np.asarray(y, float); i = int(np.argmin(y))
    w = np.pad(y, (before, after), mode="edge")[i: i + before + after]
    return (w - w.mean()) / w.std()


def test_external_patients_look_real():
    "Realism, small: external patients scanned like the real exam (its protocol and own AIF) put each real ROI curve nearer its tissue."
    rc = real_tissue_curves()
    real = {t: aligned(rc[t][1]) for t in ("tumor", "nawm")}
    prot = Protocol(preload=False, frames=80, flip_deg=rc["flip_deg"], te_s=rc["te_s"][1], tr_s=rc["tr_s"], aif="bni")
    sims = {"tumor": [], "nawm": []}
    for k, lab in enumerate([("wildtype", 0, 4), ("wildtype", 0, 3), ("mutant", 0, 4)] * 3):
        p = simulate_case(*lab, site="external", seed=700 + k, zoom=3, acquisition=prot)
        if (p.habitats == 1).sum() < 3: continue
        sims["tumor"].append(aligned(p.loaded.dsc[p.habitats == 1].mean(0)))
        sims["nawm"].append(aligned(p.loaded.dsc[p.truth["ref_mask"]].mean(0)))
    assert len(sims["tumor"]) >= 4
    for tissue, other in (("tumor", "nawm"), ("nawm", "tumor")):
        d = lambda t: np.median(np.linalg.norm(np.array(sims[t]) - real[tissue], axis=1))
        assert d(tissue) < d(other), tissue


@pytest.mark.parametrize("kw, exc, words", [
    (dict(idh="IDH1"), InputError, ["idh"]),
    (dict(idh="mutant", codel=True, grade=4), InputError, ["grade"]),
    (dict(site="nowhere"), InputError, ["site"]),
    (dict(seed=1.5), InputError, ["seed"]),
    (dict(acquisition="mars"), InputError, ["site"]),
])
def test_simulate_case_bad_input(kw, exc, words):
    with pytest.raises(exc) as e: simulate_case(**kw)
    assert all(w in str(e.value) for w in words)


def test_bad_protocol_site_and_cohort(tmp_path):
    with pytest.raises(InputError, match="flip_deg"): Protocol(flip_deg=120)
    with pytest.raises(InputError, match="frames"): Protocol(frames=10)
    with pytest.raises(InputError, match="aif"): Protocol(aif="parker")
    with pytest.raises(InputError, match="coils"): Protocol(coils=2.5)
    with pytest.raises(InputError, match="template"): SiteConfig(template="mni152")
    with pytest.raises(InputError, match="grading"): SiteConfig(grading="who2016")
    with pytest.raises(InputError, match="IDH-wildtype"): SiteConfig(mix={("wildtype", 0, 3): 5})
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
    assert main(["phantom", "--n", "1", "--site", "external", "--zoom", "4", "--out", str(out)]) == 0
    m = read_manifest(out / "manifest.csv")
    assert m[0].labels["site"] == "external" and m[0].labels["grade"] == 4
    assert main(["phantom", "--n", "1", "--zoom", "4", "--out", str(out)]) == 1  # a cohort is there and --overwrite was not given
    assert main(["phantom", "--n", "1", "--zoom", "4", "--out", str(out), "--overwrite"]) == 0


def test_stream_equals_written_cohort(cohort):
    "`iter_cohort` (in memory, nothing written) gives exactly the cases `simulate_cohort` writes."
    out, cases = cohort
    for pc, case in zip(iter_cohort(3, "internal", seed=5), cases):
        L = load_case(case)
        assert pc.loaded.patient_id == case.patient_id
        assert np.array_equal(pc.loaded.dsc, L.dsc) and np.array_equal(pc.loaded.mask, L.mask)


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
    base = simulate_case("mutant", False, 2, seed=12, zoom=3)
    again = simulate_case("mutant", False, 2, seed=12, zoom=3, scenario="both")
    assert np.array_equal(base.loaded.dsc, again.loaded.dsc)
    for sc in SCENARIOS[1:]:
        pc = simulate_case("mutant", False, 2, seed=12, zoom=3, scenario=sc)
        assert pc.tumour["scenario"] == sc and pc.labels == base.labels
    with pytest.raises(InputError, match="scenario"): simulate_case(scenario="imaging")
    cases = simulate_cohort(2, "internal", seed=2, out_dir=tmp_path / "c", zoom=4, scenario="perfusion", show_progress=False)
    assert len(cases) == 2
