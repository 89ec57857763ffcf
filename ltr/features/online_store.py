"""Feast's Redis and SQLite online stores, writing a row only when it is newer.

Every ingested row carries midnight of its day as event time, and a corrected day is
re-ingested with the same event time and a later ``created_timestamp`` (see
:mod:`ltr.features.ingest`). Feast 0.67's writers cannot tell the two apart:

- Redis (``RedisOnlineStore.online_write_batch``) skips a row whose event time is not newer
  than the stored ``_ts:<view>``, so a corrected day never reaches Redis;
- SQLite (``SqliteOnlineStore.online_write_batch``) upserts every row unconditionally, so each
  re-run rewrites every row and an older window materialized after a newer one puts old
  values back online.

These subclasses write a row only when its ``(event time, created time)`` is newer than the
stored pair: a corrected day wins, an unchanged re-run writes nothing (its rows keep their
created time), and an older row never replaces a newer one on either store. Redis keeps the
created time in one more hash field per view, ``_created_ts:<view>`` (a serialized protobuf
``Timestamp``, like ``_ts:<view>``); Feast's readers and the service ignore it. SQLite keeps it
in the ``created_ts`` column Feast already has, in whole seconds (Feast's SQLite adapter
stores epoch seconds), which is why ingestion gives created times in whole seconds. A stored
row without a created time (written by Feast's own writer) counts as older than any row
with one. Reads are Feast's own.

Each store counts the rows it wrote per view (``rows_written``), which
:func:`ltr.features.store.materialize` reports. Feast loads the classes by name from the
configuration (``online_store.type``); they are built on first access (PEP 562
``__getattr__``), so importing this module does not import Feast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["ONLINE_STORE_TYPES", "online_store_kind", "redis_created_field"]

logger = logging.getLogger(__name__)

ONLINE_STORE_TYPES: dict[str, str] = {
    "redis": "ltr.features.online_store.LtrRedisOnlineStore",
    "sqlite": "ltr.features.online_store.LtrSqliteOnlineStore",
}
_RedisType = Literal["ltr.features.online_store.LtrRedisOnlineStore"]
_SqliteType = Literal["ltr.features.online_store.LtrSqliteOnlineStore"]

#: rows looked up per SQLite query (SQLite allows 32,766 bound parameters)
_SQLITE_CHUNK = 500

_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name in (
        "LtrRedisOnlineStore",
        "LtrRedisOnlineStoreConfig",
        "LtrSqliteOnlineStore",
        "LtrSqliteOnlineStoreConfig",
    ):
        if not _built:
            _built.update(_build())
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def online_store_kind(store_type: str) -> str:
    """``"redis"`` or ``"sqlite"`` for Feast's or these stores' type names (else as given)."""
    for kind, name in ONLINE_STORE_TYPES.items():
        if store_type in (kind, name):
            return kind
    return store_type


def redis_created_field(view: str) -> bytes:
    """Redis hash field holding the created time of a view's row."""
    return f"_created_ts:{view}".encode()


# ------------------------------------------------------------------------ comparison
_NEVER = -1  # a missing created time: older than any real one


@functools.lru_cache(maxsize=4096)  # a batch holds few distinct times (a day, an ingestion)
def _nanos(ts: datetime) -> int:
    """Nanoseconds since the epoch of ``ts`` (naive = UTC), exact to the microsecond."""
    aware = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


