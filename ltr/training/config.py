"""Typed, immutable experiment configs loaded from YAML (template: configs/TEMPLATE.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticConfig(_Frozen):
    n_queries: int = Field(300, ge=3)
    n_features: int = Field(20, ge=1)
    n_doc_only: int = Field(5, ge=0)
    mean_docs: float = Field(30.0, gt=0)
    seed: int = 0
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)


class DataConfig(_Frozen):
    train: Path | None = None
    valid: Path | None = None
    test: Path | None = None
    synthetic: SyntheticConfig | None = None
    n_features: int | None = None
    missing: Literal["reject", "impute"] = "reject"
    impute_value: float = 0.0


class ModelConfig(_Frozen):
    type: Literal["mlp", "attention", "lightgbm"] = "mlp"
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_neural(self) -> bool:
        return self.type != "lightgbm"


class LossConfig(_Frozen):
    name: str = "lambdarank"
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Frozen):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class TrainingConfig(_Frozen):
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(16, ge=1, description="queries per batch")
    patience: int = Field(15, ge=1, description="epochs without validation gain before stopping")
    metric: str = "ndcg@10"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grad_clip: float | None = Field(None, gt=0)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = default")


class EvaluationConfig(_Frozen):
    metrics: tuple[str, ...] = ("ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr")
    gain: Literal["exp", "linear"] = "exp"
    no_relevant: Literal["skip", "zero", "one"] = "skip"
    ties: Literal["pessimistic", "input_order"] = "pessimistic"


class TrackingConfig(_Frozen):
    enabled: bool = True
    experiment: str | None = None
    tracking_uri: str | None = None


class ExperimentConfig(_Frozen):
    name: str = "experiment"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ \t\n"):
            raise ValueError("name must be non-empty without slashes or spaces")
        return v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_overrides(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """A copy with dotted-key overrides applied (``{"optimizer.lr": 0.01}``), revalidated."""
        data = self.model_dump(mode="json")
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    if p in node and node[p] is None:
                        node[p] = {}
                    else:
                        raise ValueError(f"unknown config key {key!r}")
                node = node[p]
            node[parts[-1]] = value
        return ExperimentConfig.model_validate(data)


def _format_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return f"{source}: invalid config: " + "; ".join(parts)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config; errors name the file and the offending keys."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: top level must be a mapping")
    try:
        cfg = ExperimentConfig.model_validate(raw)
        return cfg.with_overrides(overrides) if overrides else cfg
    except ValidationError as exc:
        raise ValueError(_format_error(str(p), exc)) from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optimizer.lr=0.01", "model.params.hidden=[64,32]"]`` -> dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
