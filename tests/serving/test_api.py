"""The HTTP contract of the rank service (DESIGN.md, "HTTP API"): ranking, batch, feedback,
models, health, readiness, metrics, admin, and the request limits with their 4xx answers.

Expected scores are computed independently: with ONNX Runtime run directly on the artifact
and with the known weights of the linear test models.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from support.serving import (
    DEFAULTS,
    FEATURES,
    FV_VIEW,
    REDIS_URL,
    WEIGHTS,
    LiveServer,
    expected_order,
    feature_matrix,
    free_port,
    linear_scores,
    make_candidates,
    make_settings,
    metric_value,
    onnx_scores,
    rank_body,
    serve,
)

from serving.features.redis_reader import FeatureReadResult

API_KEY = "s3cr3t-admin-key-for-tests"
JSON = {"content-type": "application/json"}


def doc_ids(response: Any) -> list[str]:
    return [d["doc_id"] for d in response.json()["ranked"]]


# ----------------------------------------------------------------- ranking
def test_rank_orders_candidates_by_the_scores_onnx_runtime_gives_the_same_features(client, store):
    body = rank_body(20, seed=3)
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_version"] == "v1"
    assert out["variant"] == "production"
    assert out["cached"] is False
    assert out["request_id"]
    x = feature_matrix(body["candidates"])
    by_onnx = onnx_scores(store, "v1", x)
    np.testing.assert_allclose(by_onnx, linear_scores("v1", x), rtol=1e-5, atol=1e-5)
    want = dict(zip([c["doc_id"] for c in body["candidates"]], by_onnx.tolist(), strict=True))
    got = {d["doc_id"]: d["score"] for d in out["ranked"]}
    assert got.keys() == want.keys()
    for d, score in got.items():
        assert score == pytest.approx(want[d], rel=1e-6, abs=1e-6)
    assert doc_ids(r) == expected_order("v1", body["candidates"])
    assert [d["rank"] for d in out["ranked"]] == list(range(1, 21))
    scores = [d["score"] for d in out["ranked"]]
    assert scores == sorted(scores, reverse=True)


def test_top_k_returns_the_k_best_documents_in_order(client):
    body = rank_body(15, seed=4, top_k=4)
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 200
    assert doc_ids(r) == expected_order("v1", body["candidates"])[:4]
    assert [d["rank"] for d in r.json()["ranked"]] == [1, 2, 3, 4]


def test_top_k_larger_than_the_list_returns_every_candidate(client):
    r = client.post("/api/v1/rank", json=rank_body(3, top_k=10))
    assert r.status_code == 200
    assert len(r.json()["ranked"]) == 3


def test_missing_request_features_take_the_schema_default_and_are_counted(client, store):
    # f3 is never sent (its default is 1.5); f1 only for one candidate
    candidates = [
        {"doc_id": "a", "features": {"f0": 1.0, "f1": 0.5}},
        {"doc_id": "b", "features": {"f0": 2.0}},
        {"doc_id": "c"},
    ]
    before = metric_value(client.get("/metrics").text, "ltr_feature_misses_total")
    r = client.post("/api/v1/rank", json={"query_id": "q", "candidates": candidates})
    assert r.status_code == 200
    x = feature_matrix(candidates)
    assert x[2].tolist() == [DEFAULTS[f] for f in FEATURES]
    want = onnx_scores(store, "v1", x)
    got = {d["doc_id"]: d["score"] for d in r.json()["ranked"]}
    assert [got[c] for c in "abc"] == pytest.approx(want.tolist(), rel=1e-6)
    after = metric_value(
        client.get("/metrics").text, "ltr_feature_misses_total", {"view": "request"}
    )
    # 3 candidates x 4 request features = 12 values, 3 were sent
    assert after - before == 9


def test_unknown_feature_names_are_ignored_and_counted(client):
    plain = {"query_id": "q", "candidates": make_candidates(5, seed=8)}
    noisy = json.loads(json.dumps(plain))
    for c in noisy["candidates"]:
        c["features"]["bogus"] = 1e6
    noisy["candidates"][0]["features"]["also-unknown"] = -3.0
    before = metric_value(client.get("/metrics").text, "ltr_unknown_request_features_total")
    a = client.post("/api/v1/rank", json=plain).json()["ranked"]
    b = client.post("/api/v1/rank", json=noisy).json()["ranked"]
    assert a == b
    after = metric_value(client.get("/metrics").text, "ltr_unknown_request_features_total")
    assert after - before == 6


def test_duplicate_doc_ids_are_refused_with_422_naming_the_duplicate(client):
    body = {"query_id": "q", "candidates": [{"doc_id": "a"}, {"doc_id": "b"}, {"doc_id": "a"}]}
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 422
    assert "duplicate doc_id 'a' at candidates[2]" in r.json()["detail"]


def test_ties_keep_the_request_order(client):
    candidates = [{"doc_id": d, "features": {"f0": 1.0}} for d in ("z", "y", "x")]
    r = client.post("/api/v1/rank", json={"query_id": "q", "candidates": candidates})
    assert doc_ids(r) == ["z", "y", "x"]


# ----------------------------------------------------------------- feature views (fake reader)
class FakeReader:
    """An online store with doc_features = [f1, f2] for some documents."""

    def __init__(self, rows: dict[str, tuple[float, float]]) -> None:
        self.rows = rows
        self.calls = 0

    def read(self, query_id: str, doc_ids: list[str]) -> FeatureReadResult:
        self.calls += 1
        vec = np.full((len(doc_ids), 2), np.nan, dtype=np.float32)
        found = np.zeros(len(doc_ids), dtype=bool)
        for i, d in enumerate(doc_ids):
            if d in self.rows:
                vec[i] = self.rows[d]
                found[i] = True
        return FeatureReadResult(
            vectors={FV_VIEW: vec}, found={FV_VIEW: found}, missing=int((~found).sum())
        )


def test_online_features_fill_the_view_columns_and_request_values_override_them(store):
    store.serve("vfv")
    reader = FakeReader({"a": (1.0, 2.0), "b": (-1.0, 0.5)})
    with serve(make_settings(store)) as client:
        client.app.state.ltr.readers["vfv"] = reader
        candidates = [
            {"doc_id": "a", "features": {"f0": 0.3}},
            {"doc_id": "b", "features": {"f0": 0.1, "f1": 4.0}},  # overrides the stored f1
            {"doc_id": "c", "features": {"f0": 0.2, "f3": 0.0}},  # not in the store
        ]
        before = metric_value(
            client.get("/metrics").text, "ltr_feature_misses_total", {"view": FV_VIEW}
        )
        r = client.post("/api/v1/rank", json={"query_id": "q", "candidates": candidates})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "vfv"
        x = np.array(
            [[0.3, 1.0, 2.0, 1.5], [0.1, 4.0, 0.5, 1.5], [0.2, 0.0, 0.0, 0.0]], dtype=np.float32
        )
        want = dict(zip("abc", onnx_scores(store, "vfv", x).tolist(), strict=True))
        got = {d["doc_id"]: d["score"] for d in r.json()["ranked"]}
        assert got == pytest.approx(want, rel=1e-6)
        after = metric_value(
            client.get("/metrics").text, "ltr_feature_misses_total", {"view": FV_VIEW}
        )
        assert after - before == 1
        assert reader.calls == 1


def test_a_model_that_needs_online_features_answers_503_when_no_store_is_configured(store):
    store.serve("vfv")
    with serve(make_settings(store)) as client:
        r = client.post("/api/v1/rank", json=rank_body(3))
        assert r.status_code == 503
        assert "needs online features (doc_features)" in r.json()["detail"]


def test_a_failing_feature_reader_is_answered_503_with_a_fixed_reason(store):
    class Broken:
        def read(self, query_id: str, doc_ids: list[str]) -> FeatureReadResult:
            raise ConnectionError("Error 111 connecting to 10.0.0.7:6379. Connection refused.")

    store.serve("vfv")
    with serve(make_settings(store)) as client:
        client.app.state.ltr.readers["vfv"] = Broken()
        r = client.post("/api/v1/rank", json=rank_body(3))
        assert r.status_code == 503
        # the exception text (host and port) goes to the log, not to the client
        assert r.json()["detail"] == "online feature store unavailable: read failed"


# ----------------------------------------------------------------- batch
def test_batch_rank_answers_each_item_and_a_bad_item_does_not_fail_the_others(client):
    good1, good2 = rank_body(5, seed=1), rank_body(7, seed=2, top_k=3)
    too_many = rank_body(51, seed=3)
    r = client.post("/api/v1/batch_rank", json={"requests": [good1, too_many, good2]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [item["ok"] for item in results] == [True, False, True]
    assert results[1]["result"] is None
    assert results[1]["error"] == {
        "status": 413,
        "detail": "too many candidates: 51 > 50 (LTR_MAX_CANDIDATES)",
    }
    first = [d["doc_id"] for d in results[0]["result"]["ranked"]]
    assert first == expected_order("v1", good1["candidates"])
    third = [d["doc_id"] for d in results[2]["result"]["ranked"]]
    assert third == expected_order("v1", good2["candidates"])[:3]
    assert results[0]["result"]["request_id"] != results[2]["result"]["request_id"]


def test_batch_rank_with_an_invalid_item_is_refused_as_a_whole_with_422(client):
    r = client.post(
        "/api/v1/batch_rank", json={"requests": [rank_body(2), {"query_id": "q", "candidates": []}]}
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("body.requests.1.candidates")


# ----------------------------------------------------------------- events (Redis)
@pytest.fixture
def redis_client(store, redis_db):
    """The app with the shared Redis (db 8) for cache and events."""
    with serve(make_settings(store, redis_url=REDIS_URL)) as c:
        yield c


@pytest.mark.integration
def test_feedback_appends_the_clicks_to_the_clicks_stream(redis_client, redis_db):
    rid = redis_client.post("/api/v1/rank", json=rank_body(5)).json()["request_id"]
    body = {
        "request_id": rid,
        "user_id": "u-7",
        "clicks": [{"doc_id": "d3", "position": 0}, {"doc_id": "d1", "position": 4}],
    }
    r = redis_client.post("/api/v1/feedback", json=body)
    assert r.status_code == 200
    assert r.json() == {"request_id": rid, "accepted": 2, "logged": True}
    entries = redis_db.xrange("ltr:events:clicks")
    assert len(entries) == 1
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert fields["request_id"] == rid
    assert fields["user_id"] == "u-7"
    assert json.loads(fields["clicks"]) == [["d3", 0], ["d1", 4]]
    # the same answer's feedback again: refused, nothing more written
    again = redis_client.post("/api/v1/feedback", json=body)
    assert again.status_code == 409
    assert len(redis_db.xrange("ltr:events:clicks")) == 1


@pytest.mark.integration
def test_feedback_for_a_request_id_the_service_did_not_issue_is_refused(redis_client, redis_db):
    rid = redis_client.post("/api/v1/rank", json=rank_body(3)).json()["request_id"]
    forged = [
        "req-1",
        rid[:-1] + ("0" if rid[-1] != "0" else "1"),  # one signature digit changed
        "0-" + rid.split("-", 1)[1],  # another issue time under the same signature
        "x" * 200,
    ]
    for request_id in forged:
        r = redis_client.post(
            "/api/v1/feedback",
            json={"request_id": request_id, "clicks": [{"doc_id": "d0", "position": 0}]},
        )
        assert r.status_code == 403, request_id
        assert r.json()["detail"] == "request_id was not issued by this service"
    assert redis_db.xlen("ltr:events:clicks") == 0


def test_an_expired_request_id_is_refused_and_a_fresh_one_accepted() -> None:
    from serving.request_ids import RequestIdSigner

    signer = RequestIdSigner(b"k" * 32, max_age_s=60)
    rid = signer.issue(now=1_000_000.0)
    assert signer.check(rid, now=1_000_030.0) is None
    assert "older than 60 s" in (signer.check(rid, now=1_000_061.0) or "")
    # another secret (another fleet) does not accept it
    assert RequestIdSigner(b"j" * 32).check(rid, now=1_000_030.0) is not None


def test_feedback_is_rate_limited_per_client_with_retry_after(store):
    with serve(make_settings(store, feedback_rate_per_s=0.5, feedback_burst=3)) as client:
        rid = client.post("/api/v1/rank", json=rank_body(3)).json()["request_id"]
        body = {"request_id": rid, "clicks": [{"doc_id": "d0", "position": 0}]}
        codes = [client.post("/api/v1/feedback", json=body).status_code for _ in range(4)]
        assert codes[:3] == [200, 200, 200]  # no Redis: accepted, not logged, not deduplicated
        r = client.post("/api/v1/feedback", json=body)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1


def test_the_rate_limiter_refills_at_its_rate() -> None:
    from serving.request_ids import RateLimiter

    rl = RateLimiter(rate=2.0, burst=2)
    assert rl.allow("a", now=0.0) == 0.0 and rl.allow("a", now=0.0) == 0.0
    assert rl.allow("a", now=0.0) == pytest.approx(0.5)  # one token needs 0.5 s at 2/s
    assert rl.allow("b", now=0.0) == 0.0  # another client has its own bucket
    assert rl.allow("a", now=0.6) == 0.0


def test_feedback_without_redis_is_accepted_but_not_logged(client):
    rid = client.post("/api/v1/rank", json=rank_body(3)).json()["request_id"]
    body = {"request_id": rid, "clicks": [{"doc_id": "a", "position": 1}]}
    r = client.post("/api/v1/feedback", json=body)
    assert r.status_code == 200
    assert r.json() == {"request_id": rid, "accepted": 1, "logged": False}


def test_feedback_with_too_many_clicks_is_refused_with_413(store):
    with serve(make_settings(store, max_clicks=2)) as client:
        clicks = [{"doc_id": f"d{i}", "position": i} for i in range(3)]
        r = client.post("/api/v1/feedback", json={"request_id": "r", "clicks": clicks})
        assert r.status_code == 413
        assert r.json()["detail"] == "too many clicks: 3 > 2 (LTR_MAX_CLICKS)"


def test_feedback_with_a_repeated_document_is_refused_with_422(client):
    clicks = [{"doc_id": "d1", "position": 0}, {"doc_id": "d1", "position": 3}]
    r = client.post("/api/v1/feedback", json={"request_id": "r", "clicks": clicks})
    assert r.status_code == 422
    assert "repeated" in r.json()["detail"]


@pytest.mark.integration
def test_each_ranking_logs_an_impression_with_request_user_variant_version_and_doc_ids(
    redis_client, redis_db
):
    body = rank_body(6, seed=5, user_id="user-42", top_k=4)
    r = redis_client.post("/api/v1/rank", json=body)
    assert r.status_code == 200
    entries = redis_db.xrange("ltr:events:impressions")
    assert len(entries) == 1
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert fields["request_id"] == r.json()["request_id"]
    assert fields["user_id"] == "user-42"
    assert fields["variant"] == "production"
    assert fields["model_version"] == "v1"
    assert fields["query_id"] == "q1"
    assert json.loads(fields["doc_ids"]) == doc_ids(r)
    assert len(doc_ids(r)) == 4


@pytest.mark.integration
def test_a_repeated_request_is_answered_from_the_cache(redis_client):
    body = rank_body(6, seed=6)
    first = redis_client.post("/api/v1/rank", json=body).json()
    second = redis_client.post("/api/v1/rank", json=body).json()
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["ranked"] == first["ranked"]
    text = redis_client.get("/metrics").text
    assert metric_value(text, "ltr_cache_total", {"result": "hit"}) == 1


# ----------------------------------------------------------------- models, health, metrics
def test_models_lists_versions_weights_roles_and_per_version_counters(store):
    store.route(
        strategy="ab",
        production="v1",
        variants=[
            {"name": "control", "version": "v1", "weight": 70.0},
            {"name": "treatment", "version": "v2", "weight": 30.0},
        ],
    )
    with serve(make_settings(store)) as client:
        users = [f"user-{i}" for i in range(30)]
        served = [
            client.post("/api/v1/rank", json=rank_body(3, user_id=u)).json()["model_version"]
            for u in users
        ]
        r = client.get("/api/v1/models")
        assert r.status_code == 200
        out = r.json()
        assert out["strategy"] == "ab"
        assert out["production"] == "v1"
        assert out["weights"] == {"v1": 70.0, "v2": 30.0}
        versions = {v["version"]: v for v in out["versions"]}
        assert set(versions) == {"v1", "v2"}
        assert versions["v1"]["roles"] == ["production", "variant:control"]
        assert versions["v2"]["roles"] == ["variant:treatment"]
        for v in ("v1", "v2"):
            assert versions[v]["requests"] == served.count(v)
            assert versions[v]["n_features"] == len(FEATURES)
            assert versions[v]["errors"] == 0
            assert versions[v]["mean_latency_ms"] > 0
        assert out["routing_version"] >= 1


def test_models_counts_the_failed_requests_of_each_version(store):
    store.serve("vfv")  # needs online features, none configured: every request fails
    with serve(make_settings(store)) as client:
        for _ in range(2):
            assert client.post("/api/v1/rank", json=rank_body(3)).status_code == 503
        batch = {"requests": [rank_body(2), rank_body(2)]}
        assert client.post("/api/v1/batch_rank", json=batch).status_code == 200
        (info,) = client.get("/api/v1/models").json()["versions"]
    assert info["version"] == "vfv"
    assert info["feature_views"] == [FV_VIEW]
    assert (info["requests"], info["errors"]) == (4, 4)


def test_health_answers_200(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready_answers_200_with_the_loaded_models_when_no_redis_is_configured(client):
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {
        "ready": True,
        "checks": {"models": "ok: v1", "redis": "not configured"},
    }


@pytest.mark.integration
def test_ready_answers_200_when_models_are_loaded_and_redis_answers(redis_client):
    r = redis_client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"models": "ok: v1", "redis": "ok"}


def test_ready_stays_200_degraded_when_redis_is_down_but_production_uses_request_features(
    store,
):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with serve(make_settings(store, redis_url=dead)) as client:
        for _ in range(4):  # however many pings fail
            r = client.get("/ready")
            assert r.status_code == 200
            out = r.json()
            assert out["ready"] is True
            assert out["checks"]["models"] == "ok: v1"
            assert out["checks"]["redis"].startswith("degraded: unreachable")
        # ranking with request features still works without the cache
        assert client.post("/api/v1/rank", json=rank_body(4)).status_code == 200


def test_ready_fails_after_repeated_pings_when_production_needs_the_online_features(store):
    store.serve("vfv")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with serve(make_settings(store, redis_url=dead)) as client:
        codes = [client.get("/ready").status_code for _ in range(3)]
        assert codes == [200, 200, 503]  # one hiccup does not empty the fleet
        assert client.get("/ready").json()["checks"]["redis"].startswith("unreachable")


def test_metrics_has_the_latency_histogram_by_endpoint_version_and_variant(client):
    for _ in range(3):
        assert client.post("/api/v1/rank", json=rank_body(4)).status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    labels = {"endpoint": "rank", "model_version": "v1", "variant": "production"}
    assert metric_value(r.text, "ltr_request_latency_seconds_count", labels) == 3
    assert (
        'ltr_request_latency_seconds_bucket{endpoint="rank",le="0.0005",'
        'model_version="v1",variant="production"}' in r.text
    )
    assert metric_value(r.text, "ltr_request_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 3
    assert metric_value(r.text, "ltr_requests_total", {"endpoint": "rank", "status": "200"}) == 3
    assert metric_value(r.text, "ltr_models_loaded") == 1


def test_each_app_has_its_own_metrics(store):
    with serve(make_settings(store)) as a:
        a.post("/api/v1/rank", json=rank_body(2))
        with serve(make_settings(store)) as b:
            text = b.get("/metrics").text
            assert metric_value(text, "ltr_requests_total", {"endpoint": "rank"}) == 0


# ----------------------------------------------------------------- admin
def test_admin_reload_is_403_when_no_api_key_is_configured(client):
    r = client.post("/api/v1/admin/reload", headers={"X-API-Key": "anything"})
    assert r.status_code == 403
    assert "LTR_API_KEY" in r.json()["detail"]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}])
def test_admin_reload_is_401_without_the_right_api_key(store, headers):
    with serve(make_settings(store, api_key=SecretStr(API_KEY))) as client:
        r = client.post("/api/v1/admin/reload", headers=headers)
        assert r.status_code == 401
        assert r.json()["detail"] == "missing or wrong X-API-Key"


def test_admin_reload_with_the_right_api_key_swaps_in_a_new_routing_now(store):
    # a long reload interval: only the admin call can pick up the change
    settings = make_settings(store, api_key=SecretStr(API_KEY), reload_interval_s=3600)
    with serve(settings) as client:
        store.serve("v2")
        r = client.post("/api/v1/admin/reload", headers={"X-API-Key": API_KEY})
        assert r.status_code == 200
        assert r.json() == {"swapped": True, "serving": ["v2"], "last_error": None}
        assert client.post("/api/v1/rank", json=rank_body(3)).json()["model_version"] == "v2"


# ----------------------------------------------------------------- limits: precise 4xx, never 5xx
def test_more_candidates_than_the_limit_is_413_naming_the_setting(client):
    r = client.post("/api/v1/rank", json=rank_body(51))
    assert r.status_code == 413
    assert r.json()["detail"] == "too many candidates: 51 > 50 (LTR_MAX_CANDIDATES)"


def test_a_batch_larger_than_the_limit_is_413_naming_the_setting(store):
    with serve(make_settings(store, max_batch=2)) as client:
        r = client.post("/api/v1/batch_rank", json={"requests": [rank_body(2)] * 3})
        assert r.status_code == 413
        assert r.json()["detail"] == "too many requests in batch: 3 > 2 (LTR_MAX_BATCH)"


def test_too_many_features_on_a_candidate_is_413_naming_the_setting(client):
    body = rank_body(3)
    body["candidates"][1]["features"] = {f"x{i}": 1.0 for i in range(9)}
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "candidates[1] has 9 features, more than 8 (LTR_MAX_FEATURES_PER_CANDIDATE)"
    )


@pytest.fixture
def small_body_client(store):
    with serve(make_settings(store, max_body_bytes=2048)) as c:
        yield c


def test_a_body_larger_than_the_limit_is_413_from_its_content_length(small_body_client):
    body = json.dumps(rank_body(40)).encode()
    assert len(body) > 2048
    r = small_body_client.post("/api/v1/rank", content=body, headers=JSON)
    assert r.status_code == 413
    assert r.json()["detail"] == (
        f"request body too large: {len(body)} bytes > 2048 bytes (LTR_MAX_BODY_BYTES)"
    )


def test_a_chunked_body_larger_than_the_limit_is_413(small_body_client):
    body = json.dumps(rank_body(40)).encode()

    def chunks():
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    r = small_body_client.post("/api/v1/rank", content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "request body too large: more than 2048 bytes (LTR_MAX_BODY_BYTES)"
    )


def test_a_real_server_answers_413_to_an_oversized_chunked_body_and_keeps_serving(store):
    body = json.dumps(rank_body(40)).encode()
    with (
        LiveServer(make_settings(store, max_body_bytes=2048)) as server,
        httpx.Client(base_url=server.url, timeout=5) as http,
    ):
        chunks = (body[i : i + 256] for i in range(0, len(body), 256))
        r = http.post("/api/v1/rank", content=chunks, headers=JSON)
        assert r.status_code == 413
        assert r.json()["detail"] == (
            "request body too large: more than 2048 bytes (LTR_MAX_BODY_BYTES)"
        )
        r = http.post("/api/v1/rank", content=body, headers=JSON)  # with Content-Length
        assert r.status_code == 413
        assert http.post("/api/v1/rank", json=rank_body(3)).status_code == 200


def test_a_chunked_body_within_the_limit_is_served(small_body_client):
    body = json.dumps(rank_body(3)).encode()
    r = small_body_client.post("/api/v1/rank", content=iter([body[:50], body[50:]]), headers=JSON)
    assert r.status_code == 200


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_feature_values_are_refused_with_422(client, token):
    text = '{"query_id":"q","candidates":[{"doc_id":"a","features":{"f0":' + token + "}}]}"
    r = client.post("/api/v1/rank", content=text, headers=JSON)
    assert r.status_code == 422
    assert r.json()["detail"] == ("body.candidates.0.features.f0: Input should be a finite number")


def test_a_feature_value_beyond_float32_range_is_refused_with_422(client):
    body = rank_body(2)
    body["candidates"][0]["features"]["f1"] = 1e39
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("body.candidates.0.features.f1: Value error, feature")
    assert "float32 range" in r.json()["detail"]


def test_values_that_drive_the_model_out_of_range_are_422_not_500(client):
    body = rank_body(2)
    body["candidates"][1]["features"] = {"f3": 3e38}  # 3 * 3e38 overflows float32 in the model
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "model v1 produced a non-finite score for candidates[1] (doc_id 'd1'): "
        "its feature values are out of the model's range"
    )


def test_empty_candidates_are_refused_with_422(client):
    r = client.post("/api/v1/rank", json={"query_id": "q", "candidates": []})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("body.candidates: List should have at least 1 item")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"query_id": "q", "candidates": "abc"}, "body.candidates"),
        ({"query_id": 5, "candidates": [{"doc_id": "a"}]}, "body.query_id"),
        ({"query_id": "q", "candidates": [{"doc_id": "a"}], "top_k": "five"}, "body.top_k"),
        ({"query_id": "q", "candidates": [{"doc_id": "a"}], "top_k": 0}, "body.top_k"),
        ({"query_id": "q", "candidates": [{"doc_id": "a"}], "top_k": -3}, "body.top_k"),
        (
            {"query_id": "q", "candidates": [{"doc_id": "a", "features": {"f0": "x"}}]},
            "body.candidates.0.features.f0",
        ),
        (
            {"query_id": "q", "candidates": [{"doc_id": "a", "features": [1, 2]}]},
            "body.candidates.0.features",
        ),
        ({"query_id": "", "candidates": [{"doc_id": "a"}]}, "body.query_id"),
        ({"query_id": "q", "candidates": [{"doc_id": "a"}], "extra": 1}, "body.extra"),
        ({"candidates": [{"doc_id": "a"}]}, "body.query_id"),
    ],
)
def test_wrong_types_are_refused_with_422_naming_the_field(client, body, where):
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 422
    assert r.json()["detail"].startswith(where + ": ")


@pytest.mark.parametrize(
    "text", ["", "not json", "[1, 2]", "null", '{"query_id": "q", "candidates": [', "[" * 5000]
)
def test_malformed_bodies_are_answered_with_a_4xx(client, text):
    r = client.post("/api/v1/rank", content=text, headers=JSON)
    assert 400 <= r.status_code < 500, r.text


def test_no_limit_answer_is_a_server_error(store):
    bodies = [
        rank_body(51),
        {"query_id": "q", "candidates": []},
        {"query_id": "q", "candidates": [{"doc_id": "a", "features": {"f0": 1e39}}]},
        {"query_id": "q", "candidates": [{"doc_id": "a", "features": {"f0": -3e38, "f3": 3e38}}]},
    ]
    with serve(make_settings(store)) as client:
        for body in bodies:
            assert client.post("/api/v1/rank", json=body).status_code < 500
            batch = client.post("/api/v1/batch_rank", json={"requests": [body, rank_body(2)]})
            assert batch.status_code < 500
        text = client.get("/metrics").text
        assert metric_value(text, "ltr_requests_total", {"endpoint": "rank", "status": "500"}) == 0


def test_the_weights_of_the_test_models_are_what_onnx_computes(store):
    """Guards the fixtures: exported graphs really are x @ w + b."""
    x = np.random.default_rng(1).uniform(-3, 3, size=(10, len(FEATURES))).astype(np.float32)
    for version in WEIGHTS:
        np.testing.assert_allclose(
            onnx_scores(store, version, x), linear_scores(version, x), rtol=1e-5, atol=1e-5
        )


@pytest.mark.integration
def test_cache_and_events_can_use_a_redis_of_their_own(store, redis_db):
    """No feature-store Redis at all: the cache and the streams live in db 8 alone."""
    settings = make_settings(
        store, redis_url=None, cache_redis_url=REDIS_URL, events_redis_url=REDIS_URL
    )
    with serve(settings) as client:
        body = rank_body(4)
        first = client.post("/api/v1/rank", json=body).json()
        second = client.post("/api/v1/rank", json=body).json()
        assert first["cached"] is False and second["cached"] is True
        assert client.get("/ready").json()["checks"]["redis"] == "not configured"
    assert any(k.startswith(b"ltr:cache:v1:") for k in redis_db.scan_iter(match="ltr:cache:*"))
    assert redis_db.xlen("ltr:events:impressions") == 2
