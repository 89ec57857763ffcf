"""Write a LETOR dataset into the offline store that Feast reads (Parquet, one file per ingestion).

Two tables under ``<LTR_HOME>/feast/data/``, each a folder of Parquet files:

- ``query_doc_features.parquet/``: ``query_id``, ``doc_id``, ``features`` (list<float32>, the
  query-document columns), ``event_timestamp``, ``created_timestamp``;
- ``doc_features.parquet/``: ``doc_id``, ``features`` (the document-only columns), and the
  two timestamps; one row per document.

An ingestion writes one file per table, named after its event timestamp and its source
(``20240101T000000.000000Z--S1-1a2b3c4d.parquet``), atomically. Ingesting the same data for
the same timestamp again replaces that file, so a re-run never duplicates rows. The layout
(how many features, which are document-only, their names) is kept in ``layout.json`` and a
later ingestion must match it, so the arrays of one view always have the same length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltr.features.definitions import (
    CREATED_TIMESTAMP,
    DOC_JOIN_KEY,
    DOC_VIEW,
    EVENT_TIMESTAMP,
    FEATURE_FIELD,
    LAYOUT_FILE,
    OFFLINE_FILES,
    QUERY_DOC_VIEW,
    QUERY_JOIN_KEY,
    split_feature_columns,
)
from ltr.utils.io import atomic_path, write_json_atomic

if TYPE_CHECKING:
    import pyarrow as pa

    from ltr.data.dataset import LetorDataset

__all__ = [
    "IngestError",
    "ingest_letor",
    "parse_feature_numbers",
    "partition_name",
    "read_layout",
]

logger = logging.getLogger(__name__)

_PARTITION_SEP = "--"
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


class IngestError(ValueError):
    """The data cannot go into the offline store as it is (the message says why)."""


# ----------------------------------------------------------------------------- helpers
def parse_feature_numbers(spec: str) -> list[int]:
    """``"41-46"`` or ``"1,3,41-46"`` (1-based feature numbers) -> sorted 0-based indices.

    An empty string or ``"none"`` gives no columns.
    """
    text = spec.strip().lower()
    if text in ("", "none"):
        return []
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"bad feature list {spec!r}: expected numbers and ranges like 41-46")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo < 1 or hi < lo:
            raise ValueError(f"bad feature range {part!r} in {spec!r} (1-based, low-high)")
        out.update(range(lo - 1, hi))
    return sorted(out)


def _utc(ts: datetime) -> datetime:
    """A timezone-aware UTC datetime; a naive one is taken as UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def partition_name(event_timestamp: datetime, source: str) -> str:
    """File name of one ingestion: its UTC event timestamp and a tag of its source."""
    stamp = _utc(event_timestamp).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}{_PARTITION_SEP}{_source_tag(source)}.parquet"


def _source_tag(source: str) -> str:
    path = Path(source)
    if source and path.is_file():
        source = str(path.resolve())
        stem = path.stem
    else:
        stem = source or "dataset"
    slug = _SLUG.sub("-", stem).strip("-.")[:40] or "dataset"
    return f"{slug}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"


def read_layout(out_dir: str | Path) -> dict[str, Any] | None:
    """The offline store's feature layout (``layout.json``), or None before the first ingest."""
    path = Path(out_dir) / LAYOUT_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        layout: dict[str, Any] = json.load(fh)
    return layout


def _layout(ds: LetorDataset, query_doc: list[int], doc: list[int]) -> dict[str, Any]:
    return {
        "n_features": ds.n_features,
        "feature_names": list(ds.feature_names),
        QUERY_DOC_VIEW: query_doc,
        DOC_VIEW: doc,
    }


# ----------------------------------------------------------------------------- checks
def _check_values(ds: LetorDataset) -> None:
    finite = np.isfinite(ds.features)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise IngestError(
            f"{ds.source or 'dataset'}: row {row + 1} (query {ds.qids[row]}, doc "
            f"{ds.doc_ids[row]}) has a non-finite value in feature {col + 1}; read the file "
            "with missing='impute' or fix it"
        )
    keys = np.char.add(np.char.add(ds.qids.astype(str), "\x1f"), ds.doc_ids.astype(str))
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        rows = np.flatnonzero(keys == uniq[k])[:2] + 1
        raise IngestError(
            f"{ds.source or 'dataset'}: query {ds.qids[first[k]]} lists document "
            f"{ds.doc_ids[first[k]]} more than once (rows {rows[0]} and {rows[1]}); the "
            "feature store keys rows by (query_id, doc_id)"
        )


