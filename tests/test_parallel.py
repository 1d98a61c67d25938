"""Per-case stages over Dask (`hiperf_nb.parallel`): a 2-worker LocalCluster writes the same files, byte for byte, as the
serial run; a worker killed (SIGKILL) in the middle of a case costs a retry, not a file; bad input stays a failed row;
one job starts no cluster."""
import os
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

import hiperf_nb.graphs as graphs
import hiperf_nb.parallel as parallel
from hiperf_nb.cohorts import simulate_cohort
from hiperf_nb.graphs import GraphConfig, build_graphs
from hiperf_nb.io import Case
from hiperf_nb.parallel import dask_client, map_cases
from hiperf_nb.vqvae import VQVAEConfig, tics_from_cases, train_vqvae

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module: send its functions by value
CFG = GraphConfig(supervoxel_voxels=30)
N = 6


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("par")
    cases = simulate_cohort(N, seed=3, out_dir=d / "cohort", zoom=4, show_progress=False)
    broken = Case("BAD", dsc=cases[0].dsc, t1=d / "cohort" / "nope.nii.gz", tumor_mask=cases[0].tumor_mask, labels=dict(cases[0].labels))
    return d, cases, broken


@pytest.fixture(scope="module")
def model(cohort):
    bank, failed = tics_from_cases(cohort[1], max_per_case=200, show_progress=False)
    assert not failed
    return train_vqvae(bank, VQVAEConfig(d_enc=16, hidden=16), epochs=2, batch_size=64, seed=0, show_progress=False)[0]


@pytest.fixture(scope="module")
def serial(cohort, model):
    d, cases, broken = cohort
    log = build_graphs(cases + [broken], model, d / "serial", CFG, show_progress=False)
    return d / "serial", log


@pytest.fixture(scope="module")
def client():
    with dask_client(2, memory_limit=None) as c: yield c


def files(folder: Path) -> dict:
    "Every file of a folder (hidden temporaries included) -> its bytes."
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_local_workers_write_the_serial_bytes(cohort, model, serial):
    d, cases, broken = cohort
    log = build_graphs(cases + [broken], model, d / "two", CFG, n_jobs=2, show_progress=False)
    ref = files(serial[0])
    assert len(ref) == 2 * N + 1 and "graphs.csv" in ref  # N graphs + N sidecars + the index; nothing for BAD
    assert files(d / "two") == ref
    cols = ["patient_id", "status", "graph", "n_coarse", "n_fine", "error"]
    assert log[cols].equals(serial[1][cols])


def test_bad_case_is_a_failed_row_and_the_others_are_built(serial):
    log = serial[1]
    assert log.status.tolist() == ["built"] * N + ["failed"]
    assert "nope.nii.gz" in log.error.iloc[-1] and (log.error.iloc[:-1] == "").all()


def _slow_build(case, marks, **kw):
    "The real `_build_case`, after announcing (case, worker PID) in `marks` and a pause long enough to be killed in."
    (Path(marks) / f"{case.patient_id}.{os.getpid()}").touch()
    time.sleep(1.5)
    from hiperf_nb.graphs import _build_case  # on the worker: the original, not the test's replacement
    return _build_case(case, **kw)


def test_worker_killed_mid_case_yields_the_complete_identical_set(cohort, model, serial, client, tmp_path, monkeypatch):
    d, cases, broken = cohort
    marks = tmp_path / "marks"; marks.mkdir()
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    killed = {}

    def kill_first_started():
        end = time.time() + 120
        while time.time() < end and not killed:
            started = sorted(marks.iterdir(), key=lambda p: p.stat().st_mtime_ns)
            if started:
                pid, name = int(started[0].suffix[1:]), started[0].stem
                assert pid in pids
                os.kill(pid, signal.SIGKILL); killed.update(pid=pid, case=name)
            time.sleep(0.02)

    monkeypatch.setattr(graphs, "_build_case", lambda case, **kw: _slow_build(case, str(marks), **kw))
    killer = threading.Thread(target=kill_first_started); killer.start()
    log = build_graphs(cases + [broken], model, d / "killed", CFG, scheduler=client, show_progress=False)
    killer.join()
    assert killed, "no case started"
    starts = [p.stem for p in marks.iterdir()]
    assert starts.count(killed["case"]) == 2  # the killed worker's case ran again, on a live worker
    assert log.status.tolist() == ["built"] * N + ["failed"]
    assert files(d / "killed") == files(serial[0])  # complete, identical, and no temporary left behind


