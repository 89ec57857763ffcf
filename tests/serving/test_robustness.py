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
from support.net import WAIT_S
from support.serving import PrivateRedis, Store, make_settings, rank_body, serve, wait_until

from serving.routing import Router, RoutingConfig

pytestmark = pytest.mark.integration


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
    # production (v1) scores from request features: degraded, still ready
    assert ready.status_code == 200
    assert ready.json()["checks"]["redis"].startswith("degraded: unreachable")
    state = client.app.state.ltr
    cache_guard, feature_guard = state.cache.guard, state.service.feature_guard
    seed = 100
    # Keep asking until both breakers have opened and skipped Redis; every answer meanwhile
    # is the degraded one, whatever the machine's speed.
    for _ in range(2_000):
        seed += 1
        body = rank_body(5, seed=seed, user_id=PLAIN_USER)
        r = client.post("/api/v1/rank", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["cached"] is False
        assert r.json()["model_version"] == "v1"
        r2 = client.post("/api/v1/rank", json=body)  # the same request: no cache to answer it
        assert r2.status_code == 200 and r2.json()["cached"] is False
        r3 = client.post("/api/v1/rank", json=rank_body(4, seed=seed, user_id=ONLINE_USER))
        assert r3.status_code == 503
        assert r3.json()["detail"].startswith("online feature store unavailable")
        if cache_guard.skipped >= 5 and feature_guard.skipped >= 5:
            break
    # The breakers opened and later calls skipped Redis without touching the network.
    assert cache_guard.opened >= 1 and cache_guard.skipped >= 5
    assert feature_guard.opened >= 1 and feature_guard.skipped >= 5
    assert client.get("/ready").json()["checks"]["redis"].startswith("degraded")

    # -- recovery, without a restart of the app. Intended behaviour: the /ready probe that
    # reaches Redis again closes every breaker on it, so from then on the cache and the
    # online-feature model work on the very next request (no cool-down left to wait out).
    private_redis.start()
    assert wait_until(lambda: redis_ok(client), timeout=WAIT_S)
    online = client.post("/api/v1/rank", json=rank_body(4, user_id=ONLINE_USER))
    assert online.status_code == 200, online.text
    assert online.json()["model_version"] == "vfv"
    assert cached_twice(client, seed=next_seed())


def redis_ok(client) -> bool:
    """/ready reached Redis (which closes every breaker on it)."""
    r = client.get("/ready")
    return r.status_code == 200 and r.json()["checks"]["redis"] == "ok"


_SEEDS = iter(range(10_000, 20_000))


def next_seed() -> int:
    return next(_SEEDS)


def test_a_hung_redis_costs_at_most_one_socket_timeout_per_cool_down(
    outage_client, private_redis: PrivateRedis
):
    """A Redis that accepts nothing (SIGSTOP) is worse than a dead one: calls wait for the
    socket timeout. After ``failure_threshold`` timeouts in a row the breaker opens and
    Redis is skipped; it is tried again once per cool-down (one probe), so the number of
    timeouts is bounded by the elapsed time, not by the number of requests."""
    client = outage_client
    assert cached_twice(client, seed=3)
    guard = client.app.state.ltr.cache.guard
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        for i in range(40):
            r = client.post("/api/v1/rank", json=rank_body(5, seed=200 + i, user_id=PLAIN_USER))
            assert r.status_code == 200
            assert r.json()["cached"] is False
        windows = (time.monotonic() - started) / guard.cooldown_seconds
        online = client.post("/api/v1/rank", json=rank_body(3, user_id=ONLINE_USER))
        assert online.status_code == 503
        assert online.json()["detail"].startswith("online feature store unavailable")
        timeouts = sum(guard.errors.values())
        assert guard.opened >= 1 and guard.skipped > 0
        # threshold failures to open, then at most one failed probe per elapsed cool-down
        assert timeouts <= guard.failure_threshold + int(windows) + 1, (timeouts, windows)
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: redis_ok(client), timeout=WAIT_S)
    assert cached_twice(client, seed=next_seed())
