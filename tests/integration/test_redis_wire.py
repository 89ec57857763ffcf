"""``RedisWire``: the pipelined event-loop connection of the feature read, against a real
redis-server of the test's own (AUTH, SELECT, pipelining, packed pipelines, error replies, a server
that stops, restarts or never answers)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
import redis
import uvloop
from support.redis import PrivateRedis, running_private_redis

from serving.features.redis_wire import RedisWire

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with running_private_redis(tmp_path, start_timeout=10.0) as private:
        yield private


@pytest.fixture(params=["asyncio", "uvloop"], autouse=True)
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Each test on the standard event loop and on uvloop (the service's, under uvicorn):
    their transports differ."""
    return str(request.param)


LOOP: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _remember_loop(loop_kind: str) -> Iterator[None]:
    LOOP["kind"] = loop_kind
    yield
    LOOP.clear()


def run(coro):
    if LOOP.get("kind") == "uvloop":
        return uvloop.run(coro)
    return asyncio.run(coro)


def test_urls_it_handles_and_those_it_leaves_to_redis_asyncio():
    wire = RedisWire.from_url("redis://:s%40cret@10.0.0.7:6380/6", timeout_s=0.2)
    assert wire is not None
    assert (wire.host, wire.port, wire.db, wire.password, wire.username) == (
        "10.0.0.7",
        6380,
        6,
        "s@cret",
        None,
    )
    assert RedisWire.from_url("redis://u:p@h").username == "u"  # type: ignore[union-attr]
    for other in ("rediss://h:6379/0", "unix:///tmp/r.sock", "redis://h/0?ssl=true", "redis://h/x"):
        assert RedisWire.from_url(other) is None, other
    with pytest.raises(ValueError):
        RedisWire("h", 1, timeout_s=0)


def test_commands_in_flight_together_each_get_their_own_reply(server):
    sync = redis.Redis.from_url(server.url.replace("/0", "/3"))
    sync.mset({f"k{i}": f"v{i}" for i in range(300)})

    async def go():
        wire = RedisWire.from_url(server.url.replace("/0", "/3"), timeout_s=2.0)
        assert wire is not None
        try:
            replies = await asyncio.gather(*(wire.call(b"GET", f"k{i}") for i in range(300)))
            return replies, wire.connects
        finally:
            await wire.aclose()

    replies, connects = run(go())
    assert replies == [f"v{i}".encode() for i in range(300)]  # SELECT 3 was honoured
    assert connects == 1  # one connection, pipelined


def test_auth_and_a_wrong_password(server):
    redis.Redis.from_url(server.url).config_set("requirepass", "pw")

    async def go(password: str):
        wire = RedisWire("127.0.0.1", server.port, password=password, timeout_s=2.0)
        try:
            return await wire.call(b"PING")
        finally:
            await wire.aclose()

    assert run(go("pw")) == b"PONG"
    with pytest.raises(redis.ResponseError):
        run(go("wrong"))


def test_error_replies_raise_and_the_connection_stays_usable(server):
    async def go():
        wire = RedisWire.from_url(server.url, timeout_s=2.0)
        assert wire is not None
        try:
            with pytest.raises(redis.ResponseError, match="unknown command"):
                await wire.call(b"NOSUCHCOMMAND")
            return await wire.call(b"PING"), wire.connects
        finally:
            await wire.aclose()

    assert run(go()) == (b"PONG", 1)


def packed(*commands: tuple[object, ...]) -> bytes:
    return b"".join(hiredis.pack_command(c) for c in commands)


def test_a_packed_pipeline_gets_its_replies_in_order_among_other_commands(server):
    """Batches of thousands of replies (several socket reads each) and single commands in
    flight together on the one connection: each caller gets exactly its own replies."""
    sync = redis.Redis.from_url(server.url)
    big = "x" * 4000  # 2,000 of these span many reads
    sync.mset({f"k{i}": f"{big}{i}" for i in range(2000)})

    async def go():
        wire = RedisWire.from_url(server.url, timeout_s=5.0)
        assert wire is not None
        try:
            batches = [
                wire.pipeline(packed(*((b"GET", f"k{i}") for i in range(lo, lo + 1000))), 1000)
                for lo in (0, 500, 1000)
            ]
            singles = [wire.call(b"GET", f"k{i}") for i in (7, 1999)]
            missing = wire.pipeline(packed((b"GET", b"nope"), (b"EXISTS", b"k1")), 2)
            out = await asyncio.gather(*batches, *singles, missing)
            return out, wire.connects
        finally:
            await wire.aclose()

    (a, b, c, s7, s1999, missing), connects = run(go())
    value = [f"{big}{i}".encode() for i in range(2000)]
    assert (a, b, c) == (value[:1000], value[500:1500], value[1000:2000])
    assert (s7, s1999) == (value[7], value[1999])
    assert missing == [None, 1]
    assert connects == 1


