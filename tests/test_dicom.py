"""DICOM in: a phantom case written as DICOM series (realistic headers, oblique grid) comes back through
`convert_dicom` with the same world geometry (within 1e-3 mm), TR, TE and voxel values; bad exams fail with a
`HiperfError` naming the folder, file or series, and leave nothing half-written."""
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pytest

from hiperf_nb.core import HiperfError, InputError, MissingFileError, DataFormatError, HiperfWarning
from hiperf_nb.core import test_raises as raises  # renamed so pytest does not collect it
from hiperf_nb.io import Case, STRUCTURAL_CHANNELS, read_image, read_manifest, write_test_case, load_case
from hiperf_nb.dicom import (SEQUENCES, quantise, write_dicom_series, write_dicom_case, dicom_series, classify_series,
                             propose_role, convert_dicom, find_dcm2niix)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from check_modes import wrong_modes  # noqa: E402

ROLE_ORDER = ("dsc",) + STRUCTURAL_CHANNELS


def tilt(z=8, y=-4, x=3):
    "A rotation by a few degrees about each axis: an oblique acquisition (a diagonal affine hides LPS/RAS and slice-order bugs)."
    r = np.eye(4)
    r[:3, :3] = nib.eulerangles.euler2mat(z=np.deg2rad(z), y=np.deg2rad(y), x=np.deg2rad(x))
    return r


def world_match(data, affine, back):
    "Largest distance (mm) between original voxel centres and the converted voxels they map to, and those voxels' values."
    ijk = np.indices(data.shape[:3]).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    inv = np.linalg.inv(back.affine)
    idx = np.round(inv[:3, :3] @ world + inv[:3, 3:]).astype(int)
    assert (idx >= 0).all() and (idx < np.array(back.data.shape[:3])[:, None]).all()
    err = np.abs(back.affine[:3, :3] @ idx + back.affine[:3, 3:] - world).max()
    return float(err), back.data[tuple(idx)].reshape(data.shape)


@pytest.fixture(scope="module")
def phantom_exam(tmp_path_factory):
    "A small phantom patient on an oblique grid, written as five DICOM series of one study."
    from hiperf_nb.phantom import simulate_case
    L = simulate_case(zoom=4, seed=1).loaded  # 24x27x20, 60 frames, TR 1.5 s, TE 30 ms, integer-valued images
    aff = tilt() @ L.affine
    images = {"dsc": L.dsc, **{c: L.structural[..., i] for i, c in enumerate(STRUCTURAL_CHANNELS)}}
    exam = tmp_path_factory.mktemp("phantom") / "exam"
    for n, (role, arr) in enumerate(images.items(), 1):
        timing = dict(tr_s=L.tr_s, te_s=L.te_s) if role == "dsc" else {}
        write_dicom_series(arr, exam / f"{n:02d}_{role}", aff, role=role, patient_id=L.patient_id, series_number=n, **timing)
    return SimpleNamespace(exam=exam, images=images, affine=aff, loaded=L)


@pytest.fixture(scope="module")
def fixture_case(tmp_path_factory):
    "write_test_case's tiny case: float32 structural images (the rescaled path)."
    return write_test_case(tmp_path_factory.mktemp("fixture") / "nii", shape=(12, 10, 6), frames=30)


def test_phantom_round_trip(phantom_exam, tmp_path):
    old = os.umask(0o022)
    try: case = convert_dicom(phantom_exam.exam, tmp_path / "cohort", show_progress=False)
    finally: os.umask(old)
    L = phantom_exam.loaded
    assert case.patient_id == L.patient_id and case.tr_s == L.tr_s == 1.5
    for role, arr in phantom_exam.images.items():
        back = read_image(getattr(case, role))
        err, vals = world_match(arr, phantom_exam.affine, back)
        assert err < 1e-3, (role, err)
        np.testing.assert_array_equal(vals, arr)  # integer images: exact
        side = json.loads(getattr(case, role).with_name(f"{role}.json").read_text())
        tr, te = (L.tr_s, L.te_s) if role == "dsc" else (SEQUENCES[role]["tr_s"], SEQUENCES[role]["te_s"])
        assert (back.tr_s, back.te_s) == (side["RepetitionTime"], side["EchoTime"]) == (tr, te), role
    assert read_image(case.dsc).data.shape == (24, 27, 20, 60)
    assert read_manifest(tmp_path / "cohort" / "manifest.csv") == [case]
    table = (tmp_path / "cohort" / case.patient_id / "dicom_series.csv").read_text()
    assert "ep2d_perf DSC" in table and "used" in table
    assert load_case(case).dsc.shape == (24, 27, 20, 60)
    assert wrong_modes(tmp_path / "cohort") == []


