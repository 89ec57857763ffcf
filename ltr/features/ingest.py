"""Write a LETOR dataset into the offline store that Feast reads (Parquet, one file per ingestion).

Two tables under ``<LTR_HOME>/feast/data/``, each a folder of Parquet files:

- ``query_doc_features.parquet/``: ``query_id``, ``doc_id``, ``features`` (list<float32>, the
  query-document columns), ``event_timestamp``, ``created_timestamp``;
- ``doc_features.parquet/``: ``doc_id``, ``features`` (the document-only columns), and the
  two timestamps; one row per document.

An ingestion writes one file per table, named after its event timestamp and its source
(``20240101T000000.000000Z--S1-1a2b3c4d.parquet``), atomically. Ingesting again for the
same timestamp and source replaces that file, so a re-run never duplicates rows.

``event_timestamp`` says when the features became true (point-in-time joins use it);
``created_timestamp`` says when the row's values were ingested. A row that is new or whose
features changed gets the ingestion time (whole seconds, later than every created time of
the file it replaces); a row already in the file being replaced, with bit-identical
features, keeps the created time it had. So a corrected day wins over the
earlier ingestion of that day (Feast takes the latest ``(event, created)``, offline and, with
:mod:`ltr.features.online_store`, online), while a re-run of unchanged data leaves the files
untouched and the online store has nothing newer to write. The layout (how many features,
which are document-only, their names) is kept in ``layout.json`` and a later ingestion must
match it, so the arrays of one view always have the same length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
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
    "check_batch_documents",
    "ingest_letor",
    "parse_feature_numbers",
    "partition_name",
    "read_layout",
]

logger = logging.getLogger(__name__)

_PARTITION_SEP = "--"
_US = 1_000_000  # microseconds per second
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


def partition_name(event_timestamp: datetime, source: str, name: str | None = None) -> str:
    """File name of one ingestion: its UTC event timestamp and its name, else a tag of its
    source."""
    if name is not None:
        return _named_partition(_utc(event_timestamp), name)
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


def _key_strings(keys: dict[str, np.ndarray]) -> dict[str, list[str]]:
    return {name: [str(v) for v in values.tolist()] for name, values in keys.items()}


def _table(
    keys: dict[str, list[str]],
    matrix: np.ndarray,
    event_ts: datetime,
    created_us: np.ndarray,
    metadata: dict[str, str],
) -> pa.Table:
    """The table of one view; ``created_us``: each row's created time, µs since the epoch."""
    import pyarrow as pa

    n = matrix.shape[0]
    ts_type = pa.timestamp("us", tz="UTC")
    columns: dict[str, pa.Array] = {
        name: pa.array(values, type=pa.string()) for name, values in keys.items()
    }
    columns[FEATURE_FIELD] = _list_array(matrix)
    columns[EVENT_TIMESTAMP] = pa.array([event_ts] * n, type=ts_type)
    columns[CREATED_TIMESTAMP] = pa.array(created_us, type=pa.int64()).cast(ts_type)
    meta = {f"ltr.{k}".encode(): v.encode() for k, v in metadata.items()}
    return pa.table(columns).replace_schema_metadata(meta)


def _micros(ts: datetime) -> int:
    delta = _utc(ts) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _max_created_us(table: pa.Table) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(CREATED_TIMESTAMP).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return int(pc.max(column).as_py())


def _same(table: pa.Table, previous: pa.Table | None) -> bool:
    """Whether writing ``table`` would store what ``previous`` (read back) already holds."""
    if previous is None or previous.schema.names != table.schema.names:
        return False
    try:  # Parquet names a list's item "element"; compare values, types and metadata
        return bool(previous.cast(table.schema).equals(table, check_metadata=True))
    except (ValueError, TypeError, NotImplementedError):
        return False


