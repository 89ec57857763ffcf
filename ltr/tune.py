"""Hyperparameter search with Optuna: median pruning on the validation metric per epoch,
every trial tracked as its own MLflow run."""

from __future__ import annotations

import logging
from typing import Any

from ltr.training.config import ExperimentConfig
from ltr.training.runner import Splits, load_splits, run_experiment

log = logging.getLogger(__name__)


def suggest_overrides(trial: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """The search space: learning rate, width, dropout, batch size (neural); trees (LightGBM)."""
    if cfg.model.type == "lightgbm":
        return {
            "model.params.learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "model.params.num_leaves": trial.suggest_int("num_leaves", 7, 63),
            "model.params.min_child_samples": trial.suggest_int(
                "min_child_samples", 5, 100, log=True
            ),
        }
    out: dict[str, Any] = {
        "optimizer.lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "training.batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
    }
    if cfg.model.type == "mlp":
        width = trial.suggest_categorical("width", [32, 64, 128, 256])
        out["model.params.hidden"] = [width, width // 2]
        out["model.params.dropout"] = trial.suggest_float("dropout", 0.0, 0.3)
    else:
        out["model.params.d_model"] = trial.suggest_categorical("d_model", [32, 64])
        out["model.params.dropout"] = trial.suggest_float("dropout", 0.0, 0.3)
    return out


def run_study(
    cfg: ExperimentConfig,
    *,
    n_trials: int = 20,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    splits: Splits | None = None,
) -> dict[str, Any]:
    """Run the study; returns the best value, params and the MLflow run of the best trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = splits or load_splits(cfg)
    key = cfg.training.metric.lower()
    name = study_name or f"{cfg.name}-tune"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=storage is not None,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=5),
    )

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = cfg.with_overrides(suggest_overrides(trial, cfg))

        def report(epoch: int, row: dict[str, float]) -> None:
            trial.report(row[f"valid_{key}"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        summary = run_experiment(
            trial_cfg,
            splits=splits,
            run_name=f"{name}-trial{trial.number:03d}",
            progress=False,
            extra_tags={"ltr.study": name, "ltr.trial": str(trial.number)},
            on_epoch=report,
        )
        trial.set_user_attr("mlflow_run_id", summary["mlflow_run_id"])
        trial.set_user_attr("run_dir", summary["run_dir"])
        return float(summary["metrics"]["valid"][key])

    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=())
    states = [t.state.name for t in study.trials]
    best = study.best_trial
    return {
        "study": name,
        "metric": key,
        "n_trials": len(study.trials),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "best_value": best.value,
        "best_params": best.params,
        "best_mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        "best_run_dir": best.user_attrs.get("run_dir"),
    }
