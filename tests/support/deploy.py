"""The deployment tests' helpers: the chart rendered by Helm itself (helm-python-sdk, Helm
v4's Go SDK as a shared library, offline), manifests checked against the Kubernetes API
schemas (kubernetes-validate), and the metric names the rank service really exports.

These libraries come with the ``deploy`` extra; they are imported here without a fallback, so
a missing one fails the tests that use it instead of skipping them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ltr-serving"
ALERTS = ROOT / "platform" / "prometheus" / "alerts.yml"
RELEASE = "ltr"
NAMESPACE = "ml"

#: The example value files the chart ships (besides its defaults), by name.
VALUE_FILES = {
    "production": CHART / "ci" / "production-values.yaml",
    "canary": CHART / "ci" / "canary-values.yaml",
}
VALUE_SETS = ("default", *VALUE_FILES)

#: The Kubernetes minor versions the chart supports (README.md, Chart.yaml kubeVersion):
#: every rendered manifest is validated against each one's API schemas.
KUBE_VERSIONS = ("1.31", "1.32", "1.33", "1.34", "1.35", "1.36", "1.37")

#: Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them
#: (they are checked by tests/deploy/test_prometheus_rules.py and by a cluster's API server).
OPERATOR_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})


def values_of(name: str) -> dict[str, Any]:
    """The values of a value set (``default`` is the chart's own values.yaml alone)."""
    if name == "default":
        return {}
    data = yaml.safe_load(VALUE_FILES[name].read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{VALUE_FILES[name]} is not a mapping")
    return data


@dataclass(frozen=True)
class Manifest:
    template: str  # e.g. "templates/deployment.yaml"
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def load_chart(path: Path = CHART) -> helm_python.Chart:
    return helm_python.Chart.load(path)


def render_files(values: dict[str, Any] | None = None, path: Path = CHART) -> dict[str, str]:
    """Template path (relative to the chart) -> rendered text, as ``helm template`` makes it.

    Raises ``helm_python.HelmValuesError`` for values that break values.schema.json and
    ``helm_python.HelmRenderError`` for a template error or a ``fail``.
    """
    chart = load_chart(path)
    try:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    finally:
        chart.close()
    prefix = f"{path.name}/" if path != CHART else f"{CHART.name}/"
    return {k.removeprefix(prefix): v for k, v in rendered.items()}


def render(values: dict[str, Any] | None = None, path: Path = CHART) -> list[Manifest]:
    """Every Kubernetes object the chart renders (NOTES.txt and empty documents left out)."""
    out = []
    for template, text in sorted(render_files(values, path).items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(Manifest(template, doc))
    return out


def kube_problems(doc: dict[str, Any], version: str) -> list[str]:
    """Why ``doc`` does not pass the strict Kubernetes ``version`` API schema (none: it does)."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        return [f"{doc.get('kind')} {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def exported_metrics() -> set[str]:
    """Every series name the rank service's /metrics can carry, read from the registry that
    route serves (``serving.telemetry.create_telemetry``) in the text exposition format."""
    from serving.telemetry import create_telemetry

    text = generate_latest(create_telemetry().registry).decode()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
