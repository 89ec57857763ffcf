"""Padded query batches: one mask convention (True = real document) for the whole library."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ltr.data.dataset import LetorDataset
from ltr.models.constants import PADDED_Y_VALUE


@dataclass
class Batch:
    """features: [batch, list_len, n_features]; labels, mask: [batch, list_len];
    rows: [batch, list_len] row index into the dataset, -1 for padding."""

    features: Tensor
    labels: Tensor
    mask: Tensor
    rows: np.ndarray


class QueryBatcher:
    """Builds padded batches of whole queries from a dataset with one vectorised gather."""

    def __init__(self, ds: LetorDataset, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        n, f = ds.features.shape
        # Row n is an all-zero row that padded slots gather from.
        feats = np.zeros((n + 1, f), dtype=np.float32)
        feats[:n] = ds.features
        labels = np.full(n + 1, PADDED_Y_VALUE, dtype=np.float32)
        labels[:n] = ds.labels
        self._features = torch.from_numpy(feats).to(self.device)
        self._labels = torch.from_numpy(labels).to(self.device)
        self.offsets = ds.offsets
        self.sizes = np.diff(self.offsets)
        self.n_rows = n

    @property
    def n_queries(self) -> int:
        return len(self.sizes)

    def batch(self, query_indices: np.ndarray) -> Batch:
        sizes = self.sizes[query_indices]
        width = int(sizes.max()) if len(sizes) else 0
        pos = np.arange(width)[None, :]
        rows = self.offsets[query_indices][:, None] + pos
        valid = pos < sizes[:, None]
        rows = np.where(valid, rows, -1)
        gather = torch.from_numpy(np.where(valid, rows, self.n_rows)).to(self.device)
        return Batch(
            features=self._features[gather],
            labels=self._labels[gather],
            mask=torch.from_numpy(valid).to(self.device),
            rows=rows,
        )

    def iter_batches(
        self, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None
    ) -> Iterator[Batch]:
        order = np.arange(self.n_queries)
        if shuffle:
            (rng or np.random.default_rng()).shuffle(order)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


@torch.no_grad()
def score_dataset(
    model: torch.nn.Module,
    ds: LetorDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Scores of every row of ``ds`` (float32 [n_docs]), computed list by list in eval mode."""
    was_training = model.training
    model.eval()
    out = np.empty(ds.n_docs, dtype=np.float32)
    try:
        batcher = QueryBatcher(ds, device)
        for b in batcher.iter_batches(batch_size):
            scores = model(b.features, b.mask).float().cpu().numpy()
            out[b.rows[b.rows >= 0]] = scores[b.rows >= 0]
    finally:
        model.train(was_training)
    if not np.all(np.isfinite(out)):
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise FloatingPointError(f"model produced a non-finite score at row {bad}")
    return out
