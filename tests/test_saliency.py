"""Saliency maps in the case's own space: NIfTI affine and shape against the case's DSC file on disk (RAS and LAS
grids), node peaks inside their nodes, world-space centroids, gradients through the model's input standardisation,
region statistics from graphs alone (voxel.truth), the flatness gate, rim ratios with CIs, the positive-control
check and the cohort run from files."""

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from hiperf_nb.core import (AffineMismatchError, DataFormatError, HiperfError, InputError, ManifestError, MissingFileError,
                            ShapeMismatchError, UnsupportedFormatError, seed_everything)
from hiperf_nb.core import test_raises as raises  # renamed so pytest does not collect it
from hiperf_nb.graphs import GraphConfig, HierGraph, build_hier_graph
from hiperf_nb.hgnn import HGNN, HGNN_VARIANTS, degree_histogram
from hiperf_nb.io import LoadedCase, load_case, write_manifest
from hiperf_nb.dsc import extract_tics
from hiperf_nb.io import HABITATS
from hiperf_nb.phantom import simulate_case
from hiperf_nb.cohorts import write_phantom_case
from hiperf_nb.io import voxel_spacing
from hiperf_nb.saliency import (FLAT_CV, STATS_LEVEL, STATS_METHOD, FlatSaliencyError, check_not_flat, cohort_saliency,
                                node_saliency, perfusion_signal, plot_saliency, region_saliency, rim_ratio_summary,
                                rim_saliency_ratio, saliency_flatness, saliency_table, saliency_volume, save_saliency,
                                signal_peak, truth_labels)
from hiperf_nb.vqvae import VQVAEConfig, encode_case, train_vqvae

matplotlib.use("Agg")

SPECS = [("wildtype", 0, 4, "internal"), ("mutant", 0, 3, "internal"), ("wildtype", 0, 4, "external"), ("mutant", 0, 4, "external")]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    "Four phantom cases written to disk (two RAS internal, two LAS external), loaded back, encoded and built into graphs."
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("saliency")
    # seeds: the external cases must be enhancing tumours (the rim ratio needs a rim in each group)
    pcs = [simulate_case(i, c, g, site=s, seed=20 + k if s == "internal" else 22 + 2 * k, zoom=3, patient_id=f"T{k}")
           for k, (i, c, g, s) in enumerate(SPECS)]
    cases = [write_phantom_case(pc, root / "cases" / pc.loaded.patient_id, truth=False) for pc in pcs]
    write_manifest(cases, root / "cases" / "manifest.csv")
    loaded = [load_case(c) for c in cases]
    vq, _ = train_vqvae([extract_tics(lc.dsc, lc.mask)[0] for lc in loaded], VQVAEConfig(d_enc=16, hidden=16, n_codes=4),
                        epochs=3, batch_size=256, lr=3e-3, show_progress=False)
    graphs = []
    for pc, lc in zip(pcs, loaded):
        codes, lat, coords = encode_case(vq, lc)
        g = build_hier_graph(lc, codes, lat, coords=coords, n_codes=4, config=GraphConfig(supervoxel_voxels=40))
        g.y = torch.tensor([int(pc.labels["idh"] == "mutant")])
        g["voxel"].truth = torch.as_tensor(pc.habitats[tuple(coords.T)], dtype=torch.int8)  # the graph builder's phantom contract
        graphs.append(g)
    yield {"root": root, "pcs": pcs, "cases": cases, "loaded": loaded, "graphs": graphs}
    torch.set_num_threads(threads)


def make_model(graphs, variant="full", out=2, steps=20):
    "A small HGNN fitted for a few full-batch steps."
    seed_everything(0)
    m = HGNN(graphs[0]["coarse"].x.shape[1], 4, out, degree_histogram(graphs, "coarse"), degree_histogram(graphs, "fine"),
             hidden_channels=16, dropout=0.1, variant=variant).fit_input_norm(graphs)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    b = Batch.from_data_list(graphs)
    for _ in range(steps):
        m.train(); o = m(b)
        loss = sum(F.cross_entropy(v, b.y) for v in o.values()) if isinstance(o, dict) else F.cross_entropy(o, b.y)
        opt.zero_grad(); loss.backward(); opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def model(cohort):
    return make_model(cohort["graphs"])


