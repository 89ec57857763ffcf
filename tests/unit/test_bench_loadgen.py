"""bench/loadgen.py and the request builders of bench/adversarial.py and bench/serving.py:
smoke checks against a tiny loopback server (no timing assertions)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench`` is not an installed package: import it from the repository root."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def _answer(status: int, body: bytes, chunked: bool) -> bytes:
    if chunked:
        half = len(body) // 2
        chunks = b"".join(
            f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]) if p
        )
        return (
            f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunks
            + b"0\r\n\r\n"
        )
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@asynccontextmanager
async def tiny_server(reply: Callable[[bytes], bytes]) -> AsyncIterator[int]:
    """A keep-alive HTTP/1.1 server that answers each request with ``reply(body)``."""
    finished: list[asyncio.Event] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.Event()
        finished.append(done)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line[15:])
                body = await reader.readexactly(length)
                writer.write(reply(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port
        # the clients have closed: let each handler see the end of its stream
        await asyncio.wait_for(asyncio.gather(*(d.wait() for d in finished)), 5)


def test_connection_reads_content_length_and_chunked_answers(bench_on_path: None) -> None:
    from bench.loadgen import Connection, http_post

    def reply(body: bytes) -> bytes:
        return _answer(200, body[::-1], chunked=body.startswith(b"c"))

    async def run() -> list[tuple[int, bytes]]:
        async with tiny_server(reply) as port:
            conn = Connection("127.0.0.1", port)
            out = [
                await conn.request(http_post("/x", b"plain body")),
                await conn.request(http_post("/x", b"chunked body")),
                await conn.request(http_post("/x", b"plain again")),
            ]
            conn.close()
            return out

    assert asyncio.run(run()) == [
        (200, b"ydob nialp"),
        (200, b"ydob deknuhc"),
        (200, b"niaga nialp"),
    ]


def test_closed_loop_counts_statuses_and_keeps_one_body_per_failure(bench_on_path: None) -> None:
    from bench.loadgen import closed_loop, http_post

    def reply(body: bytes) -> bytes:
        return _answer(503, b"busy", False) if body == b"bad" else _answer(200, b"ok", False)

    async def run():
        async with tiny_server(reply) as port:
            requests = [http_post("/x", b"good"), http_post("/x", b"bad")]
            return await closed_loop("127.0.0.1", port, requests, 1, 0.2)

    res = asyncio.run(run())
    assert res.statuses[200] == res.count > 0
    assert res.statuses[503] == res.errors > 0
    assert res.samples == {503: b"busy"}
    assert not math.isnan(res.pct_ms(50))


def test_error_heavy_bodies_are_json_with_only_invalid_feature_values(bench_on_path: None) -> None:
    from bench.adversarial import ERROR_BODY_CANDIDATES, error_heavy_requests

    attacks = error_heavy_requests()
    assert len(attacks) == 4
    for label, raw in attacks:
        body = json.loads(raw.split(b"\r\n\r\n", 1)[1])  # NaN and 1e999 parse as floats
        values = [v for c in body["candidates"] for v in c["features"].values()]
        assert all(isinstance(v, str) or not math.isfinite(v) for v in values), label
        n = len(body["candidates"])
        assert n == ERROR_BODY_CANDIDATES or (n == 1000 and len(raw) < 4 * 2**20), label


def test_common_rate_is_half_the_assembled_saturation_capped_at_200(bench_on_path: None) -> None:
    from bench.serving import common_rate

    assert common_rate(60.0) == 30.0
    assert common_rate(1000.0) == 200.0
    assert common_rate(0.5) == 1.0