def test_classification_of_the_phantom_exam(phantom_exam):
    t = classify_series(dicom_series(phantom_exam.exam, show_progress=False))
    assert dict(zip(t.role, t.series_number)) == {"dsc": 1, "t1": 2, "t1ce": 3, "t2": 4, "flair": 5}
    assert (t.status == "used").all()
    assert t.n_frames.tolist() == [60, 1, 1, 1, 1] and t.n_slices.tolist() == [20] * 5
    assert t.tr_s.tolist() == [1.5, 0.6, 0.6, 4.0, 9.0] and t.te_s.tolist() == [0.03, 0.01, 0.01, 0.1, 0.12]


def test_headers_follow_the_dicom_standard(tmp_path):
    vol = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    aff = tilt(7, 3, -5) @ np.diag([-2., 2., 4., 1.]); aff[:3, 3] = [5, -3, 7]  # oblique and left-handed
    s = write_dicom_series(vol, tmp_path / "s", aff, role="t2", patient_id="P1")
    files = sorted(s.iterdir())
    assert len(files) == 3
    for f in files:
        d = pydicom.dcmread(f)
        k = d.InstanceNumber - 1
        iop = np.array(d.ImageOrientationPatient, float).reshape(2, 3)
        ps = np.array(d.PixelSpacing, float)
        for i, j in [(0, 0), (4, 1), (2, 3)]:  # PS3.3 C.7.6.2.1.1, in LPS
            lps = np.array(d.ImagePositionPatient, float) + i * ps[1] * iop[0] + j * ps[0] * iop[1]
            np.testing.assert_allclose(lps * [-1, -1, 1], (aff @ [i, j, k, 1])[:3], atol=1e-9)
        np.testing.assert_array_equal(d.pixel_array, vol[:, :, k].T)
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and d.PatientID == "P1"
        assert (float(d.RepetitionTime), float(d.EchoTime), d.ScanningSequence) == (4000.0, 100.0, "SE")
    again = write_dicom_series(vol, tmp_path / "again", aff, role="t2", patient_id="P1")
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in sorted(again.iterdir())]  # reproducible


def test_dsc_frames_and_timing_headers(tmp_path):
    vol = np.zeros((4, 4, 2, 25), np.int16)
    s = write_dicom_series(vol, tmp_path / "d", np.eye(4), role="dsc", tr_s=1.2, te_s=0.025)
    d = pydicom.dcmread(sorted(s.iterdir())[2 * 10 + 1])  # frame 11, slice 2
    assert (d.TemporalPositionIdentifier, d.NumberOfTemporalPositions, d.AcquisitionNumber, d.InstanceNumber) == (11, 25, 11, 22)
    assert d.AcquisitionTime == "080112.000000" and float(d.EchoTime) == 25.0 and d.ScanningSequence == "EP"


