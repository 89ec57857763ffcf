"""The in-memory ranking dataset shared by every part of the library.

Rows are documents; documents of one query are contiguous. ``offsets`` gives the
boundaries: query ``i`` owns rows ``offsets[i]:offsets[i + 1]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MissingValueReport:
    """What the missing-value policy did while reading a file."""

    policy: str = "reject"
    impute_value: float | None = None
    null_values: int = 0
    nan_values: int = 0
    inf_values: int = 0
    rows_affected: int = 0

    @property
    def total(self) -> int:
        return self.null_values + self.nan_values + self.inf_values

    def as_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "impute_value": self.impute_value,
            "null_values": self.null_values,
            "nan_values": self.nan_values,
            "inf_values": self.inf_values,
            "rows_affected": self.rows_affected,
            "total": self.total,
        }


@dataclass
class LetorDataset:
    """Documents grouped by query.

    features: float32 [n_docs, n_features]
    labels:   float32 [n_docs] (graded relevance, >= 0)
    qids:     object  [n_docs] (query id strings; rows of one query are contiguous)
    doc_ids:  object  [n_docs] (document id strings)
    """

    features: np.ndarray
    labels: np.ndarray
    qids: np.ndarray
    doc_ids: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    missing_report: MissingValueReport = field(default_factory=MissingValueReport)
    source: str = ""

    def __post_init__(self) -> None:
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        self.qids = np.asarray(self.qids, dtype=object)
        self.doc_ids = np.asarray(self.doc_ids, dtype=object)
        n = self.features.shape[0]
        if self.features.ndim != 2:
            raise ValueError(
                f"features must be 2-D [n_docs, n_features], got {self.features.shape}"
            )
        for name in ("labels", "qids", "doc_ids"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
        if not self.feature_names:
            self.feature_names = [f"f{i + 1}" for i in range(self.features.shape[1])]
        if len(self.feature_names) != self.features.shape[1]:
            raise ValueError(
                f"{len(self.feature_names)} feature names for {self.features.shape[1]} columns"
            )
        self._offsets: np.ndarray | None = None

    # ------------------------------------------------------------------ shape
    @property
    def n_docs(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def offsets(self) -> np.ndarray:
        """int64 [n_queries + 1]: row boundaries of the queries, in file order."""
        if self._offsets is None:
            if self.n_docs == 0:
                self._offsets = np.zeros(1, dtype=np.int64)
            else:
                change = np.flatnonzero(self.qids[1:] != self.qids[:-1]) + 1
                self._offsets = np.concatenate([[0], change, [self.n_docs]]).astype(np.int64)
                starts = self.qids[self._offsets[:-1]]
                if len(set(starts.tolist())) != len(starts):
                    raise ValueError(
                        "documents of a query are not contiguous"
                        + (f" in {self.source}" if self.source else "")
                    )
        return self._offsets

    @property
    def n_queries(self) -> int:
        return len(self.offsets) - 1

    @property
    def group_sizes(self) -> np.ndarray:
        """int64 [n_queries]: documents per query (LightGBM's ``group``)."""
        return np.diff(self.offsets)

    @property
    def query_ids(self) -> list[str]:
        return [str(q) for q in self.qids[self.offsets[:-1]]]

    def iter_queries(self) -> Iterator[tuple[str, slice]]:
        """Yield ``(qid, row_slice)`` per query, in file order."""
        off = self.offsets
        for i in range(len(off) - 1):
            yield str(self.qids[off[i]]), slice(int(off[i]), int(off[i + 1]))

    # --------------------------------------------------------------- subsets
    def subset_queries(self, query_indices: np.ndarray | list[int]) -> LetorDataset:
        """A new dataset holding the given queries (by position), in the given order."""
        off = self.offsets
        rows = (
            np.concatenate([np.arange(off[i], off[i + 1]) for i in query_indices])
            if len(query_indices)
            else np.zeros(0, dtype=np.int64)
        )
        return LetorDataset(
            features=self.features[rows],
            labels=self.labels[rows],
            qids=self.qids[rows],
            doc_ids=self.doc_ids[rows],
            feature_names=list(self.feature_names),
            missing_report=self.missing_report,
            source=self.source,
        )

    @staticmethod
    def concat(parts: list[LetorDataset]) -> LetorDataset:
        """Stack datasets; query ids must not repeat across parts."""
        if not parts:
            raise ValueError("concat needs at least one dataset")
        names = parts[0].feature_names
        for p in parts[1:]:
            if p.n_features != parts[0].n_features:
                raise ValueError(
                    f"cannot concat {p.source or 'dataset'} with {p.n_features} features "
                    f"to {parts[0].n_features}"
                )
        out = LetorDataset(
            features=np.concatenate([p.features for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            qids=np.concatenate([p.qids for p in parts]),
            doc_ids=np.concatenate([p.doc_ids for p in parts]),
            feature_names=list(names),
            source="+".join(p.source for p in parts if p.source),
        )
        _ = out.offsets  # validates contiguity / no repeated query ids
        return out

    # ----------------------------------------------------------- fingerprint
    def fingerprint(self) -> str:
        """sha256 over features, labels, query ids and doc ids: identifies training data."""
        h = hashlib.sha256()
        h.update(np.asarray(self.features.shape, dtype=np.int64).tobytes())
        h.update(self.features.tobytes())
        h.update(self.labels.tobytes())
        h.update("\x1f".join(map(str, self.qids)).encode())
        h.update("\x1e".join(map(str, self.doc_ids)).encode())
        return h.hexdigest()
