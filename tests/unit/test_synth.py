"""Synthetic data: shape, realism, determinism and a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from ltr.data.dataset import LetorDataset
from ltr.data.synth import generate_synthetic, split_queries


def ndcg_at(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Tiny independent NDCG@k (gain 2^rel - 1, log2 discount, ties broken by position)."""
    order = np.argsort(-scores, kind="stable")[:k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(((2.0 ** labels[order] - 1) * discount[: order.size]).sum())
    ideal = np.sort(labels)[::-1][:k]
    idcg = float(((2.0**ideal - 1) * discount[: ideal.size]).sum())
    return dcg / idcg


def mean_ndcg(ds: LetorDataset, scores: np.ndarray) -> float:
    values = [
        ndcg_at(ds.labels[rows], scores[rows])
        for _, rows in ds.iter_queries()
        if ds.labels[rows].max() >= 1
    ]
    return float(np.mean(values))


@pytest.fixture(scope="module")
def ds() -> LetorDataset:
    return generate_synthetic(seed=11)


def test_same_seed_gives_an_identical_dataset(ds: LetorDataset) -> None:
    again = generate_synthetic(seed=11)
    assert again.fingerprint() == ds.fingerprint()
    assert generate_synthetic(seed=12).fingerprint() != ds.fingerprint()


def test_shape_ids_and_feature_names(ds: LetorDataset) -> None:
    assert ds.n_queries == 200
    assert ds.n_features == 20
    assert ds.features.dtype == np.float32 and np.isfinite(ds.features).all()
    assert ds.query_ids[:3] == ["q0", "q1", "q2"]
    assert all(d.startswith("d") for d in ds.doc_ids)
    assert ds.feature_names[0] == "f1" and ds.feature_names[-1] == "f20"
    for _, rows in ds.iter_queries():  # a document appears at most once per query
        assert len(set(ds.doc_ids[rows].tolist())) == rows.stop - rows.start


def test_list_lengths_are_realistic_and_within_bounds() -> None:
    ds = generate_synthetic(n_queries=300, mean_docs=30, min_docs=5, max_docs=120, seed=1)
    sizes = ds.group_sizes
    assert sizes.min() >= 5 and sizes.max() <= 120
    assert 22 <= sizes.mean() <= 38
    assert sizes.std() > 5  # not all queries the same length


def test_labels_are_graded_with_many_zeros(ds: LetorDataset) -> None:
    values, counts = np.unique(ds.labels, return_counts=True)
    assert values.tolist() == [0, 1, 2, 3, 4]
    share = dict(zip(values.tolist(), (counts / counts.sum()).tolist(), strict=True))
    assert share[0] > 0.5
    assert share[1] > share[3]


def test_about_a_fifth_of_queries_have_no_relevant_document(ds: LetorDataset) -> None:
    none = sum(ds.labels[rows].max() < 1 for _, rows in ds.iter_queries())
    assert 0.1 <= none / ds.n_queries <= 0.3


def test_doc_only_features_are_identical_wherever_a_document_appears(ds: LetorDataset) -> None:
    doc_only = ds.features[:, -5:]
    first: dict[str, np.ndarray] = {}
    repeats = 0
    for i, doc in enumerate(ds.doc_ids.tolist()):
        if doc in first:
            np.testing.assert_array_equal(doc_only[i], first[doc])
            repeats += 1
        else:
            first[doc] = doc_only[i]
    assert repeats > ds.n_docs // 4  # documents are shared between queries
    # query-document features of a repeated document differ between its queries
    seen: dict[str, int] = {}
    for i, doc in enumerate(ds.doc_ids.tolist()):
        if doc in seen:
            assert not np.array_equal(ds.features[i, :-5], ds.features[seen[doc], :-5])
            break
        seen[doc] = i


def test_a_linear_scorer_beats_random_order_clearly(ds: LetorDataset) -> None:
    x = np.c_[ds.features, np.ones(ds.n_docs)]
    weights, *_ = np.linalg.lstsq(x, ds.labels, rcond=None)
    fitted = mean_ndcg(ds, x @ weights)
    random = mean_ndcg(ds, np.random.default_rng(0).random(ds.n_docs))
    assert fitted > random + 0.3
    assert fitted > 0.7


def test_noise_lowers_the_signal() -> None:
    def fitted_ndcg(noise: float) -> float:
        d = generate_synthetic(noise=noise, seed=4)
        x = np.c_[d.features, np.ones(d.n_docs)]
        weights, *_ = np.linalg.lstsq(x, d.labels, rcond=None)
        return mean_ndcg(d, x @ weights)

    assert fitted_ndcg(0.0) > fitted_ndcg(3.0) + 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_queries": 0},
        {"n_features": 3, "n_doc_only": 4},
        {"min_docs": 10, "max_docs": 5},
        {"max_label": 0},
        {"noise": -1.0},
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        generate_synthetic(**kwargs)  # type: ignore[arg-type]


def test_all_doc_only_and_no_doc_only_features_work() -> None:
    assert generate_synthetic(n_queries=5, n_features=3, n_doc_only=3).n_features == 3
    assert generate_synthetic(n_queries=5, n_features=3, n_doc_only=0).n_features == 3


def test_split_queries_partitions_queries_without_splitting_one(ds: LetorDataset) -> None:
    parts = split_queries(ds, (0.6, 0.2, 0.2), seed=3)
    assert [p.n_queries for p in parts] == [120, 40, 40]
    ids = [set(p.query_ids) for p in parts]
    assert set.union(*ids) == set(ds.query_ids)
    assert sum(len(s) for s in ids) == ds.n_queries
    assert sum(p.n_docs for p in parts) == ds.n_docs
    position = {q: i for i, q in enumerate(ds.query_ids)}
    for part in parts:  # original order kept within a part
        order = [position[q] for q in part.query_ids]
        assert order == sorted(order)
    again = split_queries(ds, (0.6, 0.2, 0.2), seed=3)
    assert [p.query_ids for p in again] == [p.query_ids for p in parts]


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (1.0, 0.0), (-0.5, 1.5), ()])
def test_split_queries_refuses_fractions_that_are_not_a_partition(
    ds: LetorDataset, fractions: tuple[float, ...]
) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_queries(ds, fractions)
