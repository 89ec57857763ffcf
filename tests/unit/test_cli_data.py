"""``ltr data`` commands, run in-process through Typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ltr.cli.main import app
from ltr.data.letor import read_letor
from ltr.data.parquet import from_parquet

runner = CliRunner()

NULLS = "0 qid:1 1:1 2:NULL\n1 qid:1 1:2 2:3\n2 qid:2 1:NULL 2:inf\n"


def run(*args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_data_help_lists_the_commands() -> None:
    result = run("data", "--help")
    assert result.exit_code == 0
    for name in ("synth", "validate", "folds", "convert"):
        assert name in result.stdout


def test_synth_writes_a_letor_file_that_validates(tmp_path: Path) -> None:
    out = tmp_path / "syn.txt"
    result = run("data", "synth", out, "--queries", "15", "--features", "6", "--doc-only", "2")
    assert result.exit_code == 0, result.stderr
    ds = read_letor(out)
    assert (ds.n_queries, ds.n_features) == (15, 6)
    summary = json.loads(run("data", "validate", out, "--json").stdout)
    assert summary["queries"] == 15 and summary["rows"] == ds.n_docs
    assert sum(summary["labels"].values()) == ds.n_docs


def test_synth_parquet_and_query_file_layouts(tmp_path: Path) -> None:
    pq_out = tmp_path / "syn.parquet"
    assert run("data", "synth", pq_out, "--queries", "5", "--seed", "3").exit_code == 0
    assert from_parquet(pq_out).n_queries == 5
    txt = tmp_path / "lgb.txt"
    result = run("data", "synth", txt, "--queries", "5", "--seed", "3", "--query-file")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "lgb.txt.query").is_file()
    np.testing.assert_array_equal(read_letor(txt).features, from_parquet(pq_out).features)


def test_synth_refuses_more_doc_only_features_than_features(tmp_path: Path) -> None:
    result = run("data", "synth", tmp_path / "x.txt", "--features", "3", "--doc-only", "4")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")


def test_validate_prints_counts_labels_and_list_lengths(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("2 qid:1 1:1\n0 qid:1 1:2\n0 qid:1 1:3\n0 qid:2 1:1\n1 qid:3 1:1\n")
    result = run("data", "validate", path, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["queries"], summary["features"]) == (5, 3, 1)
    assert summary["labels"] == {"0": 3, "1": 1, "2": 1}
    assert summary["docs_per_query"] == {"min": 1, "mean": 1.67, "max": 3}
    assert summary["queries_without_relevant"] == 1
    text = run("data", "validate", path).stdout
    assert "queries    3" in text and "0: 3  1: 1  2: 1" in text


def test_validate_bad_file_exits_2_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0 qid:1 1:1\n0 qid:1 1:oops\n")
    result = run("data", "validate", path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {path}:2: value 'oops' of feature 1 is not a number")


def test_validate_rejects_nulls_by_default_and_imputes_on_request(tmp_path: Path) -> None:
    path = tmp_path / "nulls.txt"
    path.write_text(NULLS)
    rejected = run("data", "validate", path)
    assert rejected.exit_code == 2
    assert f"error: {path}:1: feature 2 is NULL" in rejected.stderr
    result = run("data", "validate", path, "--missing", "impute", "--impute-value", "-1", "--json")
    assert result.exit_code == 0, result.stderr
    missing = json.loads(result.stdout)["missing"]
    assert missing["null_values"] == 2 and missing["inf_values"] == 1
    assert missing["rows_affected"] == 2 and missing["impute_value"] == -1.0


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    result = run("data", "validate", tmp_path / "nope.txt")
    assert result.exit_code == 2
    assert "nope.txt: no such file" in result.stderr


def test_convert_to_parquet_and_back(tmp_path: Path) -> None:
    src = tmp_path / "nulls.txt"
    src.write_text(NULLS)
    out = tmp_path / "nulls.parquet"
    assert run("data", "convert", src, out).exit_code == 2  # NULLs rejected
    assert not out.exists()
    result = run("data", "convert", src, out, "--missing", "impute")
    assert result.exit_code == 0, result.stderr
    ds = from_parquet(out)
    assert ds.missing_report.null_values == 2
    np.testing.assert_array_equal(ds.features, [[1, 0], [2, 3], [0, 0]])
    back = tmp_path / "back.txt"
    assert run("data", "convert", out, back).exit_code == 0
    np.testing.assert_array_equal(read_letor(back).features, ds.features)


def test_folds_builds_the_rotation(tmp_path: Path) -> None:
    root = tmp_path / "subsets"
    root.mkdir()
    for i in range(1, 6):
        (root / f"S{i}.txt").write_text(f"1 qid:{i} 1:{i}\n0 qid:{i} 1:0\n")
    result = run("data", "folds", root, tmp_path / "folds", "--json")
    assert result.exit_code == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["Fold2"]["train"]["subsets"] == ["S2", "S3", "S4"]
    assert listing["Fold2"]["test"]["subsets"] == ["S1"]
    assert read_letor(tmp_path / "folds" / "Fold2" / "test.txt").query_ids == ["1"]


@pytest.mark.parametrize("missing", ["S2.txt"])
def test_folds_with_a_missing_subset_exits_2(tmp_path: Path, missing: str) -> None:
    root = tmp_path / "subsets"
    root.mkdir()
    for i in range(1, 6):
        if f"S{i}.txt" != missing:
            (root / f"S{i}.txt").write_text(f"1 qid:{i} 1:1\n")
    result = run("data", "folds", root, tmp_path / "folds")
    assert result.exit_code == 2
    assert missing in result.stderr
