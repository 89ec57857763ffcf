"""Small rank requests are answered on the event loop (Redis reads awaited, ONNX Runtime
inline), larger ones in the request gate's worker threads; both give the same answer.

The features of ``vfv`` (f1, f2 from ``doc_features``) are written in Feast's Redis layout
into db 8 of the shared Redis; the expected scores are recomputed with ONNX Runtime from the
artifact and those stored values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from support.serving import (
    DEFAULTS,
    FV_VIEW,
    REDIS_URL,
    make_settings,
    onnx_scores,
    serve,
)

from serving.features.feast_layout import field_hash, float_list_header, redis_key

pytestmark = pytest.mark.integration

STORED = {"a": (1.0, 2.0), "b": (-1.0, 0.5), "c": (0.25, -3.0), "d": (2.0, 2.0)}


@pytest.fixture
def features(redis_db):
    """``doc_features`` = (f1, f2) of documents a-d for Feast project ``ltr`` (db 8)."""
    for doc, values in STORED.items():
        key = redis_key("ltr", ["doc_id"], [doc], 3)
        blob = float_list_header(2) + np.asarray(values, np.float32).tobytes()
        redis_db.hset(key, field_hash(FV_VIEW, "features"), blob)
    return redis_db


class CountingRuns:
    """Counts the calls of the gate's ``run`` (a step in a worker thread)."""

    def __init__(self, gate: Any) -> None:
        self.inner = gate.run
        self.calls = 0
        gate.run = self

    async def __call__(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        return await self.inner(fn, *args)


def expected(store, docs: list[str], f0: dict[str, float]) -> dict[str, float]:
    rows = []
    for d in docs:
        f1, f2 = STORED.get(d, (0.0, 0.0))
        rows.append([f0.get(d, DEFAULTS["f0"]), f1, f2, DEFAULTS["f3"]])
    scores = onnx_scores(store, "vfv", np.asarray(rows, dtype=np.float32))
    return dict(zip(docs, scores.tolist(), strict=True))


def body(docs: list[str], f0: dict[str, float], query_id: str = "q") -> dict[str, Any]:
    return {
        "query_id": query_id,
        "user_id": "u1",
        "candidates": [
            {"doc_id": d, **({"features": {"f0": f0[d]}} if d in f0 else {})} for d in docs
        ],
    }


@pytest.mark.parametrize("cache", [True, False])
def test_a_small_request_is_scored_on_the_loop_and_a_large_one_in_a_thread_alike(
    store, features, cache
):
    store.serve("vfv")
    docs = ["a", "b", "c", "d", "zz"]  # zz has no stored features
    f0 = {"a": 0.3, "c": -0.2}
    want = expected(store, docs, f0)
    # work of this request: 5 candidates + 2 request feature values = 7
    answers = {}
    for limit in (7, 6, 0):
        settings = make_settings(
            store, redis_url=REDIS_URL, cache_enabled=cache, inline_max_work=limit
        )
        with serve(settings) as client:
            runs = CountingRuns(client.app.state.gate)
            r = client.post("/api/v1/rank", json=body(docs, f0, query_id=f"q{limit}"))
            assert r.status_code == 200, r.text
            answer = r.json()
            assert runs.calls == (1 if limit < 7 else 0), limit
            got = {d["doc_id"]: d["score"] for d in answer["ranked"]}
            assert got == pytest.approx(want, rel=1e-6)
            answers[limit] = [d["doc_id"] for d in answer["ranked"]]
            assert answer["cached"] is False
            if cache:  # the same request again: the cache answers, on the same path
                again = client.post("/api/v1/rank", json=body(docs, f0, query_id=f"q{limit}"))
                assert again.status_code == 200 and again.json()["cached"] is True
                assert again.json()["ranked"] == answer["ranked"]
    assert answers[7] == answers[6] == answers[0] == sorted(docs, key=lambda d: -want[d])


def test_on_the_loop_a_dead_feature_store_is_a_503_and_the_breaker_counts_it(store):
    store.serve("vfv")
    settings = make_settings(store, redis_url="redis://127.0.0.1:1/0", cache_enabled=False)
    with serve(settings) as client:
        runs = CountingRuns(client.app.state.gate)
        for _ in range(4):
            r = client.post("/api/v1/rank", json=body(["a", "b"], {}))
            assert r.status_code == 503
            assert "127.0.0.1:1" not in r.text
        assert runs.calls == 0  # answered on the loop, without a worker thread
        guard = client.app.state.ltr.service.feature_guard
        assert guard.errors["FeatureStoreUnavailable"] == 3 and guard.is_open


def test_a_request_for_a_model_without_online_features_is_scored_on_the_loop(store, features):
    store.serve("v1")  # request features only: no read at all
    with serve(make_settings(store, redis_url=REDIS_URL)) as client:
        runs = CountingRuns(client.app.state.gate)
        r = client.post("/api/v1/rank", json=body(["a", "b", "c"], {"a": 1.0}))
        assert r.status_code == 200, r.text
        assert runs.calls == 0


def test_a_model_whose_estimated_inference_is_too_slow_is_scored_in_a_thread(store, features):
    store.serve("vfv")
    docs, f0 = ["a", "b", "c"], {"a": 0.5}
    for limit_ms, threaded in ((100.0, 0), (0.0, 1)):
        settings = make_settings(store, redis_url=REDIS_URL, inline_max_inference_ms=limit_ms)
        with serve(settings) as client:
            model = client.app.state.ltr.store.snapshot.models["vfv"]
            assert 0 < model.seconds_per_row < 0.01  # measured at load
            runs = CountingRuns(client.app.state.gate)
            r = client.post("/api/v1/rank", json=body(docs, f0))
            assert r.status_code == 200, r.text
            assert runs.calls == threaded, limit_ms
            got = {d["doc_id"]: d["score"] for d in r.json()["ranked"]}
            assert got == pytest.approx(expected(store, docs, f0), rel=1e-6)


def test_under_uvicorn_on_uvloop_the_loop_path_reads_redis_alike(store, features):
    """uvicorn picks uvloop when it is installed (as in the service's image), whose
    transports are not asyncio's classes: the event-loop read must work there too."""
    import httpx
    import uvloop  # noqa: F401  (installed: uvicorn's loop "auto" takes it)
    from support.serving import LiveServer

    store.serve("vfv")
    docs, f0 = ["a", "b", "c", "d", "zz"], {"b": 1.5}
    with (
        LiveServer(make_settings(store, redis_url=REDIS_URL)) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        for _ in range(3):  # the first connects, the others reuse the connection
            r = http.post("/api/v1/rank", json=body(docs, f0))
            assert r.status_code == 200, r.text
            got = {d["doc_id"]: d["score"] for d in r.json()["ranked"]}
            assert got == pytest.approx(expected(store, docs, f0), rel=1e-6)
