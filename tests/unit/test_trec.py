"""TREC qrels/run files: parsing, writing, and trec_eval-compatible evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ltr.metrics import MetricOptions
from ltr.metrics.trec import evaluate_run, read_qrels, read_run, write_qrels, write_run

TREC_EVAL = MetricOptions(gain="linear", no_relevant="zero", ties="input_order")


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


# --- reading ------------------------------------------------------------------------------------


def test_read_qrels_accepts_crlf_line_endings_a_bom_and_blank_lines(tmp_path):
    path = write_bytes(
        tmp_path / "qrels", b"\xef\xbb\xbfq1 0 d1 2\r\nq1 0 d2 0\r\n\r\nq2 0 d1 1\r\n"
    )
    assert read_qrels(path) == {"q1": {"d1": 2.0, "d2": 0.0}, "q2": {"d1": 1.0}}


def test_read_run_accepts_crlf_and_keeps_file_order(tmp_path):
    path = write_bytes(
        tmp_path / "run", b"q1 Q0 b 1 0.5 t\r\nq1 Q0 a 2 0.9 t\r\nq2 Q0 a 1 -1e3 t\r\n"
    )
    assert read_run(path) == {"q1": [("b", 0.5), ("a", 0.9)], "q2": [("a", -1000.0)]}


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 fields"),
        (b"q1 0 d1 1\r\n\r\nq1 0 d2 x\r\n", 3, "relevance 'x' is not a number"),
        (b"q1 0 d1 1\nq1 0 d1 0\n", 2, "judged twice"),
        (b"q1 0 d1 nan\n", 1, "not finite"),
    ],
)
def test_read_qrels_names_file_and_line_of_a_bad_line(tmp_path, content, line, message):
    path = write_bytes(tmp_path / "qrels.txt", content)
    with pytest.raises(ValueError, match=rf"qrels\.txt:{line}: .*{message}"):
        read_qrels(path)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"q1 Q0 d1 1 0.5 t\r\nq1 Q0 d2 2 0.4\r\n", 2, "expected 6 fields"),
        (b"q1 Q0 d1 1 high t\n", 1, "score 'high' is not a number"),
        (b"q1 Q0 d1 1 inf t\n", 1, "not finite"),
        (b"q1 Q0 d1 1 0.5 t\nq2 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", 3, "appears twice"),
    ],
)
def test_read_run_names_file_and_line_of_a_bad_line(tmp_path, content, line, message):
    path = write_bytes(tmp_path / "my.run", content)
    with pytest.raises(ValueError, match=rf"my\.run:{line}: .*{message}"):
        read_run(path)


# --- writing ------------------------------------------------------------------------------------


def test_write_run_orders_each_query_by_score_then_docid_descending_and_ranks_from_one(tmp_path):
    path = tmp_path / "out" / "run.txt"
    write_run(path, ["q2", "q1", "q2", "q2"], ["a", "x", "c", "b"], [0.5, 1.0, 0.5, 0.7], tag="m1")
    assert path.read_text().splitlines() == [
        "q2 Q0 b 1 0.7 m1",
        "q2 Q0 c 2 0.5 m1",
        "q2 Q0 a 3 0.5 m1",
        "q1 Q0 x 1 1.0 m1",
    ]
    assert read_run(path) == {"q2": [("b", 0.7), ("c", 0.5), ("a", 0.5)], "q1": [("x", 1.0)]}


def test_write_run_keeps_full_float_precision(tmp_path):
    path = tmp_path / "run"
    write_run(path, ["q"], ["d"], np.array([0.1 + 0.2]))
    assert read_run(path)["q"][0][1] == 0.1 + 0.2


def test_write_qrels_round_trips_and_writes_integral_labels_as_integers(tmp_path):
    path = tmp_path / "qrels"
    write_qrels(path, np.array(["q1", "q1", "q2"]), ["a", "b", "a"], np.array([2.0, 0.0, 0.5]))
    assert path.read_text() == "q1 0 a 2\nq1 0 b 0\nq2 0 a 0.5\n"
    assert read_qrels(path) == {"q1": {"a": 2.0, "b": 0.0}, "q2": {"a": 0.5}}


def test_a_failed_write_leaves_the_existing_file_untouched(tmp_path):
    path = tmp_path / "run"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="not finite"):
        write_run(path, ["q", "q"], ["a", "b"], [1.0, math.nan])
    with pytest.raises(ValueError, match="whitespace"):
        write_run(path, ["q"], ["a b"], [1.0])
    with pytest.raises(ValueError, match="equal lengths"):
        write_qrels(path, ["q"], ["a", "b"], [1, 0])
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


# --- evaluation semantics ----------------------------------------------------------------------


def test_unjudged_run_documents_count_as_non_relevant_and_unretrieved_ones_count_for_map():
    qrels = {"q1": {"a": 2, "b": 0, "d": 1}}
    run = {"q1": [("a", 0.9), ("b", 0.5), ("c", 0.1)]}  # c unjudged, d never retrieved
    means, per_query = evaluate_run(qrels, run, ["ndcg@3", "map", "mrr"], TREC_EVAL)
    # linear gain, ranked labels [2, 0, 0]: DCG = 2 ; IDCG over judged [2, 1, 0] = 2 + 1/log2(3)
    # MAP = (1/1) / 2 relevant judged documents
    expected = {"ndcg@3": 2 / (2 + 1 / math.log2(3)), "map": 0.5, "mrr": 1.0}
    assert means == pytest.approx(expected, abs=1e-12)
    assert per_query == {"q1": pytest.approx(expected, abs=1e-12)}


def test_queries_missing_from_either_file_are_ignored():
    qrels = {"q1": {"a": 1}, "only_qrels": {"a": 1}}
    run = {"q1": [("a", 1.0)], "only_run": [("a", 1.0), ("b", 0.5)]}
    means, per_query = evaluate_run(qrels, run, ["map"], TREC_EVAL)
    assert means == {"map": 1.0}
    assert list(per_query) == ["q1"]


def test_a_run_without_any_judged_query_is_rejected():
    with pytest.raises(ValueError, match="no query of the run"):
        evaluate_run({"q1": {"a": 1}}, {"q2": [("a", 1.0)]}, ["map"])


def test_skipped_queries_are_nan_per_query_and_left_out_of_the_mean():
    qrels = {"q1": {"a": 1}, "q2": {"a": 0}}
    run = {"q1": [("a", 1.0)], "q2": [("a", 1.0)]}
    means, per_query = evaluate_run(qrels, run, ["mrr"])
    assert means == {"mrr": 1.0}
    assert math.isnan(per_query["q2"]["mrr"])
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate_run({"q2": {"a": 0}}, {"q2": [("a", 1.0)]}, ["mrr"])


def test_tied_scores_follow_trec_eval_docid_descending_order_with_input_order_ties():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"q1": {"a": 0, "b": 1}}
    run = {"q1": [("a", 1.0), ("b", 1.0)]}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate({"q1": dict(run["q1"])})
    # trec_eval ranks b before a (docid descending), so the relevant b is first
    assert trec["q1"]["recip_rank"] == 1.0
    means, _ = evaluate_run(qrels, run, ["mrr"], TREC_EVAL)
    assert means["mrr"] == 1.0
    # the default pessimistic ties put the non-relevant a first whatever the docids
    means, _ = evaluate_run(qrels, run, ["mrr"], MetricOptions(gain="linear"))
    assert means["mrr"] == 0.5


def random_trec_data(seed: int, n_queries: int = 50):
    """Random qrels and runs: runs miss some judged documents and include unjudged ones."""
    rng = np.random.default_rng(seed)
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, list[tuple[str, float]]] = {}
    # distinct and exactly representable in float32 (trec_eval stores scores as float32)
    pool = iter(rng.choice(10**6, size=n_queries * 60, replace=False) / 1024.0)
    for q in range(n_queries):
        qid = f"q{q}"
        n_judged = int(rng.integers(1, 30))
        qrels[qid] = {f"d{i}": int(rng.choice([0, 0, 0, 1, 1, 2, 4])) for i in range(n_judged)}
        retrieved = [f"d{i}" for i in range(n_judged) if rng.random() < 0.8]
        retrieved += [f"u{i}" for i in range(int(rng.integers(0, 6)))]  # unjudged
        if not retrieved:
            retrieved = ["u0"]
        run[qid] = [(doc, float(next(pool))) for doc in rng.permutation(retrieved)]
    return qrels, run


def test_evaluate_run_equals_trec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = random_trec_data(seed=2024)
    measures = {"ndcg_cut.5,10", "map", "recip_rank", "P.5", "ndcg"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(
        {qid: dict(docs) for qid, docs in run.items()}
    )
    metrics = ["ndcg@5", "ndcg@10", "map", "mrr", "p@5", "ndcg"]
    names = dict(
        zip(metrics, ["ndcg_cut_5", "ndcg_cut_10", "map", "recip_rank", "P_5", "ndcg"], strict=True)
    )
    for ties in ("input_order", "pessimistic"):  # no tied scores: both orders agree
        options = MetricOptions(gain="linear", no_relevant="zero", ties=ties)
        means, per_query = evaluate_run(qrels, run, metrics, options)
        assert set(per_query) == set(trec)
        for qid, values in per_query.items():
            expected = {m: trec[qid][names[m]] for m in metrics}
            assert values == pytest.approx(expected, rel=0, abs=1e-9), qid
        for m in metrics:
            mean = np.mean([trec[qid][names[m]] for qid in trec])
            assert means[m] == pytest.approx(mean, rel=0, abs=1e-9)
    assert any(v["map"] == 0.0 for v in trec.values()), "include queries without relevant docs"


def test_files_written_by_write_run_and_write_qrels_evaluate_like_the_dicts(tmp_path):
    qrels, run = random_trec_data(seed=9, n_queries=10)
    rows = [(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
    write_qrels(tmp_path / "qrels", *zip(*rows, strict=True))
    ranked = [(q, d, s) for q, docs in run.items() for d, s in docs]
    write_run(tmp_path / "run", *zip(*ranked, strict=True))
    options = MetricOptions(no_relevant="zero")  # no NaN, so results compare with ==
    from_files = evaluate_run(
        read_qrels(tmp_path / "qrels"), read_run(tmp_path / "run"), options=options
    )
    assert from_files == evaluate_run(qrels, run, options=options)
