"""Task functions of the nightly retrain DAG (``dags/retrain.py``); each also runs from a shell.

One run works on one data interval, named by its *run key* (the interval end, UTC,
``20260102T020000Z``), and is safe to re-run:

1. :func:`build_training_data`: labels up to ``as_of`` -> Feast point-in-time features ->
   train / valid / test by a stable hash of the query id (:mod:`ltr.pipelines.holdout`) ->
   Parquet under
   ``<LTR_HOME>/pipelines/retrain/<run key>/data/``;
2. :func:`train_candidates`: every experiment config of the plan on those splits (a finished
   checkpoint of the same config and data is reused, not retrained);
3. :func:`evaluate_against_champion`: the production model of ``routing.json`` (its exported
   ONNX) and every candidate on the same held-out test queries; the best candidate wins;
4. :func:`export_challenger`: ONNX export with the parity gate and latency figures, feature
   schema read online (Feast / Redis), into the run's staging store
   (``<LTR_HOME>/pipelines/retrain/<run key>/export/``), not the serving model store;
5. :func:`register_and_request`: when every gate passes
   (:func:`ltr.pipelines.gates.judge_gates`), publish the version into the model store with
   its verdict (``gates.json``), register it in MLflow (alias ``challenger``) and write
   ``<LTR_HOME>/promotions/requests/<version>.json``; at most once per run key. A rejected
   challenger stays in the staging store: it can never be chosen for promotion.

Before step 1, :func:`ltr.pipelines.preflight.check_retrain_inputs` checks the config against
the experiment configs, the offline store's layout and the champion (a mismatch fails the
run at once, before training).

Return values are small JSON-able dicts (paths and numbers): they travel as Airflow XComs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltr.pipelines.config import Gates, PipelineConfig
from ltr.pipelines.gates import judge_gates
from ltr.pipelines.holdout import SPLITS
from ltr.pipelines.online import latest_decision
from ltr.pipelines.retrain_data import (
    NoTrainingData,
    _load_split,
    as_of_from,
    build_training_data,
    requests_dir,
    run_key,
)
from ltr.pipelines.retrain_export import export_challenger, publish_challenger
from ltr.settings import Settings

if TYPE_CHECKING:
    from ltr.data.dataset import LetorDataset
    from ltr.training.config import ExperimentConfig

__all__ = [
    "NoTrainingData",
    "as_of_from",
    "build_training_data",
    "evaluate_against_champion",
    "export_challenger",
    "register_and_request",
    "requests_dir",
    "run_key",
    "train_candidates",
]

log = logging.getLogger(__name__)

TAG_RUN_KEY = "ltr.retrain.run_key"
TAG_DATA = "ltr.retrain.data_fingerprint"  # over the three splits (the run's data)
TAG_CONFIG = "ltr.retrain.config"
TAG_LABELS = "ltr.retrain.labels"  # judgments | clicks


# --------------------------------------------------------------------------- train
def _candidate_name(exp: ExperimentConfig, data: dict[str, Any]) -> str:
    """Run (and model version) name: config name, run key, hash of config and data."""
    tag = hashlib.sha256((exp.to_yaml() + data["data_fingerprint"]).encode()).hexdigest()[:8]
    return f"{exp.name}-{data['run_key']}-{tag}"


def _finished_run(
    run_dir: Path, exp: ExperimentConfig, train: LetorDataset
) -> dict[str, Any] | None:
    """The summary of a complete checkpoint of the same config and training data, if any."""
    from ltr.training.checkpoint import read_checkpoint_meta

    try:
        meta = read_checkpoint_meta(run_dir)
        same_config = (run_dir / "config.yaml").read_text() == exp.to_yaml()
    except (FileNotFoundError, ValueError):
        return None
    if not same_config or meta.get("data_fingerprint") != train.fingerprint():
        return None
    keys = ("model_type", "loss", "best_epoch", "epochs_run", "fit_seconds", "metrics")
    return {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "mlflow_run_id": meta.get("mlflow_run_id"),
        "data_fingerprint": meta["data_fingerprint"],
        **{k: meta.get(k) for k in keys},
    }


def train_candidates(
    data: dict[str, Any], cfg: PipelineConfig, settings: Settings
) -> list[dict[str, Any]]:
    """Train every config of ``cfg.training`` (with its overrides) on the run's splits."""
    from ltr.training.config import load_config
    from ltr.training.runner import Splits, run_experiment

    splits = Splits(*(_load_split(data, s) for s in SPLITS))
    sources: list[tuple[str, Any]] = [("judgments", splits)]
    if cfg.training.click_labels:
        clicked = _click_label_splits(splits, settings)
        if clicked is not None:
            sources.append(("clicks", clicked))
    out = []
    for path in cfg.training.configs:
        exp = load_config(cfg.resolve(path), dict(cfg.training.overrides) or None)
        for source, source_splits in sources:
            name = _candidate_name(exp, data)
            if source != "judgments":
                tag = source_splits.train.fingerprint()[:6]
                name = f"{name}-{source}-{tag}"
            summary = _finished_run(settings.runs_dir.resolve() / name, exp, source_splits.train)
            reused = summary is not None
            if summary is None:
                summary = run_experiment(
                    exp,
                    splits=source_splits,
                    run_name=name,
                    settings=settings,
                    progress=False,
                    extra_tags={
                        TAG_RUN_KEY: data["run_key"],
                        TAG_DATA: data["data_fingerprint"],
                        TAG_CONFIG: str(path),
                        TAG_LABELS: source,
                    },
                )
            log.info(
                "candidate %s (%s, %s labels)", name, "reused" if reused else "trained", source
            )
            out.append({"config": str(path), "reused": reused, "labels": source, **summary})
    return out