def test_float_values_left_handed_grid_and_write_dicom_case(fixture_case, tmp_path):
    exam = tmp_path / "exam"
    folders = write_dicom_case(fixture_case, exam)
    assert [p.name for p in folders.values()] == ["01_dsc", "02_t1", "03_t1ce", "04_t2", "05_flair"]
    t2 = read_image(fixture_case.t2)
    las = tilt() @ t2.affine @ np.array([[-1., 0, 0, 11], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    shutil.rmtree(exam / "04_t2")
    write_dicom_series(t2.data[::-1], exam / "04_t2", las, role="t2", patient_id="TEST-001", series_number=4)
    case = convert_dicom(exam, tmp_path / "cohort", show_progress=False)
    assert case.tr_s == 1.5 and read_image(case.dsc).te_s == SEQUENCES["dsc"]["te_s"]
    for role, arr, aff in [("t1", read_image(fixture_case.t1).data, t2.affine), ("flair", read_image(fixture_case.flair).data, t2.affine),
                           ("t2", t2.data[::-1], las)]:
        _, slope, _ = quantise(arr)
        err, vals = world_match(arr, aff, read_image(getattr(case, role)))
        assert err < 1e-3 and 0 < slope < 0.01
        assert np.abs(vals - arr).max() <= slope / 2, role  # the stated rescale tolerance
    err, vals = world_match(read_image(fixture_case.dsc).data, t2.affine, read_image(case.dsc))
    np.testing.assert_array_equal(vals, read_image(fixture_case.dsc).data)


def test_two_flair_candidates_are_listed_not_guessed(fixture_case, tmp_path):
    exam = tmp_path / "exam"
    write_dicom_case(fixture_case, exam)
    write_dicom_series(read_image(fixture_case.flair), exam / "06_flair", role="flair", description="FLAIR repeat",
                       patient_id="TEST-001", series_number=6)
    e = raises(InputError, lambda: convert_dicom(exam, tmp_path / "cohort"), str(exam), "ambiguous series for flair",
                    "2 flair candidates (series 5, 6)", "FLAIR repeat")
    assert isinstance(e, HiperfError) and not (tmp_path / "cohort").exists()
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        case = convert_dicom(exam, tmp_path / "cohort", roles={"flair": 6}, show_progress=False)
    msgs = [str(w.message) for w in ws if issubclass(w.category, HiperfWarning)]
    assert any("1 series not converted" in m and "series 5" in m and "flair given by roles" in m for m in msgs), msgs
    assert json.loads(case.flair.with_name("flair.json").read_text())["SeriesDescription"] == "FLAIR repeat"
    uid = dicom_series(exam / "06_flair").series_uid[0]  # a SeriesInstanceUID works as well as a series number
    t = classify_series(dicom_series(exam, show_progress=False), roles={"flair": uid, "t2": None})
    assert t.set_index("series_number").status.to_dict() == {1: "used", 2: "used", 3: "used", 4: "not used", 5: "not used", 6: "given"}


def test_no_dsc_series(fixture_case, tmp_path):
    exam = tmp_path / "exam"
    write_dicom_case(Case("NODSC", t1=fixture_case.t1, flair=fixture_case.flair), exam)
    raises(InputError, lambda: convert_dicom(exam, tmp_path / "out"), str(exam), "no DSC perfusion series", "t1_se_tra")
    short = tmp_path / "short"  # a 4D EPI series with too few frames is listed with the failed criterion
    arr = read_image(fixture_case.dsc).data[..., :15]
    write_dicom_series(arr, short / "01", np.diag([2., 2., 4., 1.]), role="dsc", tr_s=1.5, patient_id="S")
    raises(InputError, lambda: convert_dicom(short, tmp_path / "out"), str(short), "no DSC", "15 frames < 20")
    assert not (tmp_path / "out").exists()


def test_empty_missing_and_mixed_folders(fixture_case, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("not DICOM")
    raises(InputError, lambda: convert_dicom(tmp_path / "empty", tmp_path / "out"), "empty", "no DICOM files found")
    raises(MissingFileError, lambda: convert_dicom(tmp_path / "nowhere", tmp_path / "out"), "nowhere")
    mixed = tmp_path / "mixed"
    write_dicom_case(fixture_case, mixed / "a")
    write_dicom_series(read_image(fixture_case.t1), mixed / "b", role="t1", patient_id="OTHER")
    raises(InputError, lambda: convert_dicom(mixed, tmp_path / "out"), str(mixed), "several patients", "OTHER, TEST-001")


def test_corrupt_and_truncated_files_are_named(fixture_case, tmp_path):
    exam = tmp_path / "exam"
    write_dicom_case(fixture_case, exam)
    f = sorted((exam / "02_t1").iterdir())[2]
    raw = f.read_bytes()
    f.write_bytes(raw[:-50])
    raises(DataFormatError, lambda: convert_dicom(exam, tmp_path / "out"), f.name, "truncated")
    f.write_bytes(raw[:300])
    raises(DataFormatError, lambda: dicom_series(exam), f.name)
    f.write_bytes(raw[:128] + b"DICM" + b"garbage" * 30)
    raises(DataFormatError, lambda: dicom_series(exam), f.name, "not a readable DICOM file")
    f.with_suffix(".dcm").write_bytes(b"no preamble, not DICOM")
    raises(DataFormatError, lambda: dicom_series(exam), f.name)
    assert not (tmp_path / "out").exists()


def test_dcm2niix_failure_names_series_and_leaves_nothing(phantom_exam, tmp_path):
    fake = tmp_path / "bin" / "dcm2niix"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Error: simulated conversion failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    raises(DataFormatError, lambda: convert_dicom(phantom_exam.exam, tmp_path / "cohort", dcm2niix=fake),
                str(phantom_exam.exam), "series 1 'ep2d_perf DSC' (dsc)", "exit status 1", "simulated conversion failure")
    assert list((tmp_path / "cohort").iterdir()) == []
    raises(MissingFileError, lambda: find_dcm2niix(tmp_path / "missing"), "missing")
    assert find_dcm2niix().is_file()


def test_existing_case_needs_overwrite(fixture_case, tmp_path):
    exam = tmp_path / "exam"
    write_dicom_case(fixture_case, exam)
    case = convert_dicom(exam, tmp_path / "cohort", show_progress=False)
    raises(InputError, lambda: convert_dicom(exam, tmp_path / "cohort"), str(tmp_path / "cohort" / "TEST-001"), "overwrite=True")
    again = convert_dicom(exam, tmp_path / "cohort", overwrite=True, show_progress=False)
    assert again == case and len(read_manifest(tmp_path / "cohort" / "manifest.csv")) == 1
    assert [p.name for p in (tmp_path / "cohort").iterdir() if p.name.startswith(".")] == []
    shutil.rmtree(tmp_path / "cohort" / "TEST-001")  # the manifest still lists the patient
    raises(InputError, lambda: convert_dicom(exam, tmp_path / "cohort"), "manifest.csv", "TEST-001 is already in the manifest")
    (tmp_path / "broken").mkdir(); (tmp_path / "broken" / "manifest.csv").write_text("no,columns\n")
    raises(HiperfError, lambda: convert_dicom(exam, tmp_path / "broken"), "manifest.csv", "missing required column")
    assert sorted(p.name for p in (tmp_path / "broken").iterdir()) == ["manifest.csv"]  # failed before any conversion


def test_bad_writes(tmp_path):
    vol = np.zeros((4, 4, 3), np.float32)
    shear = np.eye(4); shear[0, 1] = 0.5
    raises(InputError, lambda: write_dicom_series(vol, tmp_path / "a", shear), "sheared")
    raises(InputError, lambda: write_dicom_series(vol[None, None], tmp_path / "b", np.eye(4)), "3D or 4D")
    raises(InputError, lambda: write_dicom_series(vol + np.nan, tmp_path / "c", np.eye(4)), "NaN")
    raises(InputError, lambda: write_dicom_series(vol[..., None], tmp_path / "d", np.eye(4), role="dsc"), "repetition time")
    raises(InputError, lambda: write_dicom_series(vol, tmp_path / "e", np.eye(4), role="pd"), "role")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("desc,kw,role", [
    ("AX T1 +C", {}, "t1ce"), ("T1 pre", {"contrast": "Dotarem"}, "t1"), ("AX T1", {"contrast": "Dotarem"}, "t1ce"),
    ("sag MPRAGE", {"tr_s": 2.3, "te_s": 0.003, "ti_s": 0.9}, "t1"), ("T1 FLAIR", {"tr_s": 2.0, "te_s": 0.015, "ti_s": 0.85}, ""),
    ("T2 TSE", {}, ""), ("ax flair", {"tr_s": 9.0, "te_s": 0.12, "ti_s": 2.5}, "flair"), ("SWI", {"tr_s": 0.03, "te_s": 0.02}, ""),
    ("PWI", {"n_frames": 50, "tr_s": 1.4, "te_s": 0.035, "scanning_sequence": "EP"}, "dsc"),
    ("ep2d_bold", {"n_frames": 200, "tr_s": 2.0, "te_s": 0.03, "scanning_sequence": "EP"}, ""),
    ("ep2d_diff", {"n_frames": 30, "tr_s": 2.0, "te_s": 0.08, "scanning_sequence": "EP"}, ""),
])
def test_propose_role(desc, kw, role):
    row = dict(description=desc, protocol="", tr_s=0.6, te_s=0.01, ti_s=None, n_frames=1, n_slices=20, problem="",
               image_type="ORIGINAL\\PRIMARY\\M\\ND", scanning_sequence="SE", sequence_name="", contrast="", b_value=None)
    got, why = propose_role(SimpleNamespace(**{**row, **kw}))
    assert got == role, why
    assert why
