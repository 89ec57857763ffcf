"""The Helm chart ``charts/ltr-serving``, rendered and linted by Helm itself.

helm-python-sdk runs Helm v4's Go SDK in-process (offline, no cluster): ``Chart.render`` is
``helm template`` and applies values.schema.json, ``lint`` is ``helm lint``. Every object it
renders, for the default, production and canary values, is validated against the strict API
schemas of every supported Kubernetes version (kubernetes-validate), then checked for what
schemas cannot see (probes on the image's port, selectors that match, security settings).
Each check returns a list of problems and is shown to fail on a broken example.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate.utils as utils
import pytest
import yaml
from support.deploy import (
    CHART,
    KUBE_VERSIONS,
    OPERATOR_KINDS,
    RELEASE,
    ROOT,
    VALUE_SETS,
    Manifest,
    kube_problems,
    render,
    render_files,
    values_of,
)

from serving.routing import RoutingConfig, RoutingConfigError

SERVING_DOCKERFILE = ROOT / "platform" / "docker" / "serving.Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|REDIS_URL", re.IGNORECASE)
TRACK = "app.kubernetes.io/track"


# --- helpers ------------------------------------------------------------------------------


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _by_kind(manifests: list[Manifest]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for m in manifests:
        out.setdefault(m.kind, []).append(m.doc)
    return out


def _one(manifests: list[Manifest], kind: str, name_suffix: str = "") -> dict[str, Any]:
    (doc,) = [m.doc for m in manifests if m.kind == kind and m.name.endswith(name_suffix)]
    return doc


def _stable(manifests: list[Manifest]) -> dict[str, Any]:
    (doc,) = [
        m.doc
        for m in manifests
        if m.kind == "Deployment" and m.doc["spec"]["selector"]["matchLabels"][TRACK] == "stable"
    ]
    return doc


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port_number(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


def _exposed_port() -> int:
    for line in SERVING_DOCKERFILE.read_text().splitlines():
        if line.startswith("EXPOSE "):
            return int(line.split()[1])
    raise AssertionError("serving.Dockerfile has no EXPOSE")


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


# --- checks -------------------------------------------------------------------------------


def deployment_problems(deployment: dict[str, Any], expected_port: int) -> list[str]:
    """Ports, probes, resources, secrets and volumes of a Deployment of the rank service."""
    problems: list[str] = []
    container = _container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    ports = [p["containerPort"] for p in container.get("ports", [])]
    if ports != [expected_port]:
        problems.append(f"container ports {ports}, the image listens on {expected_port}")
    for probe, path in (
        ("startupProbe", "/health"),
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/health"),
    ):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path:
            problems.append(f"{probe} path {get.get('path')!r}, expected {path}")
        if _port_number(container, get.get("port", "")) != expected_port:
            problems.append(f"{probe} port {get.get('port')!r} is not {expected_port}")
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not isinstance(sleep, int) or not 0 < sleep < grace:
        problems.append(f"preStop sleep {sleep!r} is not between 0 and the grace period {grace}")
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
    for required in ("LTR_API_KEY", "LTR_REDIS_URL", "LTR_REQUEST_ID_SECRET", "LTR_MODEL_STORE"):
        if required not in names:
            problems.append(f"{required} not set")
    if not _matches(deployment["spec"]["selector"]["matchLabels"], _pod_labels(deployment)):
        problems.append("the selector does not match the pod labels")
    mounts = {m["name"] for m in container.get("volumeMounts", [])}
    for init in pod.get("initContainers", []):
        mounts |= {m["name"] for m in init.get("volumeMounts", [])}
    for volume in pod.get("volumes", []):
        sources = set(volume) - {"name"}
        if len(sources) != 1:
            problems.append(f"volume {volume['name']} has sources {sorted(sources)}")
        if volume["name"] not in mounts:
            problems.append(f"volume {volume['name']} is not mounted")
    return problems


def security_problems(deployment: dict[str, Any]) -> list[str]:
    """The restricted Pod Security Standard and then some: non-root, seccomp RuntimeDefault,
    read-only root filesystem (with a writable /tmp), no capabilities, no API token."""
    problems: list[str] = []
    pod = deployment["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
        problems.append("pod: runAsNonRoot with a non-zero runAsUser")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod: seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("pod: the service account token is mounted")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext") or {}
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: root filesystem is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: privilege escalation allowed")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            problems.append(f"{c['name']}: capabilities not dropped")
        if sc.get("privileged") or sc.get("runAsUser") == 0:
            problems.append(f"{c['name']}: privileged or root")
    tmp = [m for m in _container(deployment).get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    if not tmp:
        problems.append("no writable /tmp under a read-only root filesystem")
    return problems


def spread_problems(deployment: dict[str, Any]) -> list[str]:
    """Topology spread over zones and nodes, each constraint selecting this Deployment's pods."""
    problems: list[str] = []
    constraints = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
    keys = {c["topologyKey"] for c in constraints}
    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
        if key not in keys:
            problems.append(f"no spread over {key}")
    for c in constraints:
        if not _matches(c.get("labelSelector", {}).get("matchLabels", {}), _pod_labels(deployment)):
            problems.append(f"spread over {c['topologyKey']} does not select the pods")
    return problems


