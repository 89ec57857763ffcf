"""PBM-EM propensities (ltr/online/propensity.py) and click labels (ltr/online/click_labels.py):
recovery of known propensities on a synthetic log, hand-computed labels on tiny logs,
validation errors and the atomic Parquet write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from ltr.data.dataset import LetorDataset
from ltr.online.click_labels import (
    LABEL_COLUMNS,
    debiased_labels,
    grade_scores,
    labelled_dataset,
    naive_labels,
    write_click_labels,
)
from ltr.online.propensity import (
    PropensityEstimate,
    estimate_propensities,
    estimate_relevance,
)

TRUE_THETA = 0.95 * (1.0 / np.arange(1, 11)) ** 0.7  # absolute examination, ranks 1-10


def synthetic_log(
    n_queries: int = 200, n_docs: int = 12, per_query: int = 40, seed: int = 7
) -> tuple[pd.DataFrame, np.ndarray]:
    """A PBM click log with known examination ``TRUE_THETA`` and relevance ``gamma``:
    every impression shows 10 of a query's documents in a uniformly random order."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.05, 0.95, size=(n_queries, n_docs))
    n_imp = n_queries * per_query
    query = np.repeat(np.arange(n_queries), per_query)
    shown = np.argsort(rng.random((n_imp, n_docs)), axis=1)[:, :10]
    p_click = TRUE_THETA[None, :] * gamma[query[:, None], shown]
    clicked = rng.random(p_click.shape) < p_click
    log = pd.DataFrame(
        {
            "impression_id": np.repeat(np.arange(n_imp), 10).astype(str),
            "query_id": np.char.add("q", np.repeat(query, 10).astype(str)),
            "doc_id": np.char.add("d", shown.ravel().astype(str)),
            "position": np.tile(np.arange(10), n_imp),
            "clicked": clicked.ravel(),
            "model_version": "v1",
        }
    )
    return log, gamma


def tiny_log(rows: list[tuple[str, str, int, bool]]) -> pd.DataFrame:
    """One impression per row is enough for these tests (PBM ignores impression ids)."""
    return pd.DataFrame(
        {
            "impression_id": [f"i{i}" for i in range(len(rows))],
            "query_id": [r[0] for r in rows],
            "doc_id": [r[1] for r in rows],
            "position": np.array([r[2] for r in rows], dtype=np.int64),
            "clicked": np.array([r[3] for r in rows], dtype=bool),
            "model_version": "v1",
        }
    )


def hand_estimate(propensities: list[float], examination: list[float]) -> PropensityEstimate:
    """An estimate with chosen propensities (for label tests that must not depend on EM)."""
    return PropensityEstimate(
        propensities=np.asarray(propensities, dtype=float),
        relevance=pd.DataFrame(
            {"query_id": ["q"], "doc_id": ["x"], "gamma": [0.5], "impressions": [1], "clicks": [0]}
        ),
        iterations=1,
        converged=True,
        log_likelihood=0.0,
        tol=1e-6,
        max_iter=1,
        max_rank=len(propensities),
        rows_used=1,
        rows_ignored=0,
        examination=np.asarray(examination, dtype=float),
    )


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, np.ndarray, PropensityEstimate]:
    log, gamma = synthetic_log()
    return log, gamma, estimate_propensities(log)


# --- EM ----------------------------------------------------------------------------------------


def test_em_recovers_known_propensities_within_five_hundredths_at_ranks_1_to_10(synthetic):
    _, _, est = synthetic
    expected = TRUE_THETA / TRUE_THETA[0]
    assert est.propensities.shape == (10,)
    assert est.propensities[0] == pytest.approx(1.0)
    np.testing.assert_allclose(est.propensities, expected, atol=0.05)
    assert est.converged and 1 <= est.iterations <= est.max_iter


