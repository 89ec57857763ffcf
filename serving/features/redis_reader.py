"""Read candidates' feature vectors straight from Feast's Redis online store.

No Feast, no protobuf: keys and hash fields come from :mod:`serving.features.feast_layout`,
all keys of all views go out in one round trip, and each view's values decode with one
``np.frombuffer``. By default the round trip is one ``HGET`` per key, packed in RESP here and
written at once: on a pooled connection of the blocking client (worker threads), or through
a :class:`RedisWire` on the event loop (:meth:`RedisFeatureReader.aread`). It costs Redis
about half the CPU of the same reads in one ``EVALSHA`` of a small Lua script (the other
mode, ``"lua"``), and lets Redis serve other clients between a large request's reads.
Values equal ``FeatureStore.get_online_features`` on the same keys
(``tests/integration/test_redis_reader.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.features import FeatureStoreUnavailable
from serving.features.feast_layout import (
    decode_float_lists,
    entity_key_prefix,
    field_hash,
    string_value_segment,
)
from serving.features.redis_wire import RedisWire

__all__ = [
    "DOC_JOIN_KEY",
    "QUERY_JOIN_KEY",
    "FeatureReadResult",
    "FeatureReader",
    "FeatureViewSpec",
    "ReadMode",
    "RedisFeatureReader",
    "redis_client_from_connection_string",
]

logger = logging.getLogger(__name__)

QUERY_JOIN_KEY = "query_id"
DOC_JOIN_KEY = "doc_id"
_KNOWN_JOIN_KEYS = frozenset({QUERY_JOIN_KEY, DOC_JOIN_KEY})

ReadMode = Literal["pipeline", "lua"]

# KEYS: every key of every view, view after view. ARGV: n_views, then (field, count) per view.
_READ_SCRIPT = """
local out = {}
local i = 1
for v = 0, tonumber(ARGV[1]) - 1 do
  local field = ARGV[2 + 2 * v]
  for _ = 1, tonumber(ARGV[3 + 2 * v]) do
    out[i] = redis.call('HGET', KEYS[i], field)
    i = i + 1
  end
