"""One pipelined Redis connection for the event loop, for the online feature read.

The feature read sits on every request's critical path: one ``HGET`` per candidate and view
(200 for 100 candidates of two views). ``redis.asyncio`` pipelines them correctly but builds
each command in Python, behind a connection pool, a retry wrapper and an ``asyncio.timeout``.
This connection writes a request's commands, packed in RESP by the caller, in one write
(:meth:`RedisWire.pipeline`), and hands the replies over together once hiredis has parsed
them all. Several requests' commands are in flight at once (Redis answers in order).

Pipelined ``HGET`` costs Redis about half the CPU of the same reads in one Lua script
(``EVALSHA``, the reader's other mode), and lets Redis serve other clients between them
instead of running 200 reads as one step.

Failures raise redis-py's own exceptions, so callers treat both clients alike: a refused or
lost connection is ``redis.ConnectionError``, no answer within ``timeout_s`` is
``redis.TimeoutError`` (the connection is then dropped with every command in flight, and the
next command connects again), an error reply is ``redis.ResponseError``. Only plain
``redis://host:port/db`` URLs are handled (:meth:`RedisWire.from_url` returns None for TLS
or Unix sockets; the caller keeps ``redis.asyncio`` for those).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
import redis

__all__ = ["RedisWire"]


class _Batch:
    """The replies of ``count`` pipelined commands, handed over together once all are in."""

    __slots__ = ("count", "error", "future", "replies")

    def __init__(self, future: asyncio.Future[Any], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Any] = []
        self.error: hiredis.ReplyError | None = None

    def done(self) -> bool:
        return self.future.done()

    def set_exception(self, exc: BaseException) -> None:
        self.future.set_exception(exc)

    def add(self, reply: Any) -> bool:
        """Take the next reply; True once the last one is in (the future is then set)."""
        if isinstance(reply, hiredis.ReplyError):
            self.error = self.error or reply
        self.replies.append(reply)
        if len(self.replies) < self.count:
            return False
        if not self.future.done():
            if self.error is not None:
                self.future.set_exception(redis.ResponseError(str(self.error)))
            else:
                self.future.set_result(self.replies)
        return True


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any] | _Batch] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(redis.ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(redis.ConnectionError("Redis sent an unexpected reply"))
                return
            future = self.waiting[0]
            if isinstance(future, _Batch):
                if future.add(reply):
                    self.waiting.popleft()
                continue
            self.waiting.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(redis.ResponseError(str(reply)))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.ConnectionError(f"Redis connection lost: {exc or 'closed by the server'}"))

    def fail(self, exc: BaseException) -> None:
        """Close the connection and fail every command in flight with ``exc``."""
        if self.lost is None:
            self.lost = exc
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class RedisWire:
    """See the module docstring. Use from one event loop; :meth:`aclose` when done."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 0.05,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()  # binds to the loop that first awaits it
        #: Connections made (the first one included).
        self.connects = 0

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.05) -> RedisWire | None:
        """A connection for ``redis://[[user]:password@]host[:port][/db]``; None for any
        other scheme (``rediss://``, ``unix://``) or query options."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or parts.query or not parts.hostname:
            return None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            return None
        return cls(
            parts.hostname,
            parts.port or 6379,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout_s=timeout_s,
        )

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and protocol.lost is None:
                return protocol
            loop = asyncio.get_running_loop()
            try:
                _, fresh = await asyncio.wait_for(
                    loop.create_connection(_Protocol, self.host, self.port), self.timeout_s
                )
            except TimeoutError:
                raise redis.TimeoutError(
                    f"connecting to Redis at {self.host}:{self.port} timed out"
                ) from None
            except OSError as exc:
                raise redis.ConnectionError(
                    f"Error connecting to Redis at {self.host}:{self.port}: {exc}"
                ) from None
            self.connects += 1
            setup: list[asyncio.Future[Any]] = []
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                setup.append(self._send(fresh, b"AUTH", *auth))
            if self.db:
                setup.append(self._send(fresh, b"SELECT", self.db))
            try:
                for future in setup:
                    await self._wait(fresh, future)
            except redis.RedisError:
                fresh.fail(redis.ConnectionError("Redis refused AUTH or SELECT"))
                raise
            self._protocol = fresh
            return fresh

    @staticmethod
    def _write(protocol: _Protocol, payload: bytes, count: int | None) -> asyncio.Future[Any]:
        """Write ``payload``; a future of its one reply (``count`` None) or of its ``count``
        replies in a list."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport = protocol.transport
        if protocol.lost is not None or transport is None or transport.is_closing():
            future.set_exception(protocol.lost or redis.ConnectionError("not connected"))
            return future
        protocol.waiting.append(future if count is None else _Batch(future, count))
        transport.write(payload)
        return future

    def _send(self, protocol: _Protocol, *args: Any) -> asyncio.Future[Any]:
        return self._write(protocol, hiredis.pack_command(args), None)

    async def _wait(self, protocol: _Protocol, future: asyncio.Future[Any]) -> Any:
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if not future.done():
                # Redis is slow or gone: drop the connection and everything in flight on it
                protocol.fail(redis.TimeoutError(f"no answer from Redis in {self.timeout_s} s"))

        timer = loop.call_later(self.timeout_s, expire)
        try:
            return await future
        finally:
            timer.cancel()

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply (bytes, int, list, None)."""
        protocol = await self._connected()
        return await self._wait(protocol, self._send(protocol, *args))

    async def pipeline(self, payload: bytes, count: int) -> list[Any]:
        """Send ``count`` commands already packed in RESP (``payload``) in one write; their
        replies in order, once all are in. An error reply among them raises
        ``redis.ResponseError`` (after the others are read, so the stream stays in step)."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        protocol = await self._connected()
        replies: list[Any] = await self._wait(protocol, self._write(protocol, payload, count))
        return replies

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close()
