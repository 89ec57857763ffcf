"""Conventions every DAG in dags/ keeps (STYLE.md 7): it imports, it is thin, it retries.

Checked on the DagBag that Airflow itself builds from the DAG folder, and on the source of
dags/*.py and ltr/pipelines/*.py with ``ast`` (what a file imports at its top level, and
whether anything reaches for Airflow's metadata database).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.dags

REPO = Path(__file__).resolve().parents[2]
#: Set by tests/dags/conftest.py when it loads: dags/*.py plus the harness DAG, as links.
DAGS_FOLDER = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
HARNESS = {"harness_check"}
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
#: The task code. airflow_runner.py is not: it is what `ltr pipeline run` calls in place of
#: `airflow dags test` (outside any task), and reads the metadata database as that does.
PIPELINE_FILES = sorted(
    p for p in (REPO / "ltr" / "pipelines").glob("*.py") if p.name != "airflow_runner.py"
)
HEAVY = {
    "torch",
    "lightgbm",
    "mlflow",
    "feast",
    "great_expectations",
    "onnxruntime",
    "pandas",
    "sklearn",
}
#: Direct metadata-DB access: tasks talk to Airflow through the Task SDK only.
DB_NAMES = {"Session", "create_session", "provide_session"}
DB_MODULES = {"airflow.settings", "airflow.utils.session"}


def _dag_ids() -> list[str]:
    """DAG ids of dags/ as Airflow parses them (at collection; parsing needs no database)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    return sorted(set(bag.dag_ids) - HARNESS)


def _top_level_imports(path: Path) -> set[str]:
    """Root package names a module imports when it is loaded (not inside functions)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.If | ast.Try | ast.With):  # still run at import time
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    todo.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return names


def _db_access(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module in (*DB_MODULES, "airflow"):
            found += [
                f"{path.name}:{node.lineno} from {node.module} import {a.name}"
                for a in node.names
                if a.name in DB_NAMES or a.name == "*" or f"{node.module}.{a.name}" in DB_MODULES
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno} import {a.name}"
                for a in node.names
                if a.name in DB_MODULES
            ]
    return found


def test_every_dag_file_in_dags_imports_without_errors(dagbag: Any) -> None:
    assert DAG_FILES, "dags/ holds no DAG file"
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) - HARNESS, "no DAG found in dags/"


@pytest.mark.parametrize("dag_id", _dag_ids())
def test_dag_keeps_the_conventions(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags.get(dag_id)
    assert dag is not None, f"{dag_id} did not load: {dagbag.import_errors}"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.tags, f"{dag_id} has no tags"
    assert (dag.doc_md or "").strip(), f"{dag_id} has no doc_md"
    for t in dag.tasks:
        assert t.retries >= 2, f"{dag_id}.{t.task_id}: retries {t.retries} < 2"
        delay = t.retry_delay
        assert isinstance(delay, timedelta) and delay.total_seconds() > 0, (
            f"{dag_id}.{t.task_id}: no retry_delay"
        )


@pytest.mark.parametrize("dag_id", _dag_ids())
def test_every_field_of_a_dags_trigger_form_has_a_title_and_a_description(
    dagbag: Any, dag_id: str
) -> None:
    params = dagbag.dags[dag_id].params
    for name in params:
        param = params.get_param(name)
        assert (param.description or "").strip(), f"{dag_id}.{name}: no description"
        assert param.schema.get("title"), f"{dag_id}.{name}: no title"


def _optional_but_required_in_the_ui(param: Any) -> bool:
    """A field whose default is empty but whose schema refuses null: Airflow's form marks it
    required and keeps its Trigger button disabled until something is typed in."""
    types = param.schema.get("type")
    allowed = set(types) if isinstance(types, list) else {types}
    return param.value in ("", None) and "null" not in allowed and "enum" not in param.schema


@pytest.mark.parametrize("dag_id", _dag_ids())
def test_an_optional_form_field_accepts_null_so_the_form_can_be_sent_empty(
    dagbag: Any, dag_id: str
) -> None:
    params = dagbag.dags[dag_id].params
    blocking = [n for n in params if _optional_but_required_in_the_ui(params.get_param(n))]
    assert not blocking, f"{dag_id}: {blocking} have an empty default but do not accept null"


def test_the_optional_field_check_catches_a_string_only_field_with_an_empty_default() -> None:
    from airflow.sdk import Param

    assert _optional_but_required_in_the_ui(Param("", type="string", title="t", description="d"))
    assert not _optional_but_required_in_the_ui(Param(None, type=["null", "string"]))
    assert not _optional_but_required_in_the_ui(Param("x", type="string"))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dag_file_imports_no_heavy_module_at_top_level(path: Path) -> None:
    heavy = _top_level_imports(path) & HEAVY
    assert not heavy, f"{path.name} imports {sorted(heavy)} at parse time; import in the task"


@pytest.mark.parametrize("path", DAG_FILES + PIPELINE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_task_uses_the_airflow_metadata_database_directly(path: Path) -> None:
    assert _db_access(path) == []


def test_the_import_checks_catch_what_they_are_meant_to(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pandas as pd\n"
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "from airflow.settings import Session\n"
        "def task():\n    import mlflow\n    from airflow.utils.session import create_session\n"
    )
    assert _top_level_imports(bad) & HEAVY == {"pandas", "torch"}
    assert _db_access(bad) == [
        "bad.py:6 from airflow.settings import Session",
        "bad.py:9 from airflow.utils.session import create_session",
    ]


def test_parsing_the_dag_folder_imports_no_heavy_library(airflow_db: str) -> None:
    """In a fresh interpreter (nothing cached), as the DAG processor would: parsing stays
    cheap because no task library is imported at parse time (what parsing costs in seconds
    is measured by a benchmark, not asserted here)."""
    code = (
        "import json, sys; from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})\n"
        "print(json.dumps([len(bag.import_errors), sorted(bag.dag_ids),"
        " sorted({m.split('.')[0] for m in sys.modules})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    errors, dag_ids, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert errors == 0, out.stderr[-2000:]
    assert set(_dag_ids()) <= set(dag_ids)
    assert set(modules) & HEAVY == set()
