"""One pipelined Redis connection for the event loop, for the online feature read.

The feature read is one ``EVALSHA`` per request and sits on every request's critical path.
``redis.asyncio`` does it correctly but with a connection pool, a retry wrapper and an
``asyncio.timeout`` per command: about 0.1 ms more than the blocking client on this
machine's 0.35 ms read (BENCHMARKS.md). This connection sends each command as soon as it is
called, many in flight at once (Redis answers in order), and hands each reply to its caller
as hiredis parses it.

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


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
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
            future = self.waiting.popleft()
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
    def _send(protocol: _Protocol, *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        transport = protocol.transport
        if protocol.lost is not None or transport is None or transport.is_closing():
            future.set_exception(protocol.lost or redis.ConnectionError("not connected"))
            return future
        protocol.waiting.append(future)
        transport.write(hiredis.pack_command(args))
        return future

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

    async def evalsha(self, sha: str, script: str, keys: list[bytes], args: list[Any]) -> Any:
        """``EVALSHA``; ``EVAL`` of ``script`` (which caches it again) when Redis does not
        know the digest (after a restart or ``SCRIPT FLUSH``)."""
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call(b"EVAL", script, len(keys), *keys, *args)

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            with contextlib.suppress(Exception):
                protocol.transport.close()