def test_em_relevance_orders_documents_like_the_true_relevance(synthetic):
    log, gamma, est = synthetic
    rel = est.relevance
    q = rel["query_id"].str[1:].astype(int).to_numpy()
    d = rel["doc_id"].str[1:].astype(int).to_numpy()
    true = gamma[q, d]
    assert np.corrcoef(rel["gamma"], true)[0, 1] > 0.8  # about 33 views per document
    assert rel["impressions"].sum() == len(log)
    assert rel["clicks"].sum() == int(log["clicked"].sum())


def test_em_log_likelihood_is_that_of_the_fitted_parameters(synthetic):
    log, _, est = synthetic
    merged = log.merge(est.relevance, on=["query_id", "doc_id"])
    p = est.examination[merged["position"].to_numpy()] * merged["gamma"].to_numpy()
    c = merged["clicked"].to_numpy()
    expected = float(np.sum(np.where(c, np.log(p), np.log1p(-p))))
    assert est.log_likelihood == pytest.approx(expected, rel=1e-9)


def test_rows_below_max_rank_are_ignored_and_counted():
    top = [("q", "a", 0, True), ("q", "b", 1, False), ("q", "a", 1, False), ("q", "b", 0, True)]
    log = tiny_log([*top, ("q", "c", 2, True), ("q", "c", 3, False)])
    est = estimate_propensities(log, max_rank=2)
    assert est.rows_used == 4 and est.rows_ignored == 2
    assert est.propensities.shape == (2,)
    assert set(est.relevance["doc_id"]) == {"a", "b"}


def test_to_dict_is_json_safe_and_reports_iterations_and_convergence(synthetic):
    _, _, est = synthetic
    out = json.loads(json.dumps(est.to_dict(), allow_nan=False))
    assert out["iterations"] == est.iterations and out["converged"] is True
    assert len(out["propensities"]) == 10 and out["documents"] == len(est.relevance)


def test_a_rank_never_shown_is_nan_in_the_estimate_and_none_in_json():
    log = tiny_log([("q", "a", 0, True), ("q", "b", 2, False), ("q", "a", 2, True)])
    est = estimate_propensities(log)
    assert np.isnan(est.propensities[1])
    assert json.loads(json.dumps(est.to_dict(), allow_nan=False))["propensities"][1] is None


def test_em_handles_200k_rows():
    log, _ = synthetic_log(n_queries=500, n_docs=12, per_query=40, seed=1)
    assert len(log) == 200_000
    est = estimate_propensities(log)
    np.testing.assert_allclose(est.propensities, TRUE_THETA / TRUE_THETA[0], atol=0.05)


# --- relevance with fixed examination ----------------------------------------------------------


def test_relevance_without_smoothing_is_the_likelihood_maximum_given_examination():
    # Doc a: shown at ranks 1 and 2; doc b only at rank 2. Independent check: scipy's
    # bounded scalar minimiser on each document's own negative log-likelihood.
    theta = np.array([0.9, 0.4])
    rows = [("q", "a", 0, c) for c in (True, True, False, True, False)]
    rows += [("q", "a", 1, c) for c in (False, True, False)]
    rows += [("q", "b", 1, c) for c in (True, False, False, False, False, False)]
    log = tiny_log(rows)
    rel = estimate_relevance(log, hand_estimate([1.0, 0.4 / 0.9], list(theta)), tol=1e-12)
    got = dict(zip(rel["doc_id"], rel["gamma"], strict=True))
    for doc in ("a", "b"):
        part = log[log["doc_id"] == doc]
        t = theta[part["position"].to_numpy()]
        c = part["clicked"].to_numpy()

        def nll(g: float, t: np.ndarray = t, c: np.ndarray = c) -> float:
            return -float(np.sum(np.where(c, np.log(t * g), np.log1p(-t * g))))

        best = minimize_scalar(nll, bounds=(1e-9, 1 - 1e-9), method="bounded")
        assert got[doc] == pytest.approx(best.x, abs=1e-4), doc


