"""One client cannot stall the rank service, and no input gets a 5xx (issue 9).

- Blocking work (ranking: feature reads, ONNX Runtime; the parse of large bodies) runs in
  the request gate's worker threads: ``/health`` answers while every worker is blocked, and
  requests beyond ``LTR_REQUEST_WORKERS + LTR_REQUEST_QUEUE`` are answered 503 with
  ``Retry-After`` at once.
- Bodies are bounded before they are paid for: size (413), arrival time (408), element
  counts before validation (413), at most ten errors in a 422, never the input echoed.
- Ids and feature names with control characters or lone surrogates are a 422 naming the
  field; an error body never carries the text of an internal exception.

The checks are on behaviour (what answers while what is in flight), never on wall time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from support.net import LOOPBACK, WAIT_S
from support.serving import (
    FV_VIEW,
    REDIS_URL,
    LiveServer,
    Store,
    make_settings,
    metric_value,
    rank_body,
    serve,
    wait_until,
)

from serving import schemas
from serving.api.deps import INLINE_BODY_BYTES
from serving.features.redis_reader import FeatureReadResult
from serving.middleware import RequestGate
from serving.schemas import MAX_REPORTED_ERRORS, RankRequest
from serving.settings import ServingSettings

JSON = {"content-type": "application/json"}
HOST_AND_PORT = "10.0.0.7:6379"


class BlockingReader:
    """An online store whose reads wait until ``release`` is set (a hung dependency)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def read(self, query_id: str, doc_ids: list[str]) -> FeatureReadResult:
        with self._lock:
            self.waiting += 1
        try:
            self.release.wait(timeout=WAIT_S)
        finally:
            with self._lock:
                self.waiting -= 1
        n = len(doc_ids)
        return FeatureReadResult(
            vectors={FV_VIEW: np.full((n, 2), np.nan, dtype=np.float32)},
            found={FV_VIEW: np.zeros(n, dtype=bool)},
            missing=n,
        )


def _post_in_thread(url: str, path: str, body: Any, out: list[httpx.Response]) -> threading.Thread:
    def send() -> None:
        with httpx.Client(base_url=url, timeout=WAIT_S) as http:
            out.append(http.post(path, json=body))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------- saturation
@pytest.fixture
def saturated_server(store: Store) -> Iterator[tuple[LiveServer, BlockingReader, RequestGate]]:
    """A real server with 2 workers and 2 queue places, serving vfv through a blocked reader."""
    store.serve("vfv")
    settings = make_settings(store, request_workers=2, request_queue=2)
    reader = BlockingReader()
    with LiveServer(settings, http_timeout=WAIT_S) as server:
        app = server.server.config.app
        app.state.ltr.readers["vfv"] = reader
        try:
            yield server, reader, app.state.gate
        finally:
            reader.release.set()


def test_health_answers_while_every_worker_is_blocked_and_requests_beyond_capacity_get_503(
    saturated_server,
):
    server, reader, gate = saturated_server
    answers: list[httpx.Response] = []
    threads = [
        _post_in_thread(server.url, "/api/v1/rank", rank_body(3, seed=i), answers)
        for i in range(gate.capacity)
    ]
    # two requests hold the workers (their reads block), two wait in the queue
    assert wait_until(lambda: reader.waiting == 2 and gate.in_flight == 4, timeout=WAIT_S)

    with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/ready").status_code == 200
        assert http.get("/api/v1/models").status_code == 200
        assert http.get("/metrics").status_code == 200
        over = http.post("/api/v1/rank", json=rank_body(3))
        assert over.status_code == 503
        assert over.headers["retry-after"] == "1"
        assert "at capacity" in over.json()["detail"]
        batch = http.post("/api/v1/batch_rank", json={"requests": [rank_body(2)]})
        assert batch.status_code == 503 and batch.headers["retry-after"] == "1"
        # all of that was answered while the blocked requests were still in flight
        assert answers == [] and reader.waiting == 2 and gate.in_flight == 4

        reader.release.set()
        for t in threads:
            t.join(timeout=WAIT_S)
        assert sorted(r.status_code for r in answers) == [200] * 4
        assert wait_until(lambda: gate.in_flight == 0, timeout=WAIT_S)
        assert http.post("/api/v1/rank", json=rank_body(3)).status_code == 200
        text = http.get("/metrics").text
    assert metric_value(text, "ltr_requests_total", {"endpoint": "rank", "status": "503"}) == 1
    assert metric_value(text, "ltr_errors_total", {"kind": "overloaded"}) == 2


