"""Promotion judged on the whole fleet: three real service processes behind a round-robin
proxy (what a Kubernetes Service does to connections), traffic through the proxy.

The promotion reads every replica directly (``replica_urls``; or the replicas listed by a
Kubernetes Service's EndpointSlices), or a Prometheus that scrapes them (here a stand-in
for Prometheus's query API computed from the replicas' real ``/metrics``, see
``support.prometheus``: no Prometheus binary on this machine).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.fleet import ReplicaFleet, Traffic, with_extra
from support.models import FEATURES, export_promotion_versions, export_tiny_mlp
from support.net import LOOPBACK
from support.prometheus import FakePrometheus
from support.proxy import RoundRobinProxy

from ltr.model_store import serve_single
from ltr.promotion import PromotionPlan, history, kubernetes_replicas, run_promotion

pytestmark = pytest.mark.integration


@dataclass
class Fleet:
    models: Path
    replicas: ReplicaFleet
    proxy: RoundRobinProxy
    traffic: Traffic


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """v1, v2 (healthy), v3 (requires f_extra), v4 and v5 (both require f_extra) in one
    store; three replicas behind a proxy; traffic through the proxy that leaves f_extra out
    of every fourth request."""
    root = tmp_path_factory.mktemp("fleet")
    templates = root / "templates"
    export_promotion_versions(templates)
    export_tiny_mlp(templates, "v4", seed=4, extra_required="f_extra")
    export_tiny_mlp(templates, "v5", seed=5, extra_required="f_extra")
    models = root / "models"
    shutil.copytree(templates / "versions", models / "versions")
    serve_single(models, "v1")
    with (
        ReplicaFleet(models, 3, log_dir=root) as replicas,
        RoundRobinProxy(replicas.backends) as proxy,
        Traffic(proxy.url, with_extra(FEATURES, "f_extra", omit_every=4)) as traffic,
    ):
        yield Fleet(models, replicas, proxy, traffic)


def serving(fleet: Fleet, version: str) -> None:
    """Make ``version`` the production of every replica before a test."""
    serve_single(fleet.models, version)
    fleet.replicas.wait_for_production(version)


def plan(version: str, **sources: Any) -> PromotionPlan:
    return PromotionPlan(
        store_version=version,
        canary_percent=50,
        observe_minutes=4 / 60,
        poll_seconds=0.5,
        min_requests=20,
        max_error_rate=0.05,
        max_p99_ms=1000,  # loaded 2-core CI: these tests are about the mechanism, not speed
        apply_timeout_s=30,
        allow_ungated=True,  # test artifacts carry no retrain gate verdict
        override_reason="promotion fleet test",
        **sources,
    )


def rollout_steps(models: Path, promotion_id: str) -> list[str]:
    return [
        r["step"]
        for r in history(models)
        if r.get("promotion_id") == promotion_id and r["step"] != "override"
    ]


def test_a_bad_canary_is_rolled_back_on_the_sum_of_all_replicas(fleet: Fleet) -> None:
    serving(fleet, "v1")
    before = list(fleet.proxy.connections)
    out = run_promotion(plan("v3", replica_urls=tuple(fleet.replicas.urls)), fleet.models)
    assert out["status"] == "rolled_back", out
    # v3 refuses the requests without f_extra (a quarter); v1 refuses none
    assert out["reason"].startswith("rollback: 4xx rate"), out["reason"]
    assert "exceeds the champion's 0.00%" in out["reason"]
    obs = out["observation"]
    assert obs["source"].startswith("3 replica(s)")
    assert set(obs["replicas"]) == set(fleet.replicas.urls)
    assert set(obs["replicas"].values()) == {obs["routing_version"]}
    assert 0 < obs["client_errors"] < obs["requests"] and obs["errors"] == 0
    assert obs["champion"]["version"] == "v1" and obs["champion"]["client_errors"] == 0
    assert all(now > then for now, then in zip(fleet.proxy.connections, before, strict=True))
    fleet.replicas.wait_for_production("v1")
    assert rollout_steps(fleet.models, out["promotion_id"]) == [
        "deploy",
        "shift",
        "observe",
        "rollback",
    ]


def test_a_good_canary_is_promoted_on_every_replica(fleet: Fleet) -> None:
    serving(fleet, "v1")
    out = run_promotion(plan("v2", replica_urls=tuple(fleet.replicas.urls)), fleet.models)
    assert out["status"] == "promoted", out.get("observation")
    obs = out["observation"]
    assert obs["requests"] >= 20 and obs["errors"] == obs["client_errors"] == 0
    assert obs["latency_source"] == "histogram" and obs["p99_ms"] > 0
    assert obs["champion"]["version"] == "v1" and obs["champion"]["requests"] > 0
    fleet.replicas.wait_for_production("v2")


def test_client_4xx_are_not_the_challengers_errors_and_p99_covers_them(fleet: Fleet) -> None:
    # v4 and v5 both require f_extra: the requests without it are refused by either (the
    # client's fault), so they do not count against v5, but their latency does
    serving(fleet, "v4")
    out = run_promotion(plan("v5", replica_urls=tuple(fleet.replicas.urls)), fleet.models)
    assert out["status"] == "promoted", out.get("observation")
    obs = out["observation"]
    assert obs["client_errors"] > 0 and obs["errors"] == 0
    assert obs["champion"]["client_errors"] > 0
    assert f"{obs['client_errors']} client 4xx not counted" in obs["reason"]
    # the latency histogram the p99 comes from counts every request, refused ones too
    assert obs["latency_requests"] == obs["requests"]
    fleet.replicas.wait_for_production("v5")


def test_prometheus_aggregates_decide_a_bad_then_a_good_canary(fleet: Fleet) -> None:
    serving(fleet, "v1")
    with FakePrometheus(fleet.replicas.urls) as prom:
        bad = run_promotion(plan("v3", prometheus_url=prom.url), fleet.models)
        fleet.replicas.wait_for_production("v1")
        good = run_promotion(plan("v2", prometheus_url=prom.url), fleet.models)
    assert bad["status"] == "rolled_back", bad
    assert bad["reason"].startswith("rollback: 4xx rate"), bad["observation"]
    assert bad["observation"]["source"] == f"Prometheus {prom.url}"
    assert good["status"] == "promoted", good.get("observation")
    obs = good["observation"]
    assert obs["requests"] >= 20 and obs["errors"] == 0
    assert obs["latency_source"] == "histogram" and obs["p99_ms"] > 0
    assert len(obs["replicas"]) == 3  # ltr_routing_version of each scraped instance
    assert any(
        q.startswith("histogram_quantile(0.99, sum by (model_version, le)") for q in prom.queries
    )
    fleet.replicas.wait_for_production("v2")


def test_the_replicas_of_a_kubernetes_service_come_from_its_ready_endpoint_slices(
    fleet: Fleet,
) -> None:
    ports = [port for _, port in fleet.replicas.backends]
    slices = {
        "kind": "EndpointSliceList",
        "items": [
            {
                "ports": [{"name": "http", "port": port}],
                "endpoints": [
                    {"addresses": [LOOPBACK], "conditions": {"ready": True}},
                    {"addresses": ["10.0.0.9"], "conditions": {"ready": False}},
                ],
            }
            for port in ports
        ],
    }
    asked: list[str] = []

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(slices).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        urls = kubernetes_replicas(
            "ltr/ltr-serving", api_url=f"http://{LOOPBACK}:{server.server_port}", token="t"
        )
    finally:
        server.shutdown()
        server.server_close()
    assert urls == sorted(fleet.replicas.urls)
    assert asked == [
        "/apis/discovery.k8s.io/v1/namespaces/ltr/endpointslices"
        "?labelSelector=kubernetes.io%2Fservice-name%3Dltr-serving"
    ]
