"""Run the project's DAGs from a shell or the demo: one real DAG run in this process.

Airflow reads its configuration when first imported, so :func:`configure_airflow` must run
before anything imports ``airflow``. Embedded defaults: ``AIRFLOW_HOME=<LTR_HOME>/airflow``,
a SQLite metadata database there, the repository's ``dags/`` folder, no examples (the same
layout as ``make airflow``). Any ``AIRFLOW__*`` variable already set wins, so PostgreSQL is
one ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` away.

A run's logical date is the data's date (the feature pipeline's day), often in the past;
its start date is when it really started, so the UI shows real durations (``dag.test()``
alone starts a run at its logical date: "330d" for a run of last year's data). A run for a
logical date that already has one replaces it (``dag.test()`` semantics), and the result
says which run it replaced.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ltr.pipelines.config import REPO_ROOT
from ltr.settings import Settings, get_settings

DAGS_FOLDER = REPO_ROOT / "dags"


def airflow_environment(settings: Settings | None = None) -> dict[str, str]:
    """The ``AIRFLOW_*`` variables of the embedded default layout (existing ones win)."""
    s = settings or get_settings()
    home = Path(os.environ.get("AIRFLOW_HOME") or (s.home.resolve() / "airflow"))
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def configure_airflow(settings: Settings | None = None) -> dict[str, str]:
    if "airflow" in sys.modules:
        raise RuntimeError("configure_airflow() must run before airflow is imported")
    env = airflow_environment(settings)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    return env


def migrate_db(env: dict[str, str]) -> None:
    """``airflow db migrate`` (idempotent) in a child process with ``env``."""
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        tail = (out.stderr or out.stdout)[-1500:]
        raise RuntimeError(f"airflow db migrate failed: {tail}")


@contextlib.contextmanager
def _runs_start_now() -> Iterator[None]:
    """``dag.test()`` creating its run with ``start_date`` = now, not the logical date."""
    from unittest import mock

    from airflow.models import dagrun
    from airflow.sdk import timezone

    real = dagrun.get_or_create_dagrun

    def create(**kwargs: Any) -> Any:
        kwargs["start_date"] = timezone.utcnow()
        return real(**kwargs)

    with mock.patch.object(dagrun, "get_or_create_dagrun", create):
        yield


def existing_run(dag_id: str, logical_date: datetime) -> dict[str, Any] | None:
    """The run of ``dag_id`` for ``logical_date`` already in the metadata database, if any."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    when = timezone.coerce_datetime(logical_date)
    with create_session() as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == when)
        )
        if run is None:
            return None
        return {"run_id": run.run_id, "state": str(run.state), "run_type": str(run.run_type)}


def run_dag(
    dag_id: str, *, logical_date: datetime | None = None, conf: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One run of ``dag_id`` with ``dag.test()``: every task in this process, recorded in the
    metadata database like a scheduled run, started now (whatever its logical date). A run
    already there for the same logical date is replaced, named under ``replaced``. Returns
    the run state, task states and XComs."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        first = next(iter(bag.import_errors.items()))
        raise RuntimeError(f"DAG import error in {first[0]}: {first[1]}")
    if dag_id not in bag.dags:
        raise ValueError(f"unknown DAG {dag_id!r}; valid: {', '.join(sorted(bag.dags))}")
    kwargs: dict[str, Any] = {"run_conf": conf or {}}
    replaced = None
    if logical_date is not None:
        kwargs["logical_date"] = logical_date
        replaced = existing_run(dag_id, logical_date)
    with _runs_start_now():
        run = bag.dags[dag_id].test(**kwargs)
    tasks: dict[str, str | None] = {}
    xcoms: dict[str, Any] = {}
    for ti in run.get_task_instances():
        tasks[ti.task_id] = str(ti.state) if ti.state is not None else None
        try:  # a task may push its result and still fail (the promotion report does)
            xcoms[ti.task_id] = ti.xcom_pull(task_ids=ti.task_id)
        except Exception:  # an XCom that cannot be read back is only informational
            xcoms[ti.task_id] = None
    return {
        "dag_id": dag_id,
        "run_id": run.run_id,
        "state": str(run.state),
        "logical_date": run.logical_date.isoformat() if run.logical_date else None,
        "start_date": run.start_date.isoformat() if run.start_date else None,
        "end_date": run.end_date.isoformat() if run.end_date else None,
        "replaced": replaced,
        "tasks": tasks,
        "xcom": xcoms,
    }
