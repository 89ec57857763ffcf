"""Checks of ``docker-compose.yaml`` without a Docker engine.

The file is validated against the Compose Specification's JSON schema by check-jsonschema
(its vendored ``vendor.compose-spec``, offline; the ``deploy`` extra), then checked for what
a schema cannot see: Dockerfiles and bind sources that exist, no literal secrets, pinned
images, bounded Redis, health checks. Each check returns a list of problems and is shown to
fail on a broken copy in the same test.
"""

from __future__ import annotations

import copy
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
REQUIRED_REF = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}")
USERINFO = re.compile(r"://[^/@\s:]+:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def build_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in data["services"].items():
        build = service.get("build")
        if build is None:
            if not service.get("image"):
                problems.append(f"{name}: neither image nor build")
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            problems.append(f"{name}: {dockerfile.relative_to(ROOT)} does not exist")
    return problems


def depends_on_problems(data: dict[str, Any]) -> list[str]:
    services = set(data["services"])
    return [
        f"{name} depends on undefined {dep}"
        for name, service in data["services"].items()
        for dep in service.get("depends_on") or []
        if dep not in services
    ]


def mount_problems(data: dict[str, Any]) -> list[str]:
    named = set(data.get("volumes") or {})
    problems = []
    for name, service in data["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                if not (ROOT / source).resolve().exists():
                    problems.append(f"{name}: bind source {source} does not exist")
            elif source not in named:
                problems.append(f"{name}: volume {source} is not declared")
    return problems


def secret_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in data["services"].items():
        for var, value in _env(service).items():
            if SECRET_NAME.search(var) and not REQUIRED_REF.fullmatch(value):
                problems.append(f"{name}: {var} is not a ${{VAR:?...}} reference")
            for password in USERINFO.findall(value):
                if not REQUIRED_REF.fullmatch(password):
                    problems.append(f"{name}: {var} holds a literal credential")
    return problems


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports") or []}


def scrape_problems(data: dict[str, Any], prometheus: dict[str, Any]) -> list[str]:
    problems = []
    serving = data["services"].get("serving", {})
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host not in data["services"]:
                    problems.append(f"scrape target {target}: no service {host}")
                elif host == "serving" and int(port) not in _container_ports(serving):
                    problems.append(f"scrape target {target}: serving does not listen there")
    return problems


def test_parses_with_services_and_named_volumes(compose: dict[str, Any]) -> None:
    expected = {"redis", "postgres", "serving", "airflow", "mlflow", "prometheus", "grafana"}
    assert expected <= set(compose["services"])
    assert {"redis-data", "postgres-data", "ltr-home"} <= set(compose["volumes"])


def test_every_service_has_an_image_or_an_existing_dockerfile(compose: dict[str, Any]) -> None:
    assert build_problems(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["serving"]["build"]["dockerfile"] = "platform/docker/missing.Dockerfile"
    broken["services"]["redis"].pop("image")
    assert len(build_problems(broken)) == 2


def test_depends_on_names_defined_services(compose: dict[str, Any]) -> None:
    assert depends_on_problems(compose) == []
    assert compose["services"]["serving"]["depends_on"]["redis"]["condition"] == "service_healthy"
    broken = copy.deepcopy(compose)
    broken["services"]["serving"]["depends_on"]["memcached"] = {"condition": "service_started"}
    assert depends_on_problems(broken) == ["serving depends on undefined memcached"]


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    assert mount_problems(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["volumes"].append("./platform/grafana/missing:/x:ro")
    broken["services"]["redis"]["volumes"].append("undeclared:/y")
    assert len(mount_problems(broken)) == 2


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    assert secret_problems(compose) == []
    text = COMPOSE.read_text()
    for var in ("POSTGRES_PASSWORD", "LTR_API_KEY", "GRAFANA_ADMIN_PASSWORD"):
        assert "${" + var + ":?" in text
    airflow = _env(compose["services"]["airflow"])
    assert "${POSTGRES_PASSWORD:?" in airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]

    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "admin"
    broken["services"]["serving"]["environment"]["LTR_API_KEY"] = "${LTR_API_KEY:-dev}"
    broken["services"]["airflow"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
        "postgresql://airflow:hunter2@postgres/airflow"
    )
    assert len(secret_problems(broken)) == 3


def test_serving_settings_and_healthcheck(compose: dict[str, Any]) -> None:
    serving = compose["services"]["serving"]
    env = _env(serving)
    assert env["LTR_REDIS_URL"].startswith("redis://redis:")
    assert "LTR_ENVIRONMENT" in env and "LTR_MODEL_STORE" in env
    assert any(v.startswith("ltr-home:") for v in serving["volumes"])
    test = serving["healthcheck"]["test"]
    assert "/health" in " ".join(test) and "8000" in " ".join(test)


def test_prometheus_scrapes_the_serving_service(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((ROOT / "platform/prometheus/prometheus.yml").read_text())
    assert scrape_problems(compose, prometheus) == []
    # the rule files Prometheus loads are mounted where prometheus.yml expects them
    targets = {v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"]}
    assert set(prometheus["rule_files"]) <= targets

    broken = copy.deepcopy(compose)
    broken["services"]["serving"]["ports"] = ["127.0.0.1:9000:9000"]
    assert scrape_problems(broken, prometheus) == [
        "scrape target serving:8000: serving does not listen there"
    ]
    renamed = copy.deepcopy(compose)
    renamed["services"]["api"] = renamed["services"].pop("serving")
    assert scrape_problems(renamed, prometheus) == [
        "scrape target serving:8000: no service serving"
    ]


def test_grafana_provisioning_and_dashboards_are_mounted(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./platform/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (ROOT / "platform/grafana/provisioning/dashboards/ltr.yaml").read_text()
    )
    assert mounts["./platform/grafana/dashboards"] == provider["providers"][0]["options"]["path"]


def spec_problems(path: Path) -> list[str]:
    """What check-jsonschema reports against the Compose Specification (none: it passes)."""
    schema = ["--builtin-schema", "vendor.compose-spec", "--output-format", "text"]
    run = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode == 0:
        return []
    return [line for line in (run.stdout + run.stderr).splitlines() if line.strip()] or [
        f"check-jsonschema exited {run.returncode}"
    ]


IMAGE_TAG = re.compile(
    r"^[^\s:@]+(:[0-9]+)?(/[^\s:@]+)*(:(?P<tag>[\w][\w.-]*)|@sha256:[a-f0-9]{64})$"
)


def image_problems(data: dict[str, Any]) -> list[str]:
    """Every image is pinned: a tag that is not ``latest``, or a digest."""
    problems = []
    for name, service in data["services"].items():
        image = service.get("image")
        if image is None:
            continue
        m = IMAGE_TAG.match(image)
        if m is None:
            problems.append(f"{name}: image {image} has no tag or digest")
        elif m.group("tag") == "latest":
            problems.append(f"{name}: image {image} is :latest")
    return problems


def _redis_args(service: dict[str, Any]) -> dict[str, str] | None:
    command = service.get("command") or []
    if isinstance(command, str):
        command = command.split()
    if not command or command[0] != "redis-server":
        return None
    args = {}
    for flag, value in itertools.pairwise(command[1:]):
        if flag.startswith("--"):
            args[flag[2:]] = value
    return args


def redis_problems(data: dict[str, Any]) -> list[str]:
    """Both Redis are bounded: the feature store never evicts (a full store refuses writes),
    the cache/events one evicts only keys with a TTL (cache entries, never streams)."""
    problems = []
    policies = {"redis": {"noeviction"}, "redis-events": {"volatile-lru", "volatile-lfu"}}
    for name, allowed in policies.items():
        args = _redis_args(data["services"].get(name, {}))
        if args is None:
            problems.append(f"{name}: not a redis-server")
            continue
        if not re.fullmatch(r"[0-9]+(kb|mb|gb)?", args.get("maxmemory", ""), re.IGNORECASE):
            problems.append(f"{name}: no maxmemory")
        if args.get("maxmemory-policy") not in allowed:
            problems.append(f"{name}: maxmemory-policy {args.get('maxmemory-policy')}")
    return problems


def healthcheck_problems(data: dict[str, Any]) -> list[str]:
    """Every service has a health check, and every service_healthy dependency can become so."""
    problems = []
    services = data["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        if not check or check.get("disable") or not check.get("test"):
            problems.append(f"{name}: no healthcheck")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on without conditions")
            continue
        for dep, how in depends.items():
            if how.get("condition") != "service_healthy":
                problems.append(f"{name}: starts before {dep} is healthy")
    return problems


def test_passes_the_compose_specification_schema(tmp_path: Path) -> None:
    assert spec_problems(COMPOSE) == []
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["serving"]["helthcheck"] = {}
    broken["services"]["redis"]["depends_on"] = "postgres"
    path = tmp_path / "docker-compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    problems = "\n".join(spec_problems(path))
    assert "$.services.serving" in problems and "'helthcheck' was unexpected" in problems
    assert "$.services.redis.depends_on" in problems


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    assert image_problems(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["image"] = "redis:latest"
    broken["services"]["postgres"]["image"] = "postgres"
    broken["services"]["grafana"]["image"] = "registry:5000/grafana/grafana"
    broken["services"]["prometheus"]["image"] = "prom/prometheus@sha256:" + "a" * 64
    assert image_problems(broken) == [
        "redis: image redis:latest is :latest",
        "postgres: image postgres has no tag or digest",
        "grafana: image registry:5000/grafana/grafana has no tag or digest",
    ]


def test_both_redis_are_bounded_with_the_right_policy(compose: dict[str, Any]) -> None:
    assert redis_problems(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["command"] = ["redis-server", "--maxmemory-policy", "allkeys-lru"]
    broken["services"]["redis-events"]["command"][-1] = "allkeys-lru"
    assert redis_problems(broken) == [
        "redis: no maxmemory",
        "redis: maxmemory-policy allkeys-lru",
        "redis-events: maxmemory-policy allkeys-lru",
    ]


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    compose: dict[str, Any],
) -> None:
    assert healthcheck_problems(compose) == []
    broken = copy.deepcopy(compose)
    del broken["services"]["mlflow"]["healthcheck"]
    broken["services"]["grafana"]["depends_on"] = ["prometheus"]
    broken["services"]["airflow"]["depends_on"]["mlflow"]["condition"] = "service_started"
    assert healthcheck_problems(broken) == [
        "airflow: starts before mlflow is healthy",
        "mlflow: no healthcheck",
        "grafana: depends_on without conditions",
    ]


def test_serving_container_is_hardened_like_the_chart(compose: dict[str, Any]) -> None:
    serving = compose["services"]["serving"]
    assert serving["read_only"] is True
    assert any(t.startswith("/tmp") for t in serving["tmpfs"])
    assert serving["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in serving["security_opt"]
