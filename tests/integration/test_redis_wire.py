"""``RedisWire``: the pipelined event-loop connection of the feature read, against a real
redis-server of the test's own (AUTH, SELECT, pipelining, NOSCRIPT, error replies, a server
that stops, restarts or never answers)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvloop
from support.redis import PrivateRedis

from serving.features.redis_wire import RedisWire

pytestmark = pytest.mark.integration

SCRIPT = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    private = PrivateRedis(tmp_path, start_timeout=10.0)
    private.start()
    yield private
    private.stop()


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


def test_evalsha_falls_back_to_eval_when_redis_lost_the_script(server):
    import hashlib

    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    sync = redis.Redis.from_url(server.url)

    async def go():
        wire = RedisWire.from_url(server.url, timeout_s=2.0)
        assert wire is not None
        try:
            first = await wire.evalsha(sha, SCRIPT, [b"a"], [b"1"])  # never loaded: EVAL
            cached = sync.script_exists(sha)[0]
            second = await wire.evalsha(sha, SCRIPT, [b"b"], [b"2"])  # cached by the EVAL
            sync.script_flush()
            third = await wire.evalsha(sha, SCRIPT, [b"c"], [b"3"])
            return first, cached, second, third
        finally:
            await wire.aclose()

    assert run(go()) == ([b"a", b"1"], True, [b"b", b"2"], [b"c", b"3"])


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
