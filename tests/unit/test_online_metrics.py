"""Service-side figures of the online metrics: quantiles from Prometheus histograms, the
service's /metrics text, and Prometheus' query API (answers recorded in its JSON format)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ltr.online.metrics import (
    attach_service_figures,
    histogram_quantile,
    prometheus_counters,
    service_latency,
)


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # 10 observations <= 1 ms, 30 <= 2 ms, 40 <= 5 ms, 40 in total (+Inf)
    buckets = [(0.001, 10), (0.002, 30), (0.005, 40), (float("inf"), 40)]
    # rank 20 of 40: in (1 ms, 2 ms], 10 of the bucket's 20 -> halfway
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.0015)
    # rank 39.6: in (2 ms, 5 ms], 9.6 of 10 -> 2 + 0.96 * 3 ms
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.002 + 0.96 * 0.003)
    # the +Inf bucket answers the highest finite bound
    assert histogram_quantile([(0.001, 1), (float("inf"), 10)], 0.99) == 0.001
    assert histogram_quantile([], 0.5) is None
    assert histogram_quantile([(0.001, 0), (float("inf"), 0)], 0.5) is None


def test_service_latency_reads_the_rank_histogram_per_version_and_variant() -> None:
    reg = CollectorRegistry()
    h = Histogram(
        "ltr_request_latency_seconds",
        "x",
        ["endpoint", "model_version", "variant"],
        buckets=(0.001, 0.002, 0.005),
        registry=reg,
    )
    for v in [0.0005] * 10 + [0.0015] * 20 + [0.004] * 10:
        h.labels("rank", "v1", "production").observe(v)
    h.labels("batch_rank", "v1", "production").observe(1.0)  # another endpoint: ignored
    h.labels("rank", "v2", "canary").observe(0.0001)
    out = service_latency(generate_latest(reg).decode())
    assert set(out) == {("v1", "production"), ("v2", "canary")}
    assert out[("v1", "production")]["latency_p50_ms"] == pytest.approx(1.5)
    assert out[("v1", "production")]["latency_p99_ms"] == pytest.approx(2.0 + 0.96 * 3.0)


class _Prometheus(BaseHTTPRequestHandler):
    queries: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        self.queries.append(query)
        q = "0.5" if "histogram_quantile(0.5," in query else "0.99"
        body = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {
                        "metric": {"model_version": "v1", "variant": "production"},
                        "value": [1764288000.0, "0.002" if q == "0.5" else "0.009"],
                    },
                    {
                        "metric": {"model_version": "v2", "variant": "canary"},
                        "value": [1764288000.0, "NaN"],
                    },
                ],
            },
        }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_prometheus_figures_aggregate_every_replica_by_version_and_variant() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        figures = prometheus_counters(f"http://127.0.0.1:{server.server_port}", window="7d")
    finally:
        server.shutdown()
    assert all("sum by (le, model_version, variant)" in q for q in _Prometheus.queries)
    assert all('endpoint="rank"' in q and "[7d]" in q for q in _Prometheus.queries)
    assert figures["latency"][("v1", "production")] == {
        "latency_p50_ms": 2.0,
        "latency_p99_ms": 9.0,
    }
    assert figures["latency"][("v2", "canary")]["latency_p99_ms"] is None  # NaN: no requests
    rows = attach_service_figures(
        [{"model_version": "v1", "variant": "production", "impressions": 3}], figures
    )
    assert rows[0]["latency_p99_ms"] == 9.0 and rows[0]["error_rate"] is None