def _click_label_splits(splits: Any, settings: Settings) -> Any:
    """The run's splits with the train split relabelled by the newest click labels (the
    weekly report's, position-debiased); None when there are none for the train queries."""
    import pandas as pd

    from ltr.online.click_labels import labelled_dataset
    from ltr.training.runner import Splits

    weeks = sorted((settings.home / "feast" / "data" / "click_labels").glob("week=*"))
    paths = [w / "labels.parquet" for w in weeks if (w / "labels.parquet").is_file()]
    if not paths:
        log.info("no click labels yet (the weekly report writes them): judgments only")
        return None
    labels = pd.read_parquet(paths[-1])
    train = labelled_dataset(labels, splits.train)
    if train.n_queries < 5:
        log.info("click labels %s cover %d train queries: not enough", paths[-1], train.n_queries)
        return None
    log.info("click labels %s: %d train queries", paths[-1], train.n_queries)
    return Splits(train, splits.valid, splits.test)


# ------------------------------------------------------------------------ evaluate
def _metric_names(gates: Gates) -> list[str]:
    from ltr.metrics import DEFAULT_METRICS, parse_metric

    parse_metric(gates.metric)  # an unknown metric raises ValueError naming the valid ones
    return list(dict.fromkeys([gates.metric.lower(), *DEFAULT_METRICS]))


def _score(path: Path, test: LetorDataset, metrics: list[str]) -> dict[str, float]:
    from ltr.evaluation import load_scorer
    from ltr.metrics import evaluate

    scorer = load_scorer(path)
    if scorer.n_features != test.n_features:
        raise ValueError(
            f"{scorer.description} takes {scorer.n_features} features, the test split has "
            f"{test.n_features}: they cannot be compared"
        )
    values = evaluate(test.labels, scorer.score(test), test.offsets, metrics)
    return {k: float(v) for k, v in values.items()}


def evaluate_against_champion(
    data: dict[str, Any], candidates: list[dict[str, Any]], cfg: PipelineConfig, settings: Settings
) -> dict[str, Any]:
    """The champion (production of ``routing.json``, as exported ONNX) and every candidate on
    the same held-out test split; the best candidate by ``cfg.gates.metric`` and its margin."""
    from ltr.model_store import read_routing

    if not candidates:
        raise ValueError("no candidates to evaluate (training.configs is empty)")
    metric = cfg.gates.metric.lower()
    names = _metric_names(cfg.gates)
    test = _load_split(data, "test")
    scored = []
    for cand in candidates:
        values = _score(Path(cand["run_dir"]), test, names)
        scored.append({**cand, "holdout": values, "value": values[metric]})
    best = max(scored, key=lambda c: c["value"])  # ties: the first config of the plan
    champion = None
    routing = read_routing(settings.models_dir)
    if routing and routing.get("production"):
        version = str(routing["production"])
        values = _score(settings.models_dir / "versions" / version, test, names)
        champion = {"version": version, "holdout": values, "value": values[metric]}
    margin = None if champion is None else best["value"] - champion["value"]
    log.info(
        "best %s %s=%.5f; champion %s; margin %s",
        best["run_name"],
        metric,
        best["value"],
        champion and champion["version"],
        margin,
    )
    return {
        "metric": metric,
        "test_queries": test.n_queries,
        "candidates": [
            {
                "run_name": c["run_name"],
                "value": c["value"],
                "holdout": c["holdout"],
                "labels": c.get("labels", "judgments"),
            }
            for c in scored
        ],
        "best": best,
        "challenger_value": best["value"],
        "champion": champion,
        "champion_value": None if champion is None else champion["value"],
        "margin": margin,
    }


