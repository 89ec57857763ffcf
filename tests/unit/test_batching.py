"""Padded query batches and list-by-list scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltr.data.dataset import LetorDataset
from ltr.models.constants import PADDED_Y_VALUE
from ltr.training.batching import QueryBatcher, score_dataset

torch.set_num_threads(1)

SIZES = [2, 4, 1, 3]


@pytest.fixture
def tiny() -> LetorDataset:
    """Four queries of 2, 4, 1 and 3 documents; feature j of row r is 10 * r + j + 1."""
    n = sum(SIZES)
    rows = np.arange(n, dtype=np.float32)[:, None]
    features = 10 * rows + np.arange(1, 4, dtype=np.float32)[None, :]
    labels = np.array([0, 2, 1, 0, 3, 0, 1, 2, 0, 1], dtype=np.float32)
    qids = np.repeat([f"q{i}" for i in range(len(SIZES))], SIZES)
    doc_ids = np.array([f"d{r}" for r in range(n)], dtype=object)
    return LetorDataset(features, labels, qids, doc_ids)


def test_batch_gathers_exactly_the_rows_of_each_query_in_order(tiny):
    b = QueryBatcher(tiny).batch(np.array([3, 0, 1]))
    expected_rows = np.array([[7, 8, 9, -1], [0, 1, -1, -1], [2, 3, 4, 5]])
    np.testing.assert_array_equal(b.rows, expected_rows)
    assert b.features.shape == (3, 4, 3)
    for i, row_ids in enumerate(expected_rows):
        for j, r in enumerate(row_ids):
            if r >= 0:
                np.testing.assert_array_equal(b.features[i, j].numpy(), tiny.features[r])
                assert b.labels[i, j].item() == tiny.labels[r]


def test_mask_matches_query_sizes_and_padded_labels_hold_the_pad_value(tiny):
    b = QueryBatcher(tiny).batch(np.array([0, 1, 2, 3]))
    expected_mask = np.array([[j < n for j in range(4)] for n in SIZES])
    assert b.mask.dtype == torch.bool
    np.testing.assert_array_equal(b.mask.numpy(), expected_mask)
    labels = b.labels.numpy()
    assert (labels[~expected_mask] == PADDED_Y_VALUE).all()
    assert (labels[expected_mask] >= 0).all()
    # padded feature slots are zero (finite), never another document's features
    assert (b.features.numpy()[~expected_mask] == 0).all()


def test_batch_width_is_the_longest_selected_query(tiny):
    b = QueryBatcher(tiny).batch(np.array([0, 2]))
    assert b.features.shape == (2, 2, 3)
    np.testing.assert_array_equal(b.rows, [[0, 1], [6, -1]])


def test_iter_batches_visits_every_query_once_in_order_without_shuffle(tiny):
    batcher = QueryBatcher(tiny)
    batches = list(batcher.iter_batches(batch_size=3))
    assert [len(b.rows) for b in batches] == [3, 1]
    seen = np.concatenate([b.rows[b.rows >= 0] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(tiny.n_docs))


def test_shuffled_batches_cover_every_row_once_and_follow_the_generator(tiny):
    batcher = QueryBatcher(tiny)
    first = [b.rows.copy() for b in batcher.iter_batches(2, True, np.random.default_rng(5))]
    again = [b.rows.copy() for b in batcher.iter_batches(2, True, np.random.default_rng(5))]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    seen = np.sort(np.concatenate([r[r >= 0] for r in first]))
    np.testing.assert_array_equal(seen, np.arange(tiny.n_docs))
    order = np.arange(4)
    np.random.default_rng(5).shuffle(order)
    starts = [r[:, 0] for r in first]
    offsets = tiny.offsets
    np.testing.assert_array_equal(np.concatenate(starts), offsets[order])


class LinearScorer(torch.nn.Module):
    """score = features @ w + b, ignoring the mask: a known function of the features."""

    def __init__(self, w: np.ndarray, b: float) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(len(w), 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor(w, dtype=torch.float32)[None])
            self.lin.bias.fill_(b)

    def forward(self, features, mask=None):
        return self.lin(features).squeeze(-1)


@pytest.mark.parametrize("batch_size", [1, 3, 256])
def test_score_dataset_puts_each_score_on_its_row(tiny, batch_size):
    w = np.array([0.5, -2.0, 0.25])
    model = LinearScorer(w, 1.5)
    scores = score_dataset(model, tiny, batch_size=batch_size)
    expected = tiny.features.astype(np.float64) @ w + 1.5
    assert scores.dtype == np.float32 and scores.shape == (tiny.n_docs,)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_score_dataset_on_a_larger_dataset_matches_numpy(splits):
    ds = splits.valid
    w = np.random.default_rng(0).normal(size=ds.n_features)
    scores = score_dataset(LinearScorer(w, -0.5), ds, batch_size=7)
    np.testing.assert_allclose(scores, ds.features.astype(np.float64) @ w - 0.5, atol=1e-4)


def test_score_dataset_uses_eval_mode_and_restores_training_mode(tiny):
    class ModeProbe(torch.nn.Module):
        def forward(self, features, mask=None):
            return torch.full(features.shape[:2], 1.0 if self.training else 2.0)

    model = ModeProbe().train()
    scores = score_dataset(model, tiny)
    np.testing.assert_array_equal(scores, np.full(tiny.n_docs, 2.0, dtype=np.float32))
    assert model.training


def test_score_dataset_rejects_a_non_finite_score_naming_the_row(tiny):
    feats = tiny.features.copy()
    feats[4, 0] = 3e38
    ds = LetorDataset(feats, tiny.labels, tiny.qids, tiny.doc_ids)
    with pytest.raises(FloatingPointError, match="row 4"):
        score_dataset(LinearScorer(np.array([10.0, 0.0, 0.0]), 0.0), ds)
