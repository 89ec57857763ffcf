"""Checks of ``platform/airflow/values.yaml``, the values for the official Apache Airflow
Helm chart (docs/scaling.md, "Airflow on Kubernetes"), without Helm or the chart.

What is checked here: the file parses; no credential is written in it (only names of
Secrets); every key it sets is one of the chart keys listed in ``CHART_KEYS`` below, which
were read from the chart's own ``values.yaml`` (revision with Airflow 3.1.3 defaults, the
1.19 line) and are not a copy of its ``values.schema.json``; the ``config`` options exist in
the installed Airflow's configuration reference; and the file agrees with the repository
(Airflow pin, image user, DAG folder, settings names, the serving chart's model store, the
SMTP connection id, the Secrets docs/scaling.md tells how to create). What is not checked
here: rendering by Helm and the chart's JSON schema. Every check returns a list of problems
and is shown to fail on a broken example in the same test.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "platform" / "airflow" / "values.yaml"
DOC = ROOT / "docs" / "scaling.md"
PIPELINES_DOCKERFILE = ROOT / "platform" / "docker" / "pipelines.Dockerfile"
SERVING_CHART_VALUES = ROOT / "charts" / "ltr-serving" / "values.yaml"

# Keys of the official chart that this project may set, as dotted paths; "free" marks a
# key whose value is free-form for the chart (airflow.cfg sections, Kubernetes objects,
# lists of env items), so nothing below it is checked against this table.
CHART_KEYS: dict[str, str] = {
    "defaultAirflowRepository": "leaf",
    "defaultAirflowTag": "leaf",
    "airflowVersion": "leaf",
    "images.airflow.repository": "leaf",
    "images.airflow.tag": "leaf",
    "images.airflow.pullPolicy": "leaf",
    "uid": "leaf",
    "gid": "leaf",
    "executor": "leaf",
    "postgresql.enabled": "leaf",
    "data.metadataSecretName": "leaf",
    "pgbouncer.enabled": "leaf",
    "redis.enabled": "leaf",
    "fernetKeySecretName": "leaf",
    "apiSecretKeySecretName": "leaf",
    "jwtSecretName": "leaf",
    "createUserJob.enabled": "leaf",
    "dags.persistence.enabled": "leaf",
    "dags.gitSync.enabled": "leaf",
    "dags.gitSync.repo": "leaf",
    "dags.gitSync.branch": "leaf",
    "dags.gitSync.rev": "leaf",
    "dags.gitSync.subPath": "leaf",
    "dags.gitSync.depth": "leaf",
    "dags.gitSync.period": "leaf",
    "dags.gitSync.credentialsSecret": "leaf",
    "dags.gitSync.sshKeySecret": "leaf",
    "config": "free",
    "logs.persistence.enabled": "leaf",
    "logs.persistence.existingClaim": "leaf",
    "logs.persistence.size": "leaf",
    "logs.persistence.storageClassName": "leaf",
    "workers.resources": "free",
    "workers.extraVolumes": "free",
    "workers.extraVolumeMounts": "free",
    "workers.nodeSelector": "free",
    "workers.tolerations": "free",
    "env": "free",
    "secret": "free",
    "extraEnvFrom": "leaf",
    "scheduler.replicas": "leaf",
    "scheduler.resources": "free",
    "apiServer.replicas": "leaf",
    "apiServer.resources": "free",
    "triggerer.replicas": "leaf",
    "triggerer.resources": "free",
    "dagProcessor.replicas": "leaf",
    "dagProcessor.resources": "free",
    "statsd.enabled": "leaf",
    "cleanup.enabled": "leaf",
}

# Chart keys that take a credential itself: the chart would put it into a Secret it makes,
# but the value would sit in this file (and in Helm's release history).
INLINE_SECRET_KEYS = frozenset(
    {
        "fernetKey",
        "apiSecretKey",
        "jwtSecret",
        "webserverSecretKey",
        "data.metadataConnection",
        "data.resultBackendConnection",
        "data.brokerUrl",
        "redis.password",
        "flower.password",
        "dags.gitSync.sshKey",
        "elasticsearch.connection",
        "opensearch.connection",
        "registry.connection",
        "extraSecrets",
        "postgresql.auth",
    }
)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
SECRETISH_NAME = re.compile(r"password|passwd|secret|token|api_?key|credential", re.IGNORECASE)
# Keys whose string value names a Secret (or a key inside one), never holds its content.
SECRET_REFERENCE_KEY = re.compile(r"(SecretName|secretName|secretKey|Secret|envName|name)$")


def load(path: Path = VALUES) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every mapping entry, recursively; list items as ``[i]``."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, value
            yield from walk(value, path)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from walk(item, f"{prefix}[{i}]")


# --- checks -------------------------------------------------------------------------------


def unknown_keys(values: dict[str, Any]) -> list[str]:
    """Paths set in ``values`` that are not chart keys of ``CHART_KEYS``."""
    problems: list[str] = []

    def visit(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            kind = CHART_KEYS.get(path)
            if kind is not None:
                if kind == "leaf" and isinstance(value, dict):
                    problems.append(f"{path}: the chart expects a single value here")
                continue
            if isinstance(value, dict) and any(k.startswith(path + ".") for k in CHART_KEYS):
                visit(value, path)
                continue
            problems.append(f"{path}: not a key of the Airflow chart (see CHART_KEYS)")

    visit(values, "")
    return problems


def inline_secrets(values: dict[str, Any]) -> list[str]:
    """Credentials written in the file instead of referenced by Secret name."""
    problems: list[str] = []
    for path, value in walk(values):
        bare = re.sub(r"\[\d+\]", "", path)
        if bare in INLINE_SECRET_KEYS and value not in (None, "", {}, []):
            problems.append(f"{path}: a credential in the values file; use a Secret instead")
        if not isinstance(value, str):
            continue
        if URL_WITH_PASSWORD.search(value):
            problems.append(f"{path}: URL with a password")
        if PEM.search(value):
            problems.append(f"{path}: private key")
        leaf = path.rsplit(".", 1)[-1]
        if SECRETISH_NAME.search(leaf) and not SECRET_REFERENCE_KEY.search(leaf):
            problems.append(f"{path}: looks like a credential set inline")
    # env items: a secret-looking variable must come from a Secret (the `secret` list)
    for item in values.get("env") or []:
        name = str(item.get("name", ""))
        if SECRETISH_NAME.search(name) or name.endswith("REDIS_URL") or "_CONN_" in name:
            problems.append(f"env {name}: set it through `secret:` from a Secret, not inline")
    return problems


def unknown_config_options(values: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """``config.<section>.<option>`` that Airflow's configuration reference does not have.

    Sections owned by providers that are not installed here (``kubernetes_executor``) are
    checked against ``PROVIDER_OPTIONS`` instead.
    """
    problems: list[str] = []
    for section, options in (values.get("config") or {}).items():
        if section in PROVIDER_OPTIONS:
            known = PROVIDER_OPTIONS[section]
        elif section in reference:
            known = set(reference[section].get("options") or {})
        else:
            problems.append(f"config.{section}: no such airflow.cfg section")
            continue
        for option in options or {}:
            if option not in known:
                problems.append(f"config.{section}.{option}: no such option")
    return problems


# [kubernetes_executor] options used here, from the cncf.kubernetes provider's configuration
# reference (the provider is not installed in this virtualenv).
PROVIDER_OPTIONS: dict[str, set[str]] = {
    "kubernetes_executor": {
        "namespace",
        "pod_template_file",
        "worker_container_repository",
        "worker_container_tag",
        "delete_worker_pods",
        "delete_worker_pods_on_failure",
        "worker_pods_creation_batch_size",
        "multi_namespace_mode",
    },
}


def airflow_config_reference() -> dict[str, Any]:
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations, (
        "apache-airflow is not installed (pip install -e '.[orchestration]')"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    reference = yaml.safe_load(path.read_text())
    assert isinstance(reference, dict)
    return reference


def dockerfile_env(path: Path = PIPELINES_DOCKERFILE) -> dict[str, str]:
    """``ENV`` assignments (``KEY=value`` form, continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            for key, value in re.findall(r"(\w+)=(\S+)", line):
                env[key] = value
    return env


def repository_mismatches(values: dict[str, Any]) -> list[str]:
    """Where the values disagree with the repository they deploy."""
    problems: list[str] = []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [
        d
        for group in project["project"]["optional-dependencies"].values()
        for d in group
        if d.startswith("apache-airflow==")
    ]
    pinned = pins[0].split("==", 1)[1] if pins else None
    if str(values.get("airflowVersion")) != pinned:
        problems.append(f"airflowVersion {values.get('airflowVersion')!r} != pin {pinned!r}")

    docker = PIPELINES_DOCKERFILE.read_text()
    uid = re.search(r"--uid (\d+)", docker)
    gid = re.search(r"--gid (\d+)", docker)
    if uid is None or values.get("uid") != int(uid.group(1)):
        problems.append(f"uid {values.get('uid')} is not the image's user")
    if gid is None or values.get("gid") != int(gid.group(1)):
        problems.append(f"gid {values.get('gid')} is not the image's group")
    dags_folder = (values.get("config") or {}).get("core", {}).get("dags_folder")
    if dags_folder != dockerfile_env().get("AIRFLOW__CORE__DAGS_FOLDER"):
        problems.append(f"config.core.dags_folder {dags_folder!r} is not the image's DAG folder")

    executor = values.get("executor")
    if executor not in ("KubernetesExecutor", "CeleryExecutor"):
        problems.append(f"executor {executor!r}: docs/scaling.md argues Kubernetes or Celery")
    if executor == "KubernetesExecutor" and (values.get("redis") or {}).get("enabled", True):
        problems.append("redis.enabled: the KubernetesExecutor needs no Celery broker")
    if (values.get("postgresql") or {}).get("enabled", True):
        problems.append("postgresql.enabled: the metadata database is external")
    if not (values.get("data") or {}).get("metadataSecretName"):
        problems.append("data.metadataSecretName: the metadata connection must come from a Secret")
    if (values.get("dags") or {}).get("gitSync", {}).get("enabled"):
        problems.append("dags.gitSync.enabled: the DAGs are baked into the image with `ltr`")

    # every LTR_ variable is one the code reads
    sources = "\n".join(p.read_text() for p in (ROOT / "ltr").rglob("*.py"))
    settings_src = (ROOT / "ltr" / "settings.py").read_text()
    fields = set(re.findall(r"^    (\w+): ", settings_src, re.MULTILINE))
    names = [str(e.get("name")) for e in values.get("env") or []]
    names += [str(s.get("envName")) for s in values.get("secret") or []]
    for name in names:
        if not name.startswith("LTR_"):
            continue
        if name.removeprefix("LTR_").lower() not in fields and name not in sources:
            problems.append(f"{name}: not a setting of ltr/settings.py nor read in ltr/")

    # the model store the rank service reads is the one the tasks write
    serving = yaml.safe_load(SERVING_CHART_VALUES.read_text())
    store = serving.get("modelStore") or {}
    workers = values.get("workers") or {}
    claims = {
        v["name"]: (v.get("persistentVolumeClaim") or {}).get("claimName")
        for v in workers.get("extraVolumes") or []
    }
    mounts = {m["name"]: m["mountPath"] for m in workers.get("extraVolumeMounts") or []}
    home = next(
        (e.get("value") for e in values.get("env") or [] if e.get("name") == "LTR_HOME"), None
    )
    store_volume = next((n for n, c in claims.items() if c == store.get("existingClaim")), None)
    if store_volume is None:
        problems.append(
            f"no worker volume mounts the serving chart's model store claim "
            f"{store.get('existingClaim')!r} (charts/ltr-serving/values.yaml modelStore)"
        )
    elif home is None or mounts.get(store_volume) != f"{home}/models":
        problems.append(
            f"model store mounted at {mounts.get(store_volume)!r}, not $LTR_HOME/models"
        )
    if home is None or home not in mounts.values():
        problems.append("LTR_HOME must be on a mounted (shared) volume")

    # the report's SMTP connection comes from a Secret, under the id the pipeline uses
    pipeline = yaml.safe_load((ROOT / "configs" / "pipeline.yaml").read_text())
    conn_id = (pipeline.get("report") or {}).get("smtp_conn_id", "smtp_default")
    wanted = f"AIRFLOW_CONN_{conn_id.upper()}"
    if wanted not in [str(s.get("envName")) for s in values.get("secret") or []]:
        problems.append(f"{wanted}: the report's SMTP connection is not taken from a Secret")
    return problems


def secrets_referenced(values: dict[str, Any]) -> set[str]:
    names = {
        str(v)
        for path, v in walk(values)
        if isinstance(v, str) and re.search(r"(SecretName|secretName)$", path.rsplit(".", 1)[-1])
    }
    names |= {str(s["secretName"]) for s in values.get("secret") or []}
    return names


def undocumented_secrets(values: dict[str, Any], doc: str) -> list[str]:
    """Secrets the values need that docs/scaling.md does not tell how to create."""
    return [
        f"Secret {name}: no `kubectl create secret generic {name}` in docs/scaling.md"
        for name in sorted(secrets_referenced(values))
        if f"create secret generic {name}" not in doc
    ]


# --- tests --------------------------------------------------------------------------------


def test_values_parse_and_set_chart_keys_only() -> None:
    values = load()
    assert unknown_keys(values) == []
    broken = copy.deepcopy(values)
    broken["scheduler"]["replicaCount"] = 2  # the serving chart's name, not this chart's
    broken["dags"]["gitSync"]["repository"] = "https://example.invalid/ltr.git"
    problems = unknown_keys(broken)
    assert any("scheduler.replicaCount" in p for p in problems)
    assert any("dags.gitSync.repository" in p for p in problems)
    broken = copy.deepcopy(values)
    broken["executor"] = {"name": "KubernetesExecutor"}
    assert any("single value" in p for p in unknown_keys(broken))


def test_no_credentials_in_the_values() -> None:
    values = load()
    assert inline_secrets(values) == []
    mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda v: v.__setitem__("fernetKey", "a" * 44),
        lambda v: v["data"].__setitem__("metadataConnection", {"user": "airflow", "pass": "x"}),
        lambda v: v["env"].append({"name": "LTR_REDIS_URL", "value": "redis://h:6379/0"}),
        lambda v: v["env"].append({"name": "X", "value": "postgresql://airflow:pw@db:5432/a"}),
        lambda v: v["config"].setdefault("smtp", {}).__setitem__("smtp_password", "pw"),
        lambda v: v["dags"]["gitSync"].__setitem__(
            "sshKey", "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n"
        ),
    ]
    for mutate in mutations:
        broken = copy.deepcopy(values)
        mutate(broken)
        assert inline_secrets(broken), f"not caught: {mutate}"