def _unique_docs(ds: LetorDataset, doc_cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row index of each document's first occurrence (file order) and its doc-only vector.

    Raises IngestError naming a document whose doc-only features differ between queries.
    """
    doc_ids = ds.doc_ids.astype(str)
    _, first, inverse = np.unique(doc_ids, return_index=True, return_inverse=True)
    values = ds.features[:, doc_cols]
    reference = values[first[inverse]]
    # bit-exact comparison (float32 values straight from the file)
    differs = (reference.view(np.uint32) != values.view(np.uint32)).any(axis=1)
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        ref_row = int(first[inverse[row]])
        col = int(np.flatnonzero(reference[row].view(np.uint32) != values[row].view(np.uint32))[0])
        n_docs = len(set(doc_ids[differs].tolist()))
        raise IngestError(
            f"{ds.source or 'dataset'}: document {doc_ids[row]} has different document-only "
            f"features in rows {ref_row + 1} (query {ds.qids[ref_row]}) and {row + 1} "
            f"(query {ds.qids[row]}): feature {doc_cols[col] + 1} is "
            f"{values[ref_row, col]!s} vs {values[row, col]!s} "
            f"({n_docs} document(s) disagree). Features that depend on the query (LETOR "
            "normalises MQ2008's per query) belong in the query-document view: ingest "
            "without declaring them document-only"
        )
    order = np.sort(first)
    return order, values[order]


# ----------------------------------------------------------------------------- tables
def _list_array(matrix: np.ndarray) -> pa.Array:
    import pyarrow as pa

    n, width = matrix.shape
    values = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * np.int32(width), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, values)


def _table(
    keys: dict[str, np.ndarray],
    matrix: np.ndarray,
    event_ts: datetime,
    created_ts: datetime,
    metadata: dict[str, str],
) -> pa.Table:
    import pyarrow as pa

    n = matrix.shape[0]
    ts_type = pa.timestamp("us", tz="UTC")
    columns: dict[str, pa.Array] = {
        name: pa.array([str(v) for v in values.tolist()], type=pa.string())
        for name, values in keys.items()
    }
    columns[FEATURE_FIELD] = _list_array(matrix)
    columns[EVENT_TIMESTAMP] = pa.array([event_ts] * n, type=ts_type)
    columns[CREATED_TIMESTAMP] = pa.array([created_ts] * n, type=ts_type)
    meta = {f"ltr.{k}".encode(): v.encode() for k, v in metadata.items()}
    return pa.table(columns).replace_schema_metadata(meta)


def _write(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _check_same_time_docs(
    folder: Path, name: str, doc_ids: np.ndarray, vectors: np.ndarray
) -> None:
    """Other ingestions at the same event time must agree on shared documents."""
    import pyarrow.parquet as pq

    stamp = name.split(_PARTITION_SEP)[0]
    if not folder.is_dir():
        return
    index = {d: i for i, d in enumerate(doc_ids.tolist())}
    for other in sorted(folder.glob(f"{stamp}{_PARTITION_SEP}*.parquet")):
        if other.name == name:
            continue
        table = pq.read_table(other, columns=[DOC_JOIN_KEY, FEATURE_FIELD])
        for doc, vec in zip(
            table.column(DOC_JOIN_KEY).to_pylist(),
            table.column(FEATURE_FIELD).to_pylist(),
            strict=True,
        ):
            i = index.get(doc)
            if i is not None and not np.array_equal(np.asarray(vec, np.float32), vectors[i]):
                raise IngestError(
                    f"document {doc} has other document-only features in {other.name}, "
                    "ingested for the same event time; use another --timestamp or make them agree"
                )


# ------------------------------------------------------------------------------ ingest
def ingest_letor(
    ds: LetorDataset,
    out_dir: str | Path,
    *,
    doc_feature_indices: list[int],
    event_timestamp: datetime,
    created_timestamp: datetime | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Write ``ds`` into the offline tables under ``out_dir`` (``<LTR_HOME>/feast/data``).

    doc_feature_indices: 0-based columns that depend on the document only; each document's
                         values must be identical in every query (else IngestError).
    event_timestamp:     when these features became true (naive = UTC); Feast's
                         point-in-time joins never show them to an earlier entity row.
    created_timestamp:   tie-breaker between rows of the same event time; defaults to
                         ``event_timestamp`` so that re-ingesting writes identical files.
    name:                source tag of the ingestion (default: derived from ``ds.source``);
                         the same timestamp and name replace the earlier file.

    Returns what was written: row counts, paths, whether a file was replaced.
    """
    if ds.n_docs == 0:
        raise IngestError(f"{ds.source or 'dataset'}: no rows to ingest")
    event_ts = _utc(event_timestamp)
    created_ts = _utc(created_timestamp) if created_timestamp is not None else event_ts
    try:
        query_doc_cols, doc_cols = split_feature_columns(ds.n_features, doc_feature_indices)
    except ValueError as exc:
        raise IngestError(str(exc)) from exc
    _check_values(ds)
    _ = ds.offsets  # queries must be contiguous

    out = Path(out_dir)
    layout = _layout(ds, query_doc_cols, doc_cols)
    existing = read_layout(out)
    if existing is not None and existing != layout:
        raise IngestError(
            f"{ds.source or 'dataset'} does not match the offline store's layout in "
            f"{out / LAYOUT_FILE}: it has {existing['n_features']} features, document-only "
            f"{[i + 1 for i in existing[DOC_VIEW]]}; this dataset has {ds.n_features}, "
            f"document-only {[i + 1 for i in doc_cols]} (use another LTR_HOME for another "
            "layout)"
        )

    first_rows, doc_vectors = _unique_docs(ds, doc_cols)
    doc_ids = ds.doc_ids[first_rows].astype(str)
    file_name = (
        partition_name(event_ts, ds.source) if name is None else _named_partition(event_ts, name)
    )
    doc_folder = out / OFFLINE_FILES[DOC_VIEW]
    _check_same_time_docs(doc_folder, file_name, doc_ids, doc_vectors)

    meta = {"source": ds.source, "layout": json.dumps(layout)}
    qd_table = _table(
        {QUERY_JOIN_KEY: ds.qids, DOC_JOIN_KEY: ds.doc_ids},
        ds.features[:, query_doc_cols],
        event_ts,
        created_ts,
        meta,
    )
    doc_table = _table({DOC_JOIN_KEY: doc_ids}, doc_vectors, event_ts, created_ts, meta)

    paths = {
        QUERY_DOC_VIEW: out / OFFLINE_FILES[QUERY_DOC_VIEW] / file_name,
        DOC_VIEW: doc_folder / file_name,
    }
    replaced = any(p.exists() for p in paths.values())
    if existing is None:
        write_json_atomic(out / LAYOUT_FILE, layout)
    # Documents first: a crash between the two writes leaves no query row without its document.
    _write(doc_table, paths[DOC_VIEW])
    _write(qd_table, paths[QUERY_DOC_VIEW])
    logger.info(
        "ingested %s: %d query-document rows, %d documents at %s",
        ds.source,
        qd_table.num_rows,
        doc_table.num_rows,
        event_ts.isoformat(),
    )
    return {
        "source": ds.source,
        "event_timestamp": event_ts.isoformat(),
        "created_timestamp": created_ts.isoformat(),
        "partition": file_name,
        "replaced": replaced,
        "queries": ds.n_queries,
        "query_doc_rows": qd_table.num_rows,
        "doc_rows": doc_table.num_rows,
        "query_doc_features": len(query_doc_cols),
        "doc_features": len(doc_cols),
        "doc_feature_numbers": [i + 1 for i in doc_cols],
        "paths": {view: str(p) for view, p in paths.items()},
    }


def _named_partition(event_ts: datetime, name: str) -> str:
    slug = _SLUG.sub("-", name).strip("-.")
    if not slug:
        raise IngestError(f"bad ingestion name {name!r}")
    stamp = event_ts.strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}{_PARTITION_SEP}{slug}.parquet"
