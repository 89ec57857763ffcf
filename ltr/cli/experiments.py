"""``ltr compare`` (table + PNG of tracked runs) and ``ltr tune`` (Optuna study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import emit_json, fail


def compare(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: ltr)")] = None,
    split: Annotated[str, typer.Option(help="test | valid: which final metrics to show")] = "test",
    runs: Annotated[str | None, typer.Option(help="comma-separated run ids to keep")] = None,
    limit: Annotated[int, typer.Option(help="newest N runs")] = 20,
    chart: Annotated[
        Path | None, typer.Option(help="PNG path (default var/reports/compare.png)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print a table of tracked runs and write a bar chart of their metrics."""
    from ltr.compare import fetch_runs, format_table, plot_runs
    from ltr.settings import get_settings

    if split not in ("test", "valid"):
        fail(f"--split must be test or valid, not {split!r}")
    try:
        rows = fetch_runs(
            experiment, split=split, run_ids=runs.split(",") if runs else None, limit=limit
        )
    except ValueError as exc:
        fail(str(exc))
    if not rows:
        fail("no finished runs to compare")
    path = plot_runs(rows, chart or get_settings().home / "reports" / "compare.png")
    if json_out:
        emit_json({"runs": rows, "chart": str(path)})
        return
    typer.echo(format_table(rows))
    typer.echo(f"\nchart: {path}")


def tune(
    config: Annotated[Path, typer.Argument(help="base experiment config YAML")],
    trials: Annotated[int, typer.Option(help="number of trials")] = 20,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL (default: in memory)")
    ] = None,
    study_name: Annotated[str | None, typer.Option(help="study name")] = None,
    seed: Annotated[int, typer.Option(help="sampler seed")] = 0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="config override key=value")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search hyperparameters with Optuna (median pruning); every trial is an MLflow run."""
    from ltr.training.config import load_config, parse_overrides

    if trials < 1:
        fail("--trials must be at least 1")
    try:
        cfg = load_config(config, parse_overrides(set_ or []))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    from ltr.tune import run_study

    try:
        result = run_study(
            cfg, n_trials=trials, timeout=timeout, storage=storage, study_name=study_name, seed=seed
        )
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(result)
        return
    typer.echo(
        f"study {result['study']}: {result['n_trials']} trials "
        f"({result['complete']} complete, {result['pruned']} pruned)"
    )
    typer.echo(f"best {result['metric']} = {result['best_value']:.4f}")
    for k, v in result["best_params"].items():
        typer.echo(f"  {k} = {v}")
    typer.echo(f"best run: {result['best_run_dir']} (mlflow {result['best_mlflow_run_id']})")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("tune")(tune)
