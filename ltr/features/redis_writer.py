"""Vectorised writes of Arrow rows into Feast's Redis layout, newer rows only.

:class:`ltr.features.compute_engine.LtrComputeEngine` hands this module the latest rows of a
feature view as an Arrow table (from the offline store's pull) instead of letting Feast turn
every row into protobuf objects (``feast.utils._convert_arrow_to_proto``) and writing them
one ``HSET`` at a time. What it writes is byte-identical to what
:class:`ltr.features.online_store.LtrRedisOnlineStore` (Feast's writer plus the created
time) writes for the same rows:

- keys: Feast's serialised entity key + project (:mod:`serving.features.feast_layout`);
- feature fields: ``murmur3("<view>:<feature>")`` -> ``Value{float_list_val}``, built as the
  constant header of a ``dim``-float list followed by the row's little-endian floats;
- ``_ts:<view>`` / ``_created_ts:<view>``: serialised ``Timestamp`` of the event / created
  time at microsecond precision (what Feast's conversion to ``datetime`` keeps), serialised
  once per distinct value.

The correction rule is the online store's: a row is written only when its ``(event,
created)`` pair is newer than the stored one (a missing created time is older than any), so
an unchanged re-run writes nothing. Stored times are read, and rows written, by one Lua
script call per chunk of keys (``EVALSHA``); the comparison itself is done here, exactly.

:func:`encodable` says whether a table and view are handled here (string join keys, only
``Array(Float32)`` features of one fixed length, no nulls); the engine falls back to Feast's
path otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.features.feast_layout import (
    entity_key_prefix,
    float_list_header,
    sort_entity,
    string_value_segment,
)

__all__ = ["encodable", "float_list_values", "write_newer"]

#: keys per Lua script call
CHUNK = 1000
_NEVER = -1  # a missing created time: older than any real one (as in online_store)

_READ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, ARGV[1], ARGV[2])
  out[2 * i - 1] = v[1]
  out[2 * i] = v[2]
end
return out
"""

# ARGV: number of fields n, ttl seconds (0: none), the n field names, then n values per key
_WRITE_LUA = """
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local pos = 3 + n
local args = {}
for i, key in ipairs(KEYS) do
  for j = 1, n do
    args[2 * j - 1] = ARGV[2 + j]
    args[2 * j] = ARGV[pos]
    pos = pos + 1
  end
  redis.call('HSET', key, unpack(args))
  if ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end
return #KEYS
"""


