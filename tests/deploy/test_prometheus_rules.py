"""Prometheus alert rules (``platform/prometheus/alerts.yml``, which the chart's PrometheusRule
reuses) and the prometheus-adapter rules behind the HPA's request-rate metric.

What ``promtool check rules`` checks, without promtool: the rule file's structure and every
expression parsed by promql-parser (a port of Prometheus' own PromQL parser). Then what
promtool cannot know: every metric an expression reads is one the rank service exports, read
from the registry its /metrics route serves. Each check is shown to fail on a broken example.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import promql_parser
import pytest
import yaml
from support.deploy import ALERTS, CHART, exported_metrics, render, values_of

ADAPTER_RULES = CHART / "files" / "prometheus-adapter-rules.yaml"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
# prometheus-adapter's query templates, filled with what the adapter would put there
ADAPTER_FILL = {
    "<<.Series>>": "ltr_requests_total",
    "<<.LabelMatchers>>": 'namespace="ml",pod=~"ltr-.*"',
    "<<.GroupBy>>": "pod",
}


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    data = yaml.safe_load(ALERTS.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def exported() -> set[str]:
    names = exported_metrics()
    assert "ltr_requests_total" in names  # the registry was read
    return names


def selectors(expr: str) -> set[str]:
    """Metric names an expression selects (parsing it: raises ValueError when it does not)."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def rule_file_problems(data: dict[str, Any]) -> list[str]:
    """The checks of ``promtool check rules``: structure, unique names, durations, PromQL."""
    problems: list[str] = []
    groups = data.get("groups")
    if not isinstance(groups, list) or not groups:
        return ["no groups"]
    seen_groups: set[str] = set()
    for group in groups:
        name = group.get("name")
        if not name:
            problems.append("a group without a name")
        elif name in seen_groups:
            problems.append(f"group {name}: defined twice")
        seen_groups.add(name)
        if "interval" in group and not DURATION.match(str(group["interval"])):
            problems.append(f"group {name}: interval {group['interval']!r}")
        for i, rule in enumerate(group.get("rules") or []):
            where = f"group {name} rule {i} ({rule.get('alert') or rule.get('record')})"
            if ("alert" in rule) == ("record" in rule):
                problems.append(f"{where}: needs exactly one of alert, record")
            if unknown := set(rule) - RULE_KEYS:
                problems.append(f"{where}: unknown keys {sorted(unknown)}")
            if "record" in rule and ({"for", "annotations"} & set(rule)):
                problems.append(f"{where}: a recording rule has no for/annotations")
            for key in ("for", "keep_firing_for"):
                if key in rule and not DURATION.match(str(rule[key])):
                    problems.append(f"{where}: {key} {rule[key]!r} is not a duration")
            for key in ("labels", "annotations"):
                if not all(isinstance(v, str) for v in (rule.get(key) or {}).values()):
                    problems.append(f"{where}: {key} values must be strings")
            try:
                selectors(str(rule.get("expr", "")))
            except ValueError as exc:
                problems.append(f"{where}: expr does not parse: {exc}")
    return problems


def metric_problems(exprs: list[str], exported: set[str]) -> list[str]:
    return [
        f"{name} is queried but the service does not export it"
        for expr in exprs
        for name in sorted(selectors(expr))
        if name.startswith("ltr_") and name not in exported
    ]


def _exprs(data: dict[str, Any]) -> list[str]:
    return [r["expr"] for g in data["groups"] for r in g["rules"]]


def test_alert_rules_parse_like_promtool_would(rules: dict[str, Any]) -> None:
    assert rule_file_problems(rules) == []
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == len(set(alerts)), "alert names repeat"
    assert {"RankLatencyP99High", "RankErrorRateHigh"} <= set(alerts)


def test_rule_checks_fail_on_a_broken_rule_file(rules: dict[str, Any]) -> None:
    broken = copy.deepcopy(rules)
    first = broken["groups"][0]["rules"]
    first[0]["expr"] = "sum(rate(ltr_requests_total[5m])"  # unclosed parenthesis
    first[1]["for"] = "five minutes"
    first[1]["record"] = "ltr:x"
    first[2]["labels"] = {"severity": 3}
    broken["groups"].append(copy.deepcopy(broken["groups"][0]))
    problems = rule_file_problems(broken)
    assert any("does not parse" in p for p in problems)
    assert any("is not a duration" in p for p in problems)
    assert any("exactly one of alert, record" in p for p in problems)
    assert any("values must be strings" in p for p in problems)
    assert any("defined twice" in p for p in problems)
    assert rule_file_problems({"groups": []}) == ["no groups"]


