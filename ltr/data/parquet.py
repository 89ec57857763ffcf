"""A :class:`LetorDataset` as one Parquet file, lossless and fast to load.

Columns: ``qid`` (string), ``doc_id`` (string), ``label`` (float32) and ``features``
(list<float32>, one array per row, all of length ``n_features``). File-level metadata keeps
the feature names, the missing-value report and the source, so a dataset read back equals
the one written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ltr.data.dataset import LetorDataset, MissingValueReport
from ltr.utils.io import atomic_path

__all__ = ["FORMAT", "from_parquet", "to_parquet"]

logger = logging.getLogger(__name__)

FORMAT = "ltr-letor-dataset/1"
_COLUMNS = ("qid", "doc_id", "label", "features")
_KEY_FORMAT = b"ltr.format"
_KEY_NAMES = b"ltr.feature_names"
_KEY_MISSING = b"ltr.missing_report"
_KEY_SOURCE = b"ltr.source"


def to_parquet(ds: LetorDataset, path: str | Path, *, compression: str = "zstd") -> None:
    """Write ``ds`` to ``path`` atomically (a reader never sees half a file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, width = ds.features.shape
    values = pa.array(ds.features.reshape(-1), type=pa.float32())
    if n * width < 2**31 - 1:
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * np.int32(width), type=pa.int32())
        features = pa.ListArray.from_arrays(offsets, values)
    else:
        offsets = pa.array(np.arange(n + 1, dtype=np.int64) * width, type=pa.int64())
        features = pa.LargeListArray.from_arrays(offsets, values)
    report = ds.missing_report.as_dict()
    report.pop("total", None)
    metadata = {
        _KEY_FORMAT: FORMAT.encode(),
        _KEY_NAMES: json.dumps(list(ds.feature_names)).encode(),
        _KEY_MISSING: json.dumps(report).encode(),
        _KEY_SOURCE: ds.source.encode(),
    }
    table = pa.table(
        {
            "qid": pa.array([str(q) for q in ds.qids.tolist()], type=pa.string()),
            "doc_id": pa.array([str(d) for d in ds.doc_ids.tolist()], type=pa.string()),
            "label": pa.array(ds.labels, type=pa.float32()),
            "features": features,
        }
    ).replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression)


def from_parquet(path: str | Path) -> LetorDataset:
    """Read a dataset written by :func:`to_parquet` (or any file with the same columns)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Parquet file")
    table = pq.read_table(path)
    absent = [c for c in _COLUMNS if c not in table.column_names]
    if absent:
        raise ValueError(f"{path}: not a ranking dataset, missing column(s) {', '.join(absent)}")
    for name in _COLUMNS:
        if table.column(name).null_count:
            raise ValueError(f"{path}: column {name!r} has null values")
    meta = table.schema.metadata or {}
    n = table.num_rows

    column = table.column("features")
    lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)):
        raise ValueError(f"{path}: column 'features' must be a list of floats, got {lists.type}")
    names: list[str] = json.loads(meta[_KEY_NAMES]) if _KEY_NAMES in meta else []
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    width = len(names) if _KEY_NAMES in meta else (int(lengths[0]) if n else 0)
    if n and not (lengths == width).all():
        row = int(np.argmax(lengths != width))
        raise ValueError(f"{path}: row {row} has {int(lengths[row])} features, expected {width}")
    flat = lists.flatten().to_numpy(zero_copy_only=False)
    features = np.asarray(flat, dtype=np.float32).reshape(n, width)

    report = MissingValueReport()
    if _KEY_MISSING in meta:
        fields = json.loads(meta[_KEY_MISSING])
        fields.pop("total", None)
        report = MissingValueReport(**fields)
    return LetorDataset(
        features=features,
        labels=table.column("label").to_numpy().astype(np.float32),
        qids=table.column("qid").to_numpy().astype(object),
        doc_ids=table.column("doc_id").to_numpy().astype(object),
        feature_names=names,
        missing_report=report,
        source=meta[_KEY_SOURCE].decode() if _KEY_SOURCE in meta else str(path),
    )
