"""The MLflow model registry of exported rankers: versions, lineage tags and aliases.

An exported artifact (``models/versions/<v>/{model.onnx,metadata.json}``) is logged to its
training run under ``onnx_model`` and registered as a model version whose tags carry its
lineage (model-store version, sha256, data fingerprint, code version, config hash, parity,
offline metrics). Aliases mark roles (MLflow 3 has aliases, not stages):

- ``challenger``: the newest registered candidate (set by :func:`register_model`);
- ``champion``: what production serves (moved by :mod:`ltr.promotion`);
- ``previous_champion``: the champion before the last move, kept for rollback.

The MLflow model version is returned, not written into ``metadata.json``: the artifact is
immutable after its parity check; callers record the version in routing/promotion records.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltr.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

DEFAULT_NAME = "ltr-ranker"
ARTIFACT_PATH = "onnx_model"
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"

#: Model-version tag keys (lineage).
TAG_STORE_VERSION = "ltr.store_version"
TAG_SHA256 = "ltr.sha256"
TAG_DATA_FINGERPRINT = "ltr.data_fingerprint"
TAG_CODE_VERSION = "ltr.code_version"
TAG_CONFIG_HASH = "ltr.config_hash"
TAG_PARITY = "ltr.parity_max_abs_diff"
TAG_METRICS = "ltr.metrics"  # JSON of metadata.json "metrics" ({split: {metric: value}})
TAG_METRIC_PREFIX = "ltr.metric."  # one readable tag per metric: ltr.metric.<split>.<key>
_TAG_VALUE_MAX = 5000


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (missing artifact, unknown run or version)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One MLflow model version of an exported ranker."""

    name: str
    version: str  # MLflow's version number, as a string
    aliases: tuple[str, ...]
    run_id: str | None
    store_version: str | None  # the model-store folder name (models/versions/<v>)
    source: str
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        return out


def _client(tracking_uri: str | None = None, settings: Settings | None = None) -> MlflowClient:
    from mlflow import MlflowClient

    from ltr.tracking import configure_mlflow

    uri = configure_mlflow(tracking_uri, settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _to_registered(mv: ModelVersion, aliases: list[str] | None = None) -> RegisteredVersion:
    tags = dict(mv.tags or {})
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        aliases=tuple(aliases if aliases is not None else (mv.aliases or [])),
        run_id=mv.run_id or None,
        store_version=tags.get(TAG_STORE_VERSION),
        source=str(mv.source),
        tags=tags,
    )


def _read_artifact(artifact_dir: Path) -> dict[str, Any]:
    """metadata.json of an exported version, after checking model.onnx against its sha256."""
    from ltr.utils.io import sha256_file

    model, meta_path = artifact_dir / "model.onnx", artifact_dir / "metadata.json"
    if not model.is_file() or not meta_path.is_file():
        raise RegistryError(f"{artifact_dir}: not an exported model (model.onnx, metadata.json)")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    digest = sha256_file(model)
    if digest != meta.get("sha256"):
        raise RegistryError(
            f"{model}: sha256 {digest[:12]} does not match metadata.json "
            f"{str(meta.get('sha256'))[:12]}; refusing to register a modified artifact"
        )
    return meta


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except Exception as exc:
        if _is_missing(exc):
            return False
        raise
    return True


