"""Preparing exams (`hiperf_nb.prepare`) on a phantom case whose T2 was moved by a known rigid transform and whose DSC
series has known head motion: the registration undoes the T2 misplacement, the tumour mask follows the sequence it
was drawn on, the reference grid option feeds `load_case`, one seed gives identical files, and a cohort run over two
Dask workers writes the same bytes as the serial run (the notebook covers the real TCGA exam and the motion accuracy)."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hiperf_nb.cohorts import write_phantom_case
from hiperf_nb.core import InputError
from hiperf_nb.io import Case, load_case, read_image, read_manifest, save_nifti
from hiperf_nb.phantom import simulate_case
from hiperf_nb.prepare import from_sitk, mean_displacement, prepare_case, prepare_cases, rotation_angle, to_sitk, world_matrix

# a T2 acquired after the head turned 4 degrees and moved 5 mm (RAS+): the scanner's affine places it wrongly
MISPLACEMENT = sitk.Euler3DTransform((0.0, 0.0, 0.0), np.radians(2.0), np.radians(-3.0), np.radians(1.5), (3.0, -4.0, 2.0))


def brain_points(img) -> np.ndarray:
    ijk = np.argwhere(img.data > 0)[::7]
    return ijk @ img.affine[:3, :3].T + img.affine[:3, 3]


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    "A phantom case (3.6 mm voxels) with its T2 misplaced and 3 mm of drift in the second half of its DSC series."
    d = tmp_path_factory.mktemp("prep")
    pc = simulate_case(seed=5, zoom=2)
    case = write_phantom_case(pc, d / "raw" / "P5", truth=False)
    t2 = read_image(case.t2)
    M = world_matrix(MISPLACEMENT)  # the true affine is M @ (the affine the scanner wrote), so the header is inv(M) off
    save_nifti(t2.data, np.linalg.inv(M) @ t2.affine, case.t2)
    dsc = read_image(case.dsc)
    frames = [dsc.data[..., t] for t in range(dsc.data.shape[-1])]
    shift = sitk.TranslationTransform(3, (1.5, -1.0, 2.5))
    for t in range(dsc.data.shape[-1] // 2, len(frames)):
        f = to_sitk(frames[t], dsc.affine); frames[t] = from_sitk(sitk.Resample(f, f, shift, sitk.sitkBSpline, 0.0))
    save_nifti(np.stack(frames, -1).astype(np.float32), dsc.affine, case.dsc, tr_s=dsc.tr_s)
    return d, case, t2


def test_registration_undoes_a_known_misplacement(exam):
    d, case, t2_true = exam
    prepared = prepare_case(case, d / "out", show_progress=False)
    t2 = read_image(prepared.t2)
    assert np.array_equal(t2.data, t2_true.data)  # voxels as acquired, only the affine moved
    residual = t2.affine @ np.linalg.inv(t2_true.affine)
    assert mean_displacement(residual, brain_points(read_image(case.brain_mask))) < 1.0 and rotation_angle(residual) < 0.5
    # the DSC drift (3 mm) is found and removed; the tumour mask, drawn on the DSC grid, keeps it
    folder = prepared.dsc.parent
    table = (folder / "motion.csv").read_text().splitlines()
    assert len(table) == 1 + read_image(case.dsc).data.shape[-1]
    assert read_image(prepared.tumor_mask).affine.tolist() == read_image(case.tumor_mask).affine.tolist()
    assert (folder / "qc.png").stat().st_size > 10_000 and (folder / "t2_to_dsc.tfm").exists()


def test_one_seed_gives_identical_files_and_reference_grid_loads(exam):
    d, case, _ = exam
    a, b = prepare_case(case, d / "a", motion=False, show_progress=False), prepare_case(case, d / "b", motion=False, show_progress=False)
    digest = lambda folder: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.suffix != ".json"}
    assert digest(a.dsc.parent) == digest(b.dsc.parent)
    r = prepare_case(case, d / "ref", grid="reference", motion=False, show_progress=False)
    for name in ("t1", "t1ce", "t2", "flair", "tumor_mask"):
        assert read_image(getattr(r, name)).affine.tolist() == read_image(r.dsc).affine.tolist()
    lc = load_case(r)
    assert lc.structural.shape[:3] == lc.dsc.shape[:3] and lc.mask.any()
    with pytest.raises(InputError, match="unknown grid"): prepare_case(case, d / "x", grid="dsc")
    n = prepare_case(case, d / "noreg", coregister=False, motion=False, show_progress=False)  # trust the scanner: affines as given
    assert read_image(n.t2).affine.tolist() == read_image(case.t2).affine.tolist() and not list(n.dsc.parent.glob("*.tfm"))


def test_cohort_over_two_workers_matches_serial_and_resumes(exam):
    d, case, _ = exam
    bad = Case("BAD", dsc=case.dsc, t2=d / "nope.nii.gz")
    serial, status = prepare_cases([case, bad], d / "serial", motion=False, show_progress=False)
    assert status.status.tolist() == ["prepared", "failed"] and "nope.nii.gz" in status.error[1]
    par, status2 = prepare_cases([case, bad], d / "par", motion=False, n_jobs=2, show_progress=False)
    assert status2.status.tolist() == ["prepared", "failed"]
    one, two = serial[0].dsc.parent, par[0].dsc.parent
    files = sorted(p.name for p in one.iterdir() if p.name != "prepare.json")
    assert files == sorted(p.name for p in two.iterdir() if p.name != "prepare.json")
    for f in files: assert (one / f).read_bytes() == (two / f).read_bytes(), f
    again, status3 = prepare_cases([case], d / "serial", motion=False, show_progress=False)
    assert status3.status.tolist() == ["kept"] and again[0].t2 == serial[0].t2
    assert [c.patient_id for c in read_manifest(d / "serial" / "manifest.csv")] == [case.patient_id]
    assert not [p for p in (d / "serial").iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_affine_registration_recovers_the_misplacement_too(exam):
    "`transform='affine'` (12 parameters) finds the same rigid misplacement, with no spurious scaling or shear."
    d, case, t2_true = exam
    from hiperf_nb.prepare import register
    t1ce, t2 = read_image(case.t1ce), read_image(case.t2)
    reg = register(to_sitk(t1ce.data, t1ce.affine), to_sitk(t2.data, t2.affine), "affine", what="P5: t2 -> t1ce")
    residual = np.linalg.inv(reg.matrix) @ t2.affine @ np.linalg.inv(t2_true.affine)
    assert mean_displacement(residual, brain_points(read_image(case.brain_mask))) < 1.0
    assert np.allclose(np.linalg.svd(reg.matrix[:3, :3])[1], 1, atol=0.02)  # singular values: no scaling, no shear
