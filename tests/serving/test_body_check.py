"""Large bodies are parsed and validated in the low-priority helper process (serving.body_check).

Each answer is compared with the same request to a service that parses in its own threads
(``LTR_BODY_CHECK_PROCESSES=0``): the helper changes where the work is done, not what is
answered.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
from support.net import WAIT_S, wait_until
from support.serving import (
    Store,
    expected_order,
    make_candidates,
    make_settings,
    metric_value,
    serve,
)

from serving.api.deps import INLINE_BODY_BYTES

JSON = {"content-type": "application/json"}
HEAVY = 4096  # LTR_HEAVY_BODY_BYTES here; a body must also be above INLINE_BODY_BYTES


def large_body(seed: int = 0, bad: Any = None) -> dict[str, Any]:
    """50 candidates with long ids (a body over INLINE_BODY_BYTES); ``bad`` replaces every
    feature value when given."""
    candidates = make_candidates(50, seed, prefix="doc-" + "x" * 200 + "-")
    if bad is not None:
        for c in candidates:
            c["features"] = {name: bad for name in c["features"]}
    return {"query_id": "q1", "candidates": candidates}


def body_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body).encode())


@pytest.fixture
def both(store: Store):
    """(client with the helper process, client without), same store."""
    with (
        serve(make_settings(store, heavy_body_bytes=HEAVY)) as helped,
        serve(make_settings(store, heavy_body_bytes=HEAVY, body_check_processes=0)) as plain,
    ):
        yield helped, plain


def test_a_large_valid_body_is_ranked_as_in_process_and_checked_by_a_niced_helper(both):
    helped, plain = both
    body = large_body()
    assert body_size(body) > max(INLINE_BODY_BYTES, HEAVY)
    checker = helped.app.state.body_checker
    assert plain.app.state.body_checker is None

    a = helped.post("/api/v1/rank", json=body)
    b = plain.post("/api/v1/rank", json=body)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    order = [d["doc_id"] for d in a.json()["ranked"]]
    assert order == [d["doc_id"] for d in b.json()["ranked"]]
    assert order == expected_order("v1", body["candidates"])
    assert checker.checked == 1 and checker.failures == 0

    (pid,) = checker.pids()
    assert pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    if hasattr(os, "SCHED_IDLE"):  # Linux: runs only on CPU time the service leaves idle
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE


@pytest.mark.parametrize("bad", ["not-a-number", float("inf"), float("nan")])
def test_a_large_invalid_body_gets_the_same_422_from_the_helper(both, bad):
    helped, plain = both
    body = large_body(bad=bad)
    raw = json.dumps(body).encode()  # Infinity and NaN as JSON tokens
    a = helped.post("/api/v1/rank", content=raw, headers=JSON)
    b = plain.post("/api/v1/rank", content=raw, headers=JSON)
    assert a.status_code == b.status_code == 422
    assert a.json() == b.json()
    assert a.json()["errors_omitted"] > 0  # 200 bad values, ten reported
    assert helped.app.state.body_checker.checked == 1


def test_a_large_body_over_a_count_limit_gets_the_same_413_from_the_helper(store: Store):
    settings = dict(heavy_body_bytes=HEAVY, max_candidates=20)
    body = large_body()
    with (
        serve(make_settings(store, **settings)) as helped,
        serve(make_settings(store, body_check_processes=0, **settings)) as plain,
    ):
        a = helped.post("/api/v1/rank", json=body)
        b = plain.post("/api/v1/rank", json=body)
        assert a.status_code == b.status_code == 413
        assert a.json() == b.json()
        assert "too many candidates: 50 > 20" in a.json()["detail"]
        assert helped.app.state.body_checker.checked == 1


def test_a_killed_helper_is_replaced_and_the_body_parsed_in_the_service_meanwhile(store: Store):
    with serve(make_settings(store, heavy_body_bytes=HEAVY)) as client:
        checker = client.app.state.body_checker
        body = large_body(seed=1)
        assert client.post("/api/v1/rank", json=body).status_code == 200
        (first,) = checker.pids()
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: _dead(first), timeout=WAIT_S)

        r = client.post("/api/v1/rank", json=body)  # the pool is broken: parsed here
        assert r.status_code == 200
        assert [d["doc_id"] for d in r.json()["ranked"]] == expected_order("v1", body["candidates"])
        assert checker.failures == 1

        r = client.post("/api/v1/rank", json=large_body(seed=2))  # a new helper
        assert r.status_code == 200
        assert checker.pids() and checker.pids()[0] != first and checker.checked == 2
        text = client.get("/metrics").text
    assert metric_value(text, "ltr_errors_total", {"kind": "body_check"}) == 1


def test_small_bodies_never_start_the_helper(store: Store):
    with serve(make_settings(store, heavy_body_bytes=HEAVY)) as client:
        small = {"query_id": "q", "candidates": make_candidates(5)}
        assert client.post("/api/v1/rank", json=small).status_code == 200
        assert client.app.state.body_checker.pids() == []


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] in ("Z", "X")
    except FileNotFoundError:
        return True
