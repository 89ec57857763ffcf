"""Schema checks of the Helm chart ``charts/ltr-serving`` without a Helm binary.

The chart is rendered by a small renderer written here for exactly the Go-template subset the
chart uses (documented in ``charts/ltr-serving/README.md``); anything outside the subset is an
error, so a template that drifts from it fails here instead of rendering wrongly. Each
rendered document is parsed as YAML and checked. Every check returns a list of problems and
is shown to fail on a broken example in the same test.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ltr-serving"
SERVING_DOCKERFILE = ROOT / "platform" / "docker" / "serving.Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|REDIS_URL", re.IGNORECASE)


# --- the renderer -------------------------------------------------------------------------


class TemplateError(Exception):
    pass


_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)


@dataclass
class _If:
    negate: bool
    path: str
    then: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)
    in_else: bool = False


@dataclass
class _Define:
    name: str
    body: list[Any] = field(default_factory=list)


def _tokens(source: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) tokens, with ``{{-`` / ``-}}`` trimming applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = source[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(source: str) -> list[Any]:
    root: list[Any] = []
    stack: list[Any] = []

    def body() -> list[Any]:
        if not stack:
            return root
        top = stack[-1]
        if isinstance(top, _Define):
            return top.body
        return top.otherwise if top.in_else else top.then

    for kind, value in _tokens(source):
        if kind == "text":
            if value:
                body().append(value)
            continue
        if value.startswith("/*") and value.endswith("*/"):
            continue
        words = value.split()
        if words[0] == "if":
            negate = len(words) == 3 and words[1] == "not"
            if len(words) != (3 if negate else 2) or not words[-1].startswith("."):
                raise TemplateError(f"unsupported condition: {value!r}")
            node = _If(negate=negate, path=words[-1])
            body().append(node)
            stack.append(node)
        elif words == ["else"]:
            if not stack or not isinstance(stack[-1], _If) or stack[-1].in_else:
                raise TemplateError("else without if")
            stack[-1].in_else = True
        elif words[0] == "define":
            if stack:
                raise TemplateError("define must be at the top level")
            node = _Define(name=json.loads(words[1]))
            root.append(node)
            stack.append(node)
        elif words == ["end"]:
            if not stack:
                raise TemplateError("end without a block")
            stack.pop()
        elif words[0] in {"range", "with", "template", "tpl", "block"}:
            raise TemplateError(f"outside the supported subset: {value!r}")
        else:
            body().append(("expr", value))
    if stack:
        raise TemplateError("unclosed block")
    return root


_MISSING = object()


def _lookup(ctx: dict[str, Any], path: str) -> Any:
    if path == ".":
        return ctx
    value: Any = ctx
    for part in path.lstrip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _truthy(value: Any) -> bool:
    return value is not _MISSING and value is not None and bool(value)


def _go_str(value: Any) -> str:
    if value is _MISSING:
        raise TemplateError("missing value")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise TemplateError(f"a map or list rendered as text: {value!r}")
    return str(value)


class Renderer:
    def __init__(self, chart_dir: Path, values: dict[str, Any], release: str = "ltr") -> None:
        meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        self.ctx = {
            "Values": values,
            "Release": {"Name": release, "Namespace": "default", "Service": "Helm"},
            "Chart": {
                "Name": meta["name"],
                "Version": meta["version"],
                "AppVersion": meta["appVersion"],
            },
        }
        self.defines: dict[str, list[Any]] = {}
        self.templates: dict[str, list[Any]] = {}
        for path in sorted((chart_dir / "templates").iterdir()):
            nodes = _parse(path.read_text())
            for node in nodes:
                if isinstance(node, _Define):
                    self.defines[node.name] = node.body
            self.templates[path.name] = nodes

    def render(self, name: str) -> str:
        return self._nodes(self.templates[name])

    def render_source(self, source: str) -> str:
        return self._nodes(_parse(source))

    def _nodes(self, nodes: list[Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Define):
                continue
            elif isinstance(node, _If):
                cond = _truthy(_lookup(self.ctx, node.path)) != node.negate
                out.append(self._nodes(node.then if cond else node.otherwise))
            else:
                out.append(_go_str(self._pipeline(node[1])))
        return "".join(out)

    def _arg(self, word: str) -> Any:
        if word.startswith('"'):
            return json.loads(word)
        if word.startswith("."):
            return _lookup(self.ctx, word)
        if word.isdigit():
            return int(word)
        raise TemplateError(f"unsupported argument: {word!r}")

    def _pipeline(self, expr: str) -> Any:
        stages = [shlex.split(s, posix=False) for s in expr.split("|")]
        first, *rest = stages
        if first[0] == "include":
            if len(first) != 3 or first[2] != ".":
                raise TemplateError(f"unsupported include: {expr!r}")
            name = json.loads(first[1])
            if name not in self.defines:
                raise TemplateError(f"no such define: {name}")
            value: Any = self._nodes(self.defines[name])
        elif first[0] == "toYaml":
            if len(first) != 2:
                raise TemplateError(f"unsupported toYaml: {expr!r}")
            data = self._arg(first[1])
            if data is _MISSING:
                raise TemplateError(f"missing value: {first[1]}")
            value = yaml.safe_dump(data, default_flow_style=False, sort_keys=True).rstrip("\n")
        elif len(first) == 1:
            value = self._arg(first[0])
        else:
            raise TemplateError(f"outside the supported subset: {expr!r}")
        for stage in rest:
            match stage:
                case ["quote"]:
                    value = json.dumps(_go_str(value))
                case ["default", arg]:
                    value = value if _truthy(value) else self._arg(arg)
                case ["nindent", n] if n.isdigit():
                    pad = " " * int(n)
                    value = "\n" + "\n".join(pad + line for line in _go_str(value).split("\n"))
                case _:
                    raise TemplateError(f"unsupported function: {' '.join(stage)!r}")
        if value is _MISSING:
            raise TemplateError(f"missing value in {expr!r}")
        return value


def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def with_set(values: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``--set a.b=c`` with ``a__b=c``."""
    out = copy.deepcopy(values)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def render_chart(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Rendered manifests by kind (each kind appears at most once in this chart)."""
    renderer = Renderer(CHART, default_values() if values is None else values)
    docs: dict[str, dict[str, Any]] = {}
    for name in renderer.templates:
        if name.startswith("_") or not name.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(renderer.render(name)):
            if doc is None:
                continue
            if doc["kind"] in docs:
                raise TemplateError(f"two documents of kind {doc['kind']}")
            docs[doc["kind"]] = doc
    return docs


# --- checks -------------------------------------------------------------------------------


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port_number(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def _exposed_port() -> int:
    for line in SERVING_DOCKERFILE.read_text().splitlines():
        if line.startswith("EXPOSE "):
            return int(line.split()[1])
    raise AssertionError("serving.Dockerfile has no EXPOSE")


def deployment_problems(deployment: dict[str, Any], expected_port: int) -> list[str]:
    problems: list[str] = []
    container = _container(deployment)
    ports = [p["containerPort"] for p in container.get("ports", [])]
    if ports != [expected_port]:
        problems.append(f"container ports {ports}, the image listens on {expected_port}")
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path:
            problems.append(f"{probe} path {get.get('path')!r}, expected {path}")
        if _port_number(container, get.get("port", "")) != expected_port:
            problems.append(f"{probe} port {get.get('port')!r} is not {expected_port}")
    resources = container.get("resources") or {}
    for part in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(resources.get(part) or {}):
            problems.append(f"resources.{part} needs cpu and memory")
    for env in container.get("env", []):
        if SECRET_NAME.search(env["name"]):
            if "value" in env:
                problems.append(f"{env['name']} has a literal value")
            elif "secretKeyRef" not in env.get("valueFrom", {}):
                problems.append(f"{env['name']} does not come from a secretKeyRef")
    names = {env["name"] for env in container.get("env", [])}
    for required in ("LTR_API_KEY", "LTR_REDIS_URL"):
        if required not in names:
            problems.append(f"{required} not set")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append("the selector does not match the pod labels")
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"] for m in container.get("volumeMounts", [])}
    for volume in pod.get("volumes", []):
        sources = set(volume) - {"name"}
        if len(sources) != 1:
            problems.append(f"volume {volume['name']} has sources {sorted(sources)}")
        if volume["name"] not in mounts:
            problems.append(f"volume {volume['name']} is not mounted")
    return problems


def service_problems(service: dict[str, Any], deployment: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    container = _container(deployment)
    for port in service["spec"]["ports"]:
        if _port_number(container, port["targetPort"]) is None:
            problems.append(f"targetPort {port['targetPort']!r} is not a container port")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append("the Service selector does not match the pods")
    notes = service["metadata"].get("annotations") or {}
    if notes.get("prometheus.io/scrape") != "true":
        problems.append("no prometheus.io/scrape annotation")
    if _port_number(container, int(notes.get("prometheus.io/port", 0))) not in {
        p["containerPort"] for p in container["ports"]
    }:
        problems.append("prometheus.io/port is not the container port")
    return problems


def hpa_problems(hpa: dict[str, Any], deployment: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if hpa["apiVersion"] != "autoscaling/v2":
        problems.append(f"apiVersion {hpa['apiVersion']}")
    target = hpa["spec"]["scaleTargetRef"]
    if (target.get("kind"), target.get("name")) != ("Deployment", deployment["metadata"]["name"]):
        problems.append(f"scaleTargetRef {target} is not the Deployment")
    low, high = hpa["spec"].get("minReplicas"), hpa["spec"].get("maxReplicas")
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
        problems.append(f"minReplicas {low} / maxReplicas {high}")
    cpu = [
        m
        for m in hpa["spec"].get("metrics", [])
        if m.get("resource", {}).get("name") == "cpu"
        and m["resource"].get("target", {}).get("type") == "Utilization"
    ]
    if not cpu:
        problems.append("no CPU utilisation target")
    return problems


# --- tests: the renderer ------------------------------------------------------------------


def test_renderer_supports_the_subset_and_refuses_the_rest() -> None:
    r = Renderer(CHART, {"a": {"b": 3, "on": True, "off": False, "m": {"k": "v"}}})
    assert r.render_source("x: {{ .Values.a.b }}") == "x: 3"
    assert r.render_source("x: {{ .Values.a.on }}") == "x: true"
    assert r.render_source('x: {{ .Values.nope | default "d" | quote }}') == 'x: "d"'
    assert r.render_source("a:\n  {{- if .Values.a.off }}\n  y: 1\n  {{- end }}\n") == "a:\n"
    assert r.render_source("{{- if not .Values.a.off }}t{{- else }}f{{- end }}") == "t"
    assert r.render_source("m:\n  {{- toYaml .Values.a.m | nindent 2 }}") == "m:\n  k: v"
    assert r.render_source('{{ include "ltr-serving.fullname" . }}') == "ltr-ltr-serving"
    for outside in (
        "{{ .Values.missing }}",
        "{{ .Values.a.m }}",
        "{{ .Values.a.b | upper }}",
        "{{ range .Values.a }}{{ end }}",
        '{{ include "nope" . }}',
        "{{ if .Values.a.on }}",
    ):
        with pytest.raises(TemplateError):
            r.render_source(outside)


# --- tests: the chart ---------------------------------------------------------------------


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == CHART.name
    for key in ("version", "appVersion"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(meta[key])), key


def test_values_hold_no_secret_values() -> None:
    values = default_values()
    literal = [e["name"] for e in values.get("env", []) if SECRET_NAME.search(e["name"])]
    assert literal == []
    assert values["secrets"]["existingSecret"]


def test_deployment_probes_ports_resources_and_secret_refs() -> None:
    docs = render_chart()
    port = _exposed_port()
    assert deployment_problems(docs["Deployment"], port) == []
    container = _container(docs["Deployment"])
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "LTR_API_KEY": "ltr-serving",
        "LTR_REDIS_URL": "ltr-serving",
        "LTR_REQUEST_ID_SECRET": "ltr-serving",
    }
    assert container["image"] == "ghcr.io/example/ltr-serving:0.1.0"
    claim = docs["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert claim["persistentVolumeClaim"] == {"claimName": "ltr-model-store", "readOnly": True}

    broken = copy.deepcopy(docs["Deployment"])
    bad = _container(broken)
    bad["readinessProbe"]["httpGet"]["path"] = "/health"
    bad["livenessProbe"]["httpGet"]["port"] = 9000
    bad["env"].append({"name": "LTR_ADMIN_TOKEN", "value": "literal"})
    del bad["resources"]["limits"]
    assert len(deployment_problems(broken, port)) == 4
    assert deployment_problems(docs["Deployment"], port + 1)


def test_literal_secret_in_values_env_is_caught() -> None:
    values = default_values()
    values["env"].append({"name": "LTR_API_KEY", "value": "x" * 20})
    problems = deployment_problems(render_chart(values)["Deployment"], _exposed_port())
    assert problems == ["LTR_API_KEY has a literal value"]


def test_service_targets_the_container_port_and_is_scraped() -> None:
    docs = render_chart()
    service = docs["Service"]
    assert service["spec"]["ports"][0]["port"] == _exposed_port()
    assert service_problems(service, docs["Deployment"]) == []

    broken = copy.deepcopy(service)
    broken["spec"]["ports"][0]["targetPort"] = "metrics"
    broken["spec"]["selector"] = {"app.kubernetes.io/name": "other"}
    broken["metadata"]["annotations"] = {}
    assert len(service_problems(broken, docs["Deployment"])) == 4


def test_hpa_scales_the_deployment() -> None:
    docs = render_chart()
    assert hpa_problems(docs["HorizontalPodAutoscaler"], docs["Deployment"]) == []
    # the HPA owns the replica count while it is enabled
    assert "replicas" not in docs["Deployment"]["spec"]

    inverted = with_set(default_values(), autoscaling__minReplicas=5, autoscaling__maxReplicas=2)
    docs = render_chart(inverted)
    assert hpa_problems(docs["HorizontalPodAutoscaler"], docs["Deployment"]) == [
        "minReplicas 5 / maxReplicas 2"
    ]
    other = copy.deepcopy(docs["HorizontalPodAutoscaler"])
    other["apiVersion"] = "autoscaling/v1"
    other["spec"]["scaleTargetRef"]["name"] = "other"
    other["spec"]["metrics"] = []
    assert len(hpa_problems(other, docs["Deployment"])) == 4


def test_autoscaling_disabled_renders_no_hpa() -> None:
    values = with_set(default_values(), autoscaling__enabled=False, replicaCount=3)
    docs = render_chart(values)
    assert set(docs) == {"Deployment", "Service"}
    assert docs["Deployment"]["spec"]["replicas"] == 3
    assert deployment_problems(docs["Deployment"], _exposed_port()) == []


def test_init_container_model_store() -> None:
    values = with_set(default_values(), modelStore__initContainer__enabled=True)
    deployment = render_chart(values)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "model-store", "emptyDir": {}}]
    (init,) = pod["initContainers"]
    assert init["volumeMounts"][0]["mountPath"] == values["modelStore"]["mountPath"]
    assert deployment_problems(deployment, _exposed_port()) == []


def test_notes_render() -> None:
    notes = Renderer(CHART, default_values()).render("NOTES.txt")
    assert "ltr-ltr-serving" in notes and '"ltr-serving"' in notes