@functools.lru_cache(maxsize=4096)  # a store holds few distinct times
def parse_timestamp(raw: bytes) -> int:
    """Nanoseconds since the epoch of a serialized protobuf ``Timestamp`` (``_ts:<view>``)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.ParseFromString(raw)
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def _version(event_ts: datetime, created_ts: datetime | None) -> tuple[int, int]:
    return _nanos(event_ts), _NEVER if created_ts is None else _nanos(created_ts)


def _newer_rows(
    keys: Sequence[Any],
    versions: Sequence[tuple[int, int]],
    stored: Sequence[tuple[int, int] | None],
) -> list[int]:
    """Positions of the rows newer than what is stored (or than an earlier row of the batch)."""
    latest: dict[Any, tuple[int, int]] = {}
    out = []
    for i, (key, version, prev) in enumerate(zip(keys, versions, stored, strict=True)):
        seen = latest.get(key, prev)
        if seen is not None and version <= seen:
            continue
        latest[key] = version
        out.append(i)
    return out


def _build() -> dict[str, Any]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.infra.online_stores.redis import (
        RedisOnlineStore,
        RedisOnlineStoreConfig,
        _versioned_fv_name,
    )
    from feast.infra.online_stores.sqlite import (
        SqliteOnlineStore,
        SqliteOnlineStoreConfig,
        _quote_id,
        _table_id,
    )
    from feast.utils import to_naive_utc
    from google.protobuf.timestamp_pb2 import Timestamp

    Row = tuple[Any, dict[str, Any], datetime, datetime | None]

    def count(store: Any, view: str, n: int) -> None:
        written: dict[str, int] = store.__dict__.setdefault("rows_written", {})
        written[view] = written.get(view, 0) + n

    @functools.lru_cache(maxsize=4096)
    def sqlite_seconds(value: datetime) -> int:
        return int(to_naive_utc(value).timestamp())  # as Feast's SQLite adapter stores it

    @functools.lru_cache(maxsize=4096)
    def serialize_ts(value: datetime) -> bytes:
        ts = Timestamp()
        ts.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
        return bytes(ts.SerializeToString())

    class LtrRedisOnlineStoreConfig(RedisOnlineStoreConfig):
        """Feast's Redis online store configuration (same options)."""

        type: _RedisType = ONLINE_STORE_TYPES["redis"]  # type: ignore[assignment]

    class LtrRedisOnlineStore(RedisOnlineStore):
        """Feast's Redis store; a row is written when its (event, created) time is newer."""

        def online_write_batch(
            self,
            config: Any,
            table: Any,
            data: list[Row],
            progress: Callable[[int], Any] | None,
        ) -> None:
            online = config.online_store
            view = _versioned_fv_name(table, config)
            if online.skip_dedup:  # Feast's documented "write everything" mode
                super().online_write_batch(config, table, data, progress)
                count(self, table.name, len(data))
                return
            client = self._get_client(online)
            ts_field = f"_ts:{view}"
            created_field = redis_created_field(view).decode()
            keys = [
                _redis_key(
                    config.project,
                    entity_key,
                    entity_key_serialization_version=config.entity_key_serialization_version,
                )
                for entity_key, _, _, _ in data
            ]
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, ts_field, created_field)
                previous = pipe.execute()
            stored: list[tuple[int, int] | None] = []
            for prev_ts, prev_created in previous:
                event = parse_timestamp(prev_ts) if prev_ts else None
                created = parse_timestamp(prev_created) if prev_created else None
                if event is None:
                    stored.append(None)
                else:
                    stored.append((event, _NEVER if created is None else created))
            versions = [_version(row[2], row[3]) for row in data]
            newer = _newer_rows(keys, versions, stored)
            if newer:
                fields: dict[str, bytes] = {}
                with client.pipeline(transaction=False) as pipe:
                    for i in newer:
                        _, values, event_ts, created_ts = data[i]
                        mapping: dict[Any, bytes] = {ts_field: serialize_ts(event_ts)}
                        if created_ts is not None:
                            mapping[created_field] = serialize_ts(created_ts)
                        elif previous[i][1]:
                            pipe.hdel(keys[i], created_field)
                        for name, value in values.items():
                            field = fields.get(name)
                            if field is None:
                                field = fields[name] = _mmh3(f"{view}:{name}")
                            mapping[field] = value.SerializeToString()
                        pipe.hset(keys[i], mapping=mapping)
                        if online.key_ttl_seconds:
                            pipe.expire(name=keys[i], time=online.key_ttl_seconds)
                    pipe.execute()
            count(self, table.name, len(newer))
            if progress:
                progress(len(data))

        async def online_write_batch_async(
            self,
            config: Any,
            table: Any,
            data: list[Row],
            progress: Callable[[int], Any] | None,
        ) -> None:
            import asyncio

            await asyncio.to_thread(self.online_write_batch, config, table, data, progress)

    class LtrSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
        """Feast's SQLite online store configuration (same options)."""

        type: _SqliteType = ONLINE_STORE_TYPES["sqlite"]  # type: ignore[assignment]

    class LtrSqliteOnlineStore(SqliteOnlineStore):
        """Feast's SQLite store; a row is written when its (event, created) time is newer."""

        def online_write_batch(
            self,
            config: Any,
            table: Any,
            data: list[Row],
            progress: Callable[[int], Any] | None,
        ) -> None:
            conn = self._get_conn(config)
            name = _quote_id(
                _table_id(
                    config.project, table, config.registry.enable_online_feature_view_versioning
                )
            )
            keys = [
                serialize_entity_key(
                    entity_key,
                    entity_key_serialization_version=config.entity_key_serialization_version,
                )
                for entity_key, _, _, _ in data
            ]
            # Feast's SQLite module stores datetimes as whole epoch seconds (its adapter is
            # int(naive_utc.timestamp())): compare what it stores, read back without its
            # converter.
            found: dict[bytes, tuple[int, int]] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _SQLITE_CHUNK):
                chunk = unique[start : start + _SQLITE_CHUNK]
                rows = conn.execute(
                    "SELECT entity_key, CAST(event_ts AS INTEGER), CAST(created_ts AS INTEGER) "
                    f"FROM {name} WHERE entity_key IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, event_s, created_s in rows:
                    if event_s is None:
                        continue
                    version = (event_s, _NEVER if created_s is None else created_s)
                    found[key] = max(found.get(key, version), version)
            versions = [
                (sqlite_seconds(event_ts), _NEVER if created is None else sqlite_seconds(created))
                for _, _, event_ts, created in data
            ]
            newer = _newer_rows(keys, versions, [found.get(k) for k in keys])
            if newer:
                super().online_write_batch(config, table, [data[i] for i in newer], None)
            count(self, table.name, len(newer))
            if progress:
                progress(len(data))

    classes = (
        LtrRedisOnlineStoreConfig,
        LtrRedisOnlineStore,
        LtrSqliteOnlineStoreConfig,
        LtrSqliteOnlineStore,
    )
    for cls in classes:
        cls.__module__ = __name__
    return {cls.__name__: cls for cls in classes}
