"""``ltr pipeline``: run the project's Airflow DAGs from a shell (``dag.test()`` semantics)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import emit_json, fail

pipeline_app = typer.Typer(help="Run the Airflow DAGs (feature pipeline, retrain, promotion).")


@pipeline_app.command("run")
def run(
    dag_id: Annotated[
        str, typer.Argument(help="ltr_feature_pipeline | ltr_retrain | ltr_promotion")
    ],
    logical_date: Annotated[
        str | None, typer.Option(help="ISO date-time of the run (default: now)")
    ] = None,
    conf: Annotated[str | None, typer.Option(help="run conf / Params as a JSON object")] = None,
    result_file: Annotated[
        Path | None, typer.Option(help="also write the result (states, XComs) as JSON here")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One DAG run on the embedded Airflow (SQLite under LTR_HOME/airflow unless configured)."""
    from ltr.pipelines.airflow_runner import configure_airflow, migrate_db, run_dag

    try:
        when = datetime.fromisoformat(logical_date) if logical_date else None
        params = json.loads(conf) if conf else None
        if params is not None and not isinstance(params, dict):
            raise ValueError("--conf must be a JSON object")
    except (ValueError, json.JSONDecodeError) as exc:
        fail(str(exc))
    env = configure_airflow()
    try:
        migrate_db(env)
        result = run_dag(dag_id, logical_date=when, conf=params)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    if result.get("replaced"):
        old = result["replaced"]
        typer.echo(
            f"note: replaced the earlier run {old['run_id']} ({old['state']}) of {dag_id} for "
            f"logical date {result['logical_date']}: one run per logical date",
            err=True,
        )
    if result_file is not None:
        from ltr.utils.io import write_json_atomic

        write_json_atomic(result_file, result)
    if json_out:
        emit_json(result)
    else:
        typer.echo(f"{dag_id} {result['run_id']}: {result['state']}")
        for task, state in result["tasks"].items():
            typer.echo(f"  {task:<22} {state}")
    if result["state"] != "success":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")
