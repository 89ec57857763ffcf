"""The Grafana dashboard and Prometheus alert rules only query metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from support.serving import rank_body

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "platform" / "grafana" / "dashboards" / "ltr-serving.json"
ALERTS = REPO / "platform" / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bltr_[a-z_]+\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _exported_families(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_count", "_sum"))
    return names


def _queried(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def test_every_metric_the_dashboard_and_alerts_query_is_exported(client) -> None:
    assert client.post("/api/v1/rank", json=rank_body()).status_code == 200
    exported = _exported_families(client.get("/metrics").text)
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    queried = _queried(exprs)
    assert queried, "the dashboard queries no ltr_ metric"
    missing = sorted(queried - exported)
    assert missing == [], f"queried but not exported: {missing}"


def test_dashboard_panels_cover_latency_stages_cache_feature_misses_and_errors() -> None:
    dash = json.loads(DASHBOARD.read_text())
    queried = _queried([t["expr"] for p in dash["panels"] for t in p["targets"]])
    for family in (
        "ltr_request_latency_seconds_bucket",
        "ltr_stage_latency_seconds_bucket",
        "ltr_cache_total",
        "ltr_feature_misses_total",
        "ltr_errors_total",
    ):
        assert family in queried, family
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] and dash["title"]
