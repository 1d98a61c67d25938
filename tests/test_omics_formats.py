"""Full-transcriptome loaders (`hiperf_nb.omics_formats`) on the tiny real-value fixtures of tests/fixtures/omics/."""
import gzip
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hiperf_nb.core import DataFormatError, HiperfWarning, InputError, data_path
from hiperf_nb.genomics import HGNCMapper, expression_table, load_expression, load_mutations, mutation_counts, tcga_dataset
from hiperf_nb.omics_formats import (describe_dataset_files, load_expression_file, load_mutation_file, sniff_expression,
                                     tcga_datasets_from_files)

FX = Path(__file__).parent / "fixtures" / "omics"
PATIENTS = ["TCGA-06-0125", "TCGA-DU-5870", "TCGA-DU-6397"]


@pytest.fixture(scope="module")
def hgnc():
    return HGNCMapper()


@pytest.fixture(scope="module")
def bundled(hgnc):
    return expression_table(load_expression(), PATIENTS, hgnc)


@pytest.mark.parametrize("name,fmt,file_scale", [("TCGA-LGG.htseq_fpkm.tsv", "xena", "log2"), ("HiSeqV2", "xena", "log2"),
                                                 ("data_mrna_seq_fpkm.txt", "cbioportal", "linear")])
def test_expression_layouts_give_the_bundled_matrix(name, fmt, file_scale, hgnc, bundled):
    e = load_expression_file(FX / name)
    assert (e.attrs["format"], e.attrs["file_scale"], e.attrs["scale"]) == (fmt, file_scale, "linear")
    t = expression_table(e, PATIENTS, hgnc)
    assert t.shape == (3, 5)
    np.testing.assert_allclose(t.to_numpy(), bundled[t.columns].to_numpy(), rtol=1e-12, atol=1e-9)


def test_log2_round_trip_and_gzip(tmp_path, hgnc, bundled):
    # write the bundled FPKM as log2(x + 1) in a gzipped Xena file: the loader gives the FPKM back
    b = bundled.T
    lg = np.log2(b + 1)
    p = tmp_path / "TCGA-GBM.star_fpkm.tsv.gz"
    with gzip.open(p, "wt") as f:
        lg.rename(columns=lambda c: c + "-01A").rename_axis("sample").to_csv(f, sep="\t")
    e = load_expression_file(p)
    np.testing.assert_allclose(e.loc[b.index, [c + "-01A" for c in b.columns]].to_numpy(), b.to_numpy(), rtol=1e-12)
    # declared linear, the same file is kept as it is (and stated as given)
    e2 = load_expression_file(p, scale="linear")
    assert e2.attrs["scale_reason"] == "given"
    np.testing.assert_allclose(np.log2(e.loc[b.index] + 1).to_numpy(), e2.loc[b.index].to_numpy(), rtol=1e-12)


def test_ensembl_versions_and_par_y():
    e = load_expression_file(FX / "TCGA-LGG.htseq_fpkm.tsv")
    assert {"HMGB2", "TOP2A", "CENPA", "RACGAP1", "ASF1B"} <= set(e.index)
    assert "ENSG00000237094" in e.index  # version stripped, no HGNC symbol: left for the mapper to drop
    assert not any("PAR_Y" in g or "." in g for g in e.index)
    assert e.attrs["ensembl_unmapped"] == 1


def test_glass_zscores_are_flagged(tmp_path):
    z = load_expression_file(FX / "data_mrna_seq_tpm_zscores_ref_all_samples.txt")
    assert (z.attrs["format"], z.attrs["scale"]) == ("glass", "zscore")
    assert z.min().min() < -1  # LogTransform could not take these: the pipeline must skip its log
    with pytest.raises(DataFormatError, match="zscores_ref_all_samples.txt.*negative.*zscore"):
        load_expression_file(FX / "data_mrna_seq_tpm_zscores_ref_all_samples.txt", scale="linear")
    # a cBioPortal z-score file of TCGA samples is z-scores too (from its name)
    p = tmp_path / "data_mrna_seq_v2_rsem_zscores_ref_all_samples.txt"
    p.write_text("Hugo_Symbol\tEntrez_Gene_Id\tTCGA-06-0125-01\tTCGA-DU-5870-01\nTP53\t7157\t-1.2\t1.2\n")
    assert sniff_expression(p)["scale"] == "zscore"


@pytest.mark.parametrize("header,expected", [("probe\tTCGA-06-0125-01A", "unknown expression layout"),
                                             ("Hugo_Symbol\tCytoband\tTCGA-06-0125-01A", "Cytoband"),
                                             ("sample\tnot_a_barcode", "not_a_barcode"),
                                             ("Hugo_Symbol", "no sample columns")])
def test_bad_expression_headers_name_the_file(tmp_path, header, expected):
    p = tmp_path / "mystery_matrix.txt"
    p.write_text(header + "\nTP53\t1\n")
    with pytest.raises(DataFormatError, match=f"mystery_matrix.txt.*{expected}"):
        load_expression_file(p)


def test_bad_values_and_arguments(tmp_path):
    p = tmp_path / "HiSeqV2"
    p.write_text("sample\tTCGA-06-0125-01\nTP53\tabc\n")
    with pytest.raises(DataFormatError, match="HiSeqV2.*non-numeric"):
        load_expression_file(p)
    with pytest.raises(InputError, match="log10"):
        load_expression_file(FX / "HiSeqV2", scale="log10")
    with pytest.raises(InputError, match="format"):
        load_expression_file(FX / "HiSeqV2", format="geo")