def _read_previous(path: Path) -> pa.Table | None:
    """The file an ingestion is about to replace, or None (none, or an empty one)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    table = pq.read_table(path)
    return table if table.num_rows else None


def _created_times(
    previous: pa.Table | None, keys: dict[str, list[str]], matrix: np.ndarray, fresh_us: int
) -> tuple[np.ndarray, int]:
    """Created time of each row (µs) and how many rows are new or changed.

    A row whose keys are in ``previous`` with bit-identical features keeps its created
    time there; every other row gets ``fresh_us``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n, width = matrix.shape
    created = np.full(n, fresh_us, dtype=np.int64)
    if previous is None:
        return created, n
    column = previous.column(FEATURE_FIELD)
    if pc.any(pc.not_equal(pc.list_value_length(column), width)).as_py():
        return created, n  # another width: nothing can match (the layout check refuses it)
    flat = np.asarray(pc.list_flatten(column), dtype=np.float32)
    old_matrix = flat.reshape(previous.num_rows, width)  # width 0: a view without columns
    old_created = (
        previous.column(CREATED_TIMESTAMP)
        .cast(pa.timestamp("us", tz="UTC"))
        .cast(pa.int64())
        .to_numpy(zero_copy_only=False)
    )
    names = list(keys)
    old_keys = zip(*(previous.column(c).to_pylist() for c in names), strict=True)
    index = {k: i for i, k in enumerate(old_keys)}
    pos = np.array(
        [index.get(k, -1) for k in zip(*(keys[c] for c in names), strict=True)], dtype=np.int64
    )
    same = pos >= 0
    new_bits = np.ascontiguousarray(matrix, dtype=np.float32).view(np.uint32)
    same[same] = (old_matrix[pos[same]].view(np.uint32) == new_bits[same]).all(axis=1)
    created[same] = old_created[pos[same]]
    return created, int(n - same.sum())


