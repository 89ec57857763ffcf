"""Result cache for ``/rank``: the ranked list of one request, keyed by everything it depends on.

The cache is an optimisation, never a dependency: every Redis problem is counted and turned
into a miss (``get``) or a no-op (``set``), and a circuit breaker (:mod:`serving.redis_guard`)
stops calling a dead Redis so that an outage costs nothing per request.

The app must build the client with small timeouts and no retries: redis-py's defaults (no
socket timeout, three retries with backoff, about 5 s per call to a dead Redis) would stall
requests until the breaker opens. Use :func:`serving.redis_guard.fail_fast_redis`::

    client = fail_fast_redis(url, timeout_seconds=0.05)
    # = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.05,
    #                        retry=Retry(NoBackoff(), 0))

What the key covers: the model version, the query id, the candidate doc ids *in request
order* and the request-supplied features. Features read from the online store are *not*
covered; ``ttl_seconds`` bounds how stale a cached ranking can get after a
materialization. If a model uses per-user online features, fold the user id into the
``query_id`` argument.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import redis.asyncio

from serving.redis_guard import RedisGuard

logger = logging.getLogger(__name__)

#: One candidate as the cache sees it: doc id and the features sent in the request (or None).
Candidate = tuple[str, Mapping[str, float] | None]


def _float_repr(value: float) -> str:
    # repr() is the shortest string that round-trips, so 1, 1.0 and 1.00 share a key.
    return repr(float(value))


class RankCache:
    """Redis-backed cache of ranked lists with a TTL; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis | None,
        *,
        ttl_seconds: int,
        prefix: str = "ltr:cache:",
        guard: RedisGuard | None = None,
        max_docs: int = 200,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be >= 1, got {ttl_seconds}")
        if max_docs < 1:
            raise ValueError(f"max_docs must be >= 1, got {max_docs}")
        #: Rankings of more documents are not cached: an entry's size stays bounded.
        self.max_docs = max_docs
        #: ``set`` calls skipped because the ranking was longer than ``max_docs``.
        self.too_large = 0
        #: Cached rankings that did not hold exactly the request's candidates (refused).
        self.mismatches = 0
        self._client = client
        #: The same Redis for :meth:`aget` on the event loop (optional).
        self._async_client = async_client if client is not None else None
        self.ttl_seconds = ttl_seconds
        self.prefix = prefix
        self.guard = guard if guard is not None else RedisGuard(name="rank-cache")
        self.hits = 0
        #: Every ``get`` that returned None: absent key, Redis error, circuit open, disabled.
        self.misses = 0
        self.sets = 0

    @property
    def enabled(self) -> bool:
        """False when built without a client (no Redis configured)."""
        return self._client is not None

    @property
    def errors(self) -> Counter[str]:
        """Errors by kind (``ConnectionError``, ``TimeoutError``, ``DecodeError`` ...)."""
        return self.guard.errors

    def key(self, model_version: str, query_id: str, candidates: Sequence[Candidate]) -> str:
        """The Redis key of one request: ``<prefix><model_version>:<sha256 hex>``.

        The digest covers a canonical JSON encoding of the model version, the query id, the
        doc ids in the given order and each candidate's features sorted by name with floats
        written by ``repr``: so the order of a feature dict does not matter, but the order of
        the candidates does. Candidate order is kept on purpose: the response depends on it
        (tied scores keep input order, listwise models see the whole list), and sorting would
        cost O(n log n) on every request for a rare benefit. The readable version prefix lets
        an operator drop one version's entries with ``SCAN MATCH``.
        """
        encoded = [
            [
                doc_id,
                None
                if features is None
                else [[name, _float_repr(features[name])] for name in sorted(features)],
            ]
            for doc_id, features in candidates
        ]
        payload = json.dumps(
            ["v1", model_version, query_id, encoded],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        # surrogatepass: a lone surrogate in an id or feature name still hashes (the request
        # is refused by validation anyway; the cache must never be the one to fail)
        digest = hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}{model_version}:{digest}"

    def get(self, key: str, doc_ids: Sequence[str] | None = None) -> list[dict[str, Any]] | None:
        """The cached ranked list, or None on a miss (including any Redis error).

        With ``doc_ids`` (the request's candidates) a cached list is used only if it ranks
        exactly those documents, each once, with a finite score and ranks 1..n; anything
        else (a foreign write, a collision, a corrupt entry) is counted and is a miss.
        """
        client = self._client
        if client is None:
            self.misses += 1
            return None
        ok, raw = self.guard.call(lambda: client.get(key), None)
        return self._hit(raw if ok else None, doc_ids)

    @property
    def reads_async(self) -> bool:
        """True when :meth:`aget` can be awaited (the cache has an ``async_client``)."""
        return self._async_client is not None

    async def aget(
        self, key: str, doc_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]] | None:
        """:meth:`get` on the event loop (same checks, same counters, same guard)."""
        client = self._async_client
        if client is None:
            if self._client is None:  # disabled: a miss, as from get()
                self.misses += 1
                return None
            raise RuntimeError("this cache has no async_client: call get() in a worker thread")
        ok, raw = await self.guard.acall(lambda: client.get(key), None)
        return self._hit(raw if ok else None, doc_ids)

    def _hit(self, raw: object, doc_ids: Sequence[str] | None) -> list[dict[str, Any]] | None:
        if raw is None:
            self.misses += 1
            return None
        value = self._decode(raw)
        if value is not None and doc_ids is not None and not _ranks_exactly(value, doc_ids):
            self.mismatches += 1
            self.guard.record_error("Mismatch")
            value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def set(self, key: str, ranked: list[dict[str, Any]]) -> None:
        """Store ``ranked`` under ``key`` with the TTL; a Redis error is counted, not raised."""
        client = self._client
        if client is None:
            return
        payload = self._payload(key, ranked)
        if payload is None:
            return
        ok, _ = self.guard.call(lambda: client.set(key, payload, ex=self.ttl_seconds), None)
        if ok:
            self.sets += 1

    async def aset(self, key: str, ranked: list[dict[str, Any]]) -> None:
        """:meth:`set` on the event loop (same checks, counters and guard)."""
        client = self._async_client
        if client is None:
            if self._client is None:
                return
            raise RuntimeError("this cache has no async_client: call set() in a worker thread")
        payload = self._payload(key, ranked)
        if payload is None:
            return
        ok, _ = await self.guard.acall(lambda: client.set(key, payload, ex=self.ttl_seconds), None)
        if ok:
            self.sets += 1

    def _payload(self, key: str, ranked: list[dict[str, Any]]) -> str | None:
        """The JSON to store, or None (counted) when the ranking is not to be cached."""
        if len(ranked) > self.max_docs:
            self.too_large += 1
            return None
        try:
            return json.dumps(ranked, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            # A non-JSON or non-finite value: a bug upstream, but still not worth a 500.
            self.guard.record_error("EncodeError")
            logger.warning("rank cache: not caching %s: %s", key, exc)
            return None

    def _decode(self, raw: object) -> list[dict[str, Any]] | None:
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            value = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            value = None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.guard.record_error("DecodeError")
            return None
        return value

    def stats(self) -> dict[str, Any]:
        """Counters for ``/api/v1/models`` or a Prometheus collector."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "sets": self.sets,
            "too_large": self.too_large,
            "mismatches": self.mismatches,
            "errors": dict(self.errors),
            "skipped": self.guard.skipped,
            "circuit_open": self.guard.is_open,
        }


def _ranks_exactly(ranked: list[dict[str, Any]], doc_ids: Sequence[str]) -> bool:
    if len(ranked) != len(doc_ids):
        return False
    seen = set()
    for i, item in enumerate(ranked, start=1):
        doc, score = item.get("doc_id"), item.get("score")
        if not isinstance(doc, str) or doc in seen or item.get("rank") != i:
            return False
        if (
            not isinstance(score, int | float)
            or isinstance(score, bool)
            or not math.isfinite(score)
        ):
            return False
        seen.add(doc)
    return seen == set(doc_ids)


__all__ = ["Candidate", "RankCache"]
