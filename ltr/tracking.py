"""Experiment tracking in MLflow: one run per training, params, per-epoch metrics, artifacts.

Embedded default: ``sqlite:///var/mlflow.db`` with artifacts under ``var/mlartifacts``;
any tracking URI by ``LTR_MLFLOW_TRACKING_URI`` or the config's ``tracking.tracking_uri``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ltr.settings import Settings, get_settings

log = logging.getLogger(__name__)

_BAD_CHARS = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_key(name: str) -> str:
    """MLflow-safe metric name: ``ndcg@10`` -> ``ndcg_at_10``."""
    return _BAD_CHARS.sub("_", name.replace("@", "_at_"))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def configure_mlflow(tracking_uri: str | None = None, settings: Settings | None = None) -> str:
    """Point MLflow at the configured store (creating ``var/`` for the embedded default)."""
    # No usage reporting from the training or serving machines unless asked for.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    s = settings or get_settings()
    uri = tracking_uri or s.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str, settings: Settings | None = None) -> str:
    """Experiment id for ``name``, created with artifacts under ``<home>/mlartifacts``."""
    import mlflow

    s = settings or get_settings()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith("sqlite:") or uri.startswith("postgresql"):
        s.artifact_root.mkdir(parents=True, exist_ok=True)
        location = (s.artifact_root / name).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


class RunTracker:
    """Context manager around one MLflow run; a no-op when ``enabled`` is False."""

    def __init__(
        self,
        run_name: str,
        *,
        experiment: str | None = None,
        tracking_uri: str | None = None,
        enabled: bool = True,
        tags: dict[str, str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.run_name = run_name
        self.settings = settings or get_settings()
        self.experiment = experiment or self.settings.mlflow_experiment
        self.tracking_uri = tracking_uri
        self.enabled = enabled
        self.tags = tags or {}
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._pending: list[Any] = []
        self._last_flush = 0.0

    def __enter__(self) -> RunTracker:
        if not self.enabled:
            return self
        import mlflow

        configure_mlflow(self.tracking_uri, self.settings)
        self.experiment_id = ensure_experiment(self.experiment, self.settings)
        run = mlflow.start_run(
            experiment_id=self.experiment_id, run_name=self.run_name, tags=self.tags
        )
        self.run_id = run.info.run_id
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.enabled:
            return
        import mlflow

        self.flush()
        if exc_type is None:
            status = "FINISHED"
        elif exc_type.__name__ == "TrialPruned":
            status = "KILLED"
        else:
            status = "FAILED"
        mlflow.end_run(status=status)

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        flat = {k: ("" if v is None else str(v)[:6000]) for k, v in flatten(params).items()}
        mlflow.log_params(flat)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Buffer metrics and write them in batches (one SQL round trip per flush), so
        per-iteration logging does not slow training down."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        for k, v in metrics.items():
            self._pending.append(Metric(metric_key(k), float(v), now_ms, step or 0))
        if len(self._pending) >= 500 or time.monotonic() - self._last_flush > 10.0:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._pending or self.run_id is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for i in range(0, len(self._pending), 1000):
            client.log_batch(self.run_id, metrics=self._pending[i : i + 1000])
        self._pending.clear()
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        import mlflow

        mlflow.log_artifacts(str(directory), artifact_path=artifact_path)
