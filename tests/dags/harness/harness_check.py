"""A two-task DAG that checks the test harness (metadata DB, DAG bundle, task runner)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["test"],
)
def harness_check() -> None:
    @task
    def add(a: int, b: int) -> int:
        return a + b

    @task
    def double(x: int) -> int:
        return 2 * x

    double(add(2, 3))


harness_check()
