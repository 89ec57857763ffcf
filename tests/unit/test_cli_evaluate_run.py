"""``ltr evaluate-run QRELS RUN``: table and JSON output, options, one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import typer
from typer.testing import CliRunner

from ltr.cli.main import app

runner = CliRunner()

# q1: run a(2) b(0) c(unjudged); d(1) judged but not retrieved. q2: nothing relevant.
# q3 is only in the qrels, q4 only in the run: both ignored.
QRELS = "q1 0 a 2\r\nq1 0 b 0\r\nq1 0 d 1\r\nq2 0 a 0\r\nq3 0 z 1\r\n"
RUN = "q1 Q0 a 1 0.9 t\nq1 Q0 b 2 0.5 t\nq1 Q0 c 3 0.1 t\nq2 Q0 a 1 1.0 t\nq4 Q0 a 1 1.0 t\n"
INV_LOG2_3 = 1 / math.log2(3)


def invoke(*args: str):
    """Run ``ltr evaluate-run ARGS``; Typer runs a lone command without its name."""
    is_group = isinstance(typer.main.get_command(app), typer.core.TyperGroup)
    return runner.invoke(app, ["evaluate-run", *args] if is_group else list(args))


@pytest.fixture
def files(tmp_path):
    qrels, run = tmp_path / "qrels.txt", tmp_path / "run.txt"
    qrels.write_bytes(QRELS.encode())
    run.write_text(RUN)
    return str(qrels), str(run)


def test_prints_an_aligned_table_with_four_decimals_and_query_counts(files):
    result = invoke(*files, "--metrics", "ndcg@3,map,mrr")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # exp gain, q1 only: DCG = 3 ; IDCG = 3 + 1/log2(3) -> 0.8262 ; MAP = 1/2 ; MRR = 1
    assert lines[:4] == [
        "metric     value",
        "ndcg@3    0.8262",
        "map       0.5000",
        "mrr       1.0000",
    ]
    assert "1 evaluated, 1 skipped" in lines[4]
    assert "1 run-only, 1 qrels-only" in lines[4]


def test_json_output_has_means_counts_and_null_for_skipped_queries(files):
    result = invoke(*files, "-m", "ndcg@3,map", "--json", "--per-query")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["means"] == pytest.approx({"ndcg@3": 3 / (3 + INV_LOG2_3), "map": 0.5})
    assert (payload["n_queries"], payload["skipped"]) == (1, 1)
    assert payload["per_query"]["q2"] == {"ndcg@3": None, "map": None}
    assert payload["per_query"]["q1"]["map"] == 0.5
    assert set(payload["per_query"]) == {"q1", "q2"}


def test_json_output_omits_per_query_values_unless_asked(files):
    payload = json.loads(invoke(*files, "--json").stdout)
    assert "per_query" not in payload
    assert list(payload["means"]) == ["ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr"]


def test_gain_and_no_relevant_options_reach_the_metrics(files):
    result = invoke(*files, "-m", "ndcg@3,p@2", "--gain", "linear", "--no-relevant", "zero")
    payload = json.loads(
        invoke(
            *files, "-m", "ndcg@3,p@2", "--gain", "linear", "--no-relevant", "zero", "--json"
        ).stdout
    )
    # q1 linear: DCG = 2 ; IDCG = 2 + 1/log2(3) ; P@2 = 1/2 ; q2 scores 0 -> mean of (x, 0)
    assert payload["means"] == pytest.approx({"ndcg@3": (2 / (2 + INV_LOG2_3)) / 2, "p@2": 0.25})
    assert (payload["n_queries"], payload["skipped"]) == (2, 0)
    assert result.exit_code == 0
    assert "p@2       0.2500" in result.stdout


def test_ties_option_switches_between_pessimistic_and_trec_eval_order(tmp_path):
    qrels, run = tmp_path / "qrels", tmp_path / "run"
    qrels.write_text("q1 0 a 0\nq1 0 b 1\n")
    run.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 1.0 t\n")

    def mrr(*extra: str) -> float:
        return json.loads(invoke(str(qrels), str(run), "-m", "mrr", "--json", *extra).stdout)[
            "means"
        ]["mrr"]

    assert mrr() == 0.5  # pessimistic: non-relevant a first
    assert mrr("--ties", "input_order") == 1.0  # trec_eval: docid descending, b first


def test_per_query_table_lists_every_evaluated_query(files):
    result = invoke(*files, "-m", "map", "--per-query")
    assert result.exit_code == 0, result.output
    assert "q1     0.5000" in result.stdout
    assert "q2          -" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-m", "foo"], "error: unknown metric 'foo'; valid:"),
        (["-m", " , "], "error: --metrics is empty"),
        (["--max-grade", "-1"], "error: max_grade must be finite and >= 0"),
    ],
)
def test_bad_options_exit_2_with_a_one_line_reason(files, extra, message):
    result = invoke(*files, *extra)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_file_exits_2_naming_it(tmp_path, files):
    result = invoke(files[0], str(tmp_path / "nope.run"))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: run file not found: {tmp_path / 'nope.run'}"


def test_a_malformed_run_line_exits_2_naming_file_and_line(tmp_path, files):
    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 a 1 0.9 t\nq1 Q0 b 2\n")
    result = invoke(files[0], str(bad))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:2: expected 6 fields")


def test_a_run_where_no_query_has_a_relevant_document_exits_2(tmp_path):
    qrels, run = tmp_path / "qrels", tmp_path / "run"
    qrels.write_text("q1 0 a 0\n")
    run.write_text("q1 Q0 a 1 1.0 t\n")
    result = invoke(str(qrels), str(run))
    assert result.exit_code == 2
    assert "no query has a relevant document" in result.stderr


def test_help_describes_the_command_and_its_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--metrics", "--gain", "--no-relevant", "--ties", "--json", "--per-query"):
        assert option in result.stdout