end
return out
"""
#: One ``HGET`` in RESP, to be filled with (key length, key, CRLF + field argument).
_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s%s"


@dataclass(frozen=True)
class FeatureViewSpec:
    """One Feast feature view whose single ``Array(Float32)`` field holds the vector.

    ``name`` is the view name as stored online (``"<view>_v<N>"`` when Feast's online
    feature-view versioning is on); ``join_keys`` are among ``query_id`` and ``doc_id``.
    """

    name: str
    join_keys: tuple[str, ...]
    dim: int
    field: str = "features"

    def __post_init__(self) -> None:
        unknown = set(self.join_keys) - _KNOWN_JOIN_KEYS
        if not self.join_keys or unknown:
            raise ValueError(
                f"feature view {self.name!r}: join keys must be among "
                f"{sorted(_KNOWN_JOIN_KEYS)}, got {list(self.join_keys)}"
            )
        if len(set(self.join_keys)) != len(self.join_keys):
            raise ValueError(f"feature view {self.name!r}: duplicate join keys")
        if self.dim < 1:
            raise ValueError(f"feature view {self.name!r}: dim must be >= 1, got {self.dim}")

    @property
    def per_document(self) -> bool:
        """True when rows differ per candidate (``doc_id`` is a join key)."""
        return DOC_JOIN_KEY in self.join_keys


@dataclass(frozen=True)
class FeatureReadResult:
    """Feature vectors of the candidates of one request, in candidate order.

    vectors: view name -> float32 [n_docs, dim]; rows of entities not found are NaN.
    found: view name -> bool [n_docs].
    missing: rows not found, summed over views (includes ``invalid``).
    invalid: rows whose stored value was not a ``dim``-long float list (logged).
    """

    vectors: dict[str, npt.NDArray[np.float32]]
    found: dict[str, npt.NDArray[np.bool_]]
    missing: int
    invalid: int = 0


class FeatureReader(Protocol):
    """What the rank service needs from an online feature reader."""

    def read(self, query_id: str, doc_ids: Sequence[str]) -> FeatureReadResult: ...


@dataclass(frozen=True)
class _ViewLayout:
    spec: FeatureViewSpec
    field: bytes
    # Key = head + <doc segment> + tail for per-document views, head + tail otherwise; the
    # query segment goes into head or tail (by Feast's key order) once per request.
    prefix: bytes
    query_before_doc: bool = False
    #: the hash field as the last argument of a RESP command
    field_arg: bytes = b""


def redis_client_from_connection_string(
    connection_string: str,
    *,
    socket_timeout: float = 0.1,
    socket_connect_timeout: float = 0.1,
    retries: int = 0,
) -> redis.Redis:
    """A client for Feast's ``connection_string`` (``host:port,db=6,password=...``).

    Unlike redis-py's default (3 retries with up-to-seconds jittered backoff), it fails at
    once by default, so a request answers 503 quickly when Redis is down.
    """
    nodes = [part for part in connection_string.split(",") if "=" not in part]
    if len(nodes) != 1 or ":" not in nodes[0]:
        raise ValueError(
            f"expected 'host:port[,param=value...]' with one node, got {connection_string!r}"
        )
    host, port = nodes[0].rsplit(":", 1)
    params: dict[str, Any] = {}
    for part in connection_string.split(","):
        if "=" in part:
            key, raw = part.split("=", 1)
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError:
                params[key] = raw
    params.update(
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        retry=Retry(NoBackoff(), retries),
    )
    return redis.Redis(host=host, port=int(port), **params)


def entity_keys(
    views: Sequence[Any], query_id: str, doc_ids: Sequence[str], *, suffix: bytes = b""
) -> list[list[bytes]]:
    """Feast's serialized entity keys of each view for one request, followed by ``suffix``
    (Redis appends the project name; SQLite stores the key alone). ``views`` have ``spec``,
    ``prefix`` and ``query_before_doc``; a view without documents gets one key."""
    query_segment = string_value_segment(query_id)
    doc_segments = [string_value_segment(d) for d in doc_ids]
    out: list[list[bytes]] = []
    for view in views:
        if not view.spec.per_document:
            out.append([view.prefix + query_segment + suffix])
            continue
        head, tail = view.prefix, suffix
        if QUERY_JOIN_KEY in view.spec.join_keys:
            if view.query_before_doc:
                head += query_segment
            else:
                tail = query_segment + suffix
        out.append([head + seg + tail for seg in doc_segments])
    return out


class RedisFeatureReader:
    """Reads ``views`` for ``(query_id, doc_id)`` candidates in one round trip.

    ``client`` must return bytes (``decode_responses=False``); give it small socket timeouts
    and no retry backoff (see :func:`redis_client_from_connection_string`). ``mode``
    ``"pipeline"`` (default) writes one ``HGET`` per key, packed here, in one write;
    ``"lua"`` sends one ``EVALSHA`` (twice the Redis CPU; neither mode is for Redis Cluster,
    whose keys span slots). ``aread`` through a ``wire`` sends the packed ``HGET``s whatever
    the mode; ``aread`` on ``redis.asyncio`` follows the mode (its pipeline builds each
    command in Python).
    """

    def __init__(
        self,
        client: redis.Redis,
        project: str,
        *,
        key_version: int,
        views: Sequence[FeatureViewSpec],
        mode: ReadMode = "pipeline",
        async_client: redis.asyncio.Redis | None = None,
        wire: RedisWire | None = None,
    ) -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must be created with decode_responses=False")
        if not views:
            raise ValueError("at least one feature view is required")
        names = [v.name for v in views]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature view names: {names}")
        if mode not in ("pipeline", "lua"):
            raise ValueError(f"unknown mode {mode!r}; valid: 'pipeline', 'lua'")
        self._client = client
        self._project = project.encode("utf-8")
        self._mode: ReadMode = mode
        self._views: tuple[_ViewLayout, ...] = tuple(self._layout(v, key_version) for v in views)
        self._script = client.register_script(_READ_SCRIPT) if mode == "lua" else None
        #: The same reads without blocking the event loop (:meth:`aread`), when given; they
        #: go through ``wire`` (one pipelined connection, HGETs packed here) when given.
        self._async_client = async_client
        self._wire = wire
        self._async_script = (
            async_client.register_script(_READ_SCRIPT)
            if async_client is not None and mode == "lua"
            else None
        )
        retry = client.get_retry()
        if retry is not None and retry.get_retries() != 0:
            logger.warning(
                "Redis client retries %s times with backoff: reads fail slowly when Redis "
                "is down; prefer redis_client_from_connection_string(...)",
                retry.get_retries(),
            )

    @staticmethod
    def _layout(spec: FeatureViewSpec, version: int) -> _ViewLayout:
        keys = sorted(spec.join_keys)  # Feast orders several join keys by name
        field = field_hash(spec.name, spec.field)
        return _ViewLayout(
            spec=spec,
            field=field,
            field_arg=b"$%d\r\n%s\r\n" % (len(field), field),
            prefix=entity_key_prefix(keys, version),
            query_before_doc=keys[0] == QUERY_JOIN_KEY,
        )

    @property
    def views(self) -> tuple[FeatureViewSpec, ...]:
        return tuple(v.spec for v in self._views)

    @property
    def mode(self) -> ReadMode:
        return self._mode

    def keys(self, query_id: str, doc_ids: Sequence[str]) -> list[list[bytes]]:
        """The Redis keys read for each view (one per candidate, or one for query views)."""
        return entity_keys(self._views, query_id, doc_ids, suffix=self._project)

    def _hget_commands(self, keys: list[list[bytes]]) -> bytes:
        """``HGET key field`` for every key of every view, packed in RESP for one write."""
        parts = []
        for view, view_keys in zip(self._views, keys, strict=True):
            tail = b"\r\n" + view.field_arg
            parts.append(b"".join([_HGET % (len(key), key, tail) for key in view_keys]))
        return b"".join(parts)

    def _script_args(self, keys: list[list[bytes]]) -> list[bytes | int]:
        args: list[bytes | int] = [len(self._views)]
        for view, view_keys in zip(self._views, keys, strict=True):
            args += [view.field, len(view_keys)]
        return args

    def _fetch(self, keys: list[list[bytes]]) -> list[bytes | None]:
        flat = [k for view_keys in keys for k in view_keys]
        try:
            if self._script is not None:
                reply: list[bytes | None] = self._script(keys=flat, args=self._script_args(keys))
                return reply
            return self._fetch_packed(self._hget_commands(keys), len(flat))
        except (redis.RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(f"Redis online store read failed: {exc}") from exc

    def _fetch_packed(self, payload: bytes, count: int) -> list[bytes | None]:
        """Write ``count`` packed commands on one pooled connection, read their replies.

        A connection left with replies unread (an error reply, a timeout) is closed before
        it goes back to the pool, so the next read cannot take another's replies."""
        pool = self._client.connection_pool
        conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
        try:
            conn.send_packed_command([payload])
            return [conn.read_response() for _ in range(count)]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def read(self, query_id: str, doc_ids: Sequence[str]) -> FeatureReadResult:
        """Vectors of every view for each candidate, in ``doc_ids`` order.

        Raises :class:`~serving.features.FeatureStoreUnavailable` on any Redis error.
        """
        if not doc_ids:
            return self._empty()
        keys = self.keys(query_id, doc_ids)
        return self._decode(keys, self._fetch(keys), len(doc_ids))

    @property
    def reads_async(self) -> bool:
        """True when :meth:`aread` is available (given an ``async_client`` or a ``wire``)."""
        return self._async_client is not None or self._wire is not None

    async def aread(self, query_id: str, doc_ids: Sequence[str]) -> FeatureReadResult:
        """:meth:`read` on the event loop: the same keys, one round trip through the
        ``wire`` or the ``async_client`` (no worker thread), the same values and errors."""
        client = self._async_client
        if client is None and self._wire is None:
            raise RuntimeError("this reader has no async_client")
        if not doc_ids:
            return self._empty()
        keys = self.keys(query_id, doc_ids)
        values: list[bytes | None]
        try:
            if self._wire is not None:
                count = sum(len(view_keys) for view_keys in keys)
                values = await self._wire.pipeline(self._hget_commands(keys), count)
            elif self._async_script is not None:
                flat = [k for view_keys in keys for k in view_keys]
                values = await self._async_script(keys=flat, args=self._script_args(keys))
            else:
                assert client is not None  # no wire in pipeline mode
                async with client.pipeline(transaction=False) as pipe:
                    for view, view_keys in zip(self._views, keys, strict=True):
                        for key in view_keys:
                            pipe.hget(key, view.field)  # type: ignore[arg-type]
                    values = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(f"Redis online store read failed: {exc}") from exc
        return self._decode(keys, values, len(doc_ids))

    def _empty(self) -> FeatureReadResult:
        vectors = {v.spec.name: np.empty((0, v.spec.dim), dtype=np.float32) for v in self._views}
        found = {v.spec.name: np.zeros(0, dtype=np.bool_) for v in self._views}
        return FeatureReadResult(vectors=vectors, found=found, missing=0)

    def _decode(
        self, keys: list[list[bytes]], values: list[bytes | None], n: int
    ) -> FeatureReadResult:
        """Each view's vectors from the values of ``keys`` (flattened, in order)."""
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        found: dict[str, npt.NDArray[np.bool_]] = {}
        missing = 0
        invalid = 0
        offset = 0
        for view, view_keys in zip(self._views, keys, strict=True):
            spec = view.spec
            chunk = values[offset : offset + len(view_keys)]
            offset += len(view_keys)
            decoded = decode_float_lists(chunk, spec.dim)
            view_vectors, view_found = decoded.vectors, decoded.found
            if not spec.per_document:
                view_vectors = np.repeat(view_vectors, n, axis=0)
                view_found = np.repeat(view_found, n)
            vectors[spec.name] = view_vectors
            found[spec.name] = view_found
            missing += n - int(np.count_nonzero(view_found))
            view_invalid = decoded.invalid * (1 if spec.per_document else n)
            if view_invalid:
                logger.warning(
                    "feature view %s: %d stored values are not %d-float lists",
                    spec.name,
                    decoded.invalid,
                    spec.dim,
                )
            invalid += view_invalid
        return FeatureReadResult(vectors=vectors, found=found, missing=missing, invalid=invalid)