def test_an_error_reply_inside_a_pipeline_raises_after_the_rest_is_read(server):
    sync = redis.Redis.from_url(server.url)
    sync.set("plain", "v")
    sync.hset("h", "f", "1")

    async def go():
        wire = RedisWire.from_url(server.url, timeout_s=2.0)
        assert wire is not None
        try:
            # the middle HGET hits a string: WRONGTYPE; the two after it still answer
            cmds = packed((b"HGET", b"h", b"f"), (b"HGET", b"plain", b"f"), (b"GET", b"plain"))
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await wire.pipeline(cmds, 3)
            # the stream is in step: the next commands get their own replies
            after = await asyncio.gather(wire.call(b"GET", b"plain"), wire.call(b"PING"))
            return after, wire.connects
        finally:
            await wire.aclose()

    assert run(go()) == ([b"v", b"PONG"], 1)
    with pytest.raises(ValueError):
        run(RedisWire("127.0.0.1", server.port).pipeline(b"", 0))


def test_a_cancelled_pipeline_leaves_its_replies_to_no_one_else(server):
    """A caller that goes away (its request cancelled) while its replies are in flight: the
    replies are read and dropped, and the commands sent after it get their own."""
    sync = redis.Redis.from_url(server.url)
    sync.mset({f"k{i}": f"v{i}" for i in range(500)})

    async def go():
        wire = RedisWire.from_url(server.url, timeout_s=2.0)
        assert wire is not None
        try:
            assert await wire.call(b"PING") == b"PONG"  # connected: a send is immediate
            gone = asyncio.ensure_future(
                wire.pipeline(packed(*((b"GET", f"k{i}") for i in range(500))), 500)
            )
            await asyncio.sleep(0)  # sent
            after = asyncio.gather(wire.call(b"GET", b"k7"), wire.pipeline(packed((b"PING",)), 1))
            gone.cancel()
            return await after, gone.cancelled(), wire.connects
        finally:
            await wire.aclose()

    assert run(go()) == ([b"v7", [b"PONG"]], True, 1)


def test_a_stopped_server_is_a_connection_error_and_a_restarted_one_is_reconnected(server):
    async def go():
        wire = RedisWire.from_url(server.url, timeout_s=2.0)
        assert wire is not None
        try:
            assert await wire.call(b"PING") == b"PONG"
            server.stop()
            with pytest.raises(redis.ConnectionError):
                await wire.call(b"PING")
            with pytest.raises(redis.ConnectionError):  # refused while it is down
                await wire.call(b"PING")
            server.start()
            return await wire.call(b"PING"), wire.connects
        finally:
            await wire.aclose()

    assert run(go()) == (b"PONG", 2)


def test_a_server_that_never_answers_times_out_and_the_next_call_connects_again():
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]

        async def go():
            wire = RedisWire("127.0.0.1", port, timeout_s=0.05)
            try:
                t = time.perf_counter()
                calls = [wire.call(b"GET", f"k{i}") for i in range(5)]
                calls.append(wire.pipeline(packed((b"GET", b"a"), (b"GET", b"b")), 2))
                results = await asyncio.gather(*calls, return_exceptions=True)
                waited = time.perf_counter() - t
                with pytest.raises(redis.TimeoutError):
                    await wire.call(b"PING")
                return results, waited, wire.connects
            finally:
                await wire.aclose()

        results, waited, connects = run(go())
    # every command in flight failed with the one timeout, none hung
    assert all(isinstance(r, redis.TimeoutError) for r in results)
    assert waited < 5.0
    assert connects == 2  # the timed-out connection was dropped, the next call reconnected
