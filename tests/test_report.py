"""The demo report (`hiperf_nb.demo.write_report`) from a small finished demo folder: its content is escaped, every
table sits in a scrolling `div.table-wrap`, the VQ-VAE codes table is complete and a degenerate hierarchy is shown in
a warning box, and in headless Chromium, at 1400 px and at 800 px, a 30-column table scrolls inside its box and a
3000 px figure shrinks, so nothing makes the page wider than the window. And the demo's VQ-VAE stage: it is trained
on the training patients of the demo's split, and no validation or test patient's curves reach it."""
import copy
import re
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import hiperf_nb.demo as demo
from hiperf_nb.core import atomic_write_bytes, figure_png
from hiperf_nb.demo import QUICK, DemoLayout, write_report
from hiperf_nb.io import write_manifest, write_test_case
from hiperf_nb.train import load_splits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import check_report  # noqa: E402

EVIL = "<script>alert('x')</script>"
RESULTS = {
    "phantom_internal": {"n": 6, "idh": {"wildtype": 4, "mutant": 2}, "grade": {"2": 2, "4": 4}, "codel": {"0": 5, "1": 1}},
    "phantom_external": {"n": 3, "idh": {"wildtype": 3}, "grade": {"4": 3}, "codel": {"0": 3}},
    "splits": {"splits": "splits.csv", "train": 4, "val": 1, "test": 1},
    "vqvae": {"patients": 4, "curves": 900, "recon_loss": 0.5, "usage": 1.0, "perplexity": 1.9},
    "graphs": {s: {"built": 3, "failed": {}, "median_habitats": 2.0, "single_habitat_fraction": 0.25, "median_supervoxels": 9.0}
               for s in ("internal", "internal_test", "external")},
    "hgnn": {"metrics": {"full": {"test": {"auroc": [0.9, 0.8, 1.0]}, "external": {"auroc": [0.7, 0.6, 0.8]}}}},
    "saliency": {"n_cases": 2, "examples": {"wildtype": {"patient_id": "INT-0001", "coarse_cv": 0.01, "fine_cv": 0.9}, "mutant": {"patient_id": "INT-0002", "coarse_cv": 0.02, "fine_cv": 0.8}},
                 "rim_ratio": [{"statistic": "mean", "missing": "zero", "region": "enhancing", "ratio": 3.2, "p_value": 0.04}]},
    "lunar": {}}


def _png(path: Path, width_in: float):
    "A figure `width_in` inches wide at 110 dpi."
    fig, ax = plt.subplots(figsize=(width_in, 2)); ax.plot([0, 1], [0, 1])
    atomic_write_bytes(path, figure_png(fig))


def finished_demo(root: Path) -> DemoLayout:
    "The files a finished demo leaves for the report: a 30-column LUNAR table, a 3000 px figure and HTML in names."
    lay = DemoLayout(root)
    lay.hgnn.root.mkdir(parents=True); lay.lunar.mkdir()
    pd.DataFrame({"model": ["full", "full", "perf"], "dataset": ["test", "external", "test"], "metric": "auroc",
                  "value": [0.9, 0.7, 0.6]}).to_csv(lay.hgnn.results_csv, index=False)
    lay.hgnn.results_md.write_text(f"**Results** for `idh`.\n\n| Model | AUC |\n|---|---|\n| {EVIL} | 0.9 |\n")
    cols = [f"metric_{i}" for i in range(30)]
    (lay.lunar / "lunar_test.md").write_text("| index | " + " | ".join(cols) + " |\n|---" + "|---" * 30 + "|\n"
                                             + "| LUNAR | " + " | ".join(["0.696 (0.519-0.849)"] * 30) + " |\n")
    _png(lay.figure("hgnn_roc_idh"), 3000 / 110)
    for name in ("saliency_wildtype", "saliency_mutant"): _png(lay.figure(name), 6)
    _png(lay.lunar / "lunar_roc_pr.png", 12)
    return lay


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    "report.html of a finished quick demo (seed 1)."
    lay = finished_demo(tmp_path_factory.mktemp("demo"))
    return write_report(lay.root, QUICK.replace(seed=1), RESULTS, {"phantom_internal": 1.0, "lunar": 2.0})


def test_report_shows_the_codes_and_says_quick_is_a_smoke_run(report):
    page = report.read_text()
    assert check_report.content_problems(page) == []
    assert 'id="smoke-run"' in page and 'id="hierarchy-warning"' not in page
    assert "<td>single-habitat tumours, internal test</td><td>25%</td>" in page and "<td>perplexity</td><td>1.90</td>" in page
    assert "4 training patients only" in " ".join(page.split())


