"""Training data from the feature store: Feast's point-in-time join through a FeatureService.

Training reads the same versioned FeatureService (``ranker_v1``) as serving. For each
entity row ``(query_id, doc_id, label, event_timestamp)`` Feast returns the latest vectors
whose event time is not after the row's, so a model never sees features from its future.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.features.definitions import (
    DEFAULT_FEATURE_SERVICE,
    DOC_JOIN_KEY,
    EVENT_TIMESTAMP,
    FEATURE_SERVICES,
    FULL_FEATURE_NAMES,
    QUERY_JOIN_KEY,
    output_column,
)
from ltr.features.ingest import read_layout

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from ltr.settings import Settings

__all__ = ["entity_rows", "load_training_dataset", "training_frame"]

logger = logging.getLogger(__name__)

_ROW = "__ltr_row"  # carries the caller's row order through Feast's join


def entity_rows(ds: LetorDataset, event_timestamp: datetime) -> pd.DataFrame:
    """Entity rows for every document of ``ds``, all observed at ``event_timestamp``."""
    import pandas as pd

    ts = event_timestamp if event_timestamp.tzinfo else event_timestamp.replace(tzinfo=UTC)
    return pd.DataFrame(
        {
            QUERY_JOIN_KEY: [str(q) for q in ds.qids.tolist()],
            DOC_JOIN_KEY: [str(d) for d in ds.doc_ids.tolist()],
            "label": ds.labels.astype(np.float32),
            EVENT_TIMESTAMP: pd.Series([ts] * ds.n_docs, dtype="datetime64[us, UTC]"),
        }
    )


def _store(store: FeatureStore | None, settings: Settings | None) -> FeatureStore:
    if store is not None:
        return store
    from ltr.features.store import get_feature_store

    return get_feature_store(settings)


def training_frame(
    entity_df: pd.DataFrame,
    *,
    feature_service: str = DEFAULT_FEATURE_SERVICE,
    store: FeatureStore | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Feast's historical retrieval for ``entity_df``, in the order of ``entity_df``'s rows.

    entity_df: ``query_id``, ``doc_id``, ``event_timestamp`` (tz-aware or UTC) and any other
               columns (labels), which are passed through. The result adds one array column
               per view of the service (``query_doc_features__features``, ...); a row
               without features at its time gets a missing value (None) there.
    """
    import pandas as pd

    missing = [c for c in (QUERY_JOIN_KEY, DOC_JOIN_KEY, EVENT_TIMESTAMP) if c not in entity_df]
    if missing:
        raise ValueError(f"entity_df lacks column(s) {missing}")
    if feature_service not in FEATURE_SERVICES:
        raise ValueError(
            f"unknown feature service {feature_service!r}; valid: {sorted(FEATURE_SERVICES)}"
        )
    frame = entity_df.copy()
    frame[QUERY_JOIN_KEY] = frame[QUERY_JOIN_KEY].astype(str)
    frame[DOC_JOIN_KEY] = frame[DOC_JOIN_KEY].astype(str)
    ts = pd.to_datetime(frame[EVENT_TIMESTAMP])
    frame[EVENT_TIMESTAMP] = (
        ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    )
    frame[_ROW] = np.arange(len(frame), dtype=np.int64)

    fs = _store(store, settings)
    service = fs.get_feature_service(feature_service)
    job = fs.get_historical_features(
        entity_df=frame, features=service, full_feature_names=FULL_FEATURE_NAMES
    )
    out = job.to_df()
    # Feast 0.67's file store drops an entity row whose entity has feature rows, but only
    # later ones (an unknown entity is kept with a missing value). Put every row back, in
    # the caller's order, with a missing value where Feast found nothing.
    columns = [output_column(view) for view in FEATURE_SERVICES[feature_service]]
    if out[_ROW].duplicated().any():
        raise RuntimeError("Feast returned an entity row twice")
    found = out.set_index(_ROW)[columns].reindex(frame[_ROW].to_numpy())
    result = frame.drop(columns=[_ROW]).reset_index(drop=True)
    for column in columns:
        result[column] = found[column].to_numpy()
    n_missing = int(found.isna().any(axis=1).sum())
    if n_missing:
        logger.info("%d of %d entity rows have no features at their time", n_missing, len(frame))
    return result


def load_training_dataset(
    entity_df: pd.DataFrame,
    *,
    feature_service: str = DEFAULT_FEATURE_SERVICE,
    label_column: str = "label",
    layout: dict[str, Any] | None = None,
    store: FeatureStore | None = None,
    settings: Settings | None = None,
    source: str = "",
) -> LetorDataset:
    """A :class:`LetorDataset` of ``entity_df``'s rows with features from the feature store.

    The views' vectors are put back in the original LETOR column order, using the layout
    recorded at ingestion (``layout.json``; or ``layout`` given explicitly). Rows of a query
    are grouped together in the order the queries first appear. An entity row without
    features at its time raises ValueError naming it.
    """
    if label_column not in entity_df:
        raise ValueError(f"entity_df lacks the label column {label_column!r}")
    if layout is None:
        from ltr.features.store import offline_dir

        layout = read_layout(offline_dir(settings))
        if layout is None:
            raise ValueError("the offline store has no layout.json: ingest data first")
    frame = training_frame(
        entity_df, feature_service=feature_service, store=store, settings=settings
    )

    views = FEATURE_SERVICES[feature_service]
    n = len(frame)
    columns: list[int] = []
    blocks: list[np.ndarray] = []
    for view in views:
        cols = [int(c) for c in layout[view]]
        blocks.append(_stack(frame, view, len(cols)))
        columns.extend(cols)
    order = np.argsort(np.asarray(columns, dtype=np.int64), kind="stable")
    stacked = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32)
    features = stacked[:, order]
    names = list(layout["feature_names"])
    feature_names = [names[columns[i]] for i in order]

    # group rows by query, queries in order of first appearance
    qids = frame[QUERY_JOIN_KEY].to_numpy(dtype=object)
    _, first, inverse = np.unique(qids.astype(str), return_index=True, return_inverse=True)
    rows = np.argsort(first[inverse], kind="stable")
    return LetorDataset(
        features=features[rows],
        labels=frame[label_column].to_numpy(dtype=np.float32)[rows],
        qids=qids[rows],
        doc_ids=frame[DOC_JOIN_KEY].to_numpy(dtype=object)[rows],
        feature_names=feature_names,
        source=source or f"feast:{feature_service}",
    )


def _stack(frame: pd.DataFrame, view: str, width: int) -> np.ndarray:
    """The view's array column as float32 [n_rows, width]; a missing or odd vector raises."""
    column = frame[output_column(view)]

    def where(i: int) -> str:
        return (
            f"query {frame[QUERY_JOIN_KEY].iat[i]}, doc {frame[DOC_JOIN_KEY].iat[i]} at "
            f"{frame[EVENT_TIMESTAMP].iat[i]}"
        )

    missing = column.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise ValueError(
            f"no {view} features for {where(i)} ({int(missing.sum())} row(s) without them; "
            "ingest with an earlier --timestamp, or leave those rows out)"
        )
    values = column.tolist()
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    if len(values) and (lengths != width).any():
        i = int(np.argmax(lengths != width))
        raise ValueError(
            f"{view} vector of {where(i)} has {lengths[i]} values, the layout says {width}"
        )
    if not values:
        return np.zeros((0, width), dtype=np.float32)
    return np.asarray(np.stack(values), dtype=np.float32).reshape(len(values), width)
