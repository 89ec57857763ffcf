"""A small circuit breaker and error counter shared by the Redis-backed helpers.

The request path must never fail because Redis is slow or down. Each helper (the result
cache, the event log) wraps its Redis calls in a :class:`RedisGuard`: an error is counted by
kind and reported to the caller as a miss or a no-op; after ``failure_threshold``
consecutive errors the guard *opens* and every call is skipped without touching the
network for ``cooldown_seconds``; then one call is let through as a probe (half-open) and a
success closes the guard again. A dead Redis therefore costs one socket timeout per
cool-down, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Exceptions treated as "Redis is unavailable": redis-py wraps socket errors in its own
#: classes, OSError is kept for errors raised below it (DNS, TLS).
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def fail_fast_redis(url: str, *, timeout_seconds: float = 0.05, **kwargs: Any) -> redis.Redis:
    """A client for the request path: short socket timeouts and no retries.

    redis-py's defaults are unusable there: no socket timeout at all, and (since redis-py 6)
    three retries with exponential backoff, so one call to a dead Redis takes about 5 s.
    ``Retry(NoBackoff(), 0)`` replaces the deprecated ``retry_on_timeout=False``.
    ``kwargs`` go to :meth:`redis.Redis.from_url` (e.g. ``decode_responses``). Opening the
    client does not connect; the first command does.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
        **kwargs,
    }
    return redis.Redis.from_url(url, **options)


def fail_fast_async_redis(
    url: str, *, timeout_seconds: float = 0.05, **kwargs: Any
) -> redis.asyncio.Redis:
    """:func:`fail_fast_redis` for the event loop (``redis.asyncio``): the same timeouts and
    no retries. Its connections belong to the event loop that first uses them."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "retry": redis.asyncio.retry.Retry(NoBackoff(), 0),
        **kwargs,
    }
    return redis.asyncio.Redis.from_url(url, **options)


class RedisGuard:
    """Consecutive-failure circuit breaker with per-kind error counters (thread safe).

    Use one guard per component so that its counters describe that component only.
    ``clock`` is injectable so that tests can move time without sleeping.
    """

    def __init__(
        self,
        *,
        name: str = "redis",
        failure_threshold: int = 3,
        cooldown_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0, got {cooldown_seconds}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._open_until: float | None = None
        #: Errors by kind (exception class name, e.g. ``ConnectionError``, ``TimeoutError``).
        self.errors: Counter[str] = Counter()
        #: Calls skipped because the circuit was open.
        self.skipped = 0
        #: Number of times the circuit opened.
        self.opened = 0

    @property
    def is_open(self) -> bool:
        """True while calls are being skipped (the cool-down has not elapsed)."""
        with self._lock:
            return self._open_until is not None and self._clock() < self._open_until

    def allow(self) -> bool:
        """May the caller talk to Redis now? Counts a skip when it may not.

        When the cool-down has elapsed exactly one caller gets ``True`` (the probe); the
        cool-down is re-armed at the same time so concurrent callers keep skipping until
        the probe reports back.
        """
        with self._lock:
            if self._open_until is None:
                return True
            now = self._clock()
            if now >= self._open_until:
                self._open_until = now + self.cooldown_seconds
                return True
            self.skipped += 1
            return False

    def record_success(self) -> None:
        """A call reached Redis and got an answer: close the circuit."""
        with self._lock:
            was_open = self._open_until is not None
            self._consecutive_failures = 0
            self._open_until = None
        if was_open:
            logger.info("%s: Redis answers again, circuit closed", self.name)

    def record_error(self, kind: str) -> None:
        """Count an error of ``kind`` (also used for non-Redis problems such as decoding)."""
        with self._lock:
            self.errors[kind] += 1

    def record_failure(self, exc: BaseException) -> None:
        """A Redis call failed: count it and open the circuit after enough failures in a row."""
        kind = type(exc).__name__
        with self._lock:
            self.errors[kind] += 1
            self._consecutive_failures += 1
            opening = (
                self._consecutive_failures >= self.failure_threshold and self._open_until is None
            )
            if self._consecutive_failures >= self.failure_threshold:
                self._open_until = self._clock() + self.cooldown_seconds
            if opening:
                self.opened += 1
        if opening:
            logger.warning(
                "%s: %d Redis errors in a row (last: %s: %s); skipping Redis for %.1f s",
                self.name,
                self.failure_threshold,
                kind,
                exc,
                self.cooldown_seconds,
            )
        else:
            logger.debug("%s: Redis error %s: %s", self.name, kind, exc)

    def call(self, fn: Callable[[], T], default: T) -> tuple[bool, T]:
        """Run ``fn`` unless the circuit is open; never raises a Redis error.

        Returns ``(True, result)`` when Redis answered, ``(False, default)`` when the call
        was skipped or failed.
        """
        if not self.allow():
            return False, default
        try:
            result = fn()
        except REDIS_ERRORS as exc:
            self.record_failure(exc)
            return False, default
        self.record_success()
        return True, result

    async def acall(self, fn: Callable[[], Awaitable[T]], default: T) -> tuple[bool, T]:
        """:meth:`call` for a coroutine (a ``redis.asyncio`` command)."""
        if not self.allow():
            return False, default
        try:
            result = await fn()
        except REDIS_ERRORS as exc:
            self.record_failure(exc)
            return False, default
        self.record_success()
        return True, result
