"""The rank API degrades rather than fails (DESIGN.md, "Reliability"): with its Redis gone,
models fed by the request keep answering quickly without the cache, models that need
online features answer 503 quickly with a reason, /ready says so, and everything recovers
by itself when Redis comes back.

A private redis-server on a spare port is stopped and restarted; the shared one is never
touched.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from support.serving import PrivateRedis, Store, make_settings, rank_body, serve, wait_until

from serving.routing import Router, RoutingConfig

pytestmark = pytest.mark.integration

FAST_S = 0.1  # every answer during the outage must come back within this


def routing() -> dict[str, Any]:
    """Half the users on v1 (request features only), half on vfv (needs a feature view)."""
    return {
        "strategy": "ab",
        "production": "v1",
        "variants": [
            {"name": "plain", "version": "v1", "weight": 50.0},
            {"name": "online", "version": "vfv", "weight": 50.0},
        ],
        "salt": "outage",
    }


def user_on(version: str) -> str:
    router = Router(RoutingConfig.model_validate({"version": 1, **routing()}))
    for i in range(1000):
        user = f"user-{i}"
        if router.decide(user, "r").version == version:
            return user
    raise AssertionError(f"no user routed to {version}")


PLAIN_USER, ONLINE_USER = user_on("v1"), user_on("vfv")


def timed_post(client, body: dict[str, Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    r = client.post("/api/v1/rank", json=body)
    return r, time.perf_counter() - t0


def cached_twice(client, seed: int) -> bool:
    """Does a repeated request come back from the cache?"""
    body = rank_body(5, seed=seed, user_id=PLAIN_USER)
    first = client.post("/api/v1/rank", json=body)
    second = client.post("/api/v1/rank", json=body)
    return first.status_code == second.status_code == 200 and second.json()["cached"] is True


@pytest.fixture
def outage_client(store: Store, private_redis: PrivateRedis):
    store.route(**routing())
    settings = make_settings(store, redis_url=private_redis.url, cache_enabled=True)
    with serve(settings) as client:
        yield client


def test_without_redis_request_feature_models_answer_fast_and_online_ones_503_then_recover(
    outage_client, private_redis: PrivateRedis
):
    client = outage_client
    # -- healthy: cache hits, online model answers (features missing -> defaults)
    assert client.get("/ready").status_code == 200
    assert cached_twice(client, seed=1)
    online = client.post("/api/v1/rank", json=rank_body(4, user_id=ONLINE_USER))
    assert online.status_code == 200, online.text
    assert online.json()["model_version"] == "vfv"

    # -- outage
    private_redis.stop()
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("unreachable")
    slow: list[float] = []
    deadline = time.monotonic() + 1.5  # longer than the circuit breaker's cool-down
    seed = 100
    while time.monotonic() < deadline:
        seed += 1
        body = rank_body(5, seed=seed, user_id=PLAIN_USER)
        r, took = timed_post(client, body)
        assert r.status_code == 200, r.text
        assert r.json()["cached"] is False
        assert r.json()["model_version"] == "v1"
        r2, took2 = timed_post(client, body)  # the same request: no cache to answer it
        assert r2.status_code == 200 and r2.json()["cached"] is False
        r3, took3 = timed_post(client, rank_body(4, seed=seed, user_id=ONLINE_USER))
        assert r3.status_code == 503
        assert r3.json()["detail"].startswith("online feature store unavailable")
        slow += [t for t in (took, took2, took3) if t >= FAST_S]
    assert slow == [], f"{len(slow)} answers took >= {FAST_S * 1000:.0f} ms: {slow}"
    assert client.get("/ready").status_code == 503
    state = client.app.state.ltr
    assert state.cache.guard.opened >= 1  # the breaker opened: Redis was skipped

    # -- recovery, without a restart of the app
    private_redis.start()
    assert wait_until(lambda: client.get("/ready").status_code == 200, timeout=5)
    t0 = time.monotonic()
    assert wait_until(lambda: cached_twice(client, seed=next_seed()), timeout=5, step=0.1)
    assert time.monotonic() - t0 < 5
    online = client.post("/api/v1/rank", json=rank_body(4, user_id=ONLINE_USER))
    assert online.status_code == 200, online.text


_SEEDS = iter(range(10_000, 20_000))


def next_seed() -> int:
    return next(_SEEDS)


def test_a_hung_redis_costs_at_most_one_socket_timeout_per_request(
    outage_client, private_redis: PrivateRedis
):
    """A Redis that accepts nothing (SIGSTOP) is worse than a dead one: calls wait for the
    socket timeout (50 ms). Answers stay fast and the breaker soon skips Redis entirely."""
    client = outage_client
    assert cached_twice(client, seed=3)
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        took = []
        for i in range(20):
            r, t = timed_post(client, rank_body(5, seed=200 + i, user_id=PLAIN_USER))
            assert r.status_code == 200
            took.append(t)
        online, t_online = timed_post(client, rank_body(3, user_id=ONLINE_USER))
        assert online.status_code == 503
        assert t_online < 0.25
        # A request pays at most the cache read's timeout, plus the cache write and the
        # event write that run after the answer (the test client waits for them); after
        # three failures in a row each breaker opens and Redis costs nothing.
        assert max(took) < 0.25, took
        assert sum(t >= FAST_S for t in took) <= 4, took
        assert (
            client.app.state.ltr.cache.guard.is_open or client.app.state.ltr.cache.guard.opened >= 1
        )
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: cached_twice(client, seed=next_seed()), timeout=5, step=0.1)
