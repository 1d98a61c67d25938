"""Integration and bad-input tests of case I/O and `hiperf info`, through the library and the installed CLI."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import nibabel.testing
import nrrd
import numpy as np
import pytest

from hiperf_nb.core import (HiperfError, MissingFileError, UnsupportedFormatError, ManifestError, DataFormatError,
                            ShapeMismatchError, AffineMismatchError, NonFiniteError, data_path)
from hiperf_nb.io import Case, load_case, read_manifest, write_manifest, write_test_case, MANIFEST_REQUIRED
from hiperf_nb.dsc import extract_tics

NIB_DATA = Path(nibabel.testing.data_path)
HIPERF = [str(Path(sys.executable).with_name("hiperf"))]  # the installed console script


def hiperf(*args):
    return subprocess.run(HIPERF + [str(a) for a in args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def case(tmp_path):
    return write_test_case(tmp_path / "P001", patient_id="P001")


def save(arr, like, path, affine=None):
    nib.save(nib.Nifti1Image(arr, nib.load(like).affine if affine is None else affine), path)
    return path


# ---- the installed command --------------------------------------------------------------------------

def test_cli_help_version_and_usage():
    r = hiperf("--help"); assert r.returncode == 0 and "info" in r.stdout
    r = hiperf("--version"); assert r.returncode == 0 and "hiperf_nb" in r.stdout
    r = hiperf(); assert r.returncode == 2
    r = hiperf("info"); assert r.returncode == 2 and "CASE_OR_MANIFEST" in r.stderr


def test_cli_info_real_exam_json():
    r = hiperf("info", data_path("mri", "TCGA-FG-6692.csv"), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)[0]
    assert s["patient_id"] == "TCGA-FG-6692" and s["shape"] == [256, 224, 26]
    assert s["sources"]["flair"]["resampled"] and not s["sources"]["t1ce"]["resampled"]
    assert 1000 < s["brain_volume_ml"] < 2000  # an adult brain


def test_cli_info_dsc_case_reports_tumour_volume(case):
    r = hiperf("info", case.dsc.parent)
    assert r.returncode == 0, r.stderr
    n = int(nib.load(case.tumor_mask).get_fdata().sum())
    assert f"{n * 2 * 2 * 4 / 1000:.2f} ml ({n} voxels)" in r.stdout and "TR 1.500 s" in r.stdout


def test_cli_one_bad_case_does_not_hide_the_others(tmp_path):
    write_test_case(tmp_path / "A", patient_id="A")
    b = write_test_case(tmp_path / "B", patient_id="B")
    save(np.zeros(nib.load(b.tumor_mask).shape, np.uint8), b.dsc, b.tumor_mask)
    r = hiperf("info", tmp_path)
    assert r.returncode == 1
    assert "A\n" in r.stdout and "1 of 2 case(s) loaded, 1 failed" in r.stdout
    assert "B" in r.stderr and str(b.tumor_mask) in r.stderr and "no tumour voxels" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("bad,expect", [("/no/such/manifest.csv", "not found"), ("README.md", "expected a manifest")])
def test_cli_bad_paths(bad, expect):
    r = hiperf("info", bad)
    assert r.returncode == 1 and expect in r.stderr and bad in r.stderr and "Traceback" not in r.stderr


# ---- real files --------------------------------------------------------------------------------------

def test_real_exam_world_alignment():
    """A world point maps to the same anatomy in every channel: compare the loaded value with the
    original file sampled at that world point through its own affine (nearest voxel, 1 voxel tolerance)."""
    tcga = read_manifest(data_path("mri", "TCGA-FG-6692.csv"))[0]
    lc = load_case(tcga, target="t1ce")
    rng = np.random.default_rng(1)
    brain = np.argwhere(lc.brain_mask)
    ijk = brain[rng.choice(len(brain), 300, replace=False)]
    world = nib.affines.apply_affine(lc.affine, ijk)
    for i, ch in enumerate(("t1", "t1ce", "t2", "flair")):
        img = nib.load(getattr(tcga, ch))
        data = np.asanyarray(img.dataobj).astype(float)
        src = nib.affines.apply_affine(np.linalg.inv(img.affine), world)
        lo, hi = np.floor(src).astype(int), np.ceil(src).astype(int)
        inside = (lo >= 0).all(1) & (hi < np.array(data.shape)).all(1)
        assert inside.mean() > 0.95
        # the trilinear value lies within the range of the 8 surrounding source voxels
        corners = np.stack([data[tuple(np.where(np.array(c, bool), hi, lo)[inside].T)]
                            for c in np.ndindex(2, 2, 2)], 1)
        v = lc.structural[tuple(ijk[inside].T) + (i,)]
        assert ((v >= corners.min(1) - 1e-3) & (v <= corners.max(1) + 1e-3)).all(), ch


def test_nibabel_4d_images():
    ok = load_case(Case("functional", dsc=NIB_DATA / "functional.nii"))
    assert ok.dsc.shape == (17, 21, 3, 20) and ok.tr_s == 2.0
    with pytest.warns(UserWarning, match="2000 ms"), pytest.raises(DataFormatError, match="example4d.nii.gz.*T=2 frames"):
        load_case(Case("example4d", dsc=NIB_DATA / "example4d.nii.gz"))


def test_nrrd_pair_loads_with_mask():
    c = Case("brain1", t1ce=data_path("mri", "pyradiomics_brain1", "image.nrrd"),
             tumor_mask=data_path("mri", "pyradiomics_brain1", "label.nrrd"))
    lc = load_case(c, target="t1ce")
    label, _ = nrrd.read(str(c.tumor_mask))
    assert lc.mask.sum() == (label == 1).sum() > 0
    assert lc.sources["t1ce"]["orientation"] == "LAS"  # LPS header, y flipped by the negative direction
    assert np.allclose(lc.spacing_mm, [0.78125, 0.78125, 6.5])


def test_nrrd_4d_dsc_with_sidecar(tmp_path, case):
    img = nib.load(case.dsc)
    data = np.moveaxis(np.asanyarray(img.dataobj), 3, 0)  # time first, as many NRRD writers store lists
    aff = img.affine
    lps = aff[:3, :3] * np.array([-1, -1, 1])[:, None]
    hdr = {"space": "left-posterior-superior", "kinds": ["list", "domain", "domain", "domain"],
           "space directions": np.vstack([np.full(3, np.nan), lps.T]), "space origin": aff[:3, 3] * [-1, -1, 1]}
    p = tmp_path / "dsc.nrrd"
    nrrd.write(str(p), data, hdr)
    (tmp_path / "dsc.json").write_text(json.dumps({"RepetitionTime": 1.5, "EchoTime": 0.03}))
    lc = load_case(replace(case, dsc=p))
    ref = load_case(case)
    assert lc.tr_s == 1.5 and lc.te_s == 0.03
    np.testing.assert_allclose(lc.affine, ref.affine, atol=1e-6)
    np.testing.assert_array_equal(lc.dsc, ref.dsc)


# ---- bad input: each a specific HiperfError naming the file ------------------------------------------

def test_missing_file(case):
    with pytest.raises(MissingFileError, match="nope.nii.gz.*P001"):
        load_case(replace(case, flair=case.flair.with_name("nope.nii.gz")))


def test_3d_where_4d_expected(case, tmp_path):
    p = save(nib.load(case.t1).get_fdata().astype(np.float32), case.dsc, tmp_path / "dsc3d.nii.gz")
    with pytest.raises(DataFormatError, match=r"dsc3d.nii.gz: DSC of patient P001 must be a 4D series"):
        load_case(replace(case, dsc=p))


def test_dsc_mask_shape_mismatch(case, tmp_path):
    p = save(np.ones((16, 16, 7), np.uint8), case.dsc, tmp_path / "m.nii.gz")
    with pytest.raises(ShapeMismatchError, match=r"m.nii.gz.*\(16, 16, 7\)"):
        load_case(replace(case, tumor_mask=p))


def test_affine_disagreement(case, tmp_path):
    aff = nib.load(case.dsc).affine.copy(); aff[:3, :3] *= 1.01
    p = save(nib.load(case.tumor_mask).get_fdata().astype(np.uint8), case.dsc, tmp_path / "m.nii.gz", affine=aff)
    with pytest.raises(AffineMismatchError, match="m.nii.gz.*affine differs"):
        load_case(replace(case, tumor_mask=p))


def test_empty_and_nonbinary_masks(case, tmp_path):
    m = nib.load(case.tumor_mask).get_fdata()
    pe = save(np.zeros_like(m, np.uint8), case.dsc, tmp_path / "empty.nii.gz")
    with pytest.raises(DataFormatError, match="empty.nii.gz.*no tumour voxels"):
        load_case(replace(case, tumor_mask=pe))
    pn = save((m * 2).astype(np.uint8), case.dsc, tmp_path / "two.nii.gz")
    with pytest.raises(DataFormatError, match="two.nii.gz.*not binary"):
        load_case(replace(case, tumor_mask=pn))
    pf = save(m * 0.5, case.dsc, tmp_path / "soft.nii.gz")  # a probability map is not a mask either
    with pytest.raises(DataFormatError, match="soft.nii.gz.*not binary"):
        load_case(replace(case, tumor_mask=pf))


def test_nonfinite_voxels_reported_and_never_propagated(case, tmp_path):
    img = nib.load(case.dsc)
    d = img.get_fdata().astype(np.float32)
    tumour = np.argwhere(nib.load(case.tumor_mask).get_fdata() > 0)
    for k, (i, j, z) in enumerate(tumour[:3]): d[i, j, z, 10 + k] = np.nan
    d[0, 0, 0, :] = np.inf
    p = tmp_path / "dsc_nan.nii.gz"
    out = nib.Nifti1Image(d, img.affine); out.header["pixdim"][4] = 1.5; out.header.set_xyzt_units("mm", "sec")
    nib.save(out, p)
    with pytest.raises(NonFiniteError, match=r"dsc_nan.nii.gz.*3 NaN and 50 infinite value\(s\) in 4 of 2048 voxels"):
        load_case(replace(case, dsc=p))
    with pytest.warns(UserWarning, match="4 of 2048 voxels"):
        lc = load_case(replace(case, dsc=p), nonfinite="exclude")
    tics, coords = extract_tics(lc.dsc, lc.mask)
    assert np.isfinite(tics).all() and len(tics) == len(tumour) - 3
    assert lc.invalid.sum() == 4


def test_short_series(case, tmp_path):
    img = nib.load(case.dsc)
    out = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., :19], img.affine, img.header)
    nib.save(out, tmp_path / "short.nii.gz")
    with pytest.raises(DataFormatError, match="short.nii.gz.*T=19 frames"):
        load_case(replace(case, dsc=tmp_path / "short.nii.gz"))


def test_unsupported_extension(case, tmp_path):
    (tmp_path / "t1.mgz").write_bytes(b"\0" * 10)
    with pytest.raises(UnsupportedFormatError, match="t1.mgz: unsupported image format"):
        load_case(replace(case, t1=tmp_path / "t1.mgz"))


def test_corrupt_file(case, tmp_path):
    (tmp_path / "t2.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="t2.nii.gz: cannot be read"):
        load_case(replace(case, t2=tmp_path / "t2.nii.gz"))


def test_missing_tr(case, tmp_path):
    img = nib.load(case.dsc)
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine); out.header["pixdim"][4] = 0
    nib.save(out, tmp_path / "notr.nii.gz")
    with pytest.raises(DataFormatError, match="notr.nii.gz.*no repetition time.*tr_s"):
        load_case(replace(case, dsc=tmp_path / "notr.nii.gz"))
    assert load_case(replace(case, dsc=tmp_path / "notr.nii.gz", tr_s=1.2)).tr_s == 1.2


# ---- manifests ---------------------------------------------------------------------------------------

def test_manifest_missing_columns_and_duplicates(tmp_path):
    (tmp_path / "a.csv").write_text("patient_id,dsc,t1,t1ce,t2,flair\nP1,,,,,\n")
    with pytest.raises(ManifestError, match=r"a.csv: missing required column\(s\) \['tumor_mask'\]"):
        read_manifest(tmp_path / "a.csv")
    hdr = ",".join(MANIFEST_REQUIRED)
    (tmp_path / "b.csv").write_text(f"{hdr}\nP1,,,,,,\nP1,,,,,,\n")
    with pytest.raises(ManifestError, match=r"b.csv: duplicate patient_id\(s\) \['P1'\]"):
        read_manifest(tmp_path / "b.csv")
    with pytest.raises(ManifestError, match="duplicate"):
        write_manifest([Case("P1"), Case("P1")], tmp_path / "c.csv")


def test_manifest_roundtrip_relative_paths(tmp_path, case):
    case.labels = {"idh": "mutant", "codel": 1, "grade": 2}
    m = write_manifest([case], tmp_path / "cohort.csv")
    assert "P001/dsc.nii.gz" in m.read_text()  # relative, so the cohort folder can move
    back = read_manifest(m)[0]
    assert back.labels == case.labels and back.dsc.resolve() == case.dsc.resolve()


def test_failed_manifest_write_keeps_the_old_one(tmp_path, case, monkeypatch):
    m = write_manifest([case], tmp_path / "cohort.csv")
    before = m.read_text()
    def boom(*a, **k): raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_manifest([case, replace(case, patient_id="P002")], m)
    assert m.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_mask_on_another_grid_is_resampled_and_reported():
    tcga = read_manifest(data_path("mri", "TCGA-FG-6692.csv"))[0]
    on_t2 = replace(tcga, brain_mask=data_path("mri", "TCGA-FG-6692", "brainmask_t2.nii.gz"))
    a, b = load_case(tcga, target="t1ce"), load_case(on_t2, target="t1ce")
    assert not a.sources["brain_mask"]["resampled"] and b.sources["brain_mask"]["resampled"]
    # The two skull-strip masks describe the same brain, placed by their scanner affines. They overlap with
    # Dice 0.81 (a flipped or mis-scaled affine would give far less), and shifting the T2 mask by about
    # (4, -2, 2) voxels raises that to 0.92: the T2/FLAIR series were acquired after the patient moved, so
    # world alignment is right but the exam is not co-registered. load_case does not (and must not) hide that.
    dice = 2 * (a.brain_mask & b.brain_mask).sum() / (a.brain_mask.sum() + b.brain_mask.sum())
    assert dice > 0.75
