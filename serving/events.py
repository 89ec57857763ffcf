"""Impression and click events in bounded Redis Streams, drained later by a DAG.

Writing (``log_impression``, ``log_clicks``) is on the request path: it never raises, it
returns False and counts the problem when Redis fails, and a circuit breaker
(:mod:`serving.redis_guard`) skips a dead Redis. Streams are capped with ``MAXLEN ~`` so an
undrained stream cannot eat Redis' memory; the oldest events are dropped first.

Reading is for the drain job and tests: ``read_*``, ``ensure_consumer_group``,
``read_group`` and ``ack`` raise :class:`serving.errors.EventLogUnavailable` so that a DAG
task fails and retries. The drain acknowledges only after its write succeeded; entries it
read but did not acknowledge stay pending and come back with ``read_group(...,
pending=True)``.

Entry layout (all values are strings; JSON where noted):

* impressions: ``v`` (schema version ``"1"``), ``ts_ms``, ``request_id``, ``user_id`` (``""``
  for anonymous users), ``variant``, ``model_version``, ``query_id``, ``doc_ids`` (JSON list,
  in the order shown), and when present ``shadow`` and ``interleave`` (JSON objects).
* clicks: ``v``, ``ts_ms``, ``request_id``, ``user_id``, ``clicks`` (JSON list of
  ``[doc_id, position]``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import redis
import redis.asyncio

from serving.errors import EventLogUnavailable
from serving.redis_guard import REDIS_ERRORS, RedisGuard

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
#: Fields whose value is JSON text (everything else is a plain string).
JSON_FIELDS = frozenset({"doc_ids", "shadow", "interleave", "clicks"})


#: KEYS: marker, stream; ARGV: ttl, trim mode (~ or =), maxlen, field, value, ...
_ONCE_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return nil end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], ARGV[3], '*', unpack(fields))
"""