def test_phantom_cohort_over_workers_is_the_serial_cohort(cohort, client, tmp_path):
    d = cohort[0]
    cases = simulate_cohort(N, seed=3, out_dir=tmp_path / "c", zoom=4, scheduler=client, show_progress=False)
    assert [c.patient_id for c in cases] == [f"INT-{i:04d}" for i in range(1, N + 1)]
    assert files(tmp_path / "c") == files(d / "cohort")


def test_one_job_starts_no_cluster(cohort, model, serial, tmp_path, monkeypatch):
    class NoCluster:
        def __init__(self, *a, **k): raise AssertionError("a Dask cluster was started for n_jobs=1")
    monkeypatch.setattr(parallel, "LocalCluster", NoCluster); monkeypatch.setattr(parallel, "Client", NoCluster)
    d, cases, broken = cohort
    build_graphs(cases + [broken], model, tmp_path / "g", CFG, n_jobs=1, show_progress=False)
    assert files(tmp_path / "g") == files(serial[0])
    seen = []
    assert map_cases(lambda x, k: seen.append(os.getpid()) or x + k, [1, 2], {"k": 1}) == [2, 3]
    assert seen == [os.getpid()] * 2
    with pytest.raises(AssertionError, match="cluster was started"): map_cases(abs, [1, -2], jobs=2)


def test_training_curves_over_workers_equal_the_streamed_ones(cohort, client):
    "`tics_from_cases` over 2 workers: the same bank (curves, subsample, order) and the same failures as the streamed serial path."
    d, cases, broken = cohort
    serial, failed_s = tics_from_cases(cases + [broken], max_per_case=300, show_progress=False)
    over, failed_w = tics_from_cases(cases + [broken], max_per_case=300, show_progress=False, scheduler=client)
    assert failed_s.keys() == failed_w.keys() == {"BAD"} and "nope.nii.gz" in failed_w["BAD"]
    assert serial.groups.keys() == over.groups.keys() and serial.n_cases == over.n_cases == N
    for T in serial.groups: assert (serial.groups[T] == over.groups[T]).all()


@pytest.fixture(scope="module")
def hgnn(cohort, serial):
    "A small HGNN fitted for a few full-batch steps on the serial graphs (saliency needs a model, not a good one)."
    import torch
    import torch.nn.functional as F
    from torch_geometric.data import Batch
    from hiperf_nb.core import seed_everything
    from hiperf_nb.graphs import HierGraph
    from hiperf_nb.hgnn import HGNN, degree_histogram
    gs = [HierGraph.load(serial[0] / f"{c.patient_id}.pt") for c in cohort[1]]
    for g, c in zip(gs, cohort[1]): g.y = torch.tensor([int(c.labels["idh"] == "mutant")])
    seed_everything(0)
    m = HGNN(gs[0]["coarse"].x.shape[1], gs[0]["fine"].x.shape[1], 2, degree_histogram(gs, "coarse"), degree_histogram(gs, "fine"),
             hidden_channels=8, dropout=0.0).fit_input_norm(gs)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    b = Batch.from_data_list(gs)
    for _ in range(3):
        m.train(); loss = F.cross_entropy(m(b), b.y); opt.zero_grad(); loss.backward(); opt.step()
    return m.eval()