def invalid_body(n: int = 50, features: int = 8, value: Any = "not-a-number") -> dict[str, Any]:
    """A body within every limit whose every feature value is wrong: n * features errors."""
    return {
        "query_id": "q",
        "candidates": [
            {"doc_id": f"d{i}", "features": {f"f{j}": value for j in range(features)}}
            for i in range(n)
        ],
    }


def test_a_flood_of_large_invalid_bodies_gets_4xx_and_health_answers_throughout(store):
    settings = make_settings(store, request_workers=2, request_queue=4)
    body = json.dumps(invalid_body()).encode()
    assert len(body) > 8 * 1024  # parsed in a worker thread, not inline
    stop = threading.Event()
    statuses: list[int] = []
    sizes: list[int] = []

    def flood() -> None:
        with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
            while not stop.is_set():
                r = http.post("/api/v1/rank", content=body, headers=JSON)
                statuses.append(r.status_code)
                sizes.append(len(r.content))

    with LiveServer(settings, http_timeout=WAIT_S) as server:
        flooders = [threading.Thread(target=flood, daemon=True) for _ in range(12)]
        for t in flooders:
            t.start()
        try:
            assert wait_until(lambda: len(statuses) >= 20, timeout=WAIT_S)
            with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
                for _ in range(20):
                    assert http.get("/health").status_code == 200
                    assert all(t.is_alive() for t in flooders)  # answered during the flood
        finally:
            stop.set()
            for t in flooders:
                t.join(timeout=WAIT_S)
    assert set(statuses) <= {422, 429, 503}, set(statuses)  # 429: over its share
    assert 422 in statuses
    # each 422 is small: ten errors and a count, no echo of the 400 bad values
    assert max(sizes) < 4096


# ----------------------------------------------------------------- bounded bodies
def test_a_422_lists_at_most_ten_errors_counts_the_rest_and_never_echoes_the_input(client):
    r = client.post("/api/v1/rank", json=invalid_body(value="SECRET-INPUT"))
    assert r.status_code == 422
    out = r.json()
    assert len(out["errors"]) == MAX_REPORTED_ERRORS
    # validation stopped at candidate 1, whose 8 errors brought the list past ten: 16 found
    assert (out["errors_omitted"], out["errors_complete"]) == (2 * 8 - MAX_REPORTED_ERRORS, False)
    assert out["detail"] == "body.candidates.0.features.f0: Input should be a valid number"
    assert "SECRET-INPUT" not in r.text


def test_a_batch_422_is_cut_to_ten_errors_as_well(client):
    r = client.post("/api/v1/batch_rank", json={"requests": [invalid_body(10, 4)] * 3})
    assert r.status_code == 422
    assert len(r.json()["errors"]) == MAX_REPORTED_ERRORS
    # the first request's walk stops at its third candidate (12 errors), the batch after it
    assert r.json()["errors_omitted"] == 3 * 4 - MAX_REPORTED_ERRORS
    assert r.json()["errors_complete"] is False


def test_unknown_keys_by_the_thousand_are_one_422_with_a_count(client):
    body: dict[str, Any] = {"query_id": "q", "candidates": [{"doc_id": "a"}]}
    body.update({f"x{i}": 1 for i in range(5000)})
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 422
    assert r.json()["detail"] == "body.x0: Extra inputs are not permitted"
    assert r.json()["errors_omitted"] == 5000 - MAX_REPORTED_ERRORS
    assert r.json()["errors_complete"] is True  # unknown keys are counted, not validated


def test_too_many_candidates_is_413_before_any_candidate_is_validated(client):
    body = {"query_id": "q", "candidates": [{"doc_id": 5}] * 51}  # each also invalid
    r = client.post("/api/v1/rank", json=body)
    assert r.status_code == 413
    assert r.json()["detail"] == "too many candidates: 51 > 50 (LTR_MAX_CANDIDATES)"


def test_too_many_features_in_a_batch_item_refuses_the_batch_with_413(client):
    items = [rank_body(2), invalid_body(2, 9, value=1.0)]
    r = client.post("/api/v1/batch_rank", json={"requests": items})
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "requests[1].candidates[0] has 9 features, more than 8 (LTR_MAX_FEATURES_PER_CANDIDATE)"
    )