@pytest.mark.parametrize("change", [{"perplexity": 1.2}, {"external": 1.0}])
def test_a_degenerate_hierarchy_is_shown_in_a_warning_box(tmp_path, change):
    res = copy.deepcopy(RESULTS)
    if "perplexity" in change: res["vqvae"]["perplexity"] = change["perplexity"]
    else: res["graphs"]["external"]["median_habitats"] = change["external"]
    page = write_report(finished_demo(tmp_path).root, demo.DemoConfig(), res, {}).read_text()
    assert 'id="hierarchy-warning"' in page and "Degenerate hierarchy" in page and 'id="smoke-run"' not in page
    assert check_report.content_problems(page) == []
    hidden = re.sub(r'<div class="warning" id="hierarchy-warning">.*?</div>', "", page, flags=re.S)
    assert "the warning box is missing" in check_report.content_problems(hidden)[0]
    no_row = page.replace("<td>perplexity</td>", "<td>perplexity?</td>")
    assert "lacks the row(s) ['perplexity']" in check_report.content_problems(no_row)[0]


def test_the_full_demo_summarises_the_powered_benchmark_and_quick_does_not(tmp_path, monkeypatch):
    "The committed powered-benchmark summary appears in a full demo's report, escaped; a quick (smoke) run leaves it out."
    monkeypatch.setattr(demo, "powered_benchmark_summary", lambda: f"#### Internal cohort\n\n| Model | AUC |\n|---|---|\n| {EVIL} | 0.95 |\n")
    full = write_report(finished_demo(tmp_path / "full").root, demo.DemoConfig(), RESULTS, {}).read_text()
    assert 'id="powered-benchmark"' in full and "<h4>Internal cohort</h4>" in full and EVIL not in full
    assert check_report.content_problems(full) == []
    quick = write_report(finished_demo(tmp_path / "quick").root, QUICK, RESULTS, {}).read_text()
    assert 'id="powered-benchmark"' not in quick and "Internal cohort" not in quick


def test_vqvae_sees_training_patients_only(tmp_path, monkeypatch):
    "The demo's splits stage comes first; the VQ-VAE stage gets the curves of its `train` patients and of no one else."
    lay = DemoLayout(tmp_path)
    cases = [write_test_case(tmp_path / "cases" / f"P{i}", shape=(12, 12, 6), patient_id=f"P{i:02d}", seed=i) for i in range(10)]
    for i, c in enumerate(cases): c.labels = {"idh": ("wildtype", "mutant")[i % 2], "codel": 0, "grade": 4}
    write_manifest(cases, lay.manifest("internal"))
    cfg = QUICK.replace(vq_steps=5, vq_curves_per_case=20)
    split = demo._splits(lay, cfg)
    sp = load_splits(lay.splits)
    train = set(sp.patient_id[sp.split == "train"])
    assert (split["train"], split["val"], split["test"]) == (8, 1, 1) and len(train) == 8
    seen, real = [], demo.tics_from_cases
    def spy(cases, **kw):
        seen.extend(c.patient_id for c in cases)
        return real(cases, **kw)
    monkeypatch.setattr(demo, "tics_from_cases", spy)
    res = demo._vqvae(lay, cfg)
    assert set(seen) == train and len(seen) == 8  # no val/test patient's curves reach the VQ-VAE
    assert res["patients"] == 8 and res["curves"] == 8 * 20 and lay.vqvae.exists()


def test_report_is_escaped_labelled_and_wraps_every_table(report):
    page = report.read_text()
    assert "<p>Quick demo, seed 1," in page
    assert "<script" not in page and "&lt;script&gt;alert(" in page
    n_tables = len(re.findall(r"<table\b", page))
    assert n_tables >= 8 and len(re.findall(r'<div class="table-wrap"><table>', page)) == n_tables
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)) == 4


@pytest.mark.parametrize("width", check_report.WIDTHS)
def test_report_layout_in_chromium(report, width):
    binary = check_report.find_chromium()
    if not binary: pytest.skip("no Chromium binary on PATH (apt-get install chromium, or set $CHROMIUM)")
    m = check_report.load(binary, report, width).layout
    assert m["innerWidth"] == width
    assert not check_report.layout_problems(m), check_report.layout_problems(m)
    assert m["scrollWidth"] <= width
    wide = [t for t in m["tables"] if t["scroll"] > t["box"]]
    assert any(t["scroll"] > width for t in wide), "the 30-column table should be wider than the window, inside its box"
    assert all(t["overflowX"] == "auto" and t["box"] < width for t in wide)
    assert len(m["media"]) == 8 and all(e["right"] <= width for e in m["media"])  # 4 figures, 4 images