def test_saliency_over_workers_is_the_serial_saliency(cohort, serial, hgnn, client, tmp_path, monkeypatch):
    "`cohort_saliency` with 2 workers: the serial table exactly and every NIfTI byte for byte; the serial path runs single-threaded;"
    " a patient without a graph is reported and the others go on."
    import dataclasses
    import torch
    import hiperf_nb.saliency as saliency
    from hiperf_nb.core import HiperfWarning
    from hiperf_nb.io import write_manifest
    from pandas.testing import assert_frame_equal
    d, cases, _ = cohort
    write_manifest(cases + [dataclasses.replace(cases[0], patient_id="NOGRAPH")], d / "saliency.csv")  # BAD's files, no graph
    threads, real = [], saliency._table_row
    monkeypatch.setattr(saliency, "_table_row", lambda *a, **k: threads.append(torch.get_num_threads()) or real(*a, **k))
    old = torch.get_num_threads(); torch.set_num_threads(2)
    try:
        with pytest.warns(HiperfWarning, match="NOGRAPH"):
            t1, s1 = saliency.cohort_saliency(hgnn, serial[0], d / "saliency.csv", out_dir=tmp_path / "one", show_progress=False)
    finally: torch.set_num_threads(old)
    assert threads == [1] * N  # the serial path explains single-threaded, as the workers do
    monkeypatch.setattr(saliency, "_table_row", real)
    with pytest.warns(HiperfWarning, match="NOGRAPH"):
        t2, s2 = saliency.cohort_saliency(hgnn, serial[0], d / "saliency.csv", out_dir=tmp_path / "two", scheduler=client, show_progress=False)
    assert t1.patient_id.tolist() == [c.patient_id for c in cases]
    assert list(t1.attrs["failed"]) == list(t2.attrs["failed"]) == ["NOGRAPH"] and "NOGRAPH.pt" in t2.attrs["failed"]["NOGRAPH"]
    assert_frame_equal(t1, t2, check_exact=True); assert_frame_equal(s1, s2, check_exact=True)
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert sorted(k for k in one if k.endswith(".nii.gz")) == [f"{c.patient_id}_saliency.nii.gz" for c in cases]
    assert {"saliency_table.csv", "rim_ratio.csv", "saliency_failed.csv"} <= one.keys()
    assert one == two


def test_demo_passes_workers_to_its_per_case_stages_and_resumes_under_other_jobs(tmp_path, monkeypatch):
    "`run_demo(n_jobs=...)` reaches the phantom, curve, graph and saliency stages, and is in no stage's options:"
    " a finished demo resumed with other jobs re-runs nothing, and its demo.json and metrics.json are unchanged."
    import hiperf_nb.demo as demo
    seen = []
    for name in ("_phantoms", "_vqvae", "_graphs", "_saliency", "_splits", "_hgnn", "_lunar"):
        monkeypatch.setattr(demo, name, lambda *a, _n=name: seen.append((_n, a[-1] if isinstance(a[-1], dict) else None)) or {"x": 1})
    monkeypatch.setattr(demo, "write_report", lambda out, *a: Path(out) / "report.html")
    par = dict(n_jobs=1, scheduler=None, memory_limit="auto")
    demo.run_demo(tmp_path, quick=True, log=lambda m: None)
    assert [n for n, _ in seen] == ["_phantoms", "_phantoms", "_splits", "_vqvae", "_graphs", "_hgnn", "_saliency", "_lunar"]
    assert {n: p for n, p in seen if p is not None} == {n: par for n in ("_phantoms", "_vqvae", "_graphs", "_saliency")}
    before = {f: (tmp_path / f).read_bytes() for f in ("demo.json", "metrics.json")}
    seen.clear()
    demo.run_demo(tmp_path, quick=True, log=lambda m: None, n_jobs=2, scheduler="tcp://127.0.0.1:1", memory_limit="2GB")
    assert seen == [] and {f: (tmp_path / f).read_bytes() for f in before} == before  # resumed: every stage was done already
    demo.run_demo(tmp_path, quick=True, force=True, log=lambda m: None, n_jobs=2, memory_limit="2GB")
    assert {n: p for n, p in seen if p is not None} == {n: dict(par, n_jobs=2, memory_limit="2GB") for n in ("_phantoms", "_vqvae", "_graphs", "_saliency")}
    with pytest.raises(parallel.InputError, match="jobs"): demo.run_demo(tmp_path / "never", quick=True, n_jobs=0)
    assert not (tmp_path / "never").exists()
