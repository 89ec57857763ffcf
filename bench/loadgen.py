"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive, no client library),
so that the client costs little CPU next to the server on the same two cores.

Open loop (fixed rate): requests are issued at fixed intervals, whether or not earlier ones
were answered, and latency is measured from the moment each is issued, so waiting for a free
connection behind slow responses counts (no coordinated omission). The generator's own timer
lateness (its event loop wakes up to a millisecond after the scheduled time) is not the
server's: it is recorded apart (``LoadResult.lateness_s``) instead of being added to every
latency. Closed loop (saturation): N connections send back to back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    samples: dict[int, bytes] = field(default_factory=dict)  # status -> a body (non-200)
    wall_s: float = 0.0
    #: GET /health latencies (ms) probed during this run, when a probe ran.
    health_ms: list[float] = field(default_factory=list)
    #: GET /health at the fixed rate (the HTTP round trip of a trivial route), when measured.
    http_floor: LoadResult | None = None
    #: Open loop: how late the generator issued each request after its scheduled time (s).
    lateness_s: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0

    def pct_ms(self, q: float) -> float:
        return (
            float(np.percentile(np.asarray(self.latencies_s), q) * 1000)
            if self.latencies_s
            else float("nan")
        )


class Connection:
    def __init__(self, host: str, port: int, source: str | None = None) -> None:
        self.host, self.port = host, port
        #: Local address to connect from (another loopback address is another client).
        self.source = source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        local = (self.source, 0) if self.source else None
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=local
        )

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            await self.open()
        if self.writer is None or self.reader is None:
            raise OSError("connection failed")
        self.writer.write(raw)
        return await self.response()

    async def response(self) -> tuple[int, bytes]:
        """Read one response (Content-Length or chunked body)."""
        if self.reader is None:
            raise OSError("not connected")
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n"):
            lower = line.lower()
            if lower.startswith(b"content-length:"):
                length = int(line[15:])
            elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length) if length else b""
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        await self.reader.readuntil(b"\r\n")  # the empty trailer
        return status, b"".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def http_post(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _send(conn: Connection, raw: bytes, started: float, res: LoadResult) -> None:
    """One request; latency from ``started`` (the time it was issued, in the open loop)."""
    try:
        status, body = await conn.request(raw)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        res.errors += 1
        conn.close()
        conn.writer = None  # reconnect on the next request
        return
    res.statuses[status] = res.statuses.get(status, 0) + 1
    if status == 200:
        res.latencies_s.append(time.perf_counter() - started)
    else:
        res.errors += 1
        res.samples.setdefault(status, body[:200])


async def _worker(
    conn: Connection, queue: asyncio.Queue[tuple[float, bytes] | None], res: LoadResult
) -> None:
    while True:
        item = await queue.get()
        if item is None:
            return
        issued, raw = item
        await _send(conn, raw, issued, res)


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    rate: float,
    duration_s: float,
    connections: int = 16,
) -> LoadResult:
    res = LoadResult()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    conns = [Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    workers = [asyncio.create_task(_worker(c, queue, res)) for c in conns]
    n = int(rate * duration_s)
    t0 = time.perf_counter()
    for i in range(n):
        at = t0 + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        issued = time.perf_counter()
        res.lateness_s.append(issued - at)
        queue.put_nowait((issued, requests[i % len(requests)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    res.wall_s = time.perf_counter() - t0
    for c in conns:
        c.close()
    return res


async def closed_loop(
    host: str, port: int, requests: list[bytes], concurrency: int, duration_s: float
) -> LoadResult:
    res = LoadResult()
    stop = time.perf_counter() + duration_s

    async def run(k: int) -> None:
        conn = Connection(host, port)
        await conn.open()
        i = k
        while time.perf_counter() < stop:
            await _send(conn, requests[i % len(requests)], time.perf_counter(), res)
            i += concurrency
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(k) for k in range(concurrency)))
    res.wall_s = time.perf_counter() - t0
    return res


class HealthProbe(threading.Thread):
    """``GET /health`` every ``period`` seconds on a connection of its own; the latency of
    each answer (ms; a failure or timeout counts as 5,000 ms), tagged with the phase."""

    def __init__(self, port: int, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/health"
        self.period = period
        self.phase = "setup"
        self.samples: list[tuple[str, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        import urllib.request

        while not self._halt.wait(self.period):
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    resp.read()
                ms = (time.perf_counter() - t) * 1000
            except Exception:
                ms = 5000.0
            self.samples.append((self.phase, ms))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def pct(self, phase: str, q: float) -> float:
        values = [v for p, v in self.samples if p == phase]
        return float(np.percentile(values, q)) if values else float("nan")