def _write(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _check_same_time_docs(
    folder: Path,
    name: str,
    doc_ids: np.ndarray,
    vectors: np.ndarray,
    replacing: Collection[str] = (),
) -> None:
    """Other ingestions at the same event time must agree on shared documents.

    ``replacing``: partitions the caller re-ingests in the same batch (checked by
    :func:`check_batch_documents` instead of against their files, which are being replaced).
    """
    import pyarrow.parquet as pq

    stamp = name.split(_PARTITION_SEP)[0]
    if not folder.is_dir():
        return
    index = {d: i for i, d in enumerate(doc_ids.tolist())}
    skip = {name, *replacing}
    for other in sorted(folder.glob(f"{stamp}{_PARTITION_SEP}*.parquet")):
        if other.name in skip:
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


def check_batch_documents(batch: Sequence[LetorDataset], doc_feature_indices: list[int]) -> None:
    """Datasets ingested together for one event time must agree on shared documents.

    Raises IngestError naming the first document whose document-only features differ
    between two of them (or between two queries of one).
    """
    seen: dict[str, tuple[np.ndarray, str]] = {}
    for ds in batch:
        try:
            _, doc_cols = split_feature_columns(ds.n_features, doc_feature_indices)
        except ValueError as exc:
            raise IngestError(str(exc)) from exc
        rows, vectors = _unique_docs(ds, doc_cols)
        for doc, vector in zip(ds.doc_ids[rows].astype(str).tolist(), vectors, strict=True):
            first, where = seen.setdefault(doc, (vector, ds.source))
            if not np.array_equal(first.view(np.uint32), vector.view(np.uint32)):
                raise IngestError(
                    f"document {doc} has other document-only features in {ds.source} than in "
                    f"{where}, ingested for the same event time; make them agree"
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
    replacing: Collection[str] = (),
) -> dict[str, Any]:
    """Write ``ds`` into the offline tables under ``out_dir`` (``<LTR_HOME>/feast/data``).

    doc_feature_indices: 0-based columns that depend on the document only; each document's
                         values must be identical in every query (else IngestError).
    event_timestamp:     when these features became true (naive = UTC); Feast's
                         point-in-time joins never show them to an earlier entity row.
    created_timestamp:   ingestion time given to rows that are new or changed (default:
                         now), in whole seconds and at least one second later than the
                         created times of the file it replaces; a row bit-identical to the
                         one in the replaced file keeps its own.
    name:                source tag of the ingestion (default: derived from ``ds.source``);
                         the same timestamp and name replace the earlier file.
    replacing:           partition names of the same event time re-ingested in the same
                         batch (see :func:`partition_name`): documents are not checked
                         against their old files; check the batch with
                         :func:`check_batch_documents`.

    Returns what was written: row counts, paths, whether a file was replaced, how many rows
    are new or changed per view, and ``unchanged`` (the files equal what is already there, so
    nothing was written).
    """
    if ds.n_docs == 0:
        raise IngestError(f"{ds.source or 'dataset'}: no rows to ingest")
    event_ts = _utc(event_timestamp)
    requested_created = datetime.now(UTC) if created_timestamp is None else created_timestamp
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
    file_name = partition_name(event_ts, ds.source, name)
    doc_folder = out / OFFLINE_FILES[DOC_VIEW]
    _check_same_time_docs(doc_folder, file_name, doc_ids, doc_vectors, replacing)

    paths = {
        QUERY_DOC_VIEW: out / OFFLINE_FILES[QUERY_DOC_VIEW] / file_name,
        DOC_VIEW: doc_folder / file_name,
    }
    replaced = any(p.exists() for p in paths.values())
    previous = {view: _read_previous(p) for view, p in paths.items()}
    # Whole seconds (what Feast's SQLite online store keeps), at least a second later than
    # every created time being replaced, so a changed row always wins over the old one.
    fresh_s = max(
        [_micros(requested_created) // _US]
        + [_max_created_us(t) // _US + 1 for t in previous.values() if t is not None]
    )
    fresh_us = fresh_s * _US
    meta = {"source": ds.source, "layout": json.dumps(layout)}
    keys = {
        QUERY_DOC_VIEW: _key_strings({QUERY_JOIN_KEY: ds.qids, DOC_JOIN_KEY: ds.doc_ids}),
        DOC_VIEW: _key_strings({DOC_JOIN_KEY: doc_ids}),
    }
    matrices = {QUERY_DOC_VIEW: ds.features[:, query_doc_cols], DOC_VIEW: doc_vectors}
    tables: dict[str, pa.Table] = {}
    changed: dict[str, int] = {}
    for view in (QUERY_DOC_VIEW, DOC_VIEW):
        created, changed[view] = _created_times(
            previous[view], keys[view], matrices[view], fresh_us
        )
        tables[view] = _table(keys[view], matrices[view], event_ts, created, meta)
    to_write = [
        view for view in (DOC_VIEW, QUERY_DOC_VIEW) if not _same(tables[view], previous[view])
    ]
    if existing is None:
        write_json_atomic(out / LAYOUT_FILE, layout)
    # Documents first: a crash between the two writes leaves no query row without its document.
    for view in to_write:
        _write(tables[view], paths[view])
    qd_table, doc_table = tables[QUERY_DOC_VIEW], tables[DOC_VIEW]
    logger.info(
        "ingested %s: %d query-document rows, %d documents at %s (%d and %d new or changed%s)",
        ds.source,
        qd_table.num_rows,
        doc_table.num_rows,
        event_ts.isoformat(),
        changed[QUERY_DOC_VIEW],
        changed[DOC_VIEW],
        "" if to_write else "; files unchanged",
    )
    return {
        "source": ds.source,
        "event_timestamp": event_ts.isoformat(),
        "created_timestamp": _from_micros(fresh_us).isoformat(),
        "partition": file_name,
        "replaced": replaced,
        "unchanged": not to_write,
        "changed_rows": changed,
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