def test_every_metric_the_rules_query_is_exported(
    rules: dict[str, Any], exported: set[str]
) -> None:
    queried = set().union(*(selectors(e) for e in _exprs(rules)))
    assert queried, "the rules query no metric"
    assert metric_problems(_exprs(rules), exported) == []
    broken = [*_exprs(rules), "rate(ltr_requests_totl[5m]) > 1"]
    assert metric_problems(broken, exported) == [
        "ltr_requests_totl is queried but the service does not export it"
    ]


def test_the_chart_prometheusrule_carries_the_same_rules(rules: dict[str, Any]) -> None:
    (rule,) = [m.doc for m in render(values_of("production")) if m.kind == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == rules["groups"]
    assert (CHART / "files" / "alerts.yml").resolve() == ALERTS.resolve()


def servicemonitor_problems(monitor: dict[str, Any], service: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    selector = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"]["labels"]
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append("the selector does not match the Service's labels")
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint.get("port") not in ports:
            problems.append(f"endpoint port {endpoint.get('port')!r} is not a Service port")
        if endpoint.get("path") != "/metrics":
            problems.append(f"endpoint path {endpoint.get('path')!r} is not /metrics")
        for key in ("interval", "scrapeTimeout"):
            if not DURATION.match(str(endpoint.get(key, ""))):
                problems.append(f"endpoint {key} {endpoint.get(key)!r} is not a duration")
    if monitor["spec"].get("namespaceSelector", {}).get("matchNames") != [
        service["metadata"].get("namespace", "ml")
    ]:
        problems.append("the namespaceSelector is not the release namespace")
    return problems


def test_the_chart_servicemonitor_scrapes_the_service_port() -> None:
    manifests = render(values_of("production"))
    (monitor,) = [m.doc for m in manifests if m.kind == "ServiceMonitor"]
    (service,) = [m.doc for m in manifests if m.kind == "Service"]
    assert servicemonitor_problems(monitor, service) == []
    assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/track"]

    broken = copy.deepcopy(monitor)
    broken["spec"]["selector"]["matchLabels"] = {}
    broken["spec"]["endpoints"][0].update(port="metrics", path="/", interval="15")
    broken["spec"]["namespaceSelector"] = {"any": True}
    assert len(servicemonitor_problems(broken, service)) == 5


def adapter_problems(data: dict[str, Any], metric_name: str, exported: set[str]) -> list[str]:
    problems: list[str] = []
    served = []
    for rule in data["rules"]["custom"]:
        series = rule["seriesQuery"]
        query = rule["metricsQuery"]
        for key, value in ADAPTER_FILL.items():
            query = query.replace(key, value)
        try:
            problems += metric_problems([series, query], exported)
        except ValueError as exc:
            problems.append(f"adapter query does not parse: {exc}")
            continue
        overrides = rule.get("resources", {}).get("overrides", {})
        if {"namespace", "pod"} - set(overrides):
            problems.append("the rule does not map namespace and pod (an HPA Pods metric)")
        (name,) = selectors(series)
        if not re.search(rule["name"]["matches"], name):
            problems.append(f"name.matches does not match {name}")
        served.append(rule["name"]["as"])
    if metric_name not in served:
        problems.append(f"the HPA reads {metric_name}, the adapter serves {served}")
    return problems


def test_prometheus_adapter_serves_the_hpa_request_rate(exported: set[str]) -> None:
    data = yaml.safe_load(ADAPTER_RULES.read_text())
    (hpa,) = [m.doc for m in render(values_of("production")) if m.kind == "HorizontalPodAutoscaler"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods["metric"]["name"]
    assert adapter_problems(data, name, exported) == []

    broken = copy.deepcopy(data)
    rule = broken["rules"]["custom"][0]
    rule["seriesQuery"] = 'ltr_rank_total{namespace!=""}'
    rule["resources"]["overrides"].pop("pod")
    assert len(adapter_problems(broken, "other_metric", exported)) == 4
    rule["metricsQuery"] = "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m]) by (<<.GroupBy>>)"
    assert "does not parse" in adapter_problems(broken, name, exported)[0]