def test_a_large_body_is_parsed_in_a_worker_thread_a_small_one_inline(store, monkeypatch):
    where: list[str] = []
    parse = schemas.BODY_PARSERS[RankRequest]

    def spy(raw: bytes, limits: schemas.BodyLimits) -> Any:
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return parse(raw, limits)

    monkeypatch.setitem(schemas.BODY_PARSERS, RankRequest, spy)
    large = rank_body(50)
    for c in large["candidates"]:
        c["doc_id"] = c["doc_id"].rjust(200, "x")
    assert len(json.dumps(large)) > INLINE_BODY_BYTES >= len(json.dumps(rank_body(2)))
    with serve(make_settings(store)) as client:
        assert client.post("/api/v1/rank", json=large).status_code == 200
        assert client.post("/api/v1/rank", json=rank_body(2)).status_code == 200
    assert where == ["worker thread", "event loop"]


def test_a_slow_body_holds_no_place_in_the_gate_and_is_answered_408(store):
    # one place in all: a slow client holding it would turn every other request away
    settings = make_settings(store, body_read_timeout_s=2.0, request_workers=1, request_queue=0)
    with LiveServer(settings, http_timeout=WAIT_S) as server:
        gate = server.server.config.app.state.gate
        with socket.create_connection((LOOPBACK, server.port), timeout=WAIT_S) as sock:
            sock.sendall(
                b"POST /api/v1/rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b'content-length: 1000\r\n\r\n{"query_id":'
            )
            with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
                assert http.post("/api/v1/rank", json=rank_body(3)).status_code == 200
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert gate.in_flight == 0
        with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
            assert http.post("/api/v1/rank", json=rank_body(3)).status_code == 200


def test_the_default_body_limit_is_sized_from_the_candidate_and_feature_limits():
    small = ServingSettings(_env_file=None, max_candidates=50, max_features_per_candidate=8)
    assert small.max_body_bytes == 50 * (320 + 8 * 48) + 4096
    assert small.body_limit_bytes == small.max_body_bytes
    # the defaults (1000 x 1024) would need ~50 MB: capped
    assert ServingSettings(_env_file=None).max_body_bytes == 4 * 1024 * 1024
    explicit = ServingSettings(_env_file=None, max_body_bytes=2048)
    assert explicit.max_body_bytes == explicit.body_limit_bytes == 2048