def _is_string(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _list_dim(pa: Any, column: Any) -> int | None:
    """The common length (>= 1) of a non-null float32 list column, else None."""
    t = column.type
    if pa.types.is_fixed_size_list(t):
        dim = int(t.list_size)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        if len(column) == 0:
            return None
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        dim = int(lengths[0])
        if not (lengths == dim).all():
            return None
    else:
        return None
    if dim < 1 or not pa.types.is_float32(t.value_type):
        return None
    if column.null_count or column.flatten().null_count:
        return None
    return dim


def encodable(table: Any, join_keys: Sequence[str], features: Sequence[str], ts: str) -> bool:
    """Whether :func:`write_newer` handles these columns (else use Feast's conversion)."""
    import pyarrow as pa

    names = set(table.column_names)
    if not join_keys or not features or not names.issuperset([*join_keys, *features, ts]):
        return False
    for key in join_keys:
        col = table.column(key)
        if not _is_string(pa, col.type) or col.null_count:
            return False
    ts_col = table.column(ts)
    if not pa.types.is_timestamp(ts_col.type) or ts_col.null_count:
        return False
    return all(_list_dim(pa, table.column(f).combine_chunks()) for f in features)


def float_list_values(column: Any) -> list[bytes]:
    """Serialised ``Value{float_list_val}`` of each row of a fixed-length float32 list column.

    Equal to ``ValueProto(float_list_val=FloatList(val=row)).SerializeToString()``.
    """
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = _list_dim(pa, column)
    if dim is None:
        raise ValueError("not a fixed-length float32 list column without nulls")
    n = len(column)
    header = float_list_header(dim)
    size = len(header) + 4 * dim
    floats = column.flatten().to_numpy(zero_copy_only=False).astype("<f4", copy=False)
    buf = np.empty((n, size), dtype=np.uint8)
    buf[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    buf[:, len(header) :] = floats.reshape(n, dim).view(np.uint8).reshape(n, 4 * dim)
    blob = buf.tobytes()
    return [blob[i : i + size] for i in range(0, n * size, size)]


def entity_keys(table: Any, join_keys: Sequence[str], project: str, version: int) -> list[bytes]:
    """Feast's Redis keys (serialised entity key + project) of every row."""
    names, _ = sort_entity(join_keys, list(join_keys))
    prefix = entity_key_prefix(names, version)
    suffix = project.encode("utf-8")
    columns = []
    for name in names:
        values = table.column(name).to_pylist()
        segment = {v: string_value_segment(v) for v in set(values)}  # ids repeat across rows
        columns.append([segment[v] for v in values])
    if len(columns) == 1:
        return [prefix + seg + suffix for seg in columns[0]]
    return [prefix + b"".join(segs) + suffix for segs in zip(*columns, strict=True)]


@functools.lru_cache(maxsize=4096)
def _timestamp_bytes(micros: int) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    seconds, rest = divmod(micros, 1_000_000)
    return bytes(Timestamp(seconds=seconds, nanos=rest * 1000).SerializeToString())


def _micros(column: Any) -> npt.NDArray[np.int64]:
    """Microseconds since the epoch (UTC; truncated as Feast's ``datetime`` conversion)."""
    import pyarrow as pa

    unit = column.type.unit
    raw = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    if unit == "s":
        return raw * 1_000_000
    if unit == "ms":
        return raw * 1_000
    if unit == "ns":
        return raw // 1_000
    return raw


def _serialized(micros: npt.NDArray[np.int64]) -> list[bytes]:
    unique, inverse = np.unique(micros, return_inverse=True)
    table = [_timestamp_bytes(int(m)) for m in unique]
    return [table[i] for i in inverse.ravel().tolist()]


def _newer(
    keys: list[bytes],
    event: npt.NDArray[np.int64],
    created: npt.NDArray[np.int64],
    stored: list[bytes | None],
) -> list[int]:
    """Rows whose (event, created) is newer than stored (and than earlier rows of the batch)."""
    from ltr.features.online_store import parse_timestamp as _parse_timestamp

    n = len(keys)
    s_event = np.array([_parse_timestamp(b) if b else _NEVER for b in stored[0::2]], np.int64)
    s_created = np.array([_parse_timestamp(b) if b else _NEVER for b in stored[1::2]], np.int64)
    absent = np.array([not b for b in stored[0::2]], dtype=np.bool_)
    if len(set(keys)) == n:
        mask = absent | (event > s_event) | ((event == s_event) & (created > s_created))
        return np.flatnonzero(mask).tolist()
    from ltr.features.online_store import _newer_rows

    versions = list(zip(event.tolist(), created.tolist(), strict=True))
    prev = [
        None if a else (e, c)
        for a, e, c in zip(absent.tolist(), s_event.tolist(), s_created.tolist(), strict=True)
    ]
    return _newer_rows(keys, versions, prev)


def write_newer(
    client: Any,
    table: Any,
    *,
    project: str,
    view: str,
    join_keys: Sequence[str],
    features: Sequence[str],
    ts_column: str,
    created_column: str | None,
    key_version: int,
    ttl_seconds: int | None = None,
) -> int:
    """Write the rows of ``table`` newer than what Redis holds; returns the rows written.

    ``view`` is the (possibly versioned) view name Feast uses in field names. ``table`` must
    pass :func:`encodable`.
    """
    from feast.infra.online_stores.helpers import _mmh3

    from ltr.features.online_store import redis_created_field

    n = table.num_rows
    if n == 0:
        return 0
    keys = entity_keys(table, join_keys, project, key_version)
    ts_field = f"_ts:{view}".encode()
    created_field = redis_created_field(view)
    event_us = _micros(table.column(ts_column))
    created_us: npt.NDArray[np.int64] | None = None
    if created_column:
        col = table.column(created_column)
        if col.null_count == 0:
            created_us = _micros(col)
        else:
            raise ValueError(f"null created timestamps in {created_column}")

    read = client.register_script(_READ_LUA)
    stored: list[bytes | None] = []
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, n, CHUNK):
            read(keys=keys[start : start + CHUNK], args=[ts_field, created_field], client=pipe)
        for part in pipe.execute():
            stored.extend(part)
    created_ns = np.full(n, _NEVER, dtype=np.int64) if created_us is None else created_us * 1000
    rows = _newer(keys, event_us * 1000, created_ns, stored)
    if not rows:
        return 0

    take = np.asarray(rows, dtype=np.int64)
    picked = table.take(take) if len(rows) < n else table
    fields: list[bytes] = [ts_field]
    columns: list[list[bytes]] = [_serialized(event_us[take])]
    if created_us is not None:
        fields.append(created_field)
        columns.append(_serialized(created_us[take]))
    for name in features:
        fields.append(_mmh3(f"{view}:{name}"))
        columns.append(float_list_values(picked.column(name)))
    row_keys = [keys[i] for i in rows]
    write = client.register_script(_WRITE_LUA)
    head: list[Any] = [len(fields), int(ttl_seconds or 0), *fields]
    with client.pipeline(transaction=False) as pipe:
        if created_us is None:  # a stored created time would now describe another row
            for i in rows:
                if stored[2 * i + 1]:
                    pipe.hdel(keys[i], created_field)
        for start in range(0, len(rows), CHUNK):
            stop = start + CHUNK
            values = [v for row in zip(*(c[start:stop] for c in columns), strict=True) for v in row]
            write(keys=row_keys[start:stop], args=head + values, client=pipe)
        pipe.execute()
    return len(rows)