def test_smoothing_shrinks_a_rarely_examined_document_more_than_a_well_examined_one():
    theta = [1.0, 0.1]
    rows = [("q", "deep", 1, True), ("q", "deep", 1, False)]  # one click in two deep views
    rows += [("q", "top", 0, i % 2 == 0) for i in range(40)]  # 20 clicks in 40 top views
    log = tiny_log(rows)
    est = hand_estimate([1.0, 0.1], theta)
    est = PropensityEstimate(
        **{
            **est.__dict__,
            "relevance": pd.DataFrame(
                {
                    "query_id": ["q", "q"],
                    "doc_id": ["deep", "top"],
                    "gamma": [0.5, 0.5],
                    "impressions": [2, 40],
                    "clicks": [1, 20],
                }
            ),
        }
    )
    raw = estimate_relevance(log, est).set_index("doc_id")["gamma"]
    smooth = estimate_relevance(log, est, smoothing=10).set_index("doc_id")["gamma"]
    assert raw["deep"] > 0.99  # MLE: one click in two views examined with p = 0.1
    assert raw["top"] == pytest.approx(0.5, abs=1e-6)
    assert raw["deep"] - smooth["deep"] > 0.3
    assert abs(raw["top"] - smooth["top"]) < 0.01


# --- labels ------------------------------------------------------------------------------------

TINY = [
    ("q1", "a", 0, True),
    ("q1", "b", 1, False),
    ("q1", "a", 0, True),
    ("q1", "b", 1, True),
    ("q1", "b", 0, False),
    ("q1", "a", 1, False),
    ("q2", "c", 0, False),
    ("q2", "d", 1, True),
]


def test_naive_labels_are_click_through_rates_per_query_and_document():
    labels = naive_labels(tiny_log(TINY)).set_index(["query_id", "doc_id"])
    assert list(labels.reset_index().columns) == list(LABEL_COLUMNS)
    # a: 2 clicks in 3; b: 1 in 3; c: 0 in 1; d: 1 in 1
    expected = {("q1", "a"): (3, 2, 2 / 3), ("q1", "b"): (3, 1, 1 / 3), ("q2", "c"): (1, 0, 0.0)}
    expected[("q2", "d")] = (1, 1, 1.0)
    for key, (n, c, ctr) in expected.items():
        row = labels.loc[key]
        assert (row["impressions"], row["clicks"]) == (n, c)
        assert row["score"] == pytest.approx(ctr)


def test_naive_smoothing_pulls_towards_the_overall_click_rate():
    log = tiny_log(TINY)
    labels = naive_labels(log, smoothing=2).set_index(["query_id", "doc_id"])
    mean = 4 / 8
    assert labels.loc[("q2", "d"), "score"] == pytest.approx((1 + 2 * mean) / (1 + 2))


def test_ips_labels_divide_each_click_by_the_propensity_of_its_rank():
    est = hand_estimate([1.0, 0.25], [0.8, 0.2])
    labels = debiased_labels(tiny_log(TINY), est, method="ips").set_index(["query_id", "doc_id"])
    # a: clicks at rank 1, rank 1 -> (1 + 1) / 3; b: click at rank 2 -> (1 / 0.25) / 3
    assert labels.loc[("q1", "a"), "score"] == pytest.approx(2 / 3)
    assert labels.loc[("q1", "b"), "score"] == pytest.approx(4 / 3)
    assert labels.loc[("q2", "d"), "score"] == pytest.approx(4.0)
    assert labels.loc[("q2", "c"), "score"] == pytest.approx(0.0)


def test_debiased_labels_rank_a_document_clicked_deep_above_its_naive_rank():
    # b is clicked as often as a per view, but only ever shown at rank 2 where p = 0.25:
    # naive CTR ranks it level with a, debiasing puts it far above.
    rows = [("q", "a", 0, i < 5) for i in range(10)] + [("q", "b", 1, i < 5) for i in range(10)]
    log = tiny_log(rows)
    est = hand_estimate([1.0, 0.25], [1.0, 0.25])
    naive = naive_labels(log).set_index("doc_id")["score"]
    em = debiased_labels(log, est).set_index("doc_id")["score"]
    assert naive["a"] == pytest.approx(naive["b"])
    assert em["b"] > em["a"]


