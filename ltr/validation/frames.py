"""The pandas frames GX validates, and a LETOR reader that keeps missing values."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ltr.data.dataset import LetorDataset

if TYPE_CHECKING:
    import pandas as pd


def letor_frame(ds: LetorDataset) -> pd.DataFrame:
    """Columns ``qid, doc_id, label, f1..fN``; non-finite feature cells (NaN, inf) are NaN."""
    import pandas as pd

    features = ds.features.copy()
    features[~np.isfinite(features)] = np.nan
    frame = pd.DataFrame(features, columns=[f"f{i + 1}" for i in range(ds.n_features)])
    frame.insert(0, "label", ds.labels)
    frame.insert(0, "doc_id", ds.doc_ids)
    frame.insert(0, "qid", ds.qids)
    return frame


def query_frame(ds: LetorDataset) -> pd.DataFrame:
    """One row per run of equal qids, in file order: ``qid, n_docs, n_missing``.

    A qid that occurs in two runs (a query that is not contiguous) occurs twice here.
    """
    import pandas as pd

    q = ds.qids
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]]) if q.size else np.zeros(0, np.int64)
    bounds = np.r_[starts, q.size].astype(np.int64)
    missing_per_row = (~np.isfinite(ds.features)).sum(axis=1)
    missing = np.add.reduceat(missing_per_row, starts) if starts.size else missing_per_row[:0]
    return pd.DataFrame(
        {"qid": q[starts], "n_docs": np.diff(bounds), "n_missing": missing.astype(np.int64)}
    )


def read_raw(path: str | Path, *, query_file: str | Path | None = None) -> LetorDataset:
    """Read a LETOR file keeping its NULL / NaN / inf feature values as NaN.

    ``read_letor`` rejects or imputes them; this reads the file imputed with 0 and, when
    it had missing values, again imputed with 1: the cells that differ are the missing
    ones and become NaN. ``missing_report`` keeps the counts (policy ``"keep"``).
    A ``.parquet`` file is read as it is.
    """
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        from ltr.data.parquet import from_parquet

        return from_parquet(path)
    from ltr.data.letor import read_letor

    ds = read_letor(path, missing="impute", impute_value=0.0, query_file=query_file)
    if ds.missing_report.total:
        other = read_letor(path, missing="impute", impute_value=1.0, query_file=query_file)
        ds.features[ds.features != other.features] = np.nan
    ds.missing_report = dataclasses.replace(ds.missing_report, policy="keep", impute_value=None)
    return ds
