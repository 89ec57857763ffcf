"""One experiment end to end: load data, fit, evaluate, checkpoint, track in MLflow.

The CLI (`ltr train`), tuning and the DAGs all call :func:`run_experiment`.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltr.data.dataset import LetorDataset
from ltr.metrics import evaluate
from ltr.settings import Settings, get_settings
from ltr.tracking import RunTracker
from ltr.training.checkpoint import save_checkpoint
from ltr.training.config import ExperimentConfig, SyntheticConfig
from ltr.training.trainer import fit, metric_options

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: LetorDataset
    valid: LetorDataset
    test: LetorDataset | None


def code_version() -> str:
    """The git commit of the working tree when available, else the package version."""
    from ltr import __version__

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def load_splits(cfg: ExperimentConfig) -> Splits:
    """Read the train/valid/test files of the config, or generate the synthetic data."""
    d = cfg.data
    if d.train is None:
        from ltr.data.synth import generate_synthetic, split_queries

        syn = d.synthetic or SyntheticConfig()
        ds = generate_synthetic(
            n_queries=syn.n_queries,
            n_features=syn.n_features,
            n_doc_only=syn.n_doc_only,
            mean_docs=syn.mean_docs,
            seed=syn.seed,
        )
        train, valid, test = split_queries(ds, syn.splits, seed=syn.seed)
        return Splits(train, valid, test)
    if d.valid is None:
        raise ValueError("data.valid is required when data.train is a file (early stopping)")
    from ltr.data.letor import read_letor

    kw: dict[str, Any] = {
        "n_features": d.n_features,
        "missing": d.missing,
        "impute_value": d.impute_value,
    }
    train = read_letor(d.train, **kw)
    kw["n_features"] = d.n_features or train.n_features
    valid = read_letor(d.valid, **kw)
    test_part = read_letor(d.test, **kw) if d.test else None
    return Splits(train, valid, test_part)


def run_experiment(
    cfg: ExperimentConfig,
    *,
    splits: Splits | None = None,
    run_name: str | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    extra_tags: dict[str, str] | None = None,
    on_epoch: Any = None,
) -> dict[str, Any]:
    """Train and evaluate ``cfg``; returns a JSON-able summary (paths, ids, metrics)."""
    s = settings or get_settings()
    # "config": the data can be rebuilt from config.yaml alone (files or synthetic);
    # "in-memory": the caller passed the splits, so exports need an explicit validation set.
    data_origin = "in-memory" if splits is not None else "config"
    splits = splits or load_splits(cfg)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = run_name or f"{cfg.name}-{stamp}"
    fingerprint = splits.train.fingerprint()
    tags = {
        "ltr.model_type": cfg.model.type,
        "ltr.loss": cfg.loss.name if cfg.model.is_neural else "lambdarank",
        "ltr.data_fingerprint": fingerprint,
        "ltr.code_version": code_version(),
        **(extra_tags or {}),
    }
    tracker = RunTracker(
        name,
        experiment=cfg.tracking.experiment,
        tracking_uri=cfg.tracking.tracking_uri,
        enabled=cfg.tracking.enabled,
        tags=tags,
        settings=s,
    )
    opts = metric_options(cfg)
    metrics = list(dict.fromkeys([cfg.training.metric.lower(), *cfg.evaluation.metrics]))
    with tracker:
        tracker.log_params(cfg.model_dump(mode="json"))
        tracker.log_params(
            {
                "dataset.n_train_queries": splits.train.n_queries,
                "dataset.n_train_docs": splits.train.n_docs,
                "dataset.n_features": splits.train.n_features,
            }
        )

        def on_epoch_cb(epoch: int, row: dict[str, float]) -> None:
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, row)

        outcome = fit(cfg, splits.train, splits.valid, on_epoch=on_epoch_cb, progress=progress)
        results: dict[str, dict[str, float]] = {}
        named: list[tuple[str, LetorDataset | None]] = [
            ("valid", splits.valid),
            ("test", splits.test),
        ]
        for split_name, part in named:
            if part is None:
                continue
            scores = outcome.ranker.score(part)
            results[split_name] = evaluate(part.labels, scores, part.offsets, metrics, opts)
            tracker.log_metrics(
                {f"final_{split_name}_{k}": v for k, v in results[split_name].items()}
            )
        tracker.log_metrics(
            {"fit_seconds": outcome.fit_seconds, "best_epoch": float(outcome.best_epoch)}
        )
        run_dir = s.runs_dir / name
        meta = {
            "run_name": name,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "model_type": cfg.model.type,
            "model_params": dict(cfg.model.params),
            "loss": tags["ltr.loss"],
            "feature_names": list(splits.train.feature_names),
            "n_features": splits.train.n_features,
            "data_fingerprint": fingerprint,
            "code_version": tags["ltr.code_version"],
            "best_epoch": outcome.best_epoch,
            "best_iteration": outcome.best_epoch,
            "epochs_run": outcome.epochs_run,
            "fit_seconds": outcome.fit_seconds,
            "metrics": results,
            "metric_options": {
                "gain": opts.gain,
                "no_relevant": opts.no_relevant,
                "ties": opts.ties,
            },
            "mlflow_run_id": tracker.run_id,
            "mlflow_experiment_id": tracker.experiment_id,
            "data": {
                "origin": data_origin,
                "valid_fingerprint": splits.valid.fingerprint(),
                "train": str(cfg.data.train) if cfg.data.train else "synthetic",
                "valid": str(cfg.data.valid) if cfg.data.valid else "synthetic",
                "test": str(cfg.data.test) if cfg.data.test else None,
            },
        }
        save_checkpoint(run_dir, outcome.ranker, meta, cfg.to_yaml())
        tracker.log_artifacts(run_dir, artifact_path="checkpoint")
    return {
        "run_name": name,
        "run_dir": str(run_dir),
        "mlflow_run_id": tracker.run_id,
        "model_type": cfg.model.type,
        "loss": meta["loss"],
        "best_epoch": outcome.best_epoch,
        "epochs_run": outcome.epochs_run,
        "fit_seconds": round(outcome.fit_seconds, 3),
        "metrics": results,
        "data_fingerprint": fingerprint,
    }