def node_map(g, level="coarse"):
    "Grid of node indices (-1 outside the tumour)."
    vc = g["voxel", "in", level].edge_index[1].numpy()
    out = np.full(tuple(g.shape[0].tolist()), -1); out[tuple(g["voxel"].pos.numpy().T)] = vc
    return out


def test_the_cases_have_several_habitats(cohort):
    assert sum(g.n_coarse for g in cohort["graphs"]) >= 12 and sum(g.n_coarse >= 2 for g in cohort["graphs"]) >= 3


@pytest.mark.parametrize("k", range(len(SPECS)))
def test_nifti_has_the_dsc_files_affine_and_shape(cohort, model, k, tmp_path):
    case, g = cohort["cases"][k], cohort["graphs"][k]
    sal = saliency_volume(g, node_saliency(model, g))
    out = save_saliency(sal, g, tmp_path / f"{g.patient_id}_saliency.nii.gz")
    back, dsc = nib.load(out), nib.load(case.dsc)
    assert back.shape == dsc.shape[:3]
    np.testing.assert_allclose(back.affine, dsc.affine, atol=1e-6)
    np.testing.assert_allclose(back.header.get_sform(), dsc.header.get_sform(), atol=1e-6)
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(dsc.affine) == (("R", "A", "S") if k < 2 else ("L", "A", "S"))
    np.testing.assert_allclose(back.get_fdata(), sal, atol=1e-6)
    tumour = np.asanyarray(nib.load(case.tumor_mask).dataobj) > 0
    data = back.get_fdata()
    assert data.max() == pytest.approx(1.0) and not (data[~tumour] > 0).any()
    # the same file from the LoadedCase or a bare affine
    a = nib.load(save_saliency(sal, cohort["loaded"][k], tmp_path / "a.nii")); b = nib.load(save_saliency(sal, dsc.affine, tmp_path / "b.nii"))
    np.testing.assert_allclose(a.affine, dsc.affine, atol=1e-6); np.testing.assert_allclose(b.affine, dsc.affine, atol=1e-6)


@pytest.mark.parametrize("k", range(len(SPECS)))
def test_one_hot_node_peak_lies_inside_the_node(cohort, k):
    g = cohort["graphs"][k]
    at = node_map(g)
    for n in range(g.n_coarse):
        one_hot = np.eye(g.n_coarse)[n]
        raw = saliency_volume(g, one_hot, sigma_mm=0)
        assert set(np.unique(at[raw == 1])) == {n}
        assert int((raw == 1).sum()) == int((at == n).sum()) and int((raw > 0).sum()) == int((at == n).sum())
        for sigma in (1.5, 3.0):
            for restrict in (True, False):
                v = saliency_volume(g, one_hot, sigma_mm=sigma, restrict=restrict)
                assert at[np.unravel_index(v.argmax(), v.shape)] == n, (g.patient_id, n, sigma, restrict)