# ------------------------------------------------------------------------ register
def _existing_request(settings: Settings, key: str) -> dict[str, Any] | None:
    folder = requests_dir(settings)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            request: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if request.get("run_key") == key:
            return {**request, "path": str(path)}
    return None


def register_and_request(
    evaluation: dict[str, Any],
    export: dict[str, Any],
    data: dict[str, Any],
    cfg: PipelineConfig,
    settings: Settings,
) -> dict[str, Any]:
    """Register the challenger and open a promotion request, only when every gate passes.

    Returns ``{"status": "requested" | "already_requested" | "rejected", "reason", ...}``.
    At most one registration and one request per run key: a re-run finds the earlier
    request (or the model version tagged with the run key) and adds nothing.
    """
    from ltr.registry import CHALLENGER, describe, register_model
    from ltr.tracking import metric_key
    from ltr.utils.io import write_json_atomic

    key = data["run_key"]
    base = {"run_key": key, "version": export["version"]}
    earlier = _existing_request(settings, key)
    tagged = [
        v
        for v in describe(cfg.registry_name, tracking_uri=settings.tracking_uri)
        if v.tags.get(TAG_RUN_KEY) == key and v.store_version != export["version"]
    ]
    if earlier is not None or tagged:
        found = earlier or {"version": tagged[-1].store_version, "path": None}
        log.info("run %s already registered %s", key, found["version"])
        return {
            **base,
            "status": "already_requested",
            "reason": f"run {key} already registered {found['version']}",
            "version": found["version"],
            "request": found.get("path"),
        }

    decision = judge_gates(
        cfg.gates,
        challenger_value=evaluation["challenger_value"],
        champion_value=evaluation["champion_value"],
        parity_max_abs_diff=export["parity"]["max_abs_diff"],
        latency_p99_ms=export["latency"]["p99_ms"],
    )
    base["gates"] = decision.to_dict()
    if not decision.accepted:
        log.warning(
            "run %s: %s rejected (kept out of the model store, staged under %s): %s",
            key,
            export["version"],
            export.get("path"),
            decision.reason,
        )
        return {**base, "status": "rejected", "reason": decision.reason}

    best = evaluation["best"]
    verdict = {
        **decision.to_dict(),
        "run_key": key,
        "judged_by": "ltr_retrain",
        "judged_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    published = publish_challenger(export, verdict, settings)  # only now in the serving store
    registered = register_model(
        published,
        name=cfg.registry_name,
        run_id=best.get("mlflow_run_id"),
        alias=CHALLENGER,
        tags={
            TAG_RUN_KEY: key,
            TAG_DATA: data["data_fingerprint"],
            TAG_CONFIG: best["config"],
            f"ltr.retrain.holdout.{metric_key(evaluation['metric'])}": repr(
                float(evaluation["challenger_value"])
            ),
        },
        settings=settings,
    )
    request = {
        "version": export["version"],
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "run_key": key,
        "as_of": data["as_of"],
        "metric": evaluation["metric"],
        "metrics": {"holdout": best["holdout"], "training": best.get("metrics")},
        "champion": evaluation["champion"],
        "margin": evaluation["margin"],
        "gates": decision.to_dict(),
        "parity": export["parity"],
        "latency": export["latency"],
        "mlflow": {
            "name": registered.name,
            "version": registered.version,
            "run_id": registered.run_id,
            "aliases": list(registered.aliases),
        },
        "artifact": {"path": str(published), "sha256": export["sha256"]},
        "data": {
            "fingerprint": data["data_fingerprint"],
            "queries": data["queries"],
            "docs": data["docs"],
        },
        "config": best["config"],
        "labels": best.get("labels", "judgments"),
        # the newest online experiment's outcome (weekly report), for whoever approves
        "online_decision": latest_decision(settings),
    }
    path = requests_dir(settings) / f"{export['version']}.json"
    write_json_atomic(path, request)
    log.info("run %s: promotion request %s (MLflow version %s)", key, path, registered.version)
    return {
        **base,
        "status": "requested",
        "reason": decision.reason,
        "path": str(published),
        "request": str(path),
        "mlflow_model_version": registered.version,
    }