def service_problems(service: dict[str, Any], deployments: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    for deployment in deployments:
        container = _container(deployment)
        name = deployment["metadata"]["name"]
        for port in service["spec"]["ports"]:
            if _port_number(container, port["targetPort"]) is None:
                problems.append(f"targetPort {port['targetPort']!r} is not a port of {name}")
        if not _matches(service["spec"]["selector"], _pod_labels(deployment)):
            problems.append(f"the Service selector does not match the pods of {name}")
    return problems


def pdb_problems(pdb: dict[str, Any], deployments: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    spec = pdb["spec"]
    if ("minAvailable" in spec) == ("maxUnavailable" in spec):
        problems.append("a PodDisruptionBudget needs exactly one of minAvailable, maxUnavailable")
    if spec.get("maxUnavailable") == 0 or spec.get("minAvailable") == "100%":
        problems.append("the budget allows no disruption: node drains would hang")
    for deployment in deployments:
        if not _matches(spec["selector"]["matchLabels"], _pod_labels(deployment)):
            problems.append(f"the budget does not cover {deployment['metadata']['name']}")
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
    if "replicas" in deployment["spec"]:
        problems.append("the Deployment sets replicas while the HPA owns them")
    return problems


def routing_problems(manifests: list[Manifest], tmp: Path) -> list[str]:
    """The routing ConfigMap holds a routing.json the service's own parser accepts, mounted
    where the service reads it, with the model store's versions/ below it."""
    problems: list[str] = []
    (configmap,) = [m.doc for m in manifests if m.kind == "ConfigMap"]
    text = configmap["data"]["routing.json"]
    for deployment in [m.doc for m in manifests if m.kind == "Deployment"]:
        container = _container(deployment)
        env = {e["name"]: e.get("value") for e in container["env"]}
        store = env["LTR_MODEL_STORE"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        at_store = mounts.get(store)
        if (
            at_store is None
            or volumes[at_store["name"]].get("configMap", {}).get("name")
            != (configmap["metadata"]["name"])
        ):
            problems.append(f"{deployment['metadata']['name']}: routing not mounted at {store}")
        versions = mounts.get(f"{store}/versions")
        if versions is None or versions.get("subPath") != "versions":
            problems.append(f"{deployment['metadata']['name']}: no versions/ below {store}")
    path = tmp / "routing.json"
    path.write_text(text)
    try:
        RoutingConfig.load(path)
    except RoutingConfigError as exc:
        problems.append(str(exc))
    return problems


# --- Helm itself: lint, render, schema ----------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_passes_strict(values: str) -> None:
    for version in KUBE_VERSIONS:
        report = helm_python.lint(
            CHART, values_of(values), strict=True, kube_version=f"v{version}.0"
        )
        assert report["errors"] == [], (version, report)
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], (version, report)


def test_helm_lint_reports_a_broken_chart(tmp_path: Path) -> None:
    broken = tmp_path / CHART.name
    shutil.copytree(CHART, broken, symlinks=False)
    with (broken / "templates" / "service.yaml").open("a") as fh:
        fh.write("  oops: [\n")
    report = helm_python.lint(broken, strict=True)
    assert any("service.yaml" in m["path"] and m["severity"] == 3 for m in report["messages"])
    assert report["errors"]


def test_chart_metadata_and_supported_versions() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == CHART.name
    for key in ("version", "appVersion"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(meta[key])), key
    assert meta["kubeVersion"] == f">={KUBE_VERSIONS[0]}.0-0"
    # the README of the chart and the project say which versions are checked, and they are
    # the ones this suite checks (and that kubernetes-validate bundles)
    span = f"Kubernetes {KUBE_VERSIONS[0]} to {KUBE_VERSIONS[-1]}"
    for readme in (CHART / "README.md", ROOT / "README.md"):
        assert span in " ".join(readme.read_text().split()), f"{readme} does not say {span!r}"
    bundled = {utils.major_minor(v) for v in utils.all_versions()}
    assert set(KUBE_VERSIONS) <= bundled


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_manifest_passes_the_kubernetes_schemas(values: str) -> None:
    manifests = render(values_of(values))
    assert manifests
    for version in KUBE_VERSIONS:
        for m in manifests:
            if m.kind in OPERATOR_KINDS:
                continue
            assert kube_problems(m.doc, version) == [], (version, m.template)


def test_kubernetes_schemas_refuse_a_broken_manifest() -> None:
    deployment = _stable(render())
    typo = copy.deepcopy(deployment)
    typo["spec"]["replica"] = 2  # unknown field: strict schemas refuse it
    wrong_type = copy.deepcopy(deployment)
    _container(wrong_type)["ports"][0]["containerPort"] = "8000"
    no_selector = copy.deepcopy(deployment)
    del no_selector["spec"]["selector"]
    for broken in (typo, wrong_type, no_selector):
        assert len(kube_problems(broken, KUBE_VERSIONS[0])) == 1
    # the operator's kinds have no schema there (they are checked in test_prometheus_rules)
    monitor = _one(render(values_of("production")), "ServiceMonitor")
    assert "Couldn't find schema" in kube_problems(monitor, KUBE_VERSIONS[-1])[0]


# values that break values.schema.json, and a part of Helm's message naming the key
SCHEMA_BREAKS: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": 0}, "at '/replicaCount': minimum"),
    ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"image": {"digest": "sha256:abc"}}, "at '/image/digest'"),
    ({"env": [{"name": "LTR_API_KEY", "value": "x" * 20}]}, "at '/env/0': missing property"),
    ({"env": [{"name": "LTR_ONNX_THREADS", "value": 2}]}, "at '/env/0/value'"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
    ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "capabilities/drop"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext/runAsNonRoot"),
    ({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}, "seccompProfile/type"),
    ({"canary": {"enabled": True}}, "at '/canary/image'"),
    ({"podDisruptionBudget": {"minAvailable": 1}}, "at '/podDisruptionBudget'"),
    ({"autoscaling": {"targetCPUUtilizationPercentage": 150}}, "targetCPUUtilization"),
    ({"autoscaling": {"requestRate": {"targetAverageValue": 150}}}, "targetAverageValue"),
    ({"modelStore": {"existingClaim": ""}}, "at '/modelStore/existingClaim'"),
    ({"modelStore": {"initContainer": {"image": "models"}}}, "initContainer/image"),
    ({"metrics": {"serviceMonitor": {"interval": "15"}}}, "serviceMonitor/interval"),
    ({"secrets": {"existingSecret": ""}}, "at '/secrets/existingSecret'"),
]


