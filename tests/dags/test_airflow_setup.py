"""The DAG test harness itself: Airflow runs a DAG end to end on the selected database."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.dags


def test_a_trivial_dag_runs_to_success_on_the_configured_metadata_database(airflow_db, dagbag):
    run = dagbag.dags["harness_check"].test()
    assert run.state == "success"
    values = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}
    assert values == {"add": 5, "double": 10}
    expected = "postgresql" if os.environ.get("LTR_TEST_AIRFLOW_DB") == "postgres" else "sqlite"
    assert airflow_db.startswith(expected)
