"""The pipeline config shared by the DAGs: typed, immutable, loaded from YAML.

Path (:func:`pipeline_config_path`): ``LTR_PIPELINE_CONFIG`` when set, else
``<LTR_HOME>/pipeline.yaml`` when that file exists (``ltr demo`` writes its config there, so
``make airflow`` on the same ``LTR_HOME`` runs the DAGs on the demo's data), else
``configs/pipeline.yaml`` of the repository. Relative paths inside it are resolved against
the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "configs" / "pipeline.yaml"
#: The pipeline config that belongs to one runtime home (``<LTR_HOME>/pipeline.yaml``).
HOME_CONFIG_NAME = "pipeline.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValidationConfig(_Frozen):
    """Expectations on raw data (see ltr.validation.ValidationPolicy)."""

    label_set: tuple[float, ...] | None = None
    min_docs_per_query: int = Field(1, ge=1)
    max_docs_per_query: int = Field(5000, ge=1)
    feature_min: float | None = None
    feature_max: float | None = None
    allow_duplicate_docs: bool = False
    n_features: int | None = Field(None, ge=1)
    max_missing_fraction: float = Field(0.0, ge=0.0, le=1.0)


class HoldoutConfig(_Frozen):
    """Queries are split by a stable hash of the query id, so a query stays in its split
    from one night to the next and champion and challengers see the same test queries."""

    valid_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    salt: str = "ltr-holdout"


class TrainingPlan(_Frozen):
    configs: tuple[Path, ...] = (Path("configs/mlp_lambdarank.yaml"), Path("configs/lightgbm.yaml"))
    overrides: dict[str, Any] = Field(default_factory=dict)
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    click_labels: bool = Field(
        False,
        description="also train each config on the newest position-debiased click labels "
        "(weekly report) of the train queries; held-out splits keep their judged labels",
    )


class Gates(_Frozen):
    metric: str = "ndcg@10"
    min_margin: float = Field(0.0, description="challenger minus champion on the held-out test")
    parity_tolerance: float = Field(1e-5, gt=0)
    latency_budget_ms: float = Field(10.0, gt=0, description="ONNX p99 at 100 rows")


class PromotionDefaults(_Frozen):
    """Defaults of the promotion form (``ltr_promotion``)."""

    strategy: Literal["canary", "blue_green"] = "canary"
    canary_percent: float = Field(10.0, gt=0, le=100)
    observe_minutes: float = Field(10.0, ge=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_p99_ms: float = Field(50.0, gt=0)
    min_requests: int = Field(50, ge=0)
    service_url: str | None = Field(
        None,
        description="the rank service to observe; unset: $LTR_SERVICE_URL, else the form's "
        "field stays empty (no guessed port)",
    )
    # With several replicas the rollout is judged on the whole fleet's counters (see
    # ltr.promotion.fleet): a Prometheus that scrapes them all, else every replica's URL, else
    # the Kubernetes Service's ready endpoints; service_url alone is one replica.
    prometheus_url: str | None = Field(
        None, description="Prometheus that scrapes every replica (preferred when set)"
    )
    prometheus_selector: str = Field(
        "", description='label matchers of the replicas, e.g. namespace="ltr",job="ltr-serving"'
    )
    replica_urls: tuple[str, ...] = Field((), description="every replica's own URL")
    kubernetes_service: str | None = Field(
        None, description="[namespace/]name whose EndpointSlices list the replicas (in-cluster)"
    )


class ReportConfig(_Frozen):
    """The weekly report DAG: who gets it and where its service figures come from."""

    recipients: tuple[str, ...] = Field((), description="e-mail addresses; empty: .eml only")
    sender: str = "ltr-platform@localhost"
    smtp_conn_id: str = "smtp_default"
    service_url: str | None = Field(None, description="the rank service (latency, errors)")
    prometheus_url: str | None = Field(None, description="preferred over service_url if set")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the tests")


class PipelineConfig(_Frozen):
    raw_dir: Path | None = Field(None, description="landing folder; default <LTR_HOME>/raw")
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    doc_feature_indices: tuple[int, ...] = Field((), description="0-based document-only columns")
    materialize_overlap_hours: float = Field(24.0, ge=0)
    training: TrainingPlan = Field(default_factory=TrainingPlan)
    gates: Gates = Field(default_factory=Gates)
    registry_name: str = "ltr-ranker"
    promotion: PromotionDefaults = Field(default_factory=PromotionDefaults)
    report: ReportConfig = Field(default_factory=ReportConfig)

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else REPO_ROOT / path


def pipeline_config_path(path: str | Path | None = None) -> Path:
    """The pipeline config to read: ``path``, else ``$LTR_PIPELINE_CONFIG``, else
    ``<LTR_HOME>/pipeline.yaml`` if it exists (``LTR_HOME`` defaults to ``var``), else the
    repository's ``configs/pipeline.yaml``."""
    if path:
        return Path(path)
    env = os.environ.get("LTR_PIPELINE_CONFIG")
    if env:
        return Path(env)
    in_home = Path(os.environ.get("LTR_HOME") or "var") / HOME_CONFIG_NAME
    return in_home if in_home.is_file() else DEFAULT_PATH


def load_pipeline_config(path: str | Path | None = None) -> PipelineConfig:
    """Read the pipeline config; errors name the file and the offending keys."""
    p = pipeline_config_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pipeline config not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
        return PipelineConfig.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(x) for x in e["loc"]) + ": " + e["msg"] for e in exc.errors()
        )
        raise ValueError(f"{p}: invalid pipeline config: {problems}") from None