# ----------------------------------------------------------------- edge inputs: 4xx, never 5xx
def _raw(query_id: str = '"q"', doc_id: str = '"a"', name: str = '"f0"') -> str:
    """A rank body written by hand, so that any escape goes in verbatim."""
    return (
        f'{{"query_id":{query_id},"user_id":"u","candidates":'
        f'[{{"doc_id":{doc_id},"features":{{{name}:1.0}}}}]}}'
    )


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (_raw(query_id='"q\\u0000"'), "body.query_id", "control character (U+0000)"),
        (_raw(doc_id='"a\\nb"'), "body.candidates.0.doc_id", "control character (U+000A)"),
        (_raw(doc_id='"a\\u007f"'), "body.candidates.0.doc_id", "control character (U+007F)"),
        (_raw(name='"f\\u001b"'), "body.candidates.0.features", "control character (U+001B)"),
        (_raw(name='""'), "body.candidates.0.features", "at least 1 character"),
        (_raw(name='"' + "n" * 257 + '"'), "body.candidates.0.features", "at most 256"),
        (_raw(query_id='"' + "q" * 257 + '"'), "body.query_id", "at most 256"),
    ],
)
def test_ids_and_feature_names_break_the_text_rules_with_a_422_naming_the_field(
    client, text, field, reason
):
    r = client.post("/api/v1/rank", content=text, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(field), r.json()["detail"]
    assert reason in r.json()["detail"]


@pytest.mark.parametrize(
    "text",
    [_raw(name='"\\ud800"'), _raw(doc_id='"\\udc00x"'), _raw(query_id='"\\ud83d"')],
)
def test_a_lone_surrogate_anywhere_is_a_422(client, text):
    r = client.post("/api/v1/rank", content=text, headers=JSON)
    assert r.status_code == 422
    assert "surrogate" in r.json()["detail"]


def test_a_feedback_id_with_a_lone_surrogate_or_control_character_is_a_422(client):
    for request_id in ('"\\ud800"', '"r\\u0001"'):
        text = '{"request_id":' + request_id + ',"clicks":[]}'
        r = client.post("/api/v1/feedback", content=text, headers=JSON)
        assert r.status_code == 422, r.text
        # parsed like /rank's bodies: the lone surrogate fails the JSON decode, the
        # control character the request_id rule
        detail = r.json()["detail"]
        assert detail.startswith(("body.request_id", "body: JSON decode error")), detail


def test_the_text_rules_hold_for_requests_built_in_python_too():
    with pytest.raises(ValueError, match="unicode string"):
        RankRequest.model_validate(
            {"query_id": "q", "candidates": [{"doc_id": "a", "features": {"\ud800": 1.0}}]}
        )


@pytest.mark.integration
def test_with_the_cache_on_a_hostile_feature_name_is_a_422_not_a_500(store, redis_db):
    with serve(make_settings(store, redis_url=REDIS_URL, cache_enabled=True)) as client:
        for name in ('"\\ud800"', '"f\\u0000"', '"\\udfff\\ud800"'):
            r = client.post("/api/v1/rank", content=_raw(name=name), headers=JSON)
            assert r.status_code == 422, r.text
        ok = client.post("/api/v1/rank", content=_raw(name='"f\\u00fc\\u2603"'), headers=JSON)
        assert ok.status_code == 200, ok.text


# ----------------------------------------------------------------- no internal text to clients
def test_a_feature_store_failure_tells_the_client_a_fixed_sentence_and_logs_the_cause(
    store, caplog
):
    class Broken:
        def read(self, query_id: str, doc_ids: list[str]) -> FeatureReadResult:
            raise ConnectionError(f"Error 111 connecting to {HOST_AND_PORT}. Connection refused.")

    store.serve("vfv")
    with serve(make_settings(store)) as client:
        client.app.state.ltr.readers["vfv"] = Broken()
        r = client.post("/api/v1/rank", json=rank_body(3))
        batch = client.post("/api/v1/batch_rank", json={"requests": [rank_body(3)]})
    assert r.status_code == 503
    assert r.json() == {"detail": "online feature store unavailable: read failed"}
    assert batch.json()["results"][0]["error"] == {
        "status": 503,
        "detail": "online feature store unavailable: read failed",
    }
    for text in (r.text, batch.text):
        assert HOST_AND_PORT not in text and "ConnectionError" not in text
    assert HOST_AND_PORT in caplog.text  # the operator still sees why


def test_a_model_failure_is_a_500_with_a_fixed_sentence(store):
    def broken_score(x: Any) -> Any:
        raise FloatingPointError(f"overflow in kernel at {HOST_AND_PORT}")

    with serve(make_settings(store)) as client:
        client.app.state.ltr.store.snapshot.models["v1"].score = broken_score
        r = client.post("/api/v1/rank", json=rank_body(3))
    assert r.status_code == 500
    assert r.json() == {"detail": "the model failed to score this request"}


def _answer_then_eof(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (or WAIT_S passes)."""
    sock.settimeout(WAIT_S)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_answered_413_and_the_connection_closed_unread(store, chunked):
    settings = make_settings(store, max_body_bytes=4096)
    with LiveServer(settings, http_timeout=WAIT_S) as server:
        with socket.create_connection((LOOPBACK, server.port), timeout=WAIT_S) as sock:
            head = b"POST /api/v1/rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            if chunked:
                chunk = b"x" * 8192
                sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n")
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:  # declares 8 MiB, sends a little: the server must not wait for the rest
                sock.sendall(head + b"content-length: 8388608\r\n\r\n" + b"{" * 1024)
            answer, closed = _answer_then_eof(sock)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"connection: close" in answer.lower()
        assert closed  # not kept alive to drain megabytes nobody will read
        with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
            assert http.post("/api/v1/rank", json=rank_body(3)).status_code == 200


def test_a_large_body_without_content_length_is_411_and_with_it_is_served(store):
    settings = make_settings(store, max_body_bytes=1 << 20, max_streamed_body_bytes=16 * 1024)
    body = json.dumps(rank_body(3)).encode()
    padded = body[:-1] + b"," + b'"top_k": 3' + b" " * (40 * 1024) + b"}"  # valid, 40 KiB
    with LiveServer(settings, http_timeout=WAIT_S) as server:
        with socket.create_connection((LOOPBACK, server.port), timeout=WAIT_S) as sock:
            head = b"POST /api/v1/rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n")
            # chunks up to just past the 16 KiB limit, no further: the server answers and
            # closes at once, and bytes sent after that would reset the connection
            for i in range(0, 24 * 1024, 8192):
                part = padded[i : i + 8192]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            answer, closed = _answer_then_eof(sock)
        assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
        assert b"Content-Length" in answer and closed
        with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:  # declared: served
            r = http.post("/api/v1/rank", content=padded, headers=JSON)
            assert r.status_code == 200, r.text
