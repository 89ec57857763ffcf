"""Ranking metrics: hand-computed values on tiny slates, options, bad inputs, and references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltr.metrics import (
    DEFAULT_METRICS,
    MetricOptions,
    evaluate,
    evaluate_per_query,
    parse_metric,
)
from ltr.metrics.ranking import rank_order

INV_LOG2_3 = 1.0 / math.log2(3)  # discount at rank 2 = 0.6309297535714575
LINEAR_ZERO = MetricOptions(gain="linear", no_relevant="zero")


def one_query(labels, scores, metrics, options=MetricOptions(), ideal=None) -> dict[str, float]:
    """Evaluate a single literal slate; returns plain floats."""
    labels = np.asarray(labels, dtype=float)
    out = evaluate_per_query(
        labels,
        np.asarray(scores, dtype=float),
        np.array([0, len(labels)]),
        metrics,
        options,
        ideal_labels=None if ideal is None else [np.asarray(ideal, dtype=float)],
    )
    return {k: float(v[0]) for k, v in out.items()}


# --- parse_metric ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ndcg@10", ("ndcg", 10)),
        ("NDCG@5", ("ndcg", 5)),
        ("ndcg", ("ndcg", None)),
        ("map", ("map", None)),
        ("MRR", ("mrr", None)),
        ("err@5", ("err", 5)),
        ("P@5", ("p", 5)),
    ],
)
def test_parse_metric_splits_name_and_cutoff_case_insensitively(name, expected):
    assert parse_metric(name) == expected


@pytest.mark.parametrize("name", ["foo", "ndcg@", "ndcg@x", "recall@10", ""])
def test_parse_metric_rejects_unknown_names_listing_the_valid_ones(name):
    with pytest.raises(ValueError, match=r"valid: ndcg, ndcg@k, err, err@k, p@k, map, mrr"):
        parse_metric(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [("p", "needs a cutoff"), ("map@10", "takes no cutoff"), ("ndcg@0", "must be >= 1")],
)
def test_parse_metric_rejects_a_missing_forbidden_or_zero_cutoff(name, message):
    with pytest.raises(ValueError, match=message):
        parse_metric(name)


def test_default_metrics_are_ndcg_at_1_5_10_map_and_mrr():
    assert DEFAULT_METRICS == ("ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr")


def test_result_keys_are_canonical_metric_names():
    out = one_query([1, 0], [2, 1], ["NDCG@2", "Map"])
    assert list(out) == ["ndcg@2", "map"]


# --- NDCG -----------------------------------------------------------------------------------------


def test_ndcg_with_exponential_gain_on_a_three_document_slate():
    # ranked labels [2, 0, 1]; gains 2^rel - 1 = [3, 0, 1]
    # DCG = 3/1 + 0/log2(3) + 1/log2(4) = 3.5 ; IDCG = 3/1 + 1/log2(3) = 3.6309297535714575
    out = one_query([2, 0, 1], [0.9, 0.8, 0.1], ["ndcg", "ndcg@1", "ndcg@2"])
    assert out["ndcg"] == pytest.approx(3.5 / (3 + INV_LOG2_3), abs=1e-12)  # 0.963936
    assert out["ndcg@1"] == pytest.approx(1.0)  # 3/3
    # DCG@2 = 3 ; IDCG@2 = 3 + 1/log2(3)
    assert out["ndcg@2"] == pytest.approx(3 / (3 + INV_LOG2_3), abs=1e-12)  # 0.826235


def test_ndcg_with_linear_gain_uses_the_label_as_gain():
    # gains = labels = [2, 0, 1]: DCG = 2 + 0 + 1/2 = 2.5 ; IDCG = 2 + 1/log2(3)
    out = one_query([2, 0, 1], [0.9, 0.8, 0.1], ["ndcg"], MetricOptions(gain="linear"))
    assert out["ndcg"] == pytest.approx(2.5 / (2 + INV_LOG2_3), abs=1e-12)  # 0.950226


def test_ndcg_at_k_ideal_uses_the_top_k_of_the_ideal_labels():
    # ranked labels [0, 1] (list shorter than k=3); ideal set [3, 1, 0]
    # DCG@3 = 0 + 1/log2(3) ; IDCG@3 = 7 + 1/log2(3) + 0
    out = one_query([0, 1], [2, 1], ["ndcg@3"], ideal=[3, 1, 0])
    assert out["ndcg@3"] == pytest.approx(INV_LOG2_3 / (7 + INV_LOG2_3), abs=1e-12)


def test_ndcg_counts_negative_labels_as_zero_gain():
    # ranked labels [-1, 1]: gains [0, 1]; DCG = 1/log2(3) ; IDCG = 1
    out = one_query([-1, 1], [2, 1], ["ndcg"])
    assert out["ndcg"] == pytest.approx(INV_LOG2_3, abs=1e-12)


def test_ndcg_is_skipped_when_no_document_is_relevant():
    out = one_query([0, 0, 0], [3, 2, 1], ["ndcg@10", "ndcg"])
    assert math.isnan(out["ndcg@10"])
    assert math.isnan(out["ndcg"])


# --- MAP, MRR, P@k, ERR ---------------------------------------------------------------------------


def test_map_averages_precision_at_each_relevant_rank():
    # ranked labels [0, 1, 0, 1]: precisions at relevant ranks 1/2 and 2/4 -> (0.5 + 0.5) / 2
    assert one_query([0, 1, 0, 1], [4, 3, 2, 1], ["map"])["map"] == pytest.approx(0.5)


def test_map_counts_unretrieved_relevant_documents_in_the_denominator():
    # same ranking, but the judged set has a third relevant document that was not retrieved:
    # (1/2 + 2/4) / 3 = 1/3
    out = one_query([0, 1, 0, 1], [4, 3, 2, 1], ["map"], ideal=[0, 1, 0, 1, 2])
    assert out["map"] == pytest.approx(1 / 3, abs=1e-12)


def test_mrr_is_the_reciprocal_rank_of_the_first_relevant_document():
    assert one_query([0, 0, 2, 1], [4, 3, 2, 1], ["mrr"])["mrr"] == pytest.approx(1 / 3)


def test_mrr_is_zero_when_relevant_documents_exist_but_none_is_retrieved():
    assert one_query([0, 0], [2, 1], ["mrr"], ideal=[0, 0, 1])["mrr"] == 0.0


def test_precision_at_k_divides_by_k_even_when_the_list_is_shorter():
    # ranked labels [1, 0, 1]: P@2 = 1/2 ; P@5 = 2/5 (only 3 documents)
    out = one_query([1, 0, 1], [3, 2, 1], ["p@2", "p@5"])
    assert out["p@2"] == pytest.approx(0.5)
    assert out["p@5"] == pytest.approx(0.4)


def test_relevance_threshold_decides_which_labels_are_relevant():
    # threshold 2: ranked labels [1, 2] -> only rank 2 is relevant; MAP = (1/2)/1, MRR = 1/2
    out = one_query([1, 2], [2, 1], ["map", "mrr", "p@2"], MetricOptions(relevance_threshold=2))
    assert out == pytest.approx({"map": 0.5, "mrr": 0.5, "p@2": 0.5})


def test_err_follows_chapelle_with_max_grade_from_the_data():
    # ranked labels [2, 1, 0], max_grade = 2: R = (2^l - 1)/4 = [3/4, 1/4, 0]
    # ERR = 3/4 * 1/1 + 1/4 * (1 - 3/4) * 1/2 + 0 = 0.75 + 0.03125 = 0.78125 ; ERR@1 = 0.75
    out = one_query([2, 1, 0], [3, 2, 1], ["err", "err@1"])
    assert out["err"] == pytest.approx(0.78125, abs=1e-12)
    assert out["err@1"] == pytest.approx(0.75, abs=1e-12)


def test_err_max_grade_can_be_overridden():
    # max_grade = 3: R = [3/8, 1/8, 0]; ERR = 3/8 + 1/8 * 5/8 * 1/2 = 0.375 + 0.0390625
    out = one_query([2, 1, 0], [3, 2, 1], ["err"], MetricOptions(max_grade=3))
    assert out["err"] == pytest.approx(0.4140625, abs=1e-12)


def test_err_default_max_grade_is_the_largest_label_of_the_whole_evaluated_set():
    # query 0 as above, query 1 holds a label 3, so query 0 uses max_grade 3 too
    labels = np.array([2, 1, 0, 3], dtype=float)
    out = evaluate_per_query(labels, np.array([3, 2, 1, 1.0]), np.array([0, 3, 4]), ["err"])
    assert out["err"][0] == pytest.approx(0.4140625, abs=1e-12)
    assert out["err"][1] == pytest.approx(7 / 8, abs=1e-12)  # (2^3 - 1)/2^3


def test_err_rejects_a_label_above_an_explicit_max_grade():
    with pytest.raises(ValueError, match="exceeds max_grade"):
        one_query([4, 0], [2, 1], ["err"], MetricOptions(max_grade=2))


# --- ties and input order -----------------------------------------------------------------------


def test_tied_scores_are_ordered_pessimistically_by_default():
    # constant scorer, labels [2, 0, 1]: pessimistic order [0, 1, 2]
    # DCG = 0 + 1/log2(3) + 3/log2(4) ; IDCG = 3 + 1/log2(3)
    out = one_query([2, 0, 1], [1, 1, 1], ["ndcg", "mrr"])
    assert out["ndcg"] == pytest.approx((INV_LOG2_3 + 1.5) / (3 + INV_LOG2_3), abs=1e-12)
    assert out["mrr"] == pytest.approx(0.5)


def test_input_order_ties_keep_equal_scores_in_the_order_given():
    # same slate, input order [2, 0, 1]: DCG = 3 + 0 + 1/2 ; IDCG = 3 + 1/log2(3)
    out = one_query([2, 0, 1], [1, 1, 1], ["ndcg", "mrr"], MetricOptions(ties="input_order"))
    assert out["ndcg"] == pytest.approx(3.5 / (3 + INV_LOG2_3), abs=1e-12)
    assert out["mrr"] == 1.0


def test_partial_ties_only_reorder_the_tied_documents():
    # scores [.9, .5, .5, .1], labels [0, 1, 0, 1]
    # pessimistic: labels by rank [0, 0, 1, 1] -> MRR 1/3 ; input order [0, 1, 0, 1] -> MRR 1/2
    labels, scores = [0, 1, 0, 1], [0.9, 0.5, 0.5, 0.1]
    assert one_query(labels, scores, ["mrr"])["mrr"] == pytest.approx(1 / 3)
    tied = MetricOptions(ties="input_order")
    assert one_query(labels, scores, ["mrr"], tied)["mrr"] == pytest.approx(0.5)


def test_a_constant_scorer_gets_the_worst_ranking_value_whatever_the_input_order():
    rng = np.random.default_rng(7)
    labels = np.array([3, 0, 1, 0, 2, 1, 0], dtype=float)
    metrics = ["ndcg@3", "ndcg", "map", "mrr", "err@5", "p@3"]
    worst = one_query(np.sort(labels), -np.arange(len(labels), dtype=float), metrics)
    for _ in range(5):
        shuffled = rng.permutation(labels)
        assert one_query(shuffled, np.zeros(len(labels)), metrics) == pytest.approx(worst)


def test_metrics_do_not_depend_on_input_order_when_scores_are_distinct():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 12).astype(float)
    scores = rng.permutation(12).astype(float)
    metrics = ["ndcg@5", "map", "mrr", "err@5", "p@5"]
    base = one_query(labels, scores, metrics)
    perm = rng.permutation(12)
    assert one_query(labels[perm], scores[perm], metrics) == pytest.approx(base, abs=1e-12)


def test_rank_order_returns_indices_best_first():
    scores = np.array([0.1, 0.9, 0.5, 0.5])
    labels = np.array([0, 1, 2, 0])
    assert rank_order(scores, labels, "pessimistic").tolist() == [1, 3, 2, 0]
    assert rank_order(scores, labels, "input_order").tolist() == [1, 2, 3, 0]


# --- queries without relevant documents -----------------------------------------------------------

# query 0: perfect ranking (NDCG 1, MAP 1); query 1: no relevant document
LABELS = np.array([1, 0, 0, 0], dtype=float)
SCORES = np.array([2, 1, 2, 1], dtype=float)
OFFSETS = np.array([0, 2, 4])


@pytest.mark.parametrize(
    ("no_relevant", "second", "mean"),
    [("skip", math.nan, 1.0), ("zero", 0.0, 0.5), ("one", 1.0, 1.0)],
)
def test_no_relevant_option_skips_or_scores_queries_without_relevant_documents(
    no_relevant, second, mean
):
    options = MetricOptions(no_relevant=no_relevant)
    # query 0: ERR = R_1 = (2^1 - 1)/2^1 with max_grade 1; every other metric is 1
    first = {"ndcg@2": 1.0, "map": 1.0, "mrr": 1.0, "err": 0.5, "p@1": 1.0}
    per_query = evaluate_per_query(LABELS, SCORES, OFFSETS, list(first), options)
    for key, value in first.items():
        assert per_query[key][0] == value
        assert per_query[key][1] == pytest.approx(second, nan_ok=True)
    assert evaluate(LABELS, SCORES, OFFSETS, ["ndcg@2", "map"], options) == pytest.approx(
        {"ndcg@2": mean, "map": mean}
    )


def test_evaluate_raises_instead_of_returning_nan_when_every_query_is_skipped():
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate(np.zeros(3), np.arange(3.0), np.array([0, 1, 3]))


def test_an_empty_query_counts_as_having_no_relevant_document():
    out = evaluate_per_query(
        np.array([1.0]), np.array([1.0]), np.array([0, 0, 1]), ["ndcg", "mrr"], LINEAR_ZERO
    )
    assert out["ndcg"].tolist() == [0.0, 1.0]
    assert out["mrr"].tolist() == [0.0, 1.0]


# --- bad input --------------------------------------------------------------------------------


def test_non_finite_scores_are_rejected_naming_the_first_bad_row():
    scores = np.array([0.1, 0.2, np.nan, np.inf])
    with pytest.raises(ValueError, match=r"scores must be finite: row 2 .*2 bad rows"):
        evaluate(np.ones(4), scores, np.array([0, 4]))


def test_non_finite_labels_are_rejected():
    with pytest.raises(ValueError, match="labels must be finite: row 0"):
        evaluate(np.array([np.nan, 1.0]), np.ones(2), np.array([0, 2]))


def test_labels_and_scores_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="labels has 3 rows but scores has 2"):
        evaluate(np.ones(3), np.ones(2), np.array([0, 3]))


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ([0, 2], "end at n_docs=3"),
        ([1, 3], "start at 0"),
        ([0, 2, 1, 3], "non-decreasing"),
        ([0.0, 3.0], "integer"),
    ],
)
def test_inconsistent_offsets_are_rejected(offsets, message):
    with pytest.raises(ValueError, match=message):
        evaluate(np.ones(3), np.arange(3.0), np.array(offsets))


def test_ideal_labels_must_have_one_entry_per_query():
    with pytest.raises(ValueError, match="ideal_labels has 1 queries but offsets describe 2"):
        evaluate(np.ones(2), np.ones(2), np.array([0, 1, 2]), ideal_labels=[np.ones(1)])


@pytest.mark.parametrize(
    "kwargs", [{"gain": "log"}, {"no_relevant": "nan"}, {"ties": "random"}, {"max_grade": -1}]
)
def test_metric_options_reject_unknown_values(kwargs):
    with pytest.raises(ValueError):
        MetricOptions(**kwargs)


# --- independent references -----------------------------------------------------------------


def reference_query(ranked: list[float], ideal: list[float], max_grade: float) -> dict[str, float]:
    """Straightforward per-query loops (exp gain, threshold 1) to check the vectorised code."""
    gain = [2.0 ** max(x, 0) - 1 for x in ranked]
    igain = sorted((2.0 ** max(x, 0) - 1 for x in ideal), reverse=True)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gain[:10]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(igain[:10]))
    n_rel = sum(x >= 1 for x in ideal)
    hits, ap, rr = 0, 0.0, 0.0
    for i, x in enumerate(ranked):
        if x >= 1:
            hits += 1
            ap += hits / (i + 1)
            rr = rr or 1 / (i + 1)
    err, keep = 0.0, 1.0
    for i, x in enumerate(ranked[:5]):
        r = (2.0**x - 1) / 2.0**max_grade
        err += keep * r / (i + 1)
        keep *= 1 - r
    return {"ndcg@10": dcg / idcg, "map": ap / n_rel, "mrr": rr, "err@5": err}


def test_vectorised_metrics_equal_a_per_query_loop_on_random_queries():
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 30, 60)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    labels = rng.integers(0, 5, offsets[-1]).astype(float)
    scores = rng.normal(size=offsets[-1])
    metrics = ["ndcg@10", "map", "mrr", "err@5"]
    out = evaluate_per_query(labels, scores, offsets, metrics)
    max_grade = labels.max()
    for q in range(len(sizes)):
        rows = slice(offsets[q], offsets[q + 1])
        ranked = labels[rows][np.argsort(-scores[rows])].tolist()
        if max(ranked) < 1:
            assert all(math.isnan(out[m][q]) for m in metrics)
            continue
        expected = reference_query(ranked, labels[rows].tolist(), max_grade)
        assert {m: out[m][q] for m in metrics} == pytest.approx(expected, abs=1e-9)


def test_linear_gain_with_zero_for_no_relevant_equals_trec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 25, 50)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    n = int(offsets[-1])
    labels = rng.choice([0, 0, 0, 1, 2, 3], size=n).astype(float)
    # distinct, exactly representable in float32 (trec_eval stores scores as float32)
    scores = rng.choice(10**6, size=n, replace=False) / 1024.0
    qrels, run = {}, {}
    for q in range(len(sizes)):
        rows = range(offsets[q], offsets[q + 1])
        qrels[f"q{q}"] = {f"d{i}": int(labels[i]) for i in rows}
        run[f"q{q}"] = {f"d{i}": float(scores[i]) for i in rows}
    measures = {"ndcg_cut.5,10", "map", "recip_rank", "P.5", "ndcg"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = evaluate_per_query(
        labels, scores, offsets, ["ndcg@5", "ndcg@10", "map", "mrr", "p@5", "ndcg"], LINEAR_ZERO
    )
    names = {"ndcg@5": "ndcg_cut_5", "ndcg@10": "ndcg_cut_10", "map": "map"}
    names |= {"mrr": "recip_rank", "p@5": "P_5", "ndcg": "ndcg"}
    assert any(ours["map"] == 0.0), "the data should include queries without relevant documents"
    for ours_name, trec_name in names.items():
        expected = [trec[f"q{q}"][trec_name] for q in range(len(sizes))]
        np.testing.assert_allclose(ours[ours_name], expected, rtol=0, atol=1e-9)


# --- properties -------------------------------------------------------------------------------

slates = st.lists(st.integers(0, 4), min_size=1, max_size=20).flatmap(
    lambda labels: st.tuples(
        st.just(labels),
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=len(labels), max_size=len(labels)),
    )
)


@settings(max_examples=200, deadline=None)
@given(slates, st.sampled_from(["exp", "linear"]), st.sampled_from(["pessimistic", "input_order"]))
def test_ndcg_lies_between_zero_and_one_and_a_perfect_ranking_scores_one(slate, gain, ties):
    labels, scores = (np.asarray(x, dtype=float) for x in slate)
    options = MetricOptions(gain=gain, ties=ties, no_relevant="zero")
    offsets = np.array([0, len(labels)])
    metrics = ["ndcg@3", "ndcg"]
    out = evaluate_per_query(labels, scores, offsets, metrics, options)
    for key in metrics:
        assert 0.0 <= out[key][0] <= 1.0 + 1e-12
    perfect = evaluate_per_query(labels, labels.copy(), offsets, metrics, options)
    has_relevant = labels.max() >= 1
    for key in metrics:
        assert perfect[key][0] == pytest.approx(1.0 if has_relevant else 0.0, abs=1e-12)
