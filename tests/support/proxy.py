"""A round-robin TCP proxy (asyncio, in a background thread): what a Kubernetes Service does
to connections, so a client that reads counters through it sees a different replica on
each connection."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
from collections.abc import Sequence

from support.net import LOOPBACK


class RoundRobinProxy:
    """Forwards each accepted connection to the next of ``backends`` ((host, port) pairs).

    ``connections[i]`` counts the connections sent to backend ``i``. ``start()`` /
    ``close()``, or ``with``; ``url`` is its HTTP address.
    """

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self.connections = [0] * len(self.backends)
        self._next = itertools.cycle(range(len(self.backends)))
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = next(self._next)
        self.connections[i] += 1
        host, port = self.backends[i]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self.sock)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(timeout=10)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> RoundRobinProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
