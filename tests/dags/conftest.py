"""Airflow for the DAG tests: an isolated AIRFLOW_HOME with a migrated metadata database.

``LTR_TEST_AIRFLOW_DB`` selects the metadata database: ``sqlite`` (default, a file in a
temporary AIRFLOW_HOME) or ``postgres`` (a fresh database on 127.0.0.1:5432, dropped at
the end; ``LTR_TEST_POSTGRES_URL`` overrides the server, default
``postgresql://postgres@127.0.0.1:5432/postgres``). Airflow reads its configuration when it
is first imported, so the environment is set when this conftest loads, before any DAG test
module imports Airflow.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ltr-airflow-test-"))
DB_KIND = os.environ.get("LTR_TEST_AIRFLOW_DB", "sqlite")
PG_SERVER = os.environ.get("LTR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_DB = f"ltr_airflow_test_{uuid.uuid4().hex[:8]}"


def _pg(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_SERVER)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _sql_alchemy_conn() -> str:
    if DB_KIND == "sqlite":
        return f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}"
    if DB_KIND == "postgres":
        base = PG_SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
        return f"{base}/{PG_DB}"
    raise pytest.UsageError(f"LTR_TEST_AIRFLOW_DB must be sqlite or postgres, not {DB_KIND!r}")


# The DAG folder Airflow scans: the project's DAG files plus the harness DAG, as links.
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
_HARNESS_DAG = Path(__file__).parent / "harness" / "harness_check.py"
for _src in [*sorted((REPO / "dags").glob("*.py")), _HARNESS_DAG]:
    (DAGS_FOLDER / _src.name).symlink_to(_src)
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _sql_alchemy_conn()
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[str]:
    """A migrated, empty Airflow metadata database for this test session."""
    if DB_KIND == "postgres":
        try:
            _pg(f"CREATE DATABASE {PG_DB}")
        except Exception as exc:  # server down or no rights: say so and skip
            pytest.skip(f"PostgreSQL at {PG_SERVER} is not usable: {exc}")
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        )
    yield os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if DB_KIND == "postgres":
        with contextlib.suppress(Exception):  # best effort
            _pg(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")


@pytest.fixture(scope="session")
def dagbag(airflow_db: str):  # type: ignore[no-untyped-def]
    """Every DAG of the DAG folder, parsed once."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))