def test_config_options_exist_in_airflow() -> None:
    values = load()
    reference = airflow_config_reference()
    assert unknown_config_options(values, reference) == []
    broken = copy.deepcopy(values)
    broken["config"]["core"]["dag_folder"] = "/app/dags"  # typo of dags_folder
    broken["config"]["kubernetes"] = {"delete_worker_pods": "True"}  # pre-2.5 section name
    problems = unknown_config_options(broken, reference)
    assert any("config.core.dag_folder" in p for p in problems)
    assert any("config.kubernetes:" in p for p in problems)


def test_values_agree_with_the_repository() -> None:
    values = load()
    assert repository_mismatches(values) == []
    broken = copy.deepcopy(values)
    broken["airflowVersion"] = "3.0.0"
    broken["uid"] = 0
    broken["config"]["core"]["dags_folder"] = "/opt/airflow/dags"
    broken["redis"]["enabled"] = True
    broken["env"].append({"name": "LTR_NOT_A_SETTING", "value": "1"})
    broken["workers"]["extraVolumeMounts"][1]["mountPath"] = "/models"
    broken["secret"] = [s for s in broken["secret"] if s["envName"] != "AIRFLOW_CONN_SMTP_DEFAULT"]
    problems = "\n".join(repository_mismatches(broken))
    for expected in (
        "airflowVersion",
        "uid 0",
        "dags_folder",
        "redis.enabled",
        "LTR_NOT_A_SETTING",
        "$LTR_HOME/models",
        "AIRFLOW_CONN_SMTP_DEFAULT",
    ):
        assert expected in problems, expected


def test_scaling_doc_covers_the_values() -> None:
    values = load()
    doc = DOC.read_text()
    assert undocumented_secrets(values, doc) == []
    assert values["executor"] in doc
    assert "platform/airflow/values.yaml" in doc
    # the doc says plainly what this test does not check
    assert "not validated against the chart's values.schema.json" in doc
    broken = copy.deepcopy(values)
    broken["fernetKeySecretName"] = "some-other-secret"
    assert undocumented_secrets(broken, doc) == [
        "Secret some-other-secret: no `kubectl create secret generic some-other-secret` "
        "in docs/scaling.md"
    ]


@pytest.mark.parametrize("text", ["executor: [", "- a\nb: c"])
def test_unparseable_or_non_mapping_values_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    with pytest.raises((yaml.YAMLError, AssertionError)):
        load(path)