def _config_hash(client: MlflowClient, run_id: str) -> str | None:
    """sha256 of the run's logged params (the resolved config), sorted by key."""
    params = client.get_run(run_id).data.params
    if not params:
        return None
    blob = json.dumps(dict(sorted(params.items())), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def lineage_tags(meta: dict[str, Any]) -> dict[str, str]:
    """Model-version tags from an artifact's metadata.json."""
    from ltr.tracking import metric_key

    tags: dict[str, str] = {TAG_STORE_VERSION: str(meta["version"]), TAG_SHA256: meta["sha256"]}
    for key, tag in (
        ("data_fingerprint", TAG_DATA_FINGERPRINT),
        ("code_version", TAG_CODE_VERSION),
        ("model_type", "ltr.model_type"),
        ("loss", "ltr.loss"),
    ):
        if meta.get(key) is not None:
            tags[tag] = str(meta[key])
    parity = meta.get("parity") or {}
    if parity.get("max_abs_diff") is not None:
        tags[TAG_PARITY] = repr(float(parity["max_abs_diff"]))
    metrics = meta.get("metrics") or {}
    if metrics:
        blob = json.dumps(metrics, sort_keys=True)
        if len(blob) <= _TAG_VALUE_MAX:
            tags[TAG_METRICS] = blob
        for split, values in metrics.items():
            if isinstance(values, dict):
                for name, value in values.items():
                    tags[f"{TAG_METRIC_PREFIX}{split}.{metric_key(name)}"] = repr(float(value))
            elif isinstance(values, int | float):
                tags[f"{TAG_METRIC_PREFIX}{metric_key(split)}"] = repr(float(values))
    return tags


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except Exception as exc:
        if not _is_missing(exc):
            raise
        try:
            client.create_registered_model(
                name, description="Learning-to-rank scorers exported to ONNX (ltr-platform)."
            )
        except Exception as exc2:  # created concurrently
            if getattr(exc2, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise


def _find(
    client: MlflowClient, name: str, store_version: str, sha256: str | None = None
) -> ModelVersion | None:
    """Newest registered version of ``name`` tagged with this store version (and sha256)."""
    quoted = store_version.replace("'", "\\'")
    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.`{TAG_STORE_VERSION}` = '{quoted}'"
        )
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise
    matches = [mv for mv in found if sha256 is None or (mv.tags or {}).get(TAG_SHA256) == sha256]
    if not matches:
        return None
    return max(matches, key=lambda mv: int(mv.version))


def register_model(
    artifact_dir: Path,
    *,
    name: str = DEFAULT_NAME,
    run_id: str | None = None,
    alias: str | None = CHALLENGER,
    tags: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    settings: Settings | None = None,
) -> RegisteredVersion:
    """Register an exported version (``models/versions/<v>``) and point ``alias`` at it.

    The artifact folder is logged to the MLflow run ``run_id`` (default: the run named in
    metadata.json; when that run is not in this tracking store, a new run named
    ``register-<v>``) under ``onnx_model`` unless already there. Re-registering the same
    artifact (same store version and sha256) returns the existing model version.
    """
    artifact_dir = Path(artifact_dir)
    s = settings or get_settings()
    meta = _read_artifact(artifact_dir)
    meta.setdefault("version", artifact_dir.name)
    store_version = str(meta["version"])
    client = _client(tracking_uri, s)
    _ensure_registered_model(client, name)

    existing = _find(client, name, store_version, meta["sha256"])
    if existing is not None:
        log.info("%s is already registered as %s version %s", store_version, name, existing.version)
        mv = existing
    else:
        rid = _resolve_run(client, run_id, meta, store_version, s)
        if not any(
            f.path == f"{ARTIFACT_PATH}/model.onnx"
            for f in client.list_artifacts(rid, ARTIFACT_PATH)
        ):
            client.log_artifacts(rid, str(artifact_dir), ARTIFACT_PATH)
        all_tags = lineage_tags(meta)
        config_hash = _config_hash(client, rid)
        if config_hash:
            all_tags[TAG_CONFIG_HASH] = config_hash
        all_tags.update({k: str(v) for k, v in (tags or {}).items()})
        source = f"{client.get_run(rid).info.artifact_uri}/{ARTIFACT_PATH}"
        mv = client.create_model_version(name, source, run_id=rid, tags=all_tags)
        log.info("registered %s as %s version %s", store_version, name, mv.version)
    if tags and existing is not None:
        for k, v in tags.items():
            client.set_model_version_tag(name, str(mv.version), k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, str(mv.version))
    return _by_version(client, name, str(mv.version))


def _resolve_run(
    client: MlflowClient,
    run_id: str | None,
    meta: dict[str, Any],
    store_version: str,
    settings: Settings,
) -> str:
    if run_id is not None:
        if not _run_exists(client, run_id):
            raise RegistryError(f"MLflow run {run_id!r} does not exist in {client.tracking_uri}")
        return run_id
    from_meta = meta.get("mlflow_run_id")
    if from_meta and _run_exists(client, str(from_meta)):
        return str(from_meta)
    from ltr.tracking import ensure_experiment

    experiment_id = ensure_experiment(settings.mlflow_experiment, settings)
    run = client.create_run(
        experiment_id,
        run_name=f"register-{store_version}",
        tags={"ltr.store_version": store_version, "ltr.kind": "registration"},
    )
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _by_version(client: MlflowClient, name: str, version: str) -> RegisteredVersion:
    mv = client.get_model_version(name, version)
    return _to_registered(mv, _aliases_of(client, name, version))


def _aliases_of(client: MlflowClient, name: str, version: str) -> list[str]:
    aliases = client.get_registered_model(name).aliases or {}
    return sorted(a for a, v in aliases.items() if str(v) == str(version))


def get_alias(
    name: str = DEFAULT_NAME, alias: str = CHAMPION, *, tracking_uri: str | None = None
) -> RegisteredVersion | None:
    """The version ``alias`` points at, or None (no such model or alias)."""
    client = _client(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise
    return _to_registered(mv, _aliases_of(client, name, str(mv.version)))


def set_alias(
    name: str, alias: str, version: str | int, *, tracking_uri: str | None = None
) -> RegisteredVersion:
    """Point ``alias`` at model version ``version``."""
    client = _client(tracking_uri)
    try:
        client.get_model_version(name, str(version))
    except Exception as exc:
        if _is_missing(exc):
            raise RegistryError(f"{name} has no version {version}") from None
        raise
    client.set_registered_model_alias(name, alias, str(version))
    return _by_version(client, name, str(version))


def delete_alias(name: str, alias: str, *, tracking_uri: str | None = None) -> None:
    client = _client(tracking_uri)
    try:
        client.delete_registered_model_alias(name, alias)
    except Exception as exc:
        if not _is_missing(exc):
            raise


def find_store_version(
    store_version: str, name: str = DEFAULT_NAME, *, tracking_uri: str | None = None
) -> RegisteredVersion | None:
    """The newest registered version tagged with model-store version ``store_version``."""
    client = _client(tracking_uri)
    mv = _find(client, name, store_version)
    if mv is None:
        return None
    return _to_registered(mv, _aliases_of(client, name, str(mv.version)))


def set_champion(
    name: str, version: str | int, *, tracking_uri: str | None = None
) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the former champion becomes ``previous_champion``.

    A no-op when ``champion`` already points there. The ``challenger`` alias is removed
    when it pointed at the new champion. Returns ``{"champion", "previous_champion"}``.
    """
    client = _client(tracking_uri)
    version = str(version)
    aliases = {a: str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    current = aliases.get(CHAMPION)
    if current == version:
        return {"champion": version, "previous_champion": aliases.get(PREVIOUS_CHAMPION)}
    client.set_registered_model_alias(name, CHAMPION, version)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return {"champion": version, "previous_champion": current or aliases.get(PREVIOUS_CHAMPION)}


def tag_version(
    name: str, version: str | int, tags: dict[str, Any], *, tracking_uri: str | None = None
) -> None:
    client = _client(tracking_uri)
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v)[:_TAG_VALUE_MAX])


def champion_metrics(
    name: str = DEFAULT_NAME, *, tracking_uri: str | None = None
) -> dict[str, Any] | None:
    """Offline metrics of the champion, ``{split: {metric: value}}``; None without a champion.

    From the version's ``ltr.metrics`` tag (metric names as in metadata.json, e.g.
    ``ndcg@10``); otherwise from its run's ``final_<split>_<metric>`` metrics (MLflow-safe
    names, e.g. ``ndcg_at_10``).
    """
    champ = get_alias(name, CHAMPION, tracking_uri=tracking_uri)
    if champ is None:
        return None
    if TAG_METRICS in champ.tags:
        metrics: dict[str, Any] = json.loads(champ.tags[TAG_METRICS])
        return metrics
    if champ.run_id is None:
        return {}
    client = _client(tracking_uri)
    out: dict[str, dict[str, float]] = {}
    for key, value in client.get_run(champ.run_id).data.metrics.items():
        for split in ("valid", "test"):
            prefix = f"final_{split}_"
            if key.startswith(prefix):
                out.setdefault(split, {})[key.removeprefix(prefix)] = float(value)
    return out


def describe(
    name: str = DEFAULT_NAME, *, tracking_uri: str | None = None
) -> list[RegisteredVersion]:
    """Every version of ``name`` (oldest first) with its aliases; [] for an unknown model."""
    client = _client(tracking_uri)
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except Exception as exc:
        if _is_missing(exc):
            return []
        raise
    by_version: dict[str, list[str]] = {}
    for a, v in aliases.items():
        by_version.setdefault(str(v), []).append(a)
    versions = client.search_model_versions(f"name = '{name}'")
    return [
        _to_registered(mv, sorted(by_version.get(str(mv.version), [])))
        for mv in sorted(versions, key=lambda mv: int(mv.version))
    ]


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_NAME",
    "PREVIOUS_CHAMPION",
    "RegisteredVersion",
    "RegistryError",
    "champion_metrics",
    "delete_alias",
    "describe",
    "find_store_version",
    "get_alias",
    "lineage_tags",
    "register_model",
    "set_alias",
    "set_champion",
    "tag_version",
]