def test_mutation_files_give_the_bundled_counts(hgnc):
    ref = load_mutations()
    for name in ("data_mutations.txt", "mc3_filter.maf"):
        m = load_mutation_file(FX / name)
        pats, genes = sorted(m["patient_id"].unique()), sorted(m["Hugo_Symbol"].unique())
        r = ref[ref["patient_id"].isin(pats) & ref["Hugo_Symbol"].isin(genes)]
        pd.testing.assert_frame_equal(mutation_counts(m, pats, hgnc), mutation_counts(r, pats, hgnc))
    assert load_mutation_file(FX / "data_mutations.txt").attrs["non_primary_dropped"] == 1
    assert load_mutation_file(FX / "data_mutations.txt", primary_only=False).attrs["non_primary_dropped"] == 0


def test_drop_filters_counts():
    full = load_mutation_file(FX / "mc3_filter.maf")
    w = load_mutation_file(FX / "mc3_filter.maf", drop_filters=["wga"])
    assert w.attrs["filter_dropped"] == {"wga": 6, "total": 6} and len(full) - len(w) == 6
    with pytest.warns(HiperfWarning, match="data_mutations.txt.*no FILTER column"):
        m = load_mutation_file(FX / "data_mutations.txt", drop_filters=["wga"])
    assert m.attrs["filter_dropped"]["total"] == 0
    b = load_mutations(drop_filters=("wga",))  # the bundled MC3 table: PASS 45,340, wga 14,368
    assert b.attrs["filter_dropped"] == {"wga": 14368, "total": 14368} and len(b) == 45340


def test_bad_mutation_headers_name_the_file(tmp_path):
    p = tmp_path / "calls.maf"
    p.write_text("#version 2.4\nHugo_Symbol\tTumor_Sample_Barcode\nTP53\tTCGA-06-0125-01\n")
    with pytest.raises(DataFormatError, match="calls.maf.*Variant_Classification"):
        load_mutation_file(p)
    p.write_text("Hugo_Symbol\tVariant_Classification\tTumor_Sample_Barcode\nTP53\tMissense_Mutation\tsample_7\n")
    with pytest.raises(DataFormatError, match="calls.maf.*sample_7"):
        load_mutation_file(p)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    "A data folder whose published split names the three fixture patients."
    root = tmp_path_factory.mktemp("data")
    for sub in ("tcga_glioma", "hgnc"): shutil.copytree(data_path(sub), root / sub)
    (root / "lunar_reference").mkdir()
    (root / "lunar_reference" / "tcga_splits.json").write_text(
        json.dumps({"train": ["TCGA-06-0125-01"], "val": ["TCGA-DU-5870-01"], "test": ["TCGA-DU-6397-01"]}))
    return root


def test_datasets_from_files(small_root, hgnc):
    with warnings.catch_warnings():
        warnings.simplefilter("error", HiperfWarning)
        dss = tcga_datasets_from_files(expression=FX / "HiSeqV2", mutations=FX / "mc3_filter.maf", drop_filters=["wga"],
                                       mapper=hgnc, data_dir=small_root)
    base = tcga_dataset("lunar", mapper=hgnc, data_dir=small_root)
    ds = dss["lunar"]
    assert ds.splits == base.splits and ds.expression_scale == "linear"
    np.testing.assert_allclose(ds.expression.to_numpy(), base.expression[ds.expression.columns].to_numpy(), rtol=1e-12)
    assert ds.sources["mutations"]["filter_dropped"] == {"wga": 6, "total": 6}
    assert set(dss) == {"lunar", "all"} and set(dss["all"].cohort.index) <= set(PATIENTS)
    z = tcga_datasets_from_files(("lunar",), expression=FX / "data_mrna_seq_tpm_zscores_ref_all_samples.txt", mapper=hgnc,
                                 data_dir=small_root)["lunar"]
    assert z.expression_scale == "zscore"


def test_dataset_errors(small_root, hgnc, tmp_path):
    p = tmp_path / "glass_only.txt"
    p.write_text("Hugo_Symbol\tGLSS-19-0266-TP\nTP53\t0.5\n")
    with pytest.raises(DataFormatError, match="glass_only.txt.*no TCGA primary-tumour sample"):
        tcga_datasets_from_files(("all",), expression=p, mapper=hgnc, data_dir=small_root)
    with pytest.raises(InputError, match="bundled matrix is linear"):
        tcga_datasets_from_files(("all",), expression_scale="zscore", mapper=hgnc, data_dir=small_root)
    # a published patient without a mutation call: warned (its mutation row is all zeros)
    m = tmp_path / "two.maf"
    m.write_text("Hugo_Symbol\tVariant_Classification\tTumor_Sample_Barcode\nTP53\tMissense_Mutation\tTCGA-06-0125-01\n")
    with pytest.warns(HiperfWarning, match="two.maf: 2 of the 3 published LUNAR patients have no mutation call"):
        tcga_datasets_from_files(("lunar",), mutations=m, mapper=hgnc, data_dir=small_root)


def test_describe_is_headers_only():
    lines = describe_dataset_files(FX / "TCGA-LGG.htseq_fpkm.tsv", FX / "data_mutations.txt", "log2", ["wga"])
    assert len(lines) == 3 and "xena layout" in lines[0] and "(given)" in lines[0] and "no FILTER column" in lines[1]
