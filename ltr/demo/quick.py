"""The demo a new user runs: data -> two rankers -> comparison -> ONNX export of the better.

Embedded defaults use the project's synthetic generator; real LETOR files can be passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltr.settings import Settings, get_settings
from ltr.training.config import ExperimentConfig

log = logging.getLogger(__name__)

DEMO_EXPERIMENT = "ltr-demo"


def demo_configs(
    train: Path | None, valid: Path | None, test: Path | None
) -> list[ExperimentConfig]:
    data: dict[str, Any] = (
        {"train": train, "valid": valid, "test": test, "missing": "impute"}
        if train
        else {"synthetic": {"n_queries": 300, "n_features": 20, "n_doc_only": 5, "seed": 7}}
    )
    common = {"seed": 42, "data": data, "tracking": {"experiment": DEMO_EXPERIMENT}}
    return [
        ExperimentConfig.model_validate(
            {
                **common,
                "name": "demo-mlp-lambdarank",
                "model": {"type": "mlp", "params": {"hidden": [128, 64], "dropout": 0.1}},
                "loss": {"name": "lambdarank"},
                "training": {"epochs": 40, "patience": 10, "batch_size": 16, "device": "cpu"},
            }
        ),
        ExperimentConfig.model_validate(
            {
                **common,
                "name": "demo-lightgbm",
                "model": {"type": "lightgbm", "params": {"n_estimators": 300}},
            }
        ),
    ]


def run_demo(
    *,
    train: Path | None = None,
    valid: Path | None = None,
    test: Path | None = None,
    settings: Settings | None = None,
    say: Callable[[str], None] = log.info,
    serve: bool = True,
) -> dict[str, Any]:
    from ltr.compare import fetch_runs, format_table, plot_runs
    from ltr.data.letor import write_letor
    from ltr.export.onnx_export import export_ranker
    from ltr.training.checkpoint import load_checkpoint
    from ltr.training.runner import load_splits, run_experiment

    s = settings or get_settings()
    t0 = time.perf_counter()
    configs = demo_configs(train, valid, test)
    splits = load_splits(configs[0])
    data_dir = s.home / "demo" / "data"
    if train is None:
        for name, ds in (("train", splits.train), ("valid", splits.valid), ("test", splits.test)):
            if ds is not None:
                write_letor(ds, data_dir / f"{name}.txt")
        say(
            f"data: synthetic, {splits.train.n_queries}/{splits.valid.n_queries}/"
            f"{splits.test.n_queries if splits.test else 0} queries (train/valid/test) "
            f"written to {data_dir}"
        )
    else:
        say(f"data: {train} ({splits.train.n_queries} queries), {valid}, {test}")

    summaries = []
    for cfg in configs:
        say(f"training {cfg.name} ...")
        summary = run_experiment(cfg, splits=splits, settings=s, progress=True)
        summaries.append(summary)
        say(
            f"  valid ndcg@10 = {summary['metrics']['valid']['ndcg@10']:.4f} "
            f"in {summary['fit_seconds']:.1f} s -> {summary['run_dir']}"
        )

    ids = [x["mlflow_run_id"] for x in summaries]
    rows = fetch_runs(
        DEMO_EXPERIMENT, split="test" if splits.test else "valid", run_ids=ids, settings=s
    )
    chart = plot_runs(rows, s.home / "reports" / "demo-compare.png")
    say("\n" + format_table(rows))

    best = max(summaries, key=lambda x: x["metrics"]["valid"]["ndcg@10"])
    ranker, meta = load_checkpoint(Path(best["run_dir"]))
    exported = export_ranker(ranker, meta, splits.valid, s.models_dir, overwrite=True)
    say(
        f"\nbetter model: {best['run_name']} (valid ndcg@10 "
        f"{best['metrics']['valid']['ndcg@10']:.4f})"
    )
    say(f"exported:     {exported['path']} (parity {exported['parity']['max_abs_diff']:.1e})")
    online: dict[str, Any] | None = None
    if serve:
        from ltr.demo.service import online_demo

        syn = configs[0].data.synthetic
        doc_cols = (
            list(range(syn.n_features - syn.n_doc_only, syn.n_features))
            if train is None and syn is not None
            else []
        )
        online = online_demo(ranker, meta, splits, doc_cols, s, say)
    elapsed = time.perf_counter() - t0
    result = {
        "runs": summaries,
        "best_run": best["run_name"],
        "chart": str(chart),
        "exported": exported,
        "mlflow_tracking_uri": s.tracking_uri,
        "online": online,
        "seconds": round(elapsed, 1),
    }
    say(f"\nchart:        {chart}")
    say(f"checkpoints:  {s.runs_dir}")
    say(f"mlflow:       {s.tracking_uri}  (browse: mlflow ui --backend-store-uri {s.tracking_uri})")
    say(f"done in {elapsed:.0f} s")
    return result
