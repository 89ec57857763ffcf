"""Data expectations (Great Expectations 1.x, real runs): clean data passes, every failure
mode is detected and named, real LETOR files, and ``ltr data validate --expectations``.

GX is slow to import (seconds) and to set up (about 0.1 s per validation), so the
datasets are small and each test runs one or two validations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.datasets import need
from typer.testing import CliRunner

from ltr.cli.main import app
from ltr.data.dataset import LetorDataset
from ltr.data.letor import LetorFormatError, read_letor, write_letor
from ltr.data.synth import generate_synthetic
from ltr.validation import (
    DataValidationError,
    ValidationPolicy,
    ValidationReport,
    check,
    check_file,
    validate_dataset,
    validate_file,
)

N_FEATURES = 6
# The synthetic dataset's features are standard-normal-like: all inside [-50, 50].
CLEAN = ValidationPolicy(
    label_set=(0, 1, 2, 3),
    min_docs_per_query=3,
    max_docs_per_query=20,
    feature_min=-50.0,
    feature_max=50.0,
    n_features=N_FEATURES,
)


def synthetic() -> LetorDataset:
    """12 queries of 3..20 documents, labels 0..3, no duplicates, no missing values."""
    return generate_synthetic(
        n_queries=12,
        n_features=N_FEATURES,
        n_doc_only=2,
        mean_docs=8,
        min_docs=3,
        max_docs=20,
        max_label=3,
        seed=7,
    )


def changed(ds: LetorDataset, **arrays: np.ndarray) -> LetorDataset:
    parts = {
        "features": ds.features,
        "labels": ds.labels,
        "qids": ds.qids,
        "doc_ids": ds.doc_ids,
        **arrays,
    }
    return LetorDataset(**parts)


def failed(report: ValidationReport) -> dict[tuple[str, str | None], dict]:
    """Failed expectations keyed by (expectation type, column)."""
    return {(r["expectation"], r["column"]): r for r in report.results if not r["success"]}


# ------------------------------------------------------------------------- clean data
def test_a_clean_synthetic_dataset_passes_every_expectation_and_saves_its_reports(
    tmp_path: Path,
) -> None:
    ds = synthetic()
    report = validate_dataset(ds, CLEAN, report_dir=tmp_path / "reports", name="synthetic")
    assert report.success, report.summary()
    assert all(r["success"] for r in report.results)
    kinds = {r["expectation"] for r in report.results}
    assert {
        "expect_table_columns_to_match_ordered_list",
        "expect_table_column_count_to_equal",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_compound_columns_to_be_unique",
        "expect_column_values_to_be_unique",
    } <= kinds
    # every feature column is checked for missing values and range
    for kind in ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between"):
        columns = {r["column"] for r in report.results if r["expectation"] == kind}
        assert {f"f{i + 1}" for i in range(N_FEATURES)} <= columns

    assert report.report_path == tmp_path / "reports" / "synthetic.validation.json"
    saved = json.loads(report.report_path.read_text())
    assert saved["success"] is True and len(saved["results"]) == len(report.results)
    stats = saved["statistics"]
    assert (stats["rows"], stats["queries"], stats["features"]) == (ds.n_docs, 12, N_FEATURES)
    assert stats["unsuccessful_expectations"] == 0 and stats["gx_version"].startswith("1.")
    assert report.gx_result_path is not None
    gx_result = json.loads(report.gx_result_path.read_text())
    assert set(gx_result) == {"documents", "queries"}
    assert all(batch["success"] for batch in gx_result.values())
    assert not list((tmp_path / "reports").glob(".*.tmp"))  # atomic writes leave no temp


def test_check_returns_the_report_of_clean_data_and_raises_on_failing_data() -> None:
    ds = synthetic()
    assert check(ds, CLEAN).success
    labels = ds.labels.copy()
    labels[0] = 7
    with pytest.raises(DataValidationError, match=r"^label: expected a label in \{0, 1, 2, 3\}"):
        check(changed(ds, labels=labels), CLEAN)


def test_check_file_reads_keeps_missing_values_and_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "day.txt"
    path.write_text("0 qid:1 1:0.5 2:0.1\n1 qid:1 1:0.2 2:NULL\n")
    with pytest.raises(DataValidationError) as caught:
        check_file(path, ValidationPolicy(), report_dir=tmp_path)
    assert str(caught.value).startswith(f"{path}: f2: expected no NULL/NaN/inf value; 1 of 2")
    assert caught.value.report is not None
    assert caught.value.report.report_path == tmp_path / "day.validation.json"
    assert check_file(path, ValidationPolicy(max_missing_fraction=0.25)).success


# ---------------------------------------------------------------------- failure modes
def test_a_label_outside_the_label_set_is_named_with_its_row() -> None:
    ds = synthetic()
    labels = ds.labels.copy()
    labels[4] = 7
    report = validate_dataset(changed(ds, labels=labels), CLEAN)
    assert not report.success
    entry = failed(report)[("expect_column_values_to_be_in_set", "label")]
    assert entry["unexpected_count"] == 1
    assert entry["examples"] == [{"label": 7.0, "qid": ds.qids[4], "doc_id": ds.doc_ids[4]}]
    assert report.summary() == (
        "label: expected a label in {0, 1, 2, 3}; 1 of "
        f"{ds.n_docs} rows unexpected (e.g. 7 at qid={ds.qids[4]} doc_id={ds.doc_ids[4]})"
    )


def test_without_a_label_set_labels_must_be_non_negative_integers() -> None:
    ds = synthetic()
    labels = ds.labels.copy()
    labels[[0, 1]] = [7, 1.5]
    report = validate_dataset(changed(ds, labels=labels), ValidationPolicy())
    entry = failed(report)[("expect_column_values_to_be_in_set", "label")]
    assert entry["unexpected_count"] == 1 and entry["examples"][0]["label"] == 1.5
    assert "label: expected a non-negative integer label" in report.summary()


def test_a_feature_out_of_range_is_named_with_its_column() -> None:
    ds = synthetic()
    features = ds.features.copy()
    features[2, 3] = 1e4
    report = validate_dataset(changed(ds, features=features), CLEAN)
    assert list(failed(report)) == [("expect_column_values_to_be_between", "f4")]
    assert report.summary().startswith("f4: expected values in [-50, 50]; 1 of ")
    assert "10000 at qid=" in report.summary()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinite_feature_is_a_missing_value_named_with_its_column(bad: float) -> None:
    ds = synthetic()
    features = ds.features.copy()
    features[5, 1] = bad
    report = validate_dataset(changed(ds, features=features), CLEAN)
    # missing, not out of range: GX leaves nulls out of range checks
    assert list(failed(report)) == [("expect_column_values_to_not_be_null", "f2")]
    assert report.summary().startswith("f2: expected no NULL/NaN/inf value; 1 of ")
    assert f"missing at qid={ds.qids[5]} doc_id={ds.doc_ids[5]}" in report.summary()
    assert report.statistics["missing_by_feature"] == {"f2": 1}


def test_missing_values_within_the_allowed_fraction_of_cells_pass_and_beyond_it_fail() -> None:
    ds = synthetic()
    features = ds.features.copy()
    features[:3, 0] = np.nan  # 3 missing cells
    dirty = changed(ds, features=features)
    cells = ds.n_docs * N_FEATURES
    allowed = ValidationPolicy(max_missing_fraction=3 / cells)
    assert validate_dataset(dirty, allowed).success
    strict = ValidationPolicy(max_missing_fraction=2.5 / cells)
    report = validate_dataset(dirty, strict)
    assert list(failed(report)) == [("expect_column_sum_to_be_between", "n_missing")]
    assert report.summary().startswith(
        f"features: expected NULL/NaN/inf values in at most 2 of {cells} cells"
    )
    assert report.summary().endswith("found 3")


@pytest.mark.parametrize(
    ("limits", "bad_queries"),
    [({"max_docs_per_query": 10}, "long"), ({"min_docs_per_query": 6}, "short")],
)
def test_a_query_with_too_many_or_too_few_documents_is_named(
    limits: dict, bad_queries: str
) -> None:
    ds = synthetic()
    sizes = dict(zip(ds.query_ids, ds.group_sizes.tolist(), strict=True))
    if bad_queries == "long":
        expected = {q for q, n in sizes.items() if n > 10}
    else:
        expected = {q for q, n in sizes.items() if n < 6}
    assert expected, "the synthetic data must have such queries"
    policy = ValidationPolicy(label_set=(0, 1, 2, 3), **limits)
    report = validate_dataset(ds, policy)
    entry = failed(report)[("expect_column_values_to_be_between", "n_docs")]
    assert entry["unexpected_count"] == len(expected) and entry["element_count"] == 12
    assert {e["qid"] for e in entry["examples"]} <= expected
    assert report.summary().startswith("docs per query: expected between ")
    assert f"{len(expected)} of 12 queries unexpected" in report.summary()


def test_a_duplicate_document_in_a_query_is_detected_unless_allowed() -> None:
    ds = synthetic()
    doc_ids = ds.doc_ids.copy()
    doc_ids[1] = doc_ids[0]
    dup = changed(ds, doc_ids=doc_ids)
    report = validate_dataset(dup, CLEAN)
    entry = failed(report)[("expect_compound_columns_to_be_unique", None)]
    assert entry["columns"] == ["qid", "doc_id"] and entry["unexpected_count"] == 2
    assert report.summary() == (
        f"qid, doc_id: expected unique (qid, doc_id) pairs; 2 of {ds.n_docs} rows unexpected "
        f"(e.g. qid={ds.qids[0]} doc_id={doc_ids[0]})"
    )
    allowed = ValidationPolicy(label_set=(0, 1, 2, 3), allow_duplicate_docs=True)
    assert validate_dataset(dup, allowed).success


def test_a_wrong_feature_count_fails_the_schema() -> None:
    report = validate_dataset(synthetic(), ValidationPolicy(n_features=46))
    assert set(failed(report)) == {
        ("expect_table_columns_to_match_ordered_list", None),
        ("expect_table_column_count_to_equal", None),
    }
    assert report.summary().splitlines() == [
        "table: expected columns [qid, doc_id, label, f1..f46]; found [qid, doc_id, label, f1..f6]",
        "table: expected 49 columns (46 features); found 9",
    ]


def test_a_query_split_in_two_runs_is_reported_as_not_contiguous() -> None:
    ds = synthetic()
    last_of_first = int(ds.offsets[1]) - 1  # move it to the end: q0 ... q11 q0
    rows = np.r_[np.delete(np.arange(ds.n_docs), last_of_first), last_of_first]
    moved = changed(
        ds,
        features=ds.features[rows],
        labels=ds.labels[rows],
        qids=ds.qids[rows],
        doc_ids=ds.doc_ids[rows],
    )
    report = validate_dataset(moved, ValidationPolicy())
    assert ("expect_column_values_to_be_unique", "qid") in failed(report)
    assert "qid: expected the documents of a query to be contiguous" in report.summary()


# -------------------------------------------------------------------------- real data
MQ2008 = ValidationPolicy(label_set=(0, 1, 2), feature_min=0.0, feature_max=1.0, n_features=46)


@pytest.mark.datasets
def test_mq2008_s1_passes_labels_0_to_2_features_in_0_1_and_46_columns(tmp_path: Path) -> None:
    report = validate_file(need("mq2008/S1.txt"), MQ2008, report_dir=tmp_path)
    assert report.success, report.summary()
    assert report.report_path == tmp_path / "S1.validation.json"
    stats = json.loads(report.report_path.read_text())["statistics"]
    assert (stats["rows"], stats["features"], stats["missing_cells"]) == (2933, 46, 0)


@pytest.mark.datasets
def test_ohsumed_with_null_features_fails_on_missing_values_instead_of_crashing() -> None:
    path = need("ohsumed/Feature-null/Fold1/testset.txt")
    with pytest.raises(LetorFormatError, match="is NULL"):
        read_letor(path)  # the training reader rejects the file by default
    policy = ValidationPolicy(label_set=(0, 1, 2), n_features=45)
    report = validate_file(path, policy)  # the validation path keeps and reports them
    assert not report.success
    kinds = {kind for kind, _ in failed(report)}
    assert kinds == {"expect_column_values_to_not_be_null"}
    stats = report.statistics
    assert stats["missing_cells"] == stats["missing_report"]["null_values"] > 0
    assert set(stats["missing_by_feature"]) == {c for _, c in failed(report)}
    # read elsewhere with imputation, the positions are lost but the count still fails
    imputed = validate_dataset(read_letor(path, missing="impute"), policy)
    assert list(failed(imputed)) == [("expect_column_values_to_be_between", "imputed_at_read")]
    assert imputed.summary() == (
        f"features: expected NULL/NaN/inf values imputed at read in at most 0 of "
        f"{stats['cells']} cells (max_missing_fraction=0); found {stats['missing_cells']}"
    )


# -------------------------------------------------------------------------------- CLI
runner = CliRunner()


def run_cli(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_cli_validate_expectations_exits_0_on_clean_data_with_json(tmp_path: Path) -> None:
    path = tmp_path / "clean.txt"
    write_letor(synthetic(), path)
    result = run_cli(
        "data", "validate", path, "--expectations", "--label-set", "0,1,2,3",
        "--feature-range", "-50,50", "--max-docs", "20", "--n-features", N_FEATURES,
        "--report-dir", tmp_path / "reports", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["rows"] == synthetic().n_docs and out["validation"]["success"] is True
    assert Path(out["validation"]["report_path"]) == tmp_path / "reports" / "clean.validation.json"
    assert (tmp_path / "reports" / "clean.gx.json").is_file()


def test_cli_validate_expectations_exits_1_with_a_one_line_reason(tmp_path: Path) -> None:
    path = tmp_path / "dirty.txt"
    path.write_text("0 qid:1 1:0.5 2:NULL\n7 qid:1 1:0.2 2:0.1\n1 qid:2 1:1.5 2:0\n")
    result = run_cli(
        "data", "validate", path, "--expectations", "--label-set", "0,1,2",
        "--feature-range", "0,1", "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert json.loads(result.stdout)["validation"]["success"] is False
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: 3 of ")
    for part in ("label: expected a label in {0, 1, 2}", "f1: expected values in [0, 1]", "f2:"):
        assert part in lines[0]


def test_cli_policy_options_need_expectations_and_valid_values(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("0 qid:1 1:0.5\n")
    result = run_cli("data", "validate", path, "--max-docs", "5")
    assert result.exit_code == 2 and result.stderr == "error: --max-docs need --expectations\n"
    result = run_cli("data", "validate", path, "--expectations", "--feature-range", "0")
    assert result.exit_code == 2 and "MIN,MAX" in result.stderr
    result = run_cli("data", "validate", path, "--expectations", "--label-set", "0,x")
    assert result.exit_code == 2 and "'x' is not a number" in result.stderr