def test_uniform_grades_are_equal_width_bins_of_score_over_its_99th_percentile():
    scores = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    reference = np.quantile(scores, 0.99)  # numpy's default (linear) quantile: 0.994
    expected = [min(2, int(3 * s / reference)) for s in scores]
    assert grade_scores(scores, 2).tolist() == expected == [0, 0, 0, 1, 2, 2, 2]


def test_quantile_grades_keep_ties_at_a_cut_point_on_the_lower_grade():
    scores = np.array([0.0, 0.0, 0.0, 0.2, 0.4, 0.6])  # cuts: 0.0 and 0.2667
    assert grade_scores(scores, 2, grading="quantile").tolist() == [0, 0, 0, 1, 2, 2]


def test_labelled_dataset_keeps_labelled_documents_of_queries_with_two_or_more():
    features = LetorDataset(
        features=np.arange(12, dtype=np.float32).reshape(6, 2),
        labels=np.zeros(6),
        qids=np.array(["q1", "q1", "q1", "q2", "q2", "q3"], dtype=object),
        doc_ids=np.array(["a", "b", "x", "c", "d", "e"], dtype=object),
    )
    labels = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q3"],
            "doc_id": ["b", "a", "c", "e"],
            "label": [2, 0, 1, 1],
        }
    )
    out = labelled_dataset(labels, features)
    assert out.qids.tolist() == ["q1", "q1"]  # q2 and q3 keep one document each
    assert out.doc_ids.tolist() == ["a", "b"]
    assert out.labels.tolist() == [0.0, 2.0]
    np.testing.assert_array_equal(out.features, features.features[[0, 1]])


# --- validation --------------------------------------------------------------------------------


def test_missing_columns_are_named():
    log = tiny_log(TINY).drop(columns=["clicked", "position"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['position', 'clicked'\]"):
        estimate_propensities(log)


def test_an_empty_log_is_refused():
    with pytest.raises(ValueError, match="empty"):
        estimate_propensities(tiny_log(TINY).iloc[:0])


def test_negative_positions_are_refused():
    log = tiny_log(TINY)
    log.loc[2, "position"] = -1
    with pytest.raises(ValueError, match="1 negative value"):
        estimate_propensities(log)


@pytest.mark.parametrize("values", [[1, 0] * 4, [1.0, 0.0] * 4, ["yes", "no"] * 4])
def test_non_boolean_clicked_is_refused(values):
    log = tiny_log(TINY).assign(clicked=values)
    with pytest.raises(ValueError, match="'clicked' must be boolean"):
        naive_labels(log)


def test_non_integer_positions_are_refused():
    log = tiny_log(TINY).assign(position=lambda d: d["position"].astype(float))
    with pytest.raises(ValueError, match="'position' must hold integers"):
        estimate_propensities(log)


def test_unknown_debiasing_method_and_grading_list_the_valid_ones():
    est = hand_estimate([1.0, 0.5], [1.0, 0.5])
    with pytest.raises(ValueError, match="valid: em, ips"):
        debiased_labels(tiny_log(TINY), est, method="dr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid: uniform, quantile"):
        naive_labels(tiny_log(TINY), grading="equal")  # type: ignore[arg-type]


# --- Parquet -----------------------------------------------------------------------------------


def test_write_click_labels_round_trips_and_leaves_no_temporary_file(tmp_path: Path):
    labels = naive_labels(tiny_log(TINY))
    path = tmp_path / "labels" / "clicks.parquet"
    write_click_labels(labels, path)
    assert [p.name for p in path.parent.iterdir()] == ["clicks.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(path), labels)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch
):
    import pyarrow.parquet as pq

    labels = naive_labels(tiny_log(TINY))
    path = tmp_path / "clicks.parquet"
    write_click_labels(labels, path)
    before = path.read_bytes()

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_click_labels(labels.assign(score=0.0), path)
    assert [p.name for p in tmp_path.iterdir()] == ["clicks.parquet"]
    assert path.read_bytes() == before