@pytest.mark.parametrize(("override", "message"), SCHEMA_BREAKS, ids=lambda x: str(x)[:40])
def test_values_breaking_the_schema_are_refused_with_the_key(
    override: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render_files(override)
    assert message in str(caught.value)
    assert "values don't meet the specifications of the schema" in str(caught.value)


def test_the_schema_accepts_every_example_and_the_defaults() -> None:
    chart = helm_python.Chart.load(CHART)
    try:
        for values in VALUE_SETS:
            chart.validate_schema(chart.merge_values(values_of(values)))
        # and it is the schema Helm applies: one key it does not know is refused
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(chart.merge_values({"imagee": {}}))
    finally:
        chart.close()


# values the schema cannot refuse alone: the chart fails the render with the fix
RENDER_BREAKS: list[tuple[dict[str, Any], str]] = [
    ({"image": {"tag": "latest"}}, 'image.tag is "latest": pin a version'),
    ({"canary": {"enabled": True, "image": {"tag": "latest"}}}, 'canary.image.tag is "latest"'),
    ({"modelStore": {"initContainer": {"image": "r/m:latest"}}}, "is tagged latest"),
    ({"secrets": {"eventsRedisUrlKey": "redis-url"}}, "give the cache and event streams a Redis"),
    ({"secrets": {"cacheRedisUrlKey": "redis-url"}}, "give the result cache a Redis"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas (5) is above"),
    ({"lifecycle": {"preStopSleepSeconds": 40}}, "must be below terminationGracePeriodSeconds"),
]


@pytest.mark.parametrize(("override", "message"), RENDER_BREAKS, ids=lambda x: str(x)[:40])
def test_inconsistent_values_fail_the_render_with_the_fix(
    override: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError) as caught:
        render_files(override)
    assert message in str(caught.value)


# --- what the schemas cannot see ----------------------------------------------------------

EXPECTED_KINDS = {
    "default": ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"],
    "production": [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    ],
    "canary": [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceMonitor",
    ],
}


@pytest.mark.parametrize("values", VALUE_SETS)
def test_objects_rendered_for_each_value_set(values: str) -> None:
    kinds = sorted(m.kind for m in render(values_of(values)) if m.kind != "ServiceAccount")
    assert kinds == EXPECTED_KINDS[values]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_deployments_probes_ports_secrets_security_and_spread(values: str) -> None:
    port = _exposed_port()
    deployments = _by_kind(render(values_of(values)))["Deployment"]
    for deployment in deployments:
        assert deployment_problems(deployment, port) == []
        assert security_problems(deployment) == []
        assert spread_problems(deployment) == []


def test_deployment_checks_fail_on_a_broken_deployment() -> None:
    port = _exposed_port()
    good = _stable(render())
    broken = copy.deepcopy(good)
    bad = _container(broken)
    bad["readinessProbe"]["httpGet"]["path"] = "/health"
    bad["livenessProbe"]["httpGet"]["port"] = 9000
    del bad["startupProbe"]
    bad["lifecycle"]["preStop"]["sleep"]["seconds"] = 60
    bad["env"].append({"name": "LTR_ADMIN_TOKEN", "value": "literal"})
    del bad["resources"]["limits"]
    assert len(deployment_problems(broken, port)) == 7
    assert deployment_problems(good, port + 1)

    insecure = copy.deepcopy(good)
    pod = insecure["spec"]["template"]["spec"]
    pod["securityContext"] = {"runAsNonRoot": True}
    pod["automountServiceAccountToken"] = True
    sc = _container(insecure)["securityContext"]
    sc["readOnlyRootFilesystem"] = False
    sc["capabilities"] = {"drop": ["NET_RAW"]}
    sc["runAsUser"] = 0
    _container(insecure)["volumeMounts"] = [
        m for m in _container(insecure)["volumeMounts"] if m["mountPath"] != "/tmp"
    ]
    assert len(security_problems(insecure)) == 7

    unspread = copy.deepcopy(good)
    constraints = unspread["spec"]["template"]["spec"]["topologySpreadConstraints"]
    constraints[0]["labelSelector"]["matchLabels"][TRACK] = "canary"
    del constraints[1]
    assert len(spread_problems(unspread)) == 2


def test_literal_secret_past_the_schema_is_still_caught() -> None:
    """The rendered check does not rely on the schema: a chart without values.schema.json
    (e.g. an older copy) that renders a literal secret fails it."""
    deployment = _stable(render())
    _container(deployment)["env"].append({"name": "LTR_API_KEY", "value": "x" * 20})
    assert "LTR_API_KEY has a literal value" in deployment_problems(deployment, _exposed_port())


@pytest.mark.parametrize("values", VALUE_SETS)
def test_service_and_budget_cover_stable_and_canary_pods(values: str) -> None:
    manifests = render(values_of(values))
    deployments = _by_kind(manifests)["Deployment"]
    service = _one(manifests, "Service")
    assert service["spec"]["ports"][0]["port"] == _exposed_port()
    assert service_problems(service, deployments) == []
    assert pdb_problems(_one(manifests, "PodDisruptionBudget"), deployments) == []
    # the two Deployments never select each other's pods
    for a in deployments:
        for b in deployments:
            if a is not b:
                assert not _matches(a["spec"]["selector"]["matchLabels"], _pod_labels(b))


def test_service_and_budget_checks_fail_on_broken_ones() -> None:
    manifests = render(values_of("canary"))
    deployments = _by_kind(manifests)["Deployment"]
    service = copy.deepcopy(_one(manifests, "Service"))
    service["spec"]["ports"][0]["targetPort"] = "metrics"
    service["spec"]["selector"][TRACK] = "stable"
    assert len(service_problems(service, deployments)) == 3
    pdb = copy.deepcopy(_one(manifests, "PodDisruptionBudget"))
    pdb["spec"]["maxUnavailable"] = 0
    pdb["spec"]["minAvailable"] = 1
    pdb["spec"]["selector"]["matchLabels"][TRACK] = "canary"
    assert len(pdb_problems(pdb, deployments)) == 3


def test_scrape_annotations_point_at_the_container_port() -> None:
    service = _one(render(), "Service")
    notes = service["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == _exposed_port()
    assert notes["prometheus.io/path"] == "/metrics"
    production = _one(render(values_of("production")), "Service")
    assert "annotations" not in production["metadata"]  # scraped by the ServiceMonitor


def test_hpa_scales_the_stable_deployment_on_cpu_and_request_rate() -> None:
    manifests = render()
    assert hpa_problems(_one(manifests, "HorizontalPodAutoscaler"), _stable(manifests)) == []
    production = render(values_of("production"))
    hpa = _one(production, "HorizontalPodAutoscaler")
    assert hpa_problems(hpa, _stable(production)) == []
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods["target"] == {"type": "AverageValue", "averageValue": "150"}
    assert (
        pods["metric"]["name"]
        == values_of("production")["autoscaling"]["requestRate"]["metricName"]
    )
    # the default has no custom metric (it needs prometheus-adapter)
    assert [m["type"] for m in _one(manifests, "HorizontalPodAutoscaler")["spec"]["metrics"]] == [
        "Resource"
    ]

    broken = copy.deepcopy(hpa)
    broken["apiVersion"] = "autoscaling/v1"
    broken["spec"]["scaleTargetRef"]["name"] = f"{RELEASE}-ltr-serving-canary"
    broken["spec"]["metrics"] = broken["spec"]["metrics"][1:]
    broken["spec"]["minReplicas"] = 40
    assert len(hpa_problems(broken, _stable(production))) == 4


def test_autoscaling_disabled_sets_replicas() -> None:
    manifests = render({"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert "HorizontalPodAutoscaler" not in _by_kind(manifests)
    assert _stable(manifests)["spec"]["replicas"] == 3


def test_canary_deployment_runs_its_own_image_and_settings() -> None:
    manifests = render(values_of("canary"))
    stable, canary = _stable(manifests), _one(manifests, "Deployment", "-canary")
    assert _container(stable)["image"] == "ghcr.io/example/ltr-serving:0.1.0"
    assert _container(canary)["image"] == "ghcr.io/example/ltr-serving:0.2.0-rc.1"
    assert canary["spec"]["replicas"] == 1
    assert _pod_labels(canary)[TRACK] == "canary"

    def env(d: dict[str, Any]) -> dict[str, Any]:
        return {e["name"]: e.get("value") for e in _container(d)["env"]}

    assert env(canary)["LTR_ONNX_THREADS"] == "2"  # the canary's own setting comes last
    assert [e["name"] for e in _container(canary)["env"]].count("LTR_ONNX_THREADS") == 2
    assert env(stable)["LTR_ONNX_THREADS"] == "1"
    digest = render({"canary": {"enabled": True, "image": {"digest": "sha256:" + "a" * 64}}})
    image = _container(_one(digest, "Deployment", "-canary"))["image"]
    assert image == "ghcr.io/example/ltr-serving@sha256:" + "a" * 64


def test_cache_and_events_use_a_redis_of_their_own_when_configured() -> None:
    def sources(manifests: list[Manifest]) -> dict[str, str]:
        return {
            e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for e in _container(_stable(manifests))["env"]
            if "valueFrom" in e
        }

    assert sources(render()) == {
        "LTR_API_KEY": "api-key",
        "LTR_REDIS_URL": "redis-url",
        "LTR_REQUEST_ID_SECRET": "request-id-secret",
    }
    production = sources(render(values_of("production")))
    assert production["LTR_EVENTS_REDIS_URL"] == production["LTR_CACHE_REDIS_URL"]
    assert production["LTR_EVENTS_REDIS_URL"] != production["LTR_REDIS_URL"]
    canary = sources(render(values_of("canary")))
    assert len({canary["LTR_REDIS_URL"], canary["LTR_EVENTS_REDIS_URL"]}) == 2
    assert canary["LTR_CACHE_REDIS_URL"] == "cache-redis-url"


def test_routing_configmap_is_what_the_service_parses_and_where_it_reads(tmp_path: Path) -> None:
    manifests = render(values_of("canary"))
    assert routing_problems(manifests, tmp_path) == []
    config = RoutingConfig.model_validate_json(_one(manifests, "ConfigMap")["data"]["routing.json"])
    assert (config.strategy, config.production, config.version) == ("canary", "v1", 7)
    # without the ConfigMap the model store alone is mounted at LTR_MODEL_STORE
    mounts = _container(_stable(render()))["volumeMounts"]
    assert [m["mountPath"] for m in mounts if m["name"] == "model-store"] == ["/var/lib/ltr/models"]

    bad_weights = _merge(
        values_of("canary"),
        {"routing": {"configMap": {"config": {"variants": [{"name": "a", "version": "v1"}]}}}},
    )
    problems = routing_problems(render(bad_weights), tmp_path)
    assert len(problems) == 1 and "invalid routing config" in problems[0]
    unmounted = render(values_of("canary"))
    for m in unmounted:
        if m.kind == "Deployment":
            for mount in _container(m.doc)["volumeMounts"]:
                mount.pop("subPath", None)
    assert len(routing_problems(unmounted, tmp_path)) == 2


def test_init_container_model_store() -> None:
    manifests = render(values_of("canary"))
    pod = _stable(manifests)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["model-store"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example.com/ml/ltr-models:2026-11-28"
    assert init["volumeMounts"] == [{"name": "model-store", "mountPath": "/var/lib/ltr/models"}]


def test_values_hold_no_secret_values() -> None:
    for name in VALUE_SETS:
        values = _merge(yaml.safe_load((CHART / "values.yaml").read_text()), values_of(name))
        for env in values["env"] + values["canary"]["env"]:
            assert "value" not in env or not SECRET_NAME.search(env["name"]), (name, env)
        assert values["secrets"]["existingSecret"]


def test_notes_render() -> None:
    notes = render_files()["templates/NOTES.txt"]
    assert "ltr-ltr-serving" in notes and '"ltr-serving"' in notes
    canary = render_files(values_of("canary"))["templates/NOTES.txt"]
    assert "Canary: 1 pod(s) of ghcr.io/example/ltr-serving:0.2.0-rc.1" in canary
