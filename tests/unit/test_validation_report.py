"""The pieces of data validation that need no Great Expectations run: policy, frames, the
raw reader that keeps missing values, and the report's summary and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ltr.data.dataset import LetorDataset
from ltr.validation import (
    DataValidationError,
    ValidationPolicy,
    ValidationReport,
    letor_frame,
    query_frame,
    read_raw,
    report_name,
)
from ltr.validation.report import columns_text

NAN, INF = float("nan"), float("inf")


def tiny() -> LetorDataset:
    return LetorDataset(
        features=np.array([[0.5, NAN], [INF, 1.0], [0.0, -INF]], dtype=np.float32),
        labels=np.array([2, 0, 1], dtype=np.float32),
        qids=np.array(["a", "a", "b"], dtype=object),
        doc_ids=np.array(["d1", "d2", "d1"], dtype=object),
    )


# ------------------------------------------------------------------------------ policy
def test_policy_defaults_accept_any_non_negative_integer_label_and_no_missing_value() -> None:
    policy = ValidationPolicy()
    assert policy.label_set is None and policy.max_missing_fraction == 0.0
    assert (policy.min_docs_per_query, policy.max_docs_per_query) == (1, 5000)


def test_policy_stores_the_label_set_as_floats() -> None:
    assert ValidationPolicy(label_set=(0, 1, 2)).label_set == (0.0, 1.0, 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_set": ()}, "label_set"),
        ({"label_set": (0, math.nan)}, "label_set"),
        ({"min_docs_per_query": 0}, "min_docs_per_query"),
        ({"min_docs_per_query": 10, "max_docs_per_query": 5}, "min_docs_per_query"),
        ({"feature_min": 1.0, "feature_max": 0.0}, "above feature_max"),
        ({"feature_max": math.inf}, "finite"),
        ({"n_features": 0}, "n_features"),
        ({"max_missing_fraction": 1.5}, "max_missing_fraction"),
    ],
)
def test_policy_refuses_inconsistent_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ValidationPolicy(**kwargs)


# ------------------------------------------------------------------------------ frames
def test_letor_frame_has_ids_label_then_numbered_features_with_non_finite_as_nan() -> None:
    frame = letor_frame(tiny())
    assert list(frame.columns) == ["qid", "doc_id", "label", "f1", "f2"]
    assert frame["qid"].tolist() == ["a", "a", "b"]
    assert frame["label"].tolist() == [2.0, 0.0, 1.0]
    assert frame[["f1", "f2"]].isna().to_numpy().tolist() == [
        [False, True],
        [True, False],
        [False, True],
    ]


def test_letor_frame_does_not_change_the_dataset() -> None:
    ds = tiny()
    letor_frame(ds)
    assert np.isinf(ds.features[1, 0]) and np.isnan(ds.features[0, 1])


def test_query_frame_counts_documents_and_missing_cells_per_query() -> None:
    frame = query_frame(tiny())
    assert frame.to_dict("list") == {"qid": ["a", "b"], "n_docs": [2, 1], "n_missing": [2, 1]}


def test_query_frame_lists_a_query_twice_when_its_documents_are_not_contiguous() -> None:
    ds = LetorDataset(
        features=np.zeros((4, 1)),
        labels=np.zeros(4),
        qids=np.array(["a", "b", "b", "a"], dtype=object),
        doc_ids=np.array(["1", "2", "3", "4"], dtype=object),
    )
    assert query_frame(ds)["qid"].tolist() == ["a", "b", "a"]
    assert query_frame(ds)["n_docs"].tolist() == [1, 2, 1]


# ------------------------------------------------------------------------ raw reading
def test_read_raw_keeps_null_nan_and_inf_as_nan_exactly_where_they_were(tmp_path: Path) -> None:
    path = tmp_path / "dirty.txt"
    path.write_text(
        "0 qid:1 1:0.5 2:NULL 3:7 #docid = a\n"
        "1 qid:1 1:nan 3:0 #docid = b\n"
        "2 qid:2 2:-inf 3:1 #docid = c\n"
    )
    ds = read_raw(path)
    assert np.isnan(ds.features).tolist() == [
        [False, True, False],
        [True, False, False],
        [False, True, False],
    ]
    np.testing.assert_array_equal(ds.features[~np.isnan(ds.features)], [0.5, 7, 0, 0, 0, 1])
    report = ds.missing_report
    assert (report.policy, report.null_values, report.nan_values, report.inf_values) == (
        "keep",
        1,
        1,
        1,
    )


def test_read_raw_of_a_clean_file_equals_read_letor(tmp_path: Path) -> None:
    from ltr.data.letor import read_letor

    path = tmp_path / "clean.txt"
    path.write_text("0 qid:1 1:0.5 3:7\n1 qid:1 2:1\n")
    np.testing.assert_array_equal(read_raw(path).features, read_letor(path).features)


def test_report_name_is_the_file_stem_made_safe() -> None:
    assert report_name("/data/Fold1/test set.txt") == "test_set"
    assert report_name("S1.txt") == "S1"
    assert report_name("@@.txt") == "raw"


# ------------------------------------------------------------------------------ report
def failed_label_entry() -> dict:
    return {
        "batch": "documents",
        "expectation": "expect_column_values_to_be_in_set",
        "column": "label",
        "columns": ["label"],
        "success": False,
        "expected": "a label in {0, 1, 2}",
        "where": "label",
        "element_count": 100,
        "unexpected_count": 2,
        "unexpected_percent": 2.0,
        "examples": [
            {"label": 7.0, "qid": "q1", "doc_id": "d3"},
            {"label": 7.0, "qid": "q1", "doc_id": "d3"},
            {"label": 9.5, "qid": "q2", "doc_id": "d8"},
        ],
    }


def passed_entry() -> dict:
    return {
        "batch": "documents",
        "expectation": "expect_column_values_to_not_be_null",
        "column": "qid",
        "columns": ["qid"],
        "success": True,
        "expected": "no missing value",
        "where": "qid",
    }


def test_summary_has_one_line_per_failed_expectation_naming_column_and_examples() -> None:
    schema = {
        "batch": "documents",
        "expectation": "expect_table_columns_to_match_ordered_list",
        "column": None,
        "columns": [],
        "success": False,
        "expected": "columns [qid, doc_id, label, f1..f46]",
        "where": "table",
        "observed_value": ["qid", "doc_id", "label", *(f"f{i}" for i in range(1, 11))],
    }
    report = ValidationReport(
        success=False, results=[passed_entry(), failed_label_entry(), schema], statistics={}
    )
    assert report.summary().splitlines() == [
        "label: expected a label in {0, 1, 2}; 2 of 100 rows unexpected "
        "(e.g. 7 at qid=q1 doc_id=d3; 9.5 at qid=q2 doc_id=d8)",
        "table: expected columns [qid, doc_id, label, f1..f46]; "
        "found [qid, doc_id, label, f1..f10]",
    ]


def test_summary_of_per_query_failures_counts_queries() -> None:
    entry = {
        "batch": "queries",
        "expectation": "expect_column_values_to_be_between",
        "column": "n_docs",
        "columns": ["n_docs"],
        "success": False,
        "expected": "between 5 and 10 documents",
        "where": "docs per query",
        "element_count": 4,
        "unexpected_count": 1,
        "examples": [{"n_docs": 12, "qid": "q3"}],
    }
    report = ValidationReport(success=False, results=[entry], statistics={})
    assert report.summary() == (
        "docs per query: expected between 5 and 10 documents; 1 of 4 queries unexpected "
        "(e.g. 12 at qid=q3)"
    )


def test_summary_names_an_expectation_that_could_not_run() -> None:
    entry = {**passed_entry(), "success": False, "column": "qid", "exception": "no column"}
    report = ValidationReport(success=False, results=[entry], statistics={})
    assert report.summary() == (
        "qid: expected no missing value; could not be checked "
        "(expect_column_values_to_not_be_null: no column)"
    )


def test_summary_of_a_passing_report_says_so_in_one_line() -> None:
    report = ValidationReport(success=True, results=[passed_entry()], statistics={}, name="S1")
    assert report.summary() == "S1: all 1 expectations passed"
    assert report.failures == []


def test_report_dict_is_json_with_paths_as_strings(tmp_path: Path) -> None:
    report = ValidationReport(
        success=False,
        results=[failed_label_entry()],
        statistics={"rows": 100},
        report_path=tmp_path / "raw.validation.json",
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["report_path"] == str(tmp_path / "raw.validation.json")
    assert data["gx_result_path"] is None and data["results"][0]["unexpected_count"] == 2


def test_data_validation_error_is_a_value_error_that_carries_the_report() -> None:
    report = ValidationReport(success=False, results=[failed_label_entry()], statistics={})
    err = DataValidationError(report.summary(), report)
    assert isinstance(err, ValueError) and err.report is report
    assert str(err).startswith("label: expected a label in {0, 1, 2}")


def test_columns_text_collapses_consecutive_feature_columns_only() -> None:
    assert columns_text(["qid", "doc_id", "label", "f1", "f2", "f3"]) == (
        "[qid, doc_id, label, f1..f3]"
    )
    assert columns_text(["qid", "f1"]) == "[qid, f1]"
    assert columns_text(["qid", "f2", "f5"]) == "[qid, f2, f5]"
