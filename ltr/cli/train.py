"""``ltr train``: run one experiment config (YAML) with MLflow tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import emit_json, fail


def train(
    config: Annotated[
        Path, typer.Argument(help="experiment config YAML (see configs/TEMPLATE.yaml)")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set optimizer.lr=0.01"),
    ] = None,
    train_path: Annotated[Path | None, typer.Option("--train", help="training LETOR file")] = None,
    valid_path: Annotated[
        Path | None, typer.Option("--valid", help="validation LETOR file")
    ] = None,
    test_path: Annotated[Path | None, typer.Option("--test", help="test LETOR file")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    run_name: Annotated[
        str | None, typer.Option(help="name of the run folder and MLflow run")
    ] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="do not log to MLflow")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Train a ranker from a config; checkpoint under var/runs/, track the run in MLflow."""
    from ltr.training.config import load_config, parse_overrides

    try:
        overrides = parse_overrides(set_ or [])
        for key, value in (
            ("data.train", train_path),
            ("data.valid", valid_path),
            ("data.test", test_path),
            ("training.device", device),
        ):
            if value is not None:
                overrides[key] = str(value)
        if no_track:
            overrides["tracking.enabled"] = False
        cfg = load_config(config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))

    from ltr.training.runner import run_experiment

    try:
        summary = run_experiment(cfg, run_name=run_name, progress=not json_out)
    except (ValueError, FileNotFoundError, FloatingPointError, RuntimeError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(summary)
        return
    typer.echo(f"run        {summary['run_name']}")
    typer.echo(f"checkpoint {summary['run_dir']}")
    typer.echo(f"mlflow run {summary['mlflow_run_id']}")
    typer.echo(
        f"model      {summary['model_type']} / {summary['loss']}  best epoch "
        f"{summary['best_epoch']} of {summary['epochs_run']}  ({summary['fit_seconds']:.1f} s)"
    )
    for split, values in summary["metrics"].items():
        line = "  ".join(f"{k}={v:.4f}" for k, v in values.items())
        typer.echo(f"{split:<10} {line}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
