"""Calibration of the online tests on the click simulator (ltr.online.power), on MQ2008.

The two rankers are LightGBM on MQ2008 Fold1 with all features (b) and without the BM25 /
LMIR.JM features (a), about 0.07 NDCG@10 apart on the test split. The full calibration of
``bench.online_power`` runs here: it takes about 25 s on two cores.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.datasets import need

from ltr.data.dataset import LetorDataset
from ltr.online.clickmodel import ClickModel
from ltr.online.power import (
    RankerPair,
    ab_required_impressions,
    build_query_pool,
    interleaving_power,
    mq2008_ranker_pair,
    simulate_ab,
    simulate_interleaving,
)

pytestmark = pytest.mark.datasets


@pytest.fixture(scope="module")
def pair() -> RankerPair:
    return mq2008_ranker_pair(need("mq2008"), fold=1, threads=1)


def test_the_pair_differs_by_about_0_07_ndcg10_on_held_out_queries(pair):
    assert 0.06 <= pair.difference <= 0.08, (pair.ndcg10_a, pair.ndcg10_b)


def test_interleaving_finds_the_better_ranker_in_90_percent_of_60_seeds_at_2000_queries(pair):
    res = interleaving_power(
        pair.test, pair.scores_a, pair.scores_b, n_impressions=2000, seeds=range(60)
    )
    assert res.power >= 0.9, res.significant
    assert res.significant["a"] == 0
    assert res.mean_preference > 0


def test_aa_interleaving_has_at_most_8_false_wins_in_100_seeds(pair):
    res = interleaving_power(
        pair.test, pair.scores_a, pair.scores_a, n_impressions=2000, seeds=range(100), better=None
    )
    assert res.false_wins <= 8, res.significant
    assert abs(res.mean_preference) < 0.01


def test_ab_needs_more_impressions_than_interleaving_for_the_same_power(pair):
    res = ab_required_impressions(pair.test, pair.scores_a, pair.scores_b, seeds=range(60))
    assert res.required_impressions is not None, res.grid
    assert res.required_impressions > 2000, res.grid
    assert [p["impressions"] for p in res.grid] == [1000 * 2**i for i in range(len(res.grid))]


def test_the_simulation_replays_exactly_from_its_seed(pair):
    pool = build_query_pool(pair.test, pair.scores_a, pair.scores_b)
    assert simulate_interleaving(pool, 300, seed=7) == simulate_interleaving(pool, 300, seed=7)
    assert simulate_interleaving(pool, 300, seed=7) != simulate_interleaving(pool, 300, seed=8)
    first, again = simulate_ab(pool, 500, seed=7), simulate_ab(pool, 500, seed=7)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


def test_only_queries_with_a_relevant_document_receive_traffic(pair):
    pool = build_query_pool(pair.test, pair.scores_a, pair.scores_b)
    with_relevant = sum(
        1 for _, rows in pair.test.iter_queries() if pair.test.labels[rows].max() > 0
    )
    assert len(pool) == with_relevant < pair.test.n_queries
    assert all(labels.max() > 0 for labels in pool.labels)


@pytest.mark.parametrize("kind", ["pbm", "cascade"])
def test_vectorised_ab_clicks_have_the_click_models_probabilities(kind):
    labels = np.array([0, 2, 1, 0, 1], dtype=np.float32)
    ds = LetorDataset(
        features=np.zeros((5, 1)),
        labels=labels,
        qids=np.array(["q"] * 5, dtype=object),
        doc_ids=np.array([f"d{i}" for i in range(5)], dtype=object),
    )
    scores_a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])  # file order
    scores_b = -scores_a  # reversed
    model = ClickModel(kind=kind)
    pool = build_query_pool(ds, scores_a, scores_b)
    clicks_a, clicks_b = simulate_ab(pool, 200_000, seed=1, click_model=model, metric="clicks")
    for clicks, shown in ((clicks_a, labels), (clicks_b, labels[::-1])):
        expected = model.click_probabilities(shown).sum()
        assert clicks.mean() == pytest.approx(expected, abs=4 * clicks.std() / len(clicks) ** 0.5)
