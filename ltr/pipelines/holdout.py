"""Held-out splits and point-in-time labels of the retrain pipeline (pure functions).

Queries are assigned to train / valid / test by a salted sha256 of the query id alone, so
a query keeps its split from one night to the next, whatever else arrives, and champion
and challengers are always compared on the same test queries.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING

from ltr.pipelines.config import HoldoutConfig

if TYPE_CHECKING:
    import pandas as pd

    from ltr.data.dataset import LetorDataset

__all__ = ["SPLITS", "latest_labels", "split_of", "split_queries"]

SPLITS = ("train", "valid", "test")


def split_of(query_id: str, holdout: HoldoutConfig) -> str:
    """``train``, ``valid`` or ``test`` from a salted sha256 of the query id alone."""
    if holdout.valid_fraction + holdout.test_fraction >= 1.0:
        raise ValueError("holdout valid_fraction + test_fraction must be below 1")
    digest = hashlib.sha256(f"{holdout.salt}\x1f{query_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < holdout.test_fraction:
        return "test"
    if u < holdout.test_fraction + holdout.valid_fraction:
        return "valid"
    return "train"


def split_queries(ds: LetorDataset, holdout: HoldoutConfig) -> dict[str, LetorDataset]:
    """``ds`` cut into train / valid / test by :func:`split_of` (queries keep their order)."""
    names = [split_of(q, holdout) for q in ds.query_ids]
    return {s: ds.subset_queries([i for i, n in enumerate(names) if n == s]) for s in SPLITS}


def latest_labels(labels: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Entity rows for Feast: each (query, doc)'s latest label at or before ``as_of`` (naive
    times are UTC), sorted by query and document so the same labels give the same dataset."""
    import pandas as pd

    missing = {"query_id", "doc_id", "label", "event_timestamp"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels lack column(s) {sorted(missing)}")
    frame = labels[["query_id", "doc_id", "label", "event_timestamp"]].copy()
    ts = pd.to_datetime(frame["event_timestamp"])
    frame["event_timestamp"] = (
        ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    )
    frame["query_id"] = frame["query_id"].astype(str)
    frame["doc_id"] = frame["doc_id"].astype(str)
    cutoff = pd.Timestamp(as_of)
    cutoff = cutoff.tz_localize("UTC") if cutoff.tz is None else cutoff
    frame = frame[frame["event_timestamp"] <= cutoff]
    frame = frame.sort_values(["query_id", "doc_id", "event_timestamp"], kind="stable")
    frame = frame.drop_duplicates(["query_id", "doc_id"], keep="last")
    return frame.reset_index(drop=True)