def test_fine_level_maps_are_in_place_too(cohort):
    g = cohort["graphs"][2]
    at = node_map(g, "fine")
    for n in range(0, g.n_fine, max(1, g.n_fine // 10)):
        v = saliency_volume(g, np.eye(g.n_fine)[n], level="fine", sigma_mm=0)
        assert set(np.unique(at[v == 1])) == {n}


@pytest.mark.parametrize("k", [0, 2])
def test_world_centroid_of_a_node_map_is_the_nodes_centroid(cohort, k, tmp_path):
    "Through the NIfTI's own affine only: the unsmoothed one-hot map's world centroid is the node's `coarse.pos`."
    g = cohort["graphs"][k]
    for n in range(min(g.n_coarse, 5)):
        img = nib.load(save_saliency(saliency_volume(g, np.eye(g.n_coarse)[n], sigma_mm=0), g, tmp_path / f"n{n}.nii.gz"))
        ijk = np.argwhere(img.get_fdata() > 0)
        world = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
        np.testing.assert_allclose(world.mean(0), g["coarse"].pos[n].double().numpy(), atol=1e-3)


def test_smoothing_is_in_millimetres_per_axis():
    g = HierGraph()
    g["voxel"].pos = torch.tensor([[15, 15, 7]], dtype=torch.int32); g["voxel"].num_nodes = 1
    g["coarse"].x = torch.zeros(1, 1)
    g["voxel", "in", "coarse"].edge_index = torch.tensor([[0], [0]])
    aff = np.array([[0, -1.0, 0, 0], [2.5, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # rotated: axis 0 is 2.5 mm
    g.affine = torch.as_tensor(aff)[None]; g.shape = torch.tensor([[31, 31, 15]])
    np.testing.assert_allclose(voxel_spacing(aff), [2.5, 1.0, 1.0])
    psf = saliency_volume(g, [1.0], sigma_mm=2.0, restrict=False, normalize=False)
    assert psf.sum() == pytest.approx(1.0, abs=1e-3)  # the kernel is truncated at 4 sigma
    for axis, mm in enumerate((2.5, 1.0, 1.0)):
        prof = psf.sum(tuple(a for a in range(3) if a != axis))
        r = (np.arange(len(prof)) - prof.argmax()) * mm
        assert np.sqrt((prof * r ** 2).sum()) == pytest.approx(2.0, abs=0.1)


def test_restricted_smoothing_keeps_a_constant_map_constant(cohort):
    g = cohort["graphs"][0]
    at = node_map(g)
    flat = saliency_volume(g, np.ones(g.n_coarse), sigma_mm=4.0)
    np.testing.assert_allclose(flat[at >= 0], 1.0, atol=1e-6)
    assert flat[at < 0].max() == 0
    plain = saliency_volume(g, np.ones(g.n_coarse), sigma_mm=4.0, restrict=False)
    assert plain[at >= 0].min() < 0.9 and plain[at < 0].max() > 0


def test_node_saliency_every_variant_multitask_and_no_side_effects(cohort):
    graphs, g = cohort["graphs"], cohort["graphs"][1]
    for v in HGNN_VARIANTS:
        m = make_model(graphs, v, steps=2)
        level = "fine" if v == "sg" else "coarse"
        s = node_saliency(m, g, level=level)
        assert s.shape == (g[level].num_nodes,) and (s >= 0).all() and s.max() > 0
        m.train(); assert torch.equal(node_saliency(m, g, level=level), s) and m.training
    raises(InputError, lambda: node_saliency(m, g), "sg", "level='fine'")
    multi = make_model(graphs, out={"idh": 2, "grade": 3}, steps=2)
    raises(InputError, lambda: node_saliency(multi, g), "task", "grade", "idh")
    assert node_saliency(multi, g, task="grade", target=2).shape == (g.n_coarse,)
    x = g["coarse"].x.clone()
    m = make_model(graphs, steps=2); m.zero_grad(set_to_none=True)
    for method in ("grad", "contrastive", "grad_x_input"): node_saliency(m, g, method=method)
    assert torch.equal(g["coarse"].x, x) and not g["coarse"].x.requires_grad
    assert all(p.grad is None for p in m.parameters())
    assert (node_saliency(m, g, method="contrastive") <= node_saliency(m, g) + 1e-7).all()
    raises(InputError, lambda: node_saliency(m, Batch.from_data_list(graphs[:2])), "one graph")
    raises(InputError, lambda: node_saliency(m, g, target=2), "T1", "target")


def test_node_saliency_matches_autograd_through_the_input_standardisation(cohort, model):
    "Scores are gradients w.r.t. z = (x - mean) / std, the features the network sees: d/dz = std * d/dx, and z = x - mean over std."
    g = cohort["graphs"][0]
    mean, std = model.norm_coarse.mean, model.norm_coarse.std
    assert (std != 1).any() and (mean != 0).any()  # fitted, so raw and standardised scores differ
    gx = g.clone(); gx["coarse"].x = gx["coarse"].x.clone().requires_grad_(True)
    logits = model(Batch.from_data_list([gx]))[0]
    grad, = torch.autograd.grad(logits[int(logits.argmax())], gx["coarse"].x)
    torch.testing.assert_close(node_saliency(model, g), (grad * std).norm(dim=1), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(node_saliency(model, g, method="grad_x_input"), (grad * (g["coarse"].x - mean)).sum(1).abs(), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(node_saliency(model, g), grad.norm(dim=1), rtol=1e-3)
    f = cohort["graphs"][1]  # the fine level goes through norm_fine the same way
    fx = f.clone(); fx["fine"].x = fx["fine"].x.clone().requires_grad_(True)
    out = model(Batch.from_data_list([fx]))[0]
    gf, = torch.autograd.grad(out[int(out.argmax())], fx["fine"].x)
    torch.testing.assert_close(node_saliency(model, f, level="fine"), (gf * model.norm_fine.std).norm(dim=1), rtol=1e-4, atol=1e-8)


def test_region_saliency_and_its_errors(cohort, model, tmp_path):
    pc, g, case = cohort["pcs"][2], cohort["graphs"][2], cohort["cases"][2]
    sal = saliency_volume(g, node_saliency(model, g))
    hab_file = case.dsc.parent / "habitats.nii.gz"
    df = region_saliency(sal, hab_file, HABITATS, affine=g.affine[0].numpy())
    assert list(df.index) == [1, 2, 3, 4] and list(df.name) == ["enhancing", "necrosis", "non_enhancing", "edema"]
    for k, row in df.iterrows():
        sel = pc.habitats == k
        assert row.n_voxels == int(sel.sum())
        if sel.any(): assert row["mean"] == pytest.approx(float(sal[sel].mean()), rel=1e-5)
    assert df.share.sum() == pytest.approx(1.0, abs=1e-6)
    raises(ShapeMismatchError, lambda: region_saliency(sal[:, :, :-1], hab_file), "habitats.nii.gz")
    raises(ShapeMismatchError, lambda: region_saliency(sal, pc.habitats[:-1], source="patient T2 habitats"), "T2")
    raises(AffineMismatchError, lambda: region_saliency(sal, hab_file, affine=np.eye(4)), "habitats.nii.gz")
    raises(DataFormatError, lambda: region_saliency(sal, pc.habitats * 0.5), "integers")
    raises(MissingFileError, lambda: region_saliency(sal, tmp_path / "none.nii.gz"), "none.nii.gz")
    user = np.zeros(sal.shape, np.int16); user[sal > 0.5] = 7  # a user's own label map, no names
    u = region_saliency(sal, user)
    assert list(u.index) == [7] and u.loc[7, "name"] == "label_7" and u.loc[7, "mean"] > 0.5


def test_save_saliency_errors(cohort, tmp_path):
    g = cohort["graphs"][0]
    sal = saliency_volume(g, np.ones(g.n_coarse))
    raises(ShapeMismatchError, lambda: save_saliency(sal[1:], g, tmp_path / "x.nii.gz"), "T0", "x.nii.gz")
    raises(UnsupportedFormatError, lambda: save_saliency(sal, g, tmp_path / "x.nrrd"), "x.nrrd")
    raises(ShapeMismatchError, lambda: saliency_volume(g, np.ones(g.n_coarse - 1)), "T0")


def test_plot_saliency(cohort, model):
    pc, g = cohort["pcs"][0], cohort["graphs"][0]
    sal = saliency_volume(g, node_saliency(model, g))
    fig = plot_saliency(pc.loaded, sal, labels=pc.habitats, margin_mm=20)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 3
    lc = pc.loaded
    struct_only = LoadedCase(lc.patient_id, None, lc.structural, lc.mask, lc.affine, lc.spacing_mm)
    assert len(plot_saliency(struct_only, sal, slice_index=3).axes) == 2
    raises(InputError, lambda: plot_saliency(lc, sal, slice_index=99), "slice 99")
    matplotlib.pyplot.close("all")


def test_rim_ratio():
    t = pd.DataFrame({"group": ["wildtype"] * 3 + ["mutant"] * 3, "mean_enhancing": [0.6, 0.9, 0.9, 0.05, 0.1, np.nan],
                      "rel_enhancing": [2.0, 2.0, 2.0, 0.5, 0.5, np.nan]})
    r = rim_saliency_ratio(t)
    assert r["ratio"] == pytest.approx(0.8 / 0.075) and r["n_mutant_without_enhancing"] == 1 and 0 < r["p_value"] <= 1
    assert rim_saliency_ratio(t, missing="zero")["ratio"] == pytest.approx(0.8 / 0.05)
    assert rim_saliency_ratio(t, statistic="rel")["ratio"] == pytest.approx(4.0)
    assert r["lo"] <= r["ratio"] <= r["hi"] and r["n_boot"] == 1000
    s = rim_ratio_summary(t, n_boot=200)
    assert len(s) == 4 and s.loc[("rel", "exclude"), "ratio"] == pytest.approx(4.0)
    assert s.loc[("rel", "exclude"), "lo"] == pytest.approx(4.0) == s.loc[("rel", "exclude"), "hi"]  # no spread, no interval
    raises(InputError, lambda: rim_saliency_ratio(t, numerator="IDHwt"), "IDHwt")
    raises(InputError, lambda: rim_saliency_ratio(t, missing="drop"), "missing")


def test_cohort_saliency_from_files(cohort, model, tmp_path):
    root, graphs = cohort["root"], cohort["graphs"]
    for g in graphs: g.save(tmp_path / "graphs" / f"{g.patient_id}.pt")
    torch.save({"kind": model.variant, "hparams": model.hparams, "state_dict": model.state_dict(), "meta": {}}, tmp_path / "m.pt")
    manifest = root / "cases" / "manifest.csv"
    table, summary = cohort_saliency(tmp_path / "m.pt", tmp_path / "graphs", manifest, out_dir=tmp_path / "out")
    direct = saliency_table(model, graphs, [pc.habitats for pc in cohort["pcs"]], [pc.labels["idh"] for pc in cohort["pcs"]])
    np.testing.assert_allclose(table.filter(like="mean_").fillna(-1), direct.filter(like="mean_").fillna(-1), atol=1e-6)
    assert table.group.tolist() == ["wildtype", "mutant", "wildtype", "mutant"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == [f"T{k}_saliency.nii.gz" for k in range(4)]
    assert (tmp_path / "out" / "saliency_table.csv").exists() and (tmp_path / "out" / "rim_ratio.csv").exists()
    assert np.isfinite(summary.loc[("mean", "exclude"), "ratio"])
    assert len(cohort_saliency(model, tmp_path / "graphs", manifest, patients=["T0", "T3"])[0]) == 2
    from_truth, _ = cohort_saliency(model, tmp_path / "graphs", manifest, label_map=None)  # graphs alone: their voxel.truth
    np.testing.assert_allclose(from_truth.filter(like="mean_").fillna(-1), table.filter(like="mean_").fillna(-1), atol=1e-9)
    raises(ManifestError, lambda: cohort_saliency(model, tmp_path / "graphs", manifest, patients=["NOPE"]), "NOPE")
    raises(MissingFileError, lambda: cohort_saliency(model, tmp_path / "graphs", manifest, label_map="labels.nii.gz"), "labels.nii.gz", "T0")
    raises(MissingFileError, lambda: cohort_saliency(model, tmp_path / "nographs", manifest), "T0.pt")
    wrong = tmp_path / "wrong.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), wrong)
    raises(ShapeMismatchError, lambda: cohort_saliency(model, tmp_path / "graphs", manifest, label_map=str(wrong)), "wrong.nii.gz", "T0")


def test_truth_labels_rebuild_the_habitat_map(cohort):
    for pc, g, case in zip(cohort["pcs"], cohort["graphs"], cohort["cases"]):
        on_disk = np.asanyarray(nib.load(case.dsc.parent / "habitats.nii.gz").dataobj)
        np.testing.assert_array_equal(truth_labels(g), on_disk)  # RAS and LAS cases alike
    bare = cohort["graphs"][0].clone(); del bare["voxel"].truth
    raises(DataFormatError, lambda: truth_labels(bare), "T0", "voxel.truth")
    neg = cohort["graphs"][0].clone(); neg["voxel"].truth = -neg["voxel"].truth
    raises(DataFormatError, lambda: truth_labels(neg), "T0", ">= 0")


def test_saliency_table_from_graphs_alone(cohort, model):
    pcs, graphs = cohort["pcs"], cohort["graphs"]
    t = saliency_table(model, graphs, groups=[pc.labels["idh"] for pc in pcs])
    maps = saliency_table(model, graphs, [pc.habitats for pc in pcs])
    np.testing.assert_allclose(t.filter(like="mean_").fillna(-1), maps.filter(like="mean_").fillna(-1), atol=1e-9)
    assert (t.level == STATS_LEVEL).all() and (t.method == STATS_METHOD).all()
    assert (t.n_coarse == [g.n_coarse for g in graphs]).all() and (t.n_distinct <= t.n_nodes).all()
    for k, g in enumerate(graphs):  # the flatness columns are those of the map the statistics use
        vol = saliency_volume(g, node_saliency(model, g, method=STATS_METHOD))
        inside = vol[tuple(g["voxel"].pos.numpy().T)]
        assert t.cv[k] == pytest.approx(inside.std() / inside.mean(), rel=1e-5)
        assert t.rel_enhancing[k] == pytest.approx(t.mean_enhancing[k] / inside.mean(), rel=1e-5) or np.isnan(t.rel_enhancing[k])
    bare = graphs[0].clone(); del bare["voxel"].truth
    raises(DataFormatError, lambda: saliency_table(model, [bare]), "T0", "voxel.truth")


def one_node_graph(g):
    "The same tumour as a single habitat (one coarse node, no coarse edges), a graph the model still runs on."
    one = g.clone()
    c, cc = one["coarse"], one["coarse", "near", "coarse"]
    c.x, c.pos, c.code = g["coarse"].x.mean(0, keepdim=True), g["coarse"].pos.mean(0, keepdim=True), g["coarse"].code[:1]
    cc.edge_index, cc.edge_attr = cc.edge_index[:, :0], cc.edge_attr[:0]
    for et in (("fine", "in", "coarse"), ("voxel", "in", "coarse")): one[et].edge_index[1] = 0
    one.patient_id = "ONE"
    return one


def test_flatness_gate_fails_a_one_node_or_flat_map_and_passes_a_real_one(cohort, model):
    g = max(cohort["graphs"], key=lambda g: g.n_coarse)
    assert g.n_coarse >= 3
    one = one_node_graph(g)
    f = saliency_flatness(one, [0.4])
    assert (f["n_coarse"], f["n_distinct"], f["flat"]) == (1, 1, True) and f["cv"] == pytest.approx(0.0, abs=1e-6)
    raises(FlatSaliencyError, lambda: check_not_flat(one, [0.4]), "ONE", "1 coarse node")
    raises(FlatSaliencyError, lambda: check_not_flat(g, np.full(g.n_coarse, 0.3)), g.patient_id, "constant node scores")
    raises(FlatSaliencyError, lambda: check_not_flat(g, np.zeros(g.n_coarse)), g.patient_id, "constant")
    near = 1 + FLAT_CV / 10 * np.random.default_rng(0).random(g.n_coarse)
    raises(FlatSaliencyError, lambda: check_not_flat(g, near), g.patient_id, "coefficient of variation")
    assert issubclass(FlatSaliencyError, HiperfError)
    real = check_not_flat(g, node_saliency(model, g, method=STATS_METHOD))
    assert not real["flat"] and real["cv"] > FLAT_CV and real["n_distinct"] == g.n_coarse and real["n_coarse"] == g.n_coarse
    # a one-node graph's row in the table is marked, and the ratio leaves it out
    t = saliency_table(model, [g, one], [truth_labels(g)] * 2, groups=["wildtype", "mutant"], method="grad")
    assert t.flat.tolist() == [False, True] and t.n_coarse.tolist() == [g.n_coarse, 1]
    r = rim_saliency_ratio(t, n_boot=50)
    assert r["n_mutant_one_node"] == 1 and r["n_mutant_used"] == 0 and np.isnan(r["ratio"])


def test_rim_ratio_leaves_out_one_node_and_flat_cases_and_counts_them():
    rng = np.random.default_rng(1)
    n = 40
    t = pd.DataFrame({"group": ["wildtype"] * n + ["mutant"] * n, "n_coarse": rng.integers(2, 9, 2 * n), "flat": False,
                      "mean_enhancing": np.r_[rng.uniform(0.5, 0.7, n), rng.uniform(0.05, 0.15, n)]})
    t["rel_enhancing"] = t.mean_enhancing * 2
    base = rim_saliency_ratio(t)
    assert base["ratio"] == pytest.approx(t.mean_enhancing[:n].mean() / t.mean_enhancing[n:].mean())
    assert base["lo"] < base["ratio"] < base["hi"] and base["hi"] - base["lo"] < 0.5 * base["ratio"] and base["p_value"] < 1e-6
    junk = pd.DataFrame({"group": ["mutant"] * 3 + ["wildtype"] * 2, "n_coarse": [1, 1, 5, 1, 6], "flat": [True, True, True, True, True],
                         "mean_enhancing": [1.0] * 5, "rel_enhancing": [1.0] * 5})
    r = rim_saliency_ratio(pd.concat([t, junk], ignore_index=True))
    assert r["ratio"] == pytest.approx(base["ratio"]) and (r["lo"], r["hi"]) == pytest.approx((base["lo"], base["hi"]))
    assert (r["n_mutant_one_node"], r["n_mutant_flat"], r["n_wildtype_one_node"], r["n_wildtype_flat"]) == (2, 1, 1, 1)
    assert (r["n_mutant"], r["n_mutant_used"]) == (n + 3, n)
    s = rim_ratio_summary(pd.concat([t, junk], ignore_index=True), n_boot=100)
    assert list(s.index) == [("mean", "exclude"), ("mean", "zero"), ("rel", "exclude"), ("rel", "zero")]
    assert {"ratio", "lo", "hi", "p_value", "n_wildtype_one_node", "n_mutant_flat"} <= set(s.columns)


def test_perfusion_signal_comes_from_the_priors():
    ps = perfusion_signal()
    assert list(ps.index) == [1, 2, 3, 4] and ps.signal.sum() == 1
    assert ps.query("signal").name.iloc[0] == "enhancing" and ps.loc[1, "d"] > 1
    # a prior in which the necrosis separates the classes moves the signal there
    from hiperf_nb.phantom import RCBV_PRIORS
    flipped = {k: {**v, 2: (v[2][0] * (3 if k[0] == "gbm" else 1), v[2][1])} for k, v in RCBV_PRIORS.items()}
    assert perfusion_signal(flipped).query("signal").name.iloc[0] == "necrosis"
    raises(InputError, lambda: perfusion_signal(mix={("wildtype", 0, 4): 10}), "mutant")


class HabitatReader(torch.nn.Module):
    "Logit = +/- the mean summed features of the coarse nodes whose majority true habitat is `habitat`."
    def __init__(self, habitat):
        super().__init__(); self.habitat = habitat; self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        node, k = batch["voxel", "in", "coarse"].edge_index[1], len(HABITATS)
        votes = torch.zeros(batch["coarse"].num_nodes, k).index_add_(0, node, F.one_hot(batch["voxel"].truth.long(), k).float())
        keep = (votes.argmax(1) == self.habitat).float()
        y = self.scale * (keep * batch["coarse"].x.sum(1)).sum() / keep.sum().clamp(min=1)
        return torch.stack([-y, y])[None]


@pytest.mark.parametrize("habitat", [1, 4])
def test_signal_peak_passes_a_model_that_reads_the_habitat_and_fails_one_that_does_not(cohort, habitat):
    graphs, groups = cohort["graphs"], [pc.labels["idh"] for pc in cohort["pcs"]]
    t = saliency_table(HabitatReader(habitat), graphs, groups=groups, method="grad", sigma_mm=0)
    case, summary = signal_peak(t, "enhancing", n_boot=200)
    used = case[case.excluded == ""]
    assert len(used) >= 2 and summary.loc["n_used", "value"] == len(used)
    np.testing.assert_allclose(used.enrichment, t.rel_enhancing[used.index], rtol=1e-6)
    if habitat == 1: assert used.peaks_in_region.all() and (used.mass_share > used.volume_share).all() and summary.loc["enrichment", "lo"] > 1
    else: assert not used.peaks_in_region.any() and (used.mass_share < used.volume_share).all() and summary.loc["enrichment", "hi"] < 1
    assert summary.loc["chance", "value"] == pytest.approx((1 / used.n_habitats).mean())
    raises(InputError, lambda: signal_peak(t, "rim"), "rim")


def test_signal_peak_reports_left_out_cases(cohort, model):
    g = cohort["graphs"][0]
    t = saliency_table(model, [g, one_node_graph(g)], [truth_labels(g)] * 2)
    case, summary = signal_peak(t, "necrosis" if (truth_labels(g) == 2).any() else "edema", n_boot=50)
    assert case.excluded.tolist()[1] == "one coarse node" and summary.loc["n_one_node", "value"] == 1
    assert summary.loc["n_cases", "value"] == 2 and "group" not in case
