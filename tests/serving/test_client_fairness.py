"""Fair shares between clients, on a real server whose feature reads block until released.

A client is its source address; a second client connects from another loopback address
(127.0.0.2, which Linux routes like 127.0.0.1). Steps are released one at a time and the
order in which requests reach the feature reader is what the tests assert.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from support.net import WAIT_S, wait_until
from support.serving import FV_VIEW, LiveServer, Store, make_settings, metric_value, rank_body

from serving.features.redis_reader import FeatureReadResult
from serving.middleware import RequestGate

OTHER_CLIENT = "127.0.0.2"


class SteppedReader:
    """An online store that records each read's query id and waits until that query is
    released (``release(query_id)``), or until ``release_all``."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self._events: dict[str, threading.Event] = {}
        self._all = threading.Event()
        self._lock = threading.Lock()

    def _event(self, query_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(query_id, threading.Event())

    def read(self, query_id: str, doc_ids: list[str]) -> FeatureReadResult:
        with self._lock:
            self.entered.append(query_id)
        event = self._event(query_id)
        deadline = WAIT_S
        while not (event.wait(0.01) or self._all.is_set()) and deadline > 0:
            deadline -= 0.01
        n = len(doc_ids)
        return FeatureReadResult(
            vectors={FV_VIEW: np.full((n, 2), np.nan, dtype=np.float32)},
            found={FV_VIEW: np.zeros(n, dtype=bool)},
            missing=n,
        )

    def release(self, query_id: str) -> None:
        self._event(query_id).set()

    def release_all(self) -> None:
        self._all.set()


@pytest.fixture
def stepped(store: Store) -> Iterator[tuple[LiveServer, SteppedReader, RequestGate]]:
    store.serve("vfv")
    settings = make_settings(
        store, request_workers=2, request_queue=8, request_client_share=4, heavy_body_bytes=2048
    )
    reader = SteppedReader()
    with LiveServer(settings, http_timeout=WAIT_S) as server:
        app = server.server.config.app
        app.state.ltr.readers["vfv"] = reader
        try:
            yield server, reader, app.state.gate
        finally:
            reader.release_all()


def _send(
    url: str, body: dict[str, Any], out: list[tuple[str, httpx.Response]], source: str | None
) -> threading.Thread:
    def run() -> None:
        transport = httpx.HTTPTransport(local_address=source) if source else None
        with httpx.Client(base_url=url, timeout=WAIT_S, transport=transport) as http:
            out.append((body["query_id"], http.post("/api/v1/rank", json=body)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_client_over_its_share_gets_429_and_another_client_is_served_first(stepped):
    server, reader, gate = stepped
    answers: list[tuple[str, httpx.Response]] = []
    threads = [_send(server.url, rank_body(3, query_id="b0"), answers, OTHER_CLIENT)]
    assert wait_until(lambda: reader.entered == ["b0"], timeout=WAIT_S)  # holds a worker

    threads += [
        _send(server.url, rank_body(3, seed=i, query_id=f"a{i}"), answers, None) for i in range(6)
    ]
    # a's first request takes the other worker, three more wait: its share of 4 is full
    # while b is in the gate, so the last two are refused
    assert wait_until(
        lambda: len(reader.entered) == 2 and gate.in_flight == 5 and len(answers) == 2,
        timeout=WAIT_S,
    )
    refused = [r for _, r in answers]
    assert [r.status_code for r in refused] == [429, 429]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert "this client" in refused[0].json()["detail"]

    threads.append(_send(server.url, rank_body(3, query_id="b1"), answers, OTHER_CLIENT))
    assert wait_until(lambda: gate.in_flight == 6, timeout=WAIT_S)  # b1 admitted, waiting
    reader.release("b0")  # b's worker frees: it goes to b1, not to a's older requests
    assert wait_until(lambda: len(reader.entered) == 3, timeout=WAIT_S)
    assert reader.entered[2] == "b1", reader.entered

    reader.release_all()
    for t in threads:
        t.join(timeout=WAIT_S)
    statuses = sorted((q, r.status_code) for q, r in answers)
    assert [s for q, s in statuses if q.startswith("a")].count(200) == 4
    assert [s for q, s in statuses if q.startswith("b")] == [200, 200]
    assert wait_until(lambda: gate.in_flight == 0, timeout=WAIT_S)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, "ltr_requests_total", {"endpoint": "rank", "status": "429"}) == 2
    assert metric_value(text, "ltr_errors_total", {"kind": "client_share"}) == 2


def test_a_client_alone_is_not_held_to_its_share(stepped):
    server, reader, gate = stepped
    answers: list[tuple[str, httpx.Response]] = []
    threads = [
        _send(server.url, rank_body(3, seed=i, query_id=f"a{i}"), answers, None) for i in range(7)
    ]
    assert wait_until(lambda: gate.in_flight == 7 and len(reader.entered) == 2, timeout=WAIT_S)
    assert answers == []  # seven places (share 4): nobody else wanted one
    reader.release_all()
    for t in threads:
        t.join(timeout=WAIT_S)
    assert sorted(r.status_code for _, r in answers) == [200] * 7


def test_large_bodies_never_take_the_last_worker_and_small_ones_still_run(stepped):
    server, reader, gate = stepped
    answers: list[tuple[str, httpx.Response]] = []
    heavy = [rank_body(50, seed=i, query_id=f"h{i}") for i in range(3)]  # the most allowed
    assert all(len(httpx.Request("POST", "/", json=b).content) > 2048 for b in heavy)
    threads = [_send(server.url, b, answers, OTHER_CLIENT) for b in heavy]
    # three admitted, one running: a heavy body may use workers - 1 = 1 worker
    assert wait_until(lambda: gate.in_flight == 3 and len(reader.entered) == 1, timeout=WAIT_S)
    assert gate.fair.waiting_count() == 2 and gate.fair.busy == 1

    threads.append(_send(server.url, rank_body(3, query_id="light"), answers, None))
    assert wait_until(lambda: len(reader.entered) == 2, timeout=WAIT_S)
    assert reader.entered[1] == "light"  # the free worker, at once, past the heavy queue

    reader.release_all()
    for t in threads:
        t.join(timeout=WAIT_S)
    assert sorted(r.status_code for _, r in answers) == [200] * 4
    assert sorted(reader.entered) == ["h0", "h1", "h2", "light"]


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(store: Store):
    store.serve("vfv")
    settings = make_settings(
        store,
        request_workers=2,
        request_queue=8,
        request_client_share=4,
        trusted_proxies="127.0.0.0/8",
    )
    reader = SteppedReader()
    answers: list[tuple[str, httpx.Response]] = []
    with LiveServer(settings, http_timeout=WAIT_S) as server:
        server.server.config.app.state.ltr.readers["vfv"] = reader
        gate = server.server.config.app.state.gate
        try:

            def via_proxy(query: str, client: str) -> threading.Thread:
                def run() -> None:
                    with httpx.Client(base_url=server.url, timeout=WAIT_S) as http:
                        r = http.post(
                            "/api/v1/rank",
                            json=rank_body(3, query_id=query),
                            headers={"X-Forwarded-For": f"{client}, 127.0.0.9"},
                        )
                        answers.append((query, r))

                t = threading.Thread(target=run, daemon=True)
                t.start()
                return t

            threads = [via_proxy("b0", "198.51.100.7")]
            assert wait_until(lambda: gate.in_flight == 1, timeout=WAIT_S)
            threads += [via_proxy(f"a{i}", "203.0.113.5") for i in range(5)]  # same proxy
            assert wait_until(lambda: gate.in_flight == 5 and len(answers) == 1, timeout=WAIT_S)
            assert answers[0][1].status_code == 429  # 203.0.113.5 is over its share
            assert gate.places.by_client == {"203.0.113.5": 4, "198.51.100.7": 1}
        finally:
            reader.release_all()
        for t in threads:
            t.join(timeout=WAIT_S)
    assert sorted(r.status_code for _, r in answers) == [200] * 5 + [429]
