"""Hourly: impressions and clicks from Redis Streams into the offline store, exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

DOC_MD = """
# ltr_event_drain

Moves the rank service's impressions and clicks from Redis Streams
(`<LTR_EVENTS_STREAM_PREFIX>:impressions|clicks` on `LTR_EVENTS_REDIS_URL`, default
`LTR_REDIS_URL`) into Parquet under `$LTR_HOME/feast/data/events/<kind>/date=YYYY-MM-DD/`,
one file per batch named by its stream-id range.

Exactly once, whatever kills it: a consumer group; its own pending entries re-read first; a
committed watermark (the largest id in a file); an atomic file per batch; `XACK` only after
the file is on disk; trimming only below the watermark (`XTRIM MINID`). A re-run after a kill
acknowledges what was already written and writes the rest. `max_active_runs=1` and a file
lock keep one drain per stream. Redis errors retry; no event log configured fails at once
(set `LTR_EVENTS_REDIS_URL` or pause the DAG); the DAG takes no `conf`. See `ltr.online.drain`.
The same from a shell: `ltr events drain`.
"""


@dag(
    dag_id="ltr_event_drain",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 3, "retry_delay": timedelta(minutes=2)},
    dagrun_timeout=timedelta(minutes=50),
    tags=["ltr", "events", "hourly"],
    doc_md=DOC_MD,
)
def ltr_event_drain() -> None:
    @task
    def drain() -> dict[str, Any]:
        """Every stream until empty; the report (files, acknowledged, watermark) as XCom."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from ltr.pipelines.conf import refuse_unknown_conf
        from ltr.pipelines.failures import fail_fast
        from ltr.pipelines.online import drain_events
        from ltr.settings import get_settings

        with fail_fast("drain"):
            refuse_unknown_conf(get_current_context()["dag_run"].conf, (), "ltr_event_drain")
        if not get_settings().events_redis:  # a setting, not an outage: retrying cannot help
            raise AirflowFailException(
                "no event log configured: set LTR_EVENTS_REDIS_URL (or LTR_REDIS_URL) for "
                "the Airflow workers, or pause ltr_event_drain"
            )
        return drain_events()  # Redis unreachable or another drain running: retried

    drain()


ltr_event_drain()
