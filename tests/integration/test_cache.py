"""The rank result cache against a real Redis: round trip, TTL, keys, and a dead Redis.

Redis tests use db 7 of ``LTR_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/7``) under a
unique key prefix that is deleted afterwards (no FLUSHDB: other suites share the server),
and skip when Redis does not answer. The recovery test starts its own ``redis-server``.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.redis import PrivateRedis, counting_client, fail_fast_client, running_private_redis

from serving.cache import RankCache
from serving.redis_guard import RedisGuard, fail_fast_async_redis

REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
RANKED = [
    {"doc_id": "d2", "score": 1.25, "rank": 1},
    {"doc_id": "d1", "score": -0.5, "rank": 2},
]
CANDIDATES = [("d1", {"bm25": 1.0, "clicks": 3.0}), ("d2", None)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def live() -> Iterator[redis.Redis]:
    with fail_fast_client(REDIS_URL) as client:
        yield client


@pytest.fixture
def prefix(live: redis.Redis) -> Iterator[str]:
    prefix = f"test:{uuid.uuid4().hex}:cache:"
    yield prefix
    keys = list(live.scan_iter(match=f"{prefix}*"))
    if keys:
        live.delete(*keys)


def test_the_key_is_prefix_version_and_a_sha256_hex_digest():
    key = RankCache(None, ttl_seconds=60).key("v12", "q1", CANDIDATES)
    head, digest = key.rsplit(":", 1)
    assert head == "ltr:cache:v12"
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_the_key_changes_with_everything_the_ranking_depends_on():
    cache = RankCache(None, ttl_seconds=60)
    base = cache.key("v12", "q1", CANDIDATES)
    variants = [
        cache.key("v13", "q1", CANDIDATES),
        cache.key("v12", "q2", CANDIDATES),
        cache.key("v12", "q1", list(reversed(CANDIDATES))),  # candidate order matters
        cache.key("v12", "q1", [("d1", {"bm25": 1.5, "clicks": 3.0}), ("d2", None)]),
        cache.key("v12", "q1", [("d1", {"bm25": 1.0}), ("d2", None)]),
        cache.key("v12", "q1", [("d1", {"bm25": 1.0, "clicks": 3.0}), ("d2", {})]),
        cache.key("v12", "q1", [("d1", {"bm25": 1.0, "clicks": 3.0})]),
        cache.key("v12", "q1", [("d1", {"bm25": 1.0, "clicks": 3.0}), ("d3", None)]),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_the_key_ignores_feature_dict_order_and_int_versus_float():
    cache = RankCache(None, ttl_seconds=60)
    base = cache.key("v12", "q1", CANDIDATES)
    assert cache.key("v12", "q1", [("d1", {"clicks": 3.0, "bm25": 1.0}), ("d2", None)]) == base
    assert cache.key("v12", "q1", [("d1", {"bm25": 1, "clicks": 3}), ("d2", None)]) == base


def test_the_key_does_not_confuse_field_boundaries():
    cache = RankCache(None, ttl_seconds=60)
    assert cache.key("v1", "2:q", []) != cache.key("v1:2", "q", [])
    assert cache.key("v1", "q", [("a,b", None)]) != cache.key("v1", "q", [("a", None), ("b", None)])


def test_without_a_client_the_cache_is_disabled_and_always_misses():
    cache = RankCache(None, ttl_seconds=60)
    cache.set("k", RANKED)
    assert cache.get("k") is None
    assert (cache.enabled, cache.hits, cache.misses, dict(cache.errors)) == (False, 0, 1, {})


@pytest.mark.integration
def test_a_stored_ranking_comes_back_unchanged_and_counts_a_hit(live, prefix):
    cache = RankCache(live, ttl_seconds=60, prefix=prefix)
    key = cache.key("v12", "q1", CANDIDATES)
    assert cache.get(key) is None
    cache.set(key, RANKED)
    assert cache.get(key) == RANKED
    assert (cache.hits, cache.misses, cache.sets) == (1, 1, 1)
    assert dict(cache.errors) == {}


@pytest.mark.integration
def test_stored_entries_carry_the_ttl(live, prefix):
    cache = RankCache(live, ttl_seconds=42, prefix=prefix)
    key = cache.key("v12", "q1", CANDIDATES)
    cache.set(key, RANKED)
    assert 0 < live.ttl(key) <= 42


@pytest.mark.integration
def test_a_corrupt_entry_is_a_counted_miss_and_does_not_trip_the_breaker(live, prefix):
    cache = RankCache(live, ttl_seconds=60, prefix=prefix, guard=RedisGuard(failure_threshold=1))
    live.set(f"{prefix}bad", b"\xff not json")
    live.set(f"{prefix}obj", b'{"a": 1}')
    assert cache.get(f"{prefix}bad") is None
    assert cache.get(f"{prefix}obj") is None
    assert cache.errors["DecodeError"] == 2
    assert not cache.guard.is_open


@pytest.mark.integration
def test_a_redis_response_error_is_swallowed_and_counted(live, prefix):
    cache = RankCache(live, ttl_seconds=60, prefix=prefix)
    live.rpush(f"{prefix}list", "x")  # GET on a list answers WRONGTYPE
    assert cache.get(f"{prefix}list") is None
    assert cache.errors["ResponseError"] == 1


def test_a_ranking_that_is_not_json_is_not_cached_and_not_raised():
    client = counting_client(1)
    cache = RankCache(client, ttl_seconds=60)
    cache.set("k", [{"doc_id": "d1", "score": float("nan"), "rank": 1}])
    assert cache.errors["EncodeError"] == 1 and client.calls == 0


def test_a_dead_redis_never_raises_counts_errors_and_the_breaker_stops_calling_it():
    client = counting_client(1)  # nothing listens on port 1
    clock = FakeClock()
    guard = RedisGuard(failure_threshold=3, cooldown_seconds=1.0, clock=clock)
    cache = RankCache(client, ttl_seconds=60, guard=guard)
    for i in range(10):
        assert cache.get(f"k{i}") is None
        cache.set(f"k{i}", RANKED)
    assert client.calls == 3  # then the circuit opened
    assert cache.errors == {"ConnectionError": 3}
    assert (cache.misses, cache.hits, guard.skipped, guard.opened) == (10, 0, 17, 1)
    assert guard.is_open
    clock.now += 0.5
    assert cache.get("k") is None and client.calls == 3  # still cooling down
    clock.now += 0.5
    assert cache.get("k") is None and client.calls == 4  # one probe, which fails ...
    assert cache.get("k") is None and client.calls == 4  # ... and re-opens the circuit
    assert cache.errors == {"ConnectionError": 4} and guard.is_open


# -- recovery: a Redis of our own that we stop and start again --------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with running_private_redis(tmp_path, start_timeout=10.0) as server:
        yield server


@pytest.mark.integration
def test_the_cache_recovers_by_itself_when_redis_comes_back(own_redis):
    client = counting_client(own_redis.port)
    clock = FakeClock()
    cache = RankCache(
        client,
        ttl_seconds=60,
        guard=RedisGuard(failure_threshold=2, cooldown_seconds=1.0, clock=clock),
    )
    cache.set("k", RANKED)
    assert cache.get("k") == RANKED

    own_redis.stop()
    for _ in range(5):
        assert cache.get("k") is None
    assert cache.guard.is_open and sum(cache.errors.values()) == 2

    own_redis.start()  # empty again: no persistence
    assert cache.get("k") is None and cache.guard.is_open  # still cooling down
    clock.now += 1.0
    cache.set("k", RANKED)  # the probe succeeds and closes the circuit
    assert not cache.guard.is_open
    assert cache.get("k") == RANKED
    assert sum(cache.errors.values()) == 2


@pytest.mark.integration
def test_a_cached_ranking_is_used_only_for_exactly_the_requests_candidates(live, prefix):
    cache = RankCache(live, ttl_seconds=60, prefix=prefix)
    key = cache.key("v1", "q", CANDIDATES)
    cache.set(key, RANKED)
    assert cache.get(key, ["d1", "d2"]) == RANKED
    # a foreign or colliding entry under the key: other documents, a missing one, a dup
    for bad in (
        [{"doc_id": "d9", "score": 1.0, "rank": 1}, {"doc_id": "d1", "score": 0.0, "rank": 2}],
        RANKED[:1],
        [RANKED[0], {**RANKED[0], "rank": 2}],
        [{**RANKED[0], "rank": 2}, {**RANKED[1], "rank": 1}],
        [{**RANKED[0], "score": "1.0"}, RANKED[1]],
    ):
        live.set(key, json.dumps(bad))
        assert cache.get(key, ["d1", "d2"]) is None, bad
    assert cache.mismatches == 5
    assert not cache.guard.is_open


@pytest.mark.integration
def test_rankings_longer_than_max_docs_are_not_cached(live, prefix):
    cache = RankCache(live, ttl_seconds=60, prefix=prefix, max_docs=1)
    key = cache.key("v1", "q", CANDIDATES)
    cache.set(key, RANKED)
    assert live.get(key) is None
    assert cache.too_large == 1 and cache.sets == 0


def test_a_lone_surrogate_in_a_feature_name_still_gives_a_key():
    key = RankCache(None, ttl_seconds=60).key("v1", "q", [("d1", {"f\ud800": 1.0})])
    assert key.startswith("ltr:cache:v1:")


# -- aget: the same reads awaited on the event loop ---------------------------------------


def _aget_all(client_url: str, prefix: str, calls, guard: RedisGuard | None = None, setup=None):
    """A cache whose sync client is the live one (for set) and whose async client points at
    ``client_url``; ``aget`` of each (key, doc_ids) in ``calls``, in one event loop."""

    async def go():
        aclient = fail_fast_async_redis(client_url, timeout_seconds=0.5)
        try:
            with fail_fast_client(REDIS_URL) as sync:
                cache = RankCache(
                    sync, ttl_seconds=60, prefix=prefix, guard=guard, async_client=aclient
                )
                assert cache.reads_async
                if setup is not None:
                    setup(cache)
                return cache, [await cache.aget(key, ids) for key, ids in calls]
        finally:
            await aclient.aclose()

    return asyncio.run(go())


@pytest.mark.integration
def test_aget_sees_what_get_sees_hits_misses_and_foreign_entries(live, prefix):
    key = f"{prefix}v1:k"
    foreign = f"{prefix}v1:foreign"
    live.set(foreign, json.dumps([{"doc_id": "d9", "score": 1.0, "rank": 1}]))
    cache, got = _aget_all(
        REDIS_URL,
        prefix,
        [(key, ["d1", "d2"]), (foreign, ["d9", "d1"])],
    )
    assert got == [None, None]  # nothing stored yet; a foreign entry is refused
    assert (cache.misses, cache.mismatches) == (2, 1)
    live.set(key, json.dumps(RANKED))
    cache, got = _aget_all(
        REDIS_URL, prefix, [(key, ["d1", "d2"]), (key, ["d2", "d1"]), (key, ["d1"])]
    )
    assert got == [RANKED, RANKED, None]  # the last asks for other candidates
    assert (cache.hits, cache.misses, cache.mismatches) == (2, 1, 1)


@pytest.mark.integration
def test_aget_on_a_dead_redis_is_a_miss_and_opens_the_same_breaker():
    guard = RedisGuard(failure_threshold=3, cooldown_seconds=60.0)
    cache, got = _aget_all(
        "redis://127.0.0.1:1/0", "test:dead:", [(f"k{i}", None) for i in range(6)], guard=guard
    )
    assert got == [None] * 6
    assert cache.errors == {"ConnectionError": 3}
    assert guard.is_open and guard.skipped == 3
    assert cache.misses == 6


def test_a_cache_without_async_client_refuses_aget_unless_disabled():
    assert not RankCache(None, ttl_seconds=60).reads_async
    disabled = RankCache(None, ttl_seconds=60)
    assert asyncio.run(disabled.aget("k")) is None and disabled.misses == 1
    sync_only = RankCache(redis.Redis(port=1), ttl_seconds=60)
    with pytest.raises(RuntimeError, match="async_client"):
        asyncio.run(sync_only.aget("k"))