class StreamEntry(NamedTuple):
    """One stream entry: its id (``<ms>-<seq>``) and its fields decoded to ``str``."""

    id: str
    fields: dict[str, str]


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[StreamEntry]:
    """Decode redis-py's ``[(id, {field: value})]`` whatever ``decode_responses`` is."""
    out: list[StreamEntry] = []
    for item in raw or []:
        entry_id, fields = item
        decoded = {_text(k): _text(v) for k, v in (fields or {}).items()}
        out.append(StreamEntry(_text(entry_id), decoded))
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class EventLog:
    """Writes impressions and clicks to Redis Streams; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis | None,
        *,
        impressions_stream: str = "ltr:events:impressions",
        clicks_stream: str = "ltr:events:clicks",
        maxlen: int = 100_000,
        approximate_trim: bool = True,
        guard: RedisGuard | None = None,
        max_docs: int = 100,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        if max_docs < 1:
            raise ValueError(f"max_docs must be >= 1, got {max_docs}")
        #: An impression keeps the first ``max_docs`` shown documents (and says how many
        #: were shown in ``n_shown``): an entry's size is bounded whatever the request.
        self.max_docs = max_docs
        self._client = client
        #: The same Redis for :meth:`alog_impression` on the event loop (optional).
        self._async_client = async_client if client is not None else None
        self.impressions_stream = impressions_stream
        self.clicks_stream = clicks_stream
        self.maxlen = maxlen
        #: ``MAXLEN ~`` (default) trims whole radix-tree nodes and is much cheaper; the stream
        #: then holds up to about ``maxlen`` + one node (``stream-node-max-entries``, 100).
        self.approximate_trim = approximate_trim
        self.guard = guard if guard is not None else RedisGuard(name="event-log")
        #: Events written, by stream.
        self.written: Counter[str] = Counter()
        #: Events not written (Redis error, circuit open or no client), by stream.
        self.dropped: Counter[str] = Counter()

    @property
    def client(self) -> redis.Redis | None:
        """The Redis client the streams are written to (None: events are dropped)."""
        return self._client

    @property
    def enabled(self) -> bool:
        """False when built without a client (events are dropped and counted)."""
        return self._client is not None

    @property
    def writes_async(self) -> bool:
        """True when :meth:`alog_impression` can be awaited (an ``async_client`` is set)."""
        return self._async_client is not None

    @property
    def errors(self) -> Counter[str]:
        """Redis errors by kind (``ConnectionError``, ``TimeoutError``, ``ResponseError`` …)."""
        return self.guard.errors

    # -- writing (request path: never raises) ------------------------------------------

    def log_impression(
        self,
        request_id: str,
        user_id: str | None,
        variant: str,
        model_version: str,
        query_id: str,
        doc_ids: list[str],
        *,
        shadow: dict[str, Any] | None = None,
        interleave: dict[str, Any] | None = None,
    ) -> bool:
        """Append one impression (the list as shown to the user); False if it was not written."""
        fields = self._impression(
            request_id,
            user_id,
            variant,
            model_version,
            query_id,
            doc_ids,
            shadow=shadow,
            interleave=interleave,
        )
        return self._add(self.impressions_stream, fields)

    async def alog_impression(
        self,
        request_id: str,
        user_id: str | None,
        variant: str,
        model_version: str,
        query_id: str,
        doc_ids: list[str],
    ) -> bool:
        """:meth:`log_impression` on the event loop (same entry, same guard and counters)."""
        client = self._async_client
        stream = self.impressions_stream
        if client is None:
            if self._client is None:
                self.dropped[stream] += 1
                return False
            raise RuntimeError("this event log has no async_client: call log_impression()")
        fields = self._impression(request_id, user_id, variant, model_version, query_id, doc_ids)
        ok, _ = await self.guard.acall(lambda: client.xadd(stream, **self._trimmed(fields)), None)
        self._count(stream, ok)
        return ok

    def _impression(
        self,
        request_id: str,
        user_id: str | None,
        variant: str,
        model_version: str,
        query_id: str,
        doc_ids: list[str],
        *,
        shadow: dict[str, Any] | None = None,
        interleave: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        fields: dict[str, str] = {
            "v": SCHEMA_VERSION,
            "ts_ms": str(time.time_ns() // 1_000_000),
            "request_id": request_id,
            "user_id": user_id or "",
            "variant": variant,
            "model_version": model_version,
            "query_id": query_id,
            "doc_ids": _json(doc_ids[: self.max_docs]),
        }
        if len(doc_ids) > self.max_docs:
            fields["n_shown"] = str(len(doc_ids))
        if shadow is not None:
            if isinstance(shadow.get("doc_ids"), list):
                shadow = {**shadow, "doc_ids": shadow["doc_ids"][: self.max_docs]}
            fields["shadow"] = _json(shadow)
        if interleave is not None:
            teams = interleave.get("teams")
            if isinstance(teams, dict):
                kept = set(doc_ids[: self.max_docs])
                teams = {d: t for d, t in teams.items() if d in kept}
                interleave = {**interleave, "teams": teams}
            fields["interleave"] = _json(interleave)
        return fields

    def log_clicks(
        self, request_id: str, user_id: str | None, clicks: Sequence[tuple[str, int]]
    ) -> bool:
        """Append the clicks of one feedback call as one entry; False if it was not written."""
        fields = {
            "v": SCHEMA_VERSION,
            "ts_ms": str(time.time_ns() // 1_000_000),
            "request_id": request_id,
            "user_id": user_id or "",
            "clicks": _json([[doc_id, int(position)] for doc_id, position in clicks]),
        }
        return self._add(self.clicks_stream, fields)

    def log_feedback_once(
        self,
        request_id: str,
        user_id: str | None,
        clicks: Sequence[tuple[str, int]],
        *,
        ttl_seconds: int,
    ) -> bool | None:
        """Append the clicks of the first feedback call for ``request_id``; a later call for
        the same id appends nothing. True: written; None: an earlier call was; False: not
        written (Redis error, circuit open or no client). One atomic Lua call: the marker
        ``<clicks stream>:seen:<request_id>`` (expiring after ``ttl_seconds``) and the entry."""
        client = self._client
        stream = self.clicks_stream
        if client is None:
            self.dropped[stream] += 1
            return False
        fields = {
            "v": SCHEMA_VERSION,
            "ts_ms": str(time.time_ns() // 1_000_000),
            "request_id": request_id,
            "user_id": user_id or "",
            "clicks": _json([[doc_id, int(position)] for doc_id, position in clicks]),
        }
        flat = [x for kv in fields.items() for x in kv]
        marker = f"{stream}:seen:{request_id}"
        trim = "~" if self.approximate_trim else "="
        ok, result = self.guard.call(
            lambda: client.eval(
                _ONCE_LUA, 2, marker, stream, str(ttl_seconds), trim, str(self.maxlen), *flat
            ),
            None,
        )
        if not ok:
            self.dropped[stream] += 1
            return False
        if result is None:
            return None
        self.written[stream] += 1
        return True

    def _add(self, stream: str, fields: Mapping[str, str]) -> bool:
        client = self._client
        if client is None:
            self.dropped[stream] += 1
            return False
        ok, _ = self.guard.call(lambda: client.xadd(stream, **self._trimmed(fields)), None)
        self._count(stream, ok)
        return ok

    def _trimmed(self, fields: Mapping[str, str]) -> dict[str, Any]:
        """``XADD`` arguments: the entry, and the stream's length cap (``MAXLEN ~``)."""
        return {"fields": dict(fields), "maxlen": self.maxlen, "approximate": self.approximate_trim}

    def _count(self, stream: str, ok: bool) -> None:
        if ok:
            self.written[stream] += 1
        else:
            self.dropped[stream] += 1

    # -- reading (drain job and tests: raises EventLogUnavailable) -----------------------

    def _require_client(self) -> redis.Redis:
        if self._client is None:
            raise EventLogUnavailable("event log has no Redis client configured")
        return self._client

    def read_impressions(self, count: int = 100) -> list[StreamEntry]:
        """The oldest ``count`` impressions still in the stream (no consumer group)."""
        return self._range(self.impressions_stream, count)

    def read_clicks(self, count: int = 100) -> list[StreamEntry]:
        """The oldest ``count`` click entries still in the stream (no consumer group)."""
        return self._range(self.clicks_stream, count)

    def _range(self, stream: str, count: int) -> list[StreamEntry]:
        client = self._require_client()
        try:
            return _entries(client.xrange(stream, "-", "+", count=count))
        except REDIS_ERRORS as exc:
            raise EventLogUnavailable(f"XRANGE {stream} failed: {exc}") from exc

    def ensure_consumer_group(self, stream: str, group: str) -> bool:
        """Create ``group`` on ``stream`` (and the stream) if missing; True if created.

        A new group starts at id ``0``: it sees every entry still in the stream, including
        those written before the group existed.
        """
        client = self._require_client()
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise EventLogUnavailable(f"XGROUP CREATE {stream} {group} failed: {exc}") from exc
        except REDIS_ERRORS as exc:
            raise EventLogUnavailable(f"XGROUP CREATE {stream} {group} failed: {exc}") from exc
        return True

    def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        count: int,
        block_ms: int | None = None,
        *,
        pending: bool = False,
    ) -> list[StreamEntry]:
        """Read up to ``count`` entries for ``consumer`` of ``group``.

        By default new entries (``>``); with ``pending=True`` the entries this consumer
        already received but has not acknowledged (re-read them after a crash). ``block_ms``
        waits that long for new entries; None or <= 0 does not block (Redis' own "0 = wait
        forever" is deliberately not reachable). The client's ``socket_timeout`` must exceed
        ``block_ms``: the drain job needs its own client, not the request path's.
        """
        client = self._require_client()
        block = block_ms if block_ms is not None and block_ms > 0 else None
        start = "0" if pending else ">"
        try:
            raw: Any = client.xreadgroup(group, consumer, {stream: start}, count=count, block=block)
        except REDIS_ERRORS as exc:
            raise EventLogUnavailable(f"XREADGROUP {stream} {group} failed: {exc}") from exc
        out: list[StreamEntry] = []
        if isinstance(raw, dict):  # RESP3: {stream: [[(id, fields), ...]]}
            for wrapped in raw.values():
                for entries in wrapped or []:
                    out.extend(_entries(entries))
        else:  # RESP2: [[stream, [(id, fields), ...]]]
            for _name, entries in raw or []:
                out.extend(_entries(entries))
        return out

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge ``ids`` once written downstream; returns how many were pending."""
        if not ids:
            return 0
        client = self._require_client()
        try:
            acked: Any = client.xack(stream, group, *ids)
            return int(acked)
        except REDIS_ERRORS as exc:
            raise EventLogUnavailable(f"XACK {stream} {group} failed: {exc}") from exc

    def stats(self) -> dict[str, Any]:
        """Counters for ``/api/v1/models`` or a Prometheus collector."""
        return {
            "written": dict(self.written),
            "dropped": dict(self.dropped),
            "errors": dict(self.errors),
            "skipped": self.guard.skipped,
            "circuit_open": self.guard.is_open,
        }
