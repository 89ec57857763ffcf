"""The daily feature pipeline: raw LETOR files -> validation -> offline store -> Feast -> Redis.

Thin on purpose: every task calls a function of ``ltr.pipelines.feature_pipeline`` (the same
code ``ltr data ingest`` and ``ltr features apply|materialize`` run), with the heavy imports
inside the task bodies.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task

from ltr.pipelines.feature_pipeline import FEATURES_ASSET_URI

FEATURES = Asset(FEATURES_ASSET_URI)

DOC_MD = """
### Daily feature pipeline

Moves one day of raw judgments into the feature store. A run covers its data interval
`[data_interval_start, data_interval_end)`: one UTC day. The schedule is a *data-interval*
daily cron, so the run at midnight (or a manual run for a midnight) covers the day before.

1. **find_raw**: lists `<raw_dir>/<YYYY-MM-DD>/*.txt` for the interval's days (`raw_dir`
   from the pipeline config, default `$LTR_HOME/raw`). Nothing landed: the rest of the run
   is **skipped** and the run still succeeds.
2. **validate**: Great Expectations on every file (`validation:` of the pipeline config)
   and the offline store's feature layout. Reports go to
   `$LTR_HOME/reports/validation/<YYYY-MM-DD>/` whatever the outcome. Bad data **fails
   the run at once** (no retry) and nothing is written.
3. **write_offline**: each file into the offline Parquet tables (event time: the file's
   day at 00:00 UTC) and its judgments into `labels.parquet/` (the retrain DAG's entity
   rows).
4. **apply**: registers `feature_repo/` with Feast.
5. **materialize**: loads `[start - materialize_overlap_hours, end]` into the online
   store (Redis when `LTR_REDIS_URL` is set).
6. **publish**: marks the Asset `ltr://features/offline` updated (the event's extra says
   which partitions); the retrain DAG is scheduled on it.

Failures: bad data, a config that disagrees with the offline store, a missing file
(`ValueError`, `FileNotFoundError`) fail their task **at once** with the fix in the
message; anything else (Redis or Feast unreachable) is retried twice, 5 minutes apart. The
DAG takes no `conf` (a run triggered with one is refused at `find_raw`).

Every task is idempotent for its interval: clearing and re-running a day rewrites the same
files byte for byte and the same online values. Configuration comes from the environment
only: `LTR_HOME`, `LTR_REDIS_URL`, `LTR_FEAST_PROJECT`, `LTR_PIPELINE_CONFIG` (default
`<LTR_HOME>/pipeline.yaml` when present, else `configs/pipeline.yaml`). The same steps from a
shell: `ltr data validate`,
`ltr data ingest`, `ltr features apply`, `ltr features materialize`.
"""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
}


def _interval() -> tuple[datetime, datetime]:
    """The run's data interval, from the task context."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    context = get_current_context()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None or end <= start:
        raise AirflowFailException(
            f"this run has no data interval ({start} .. {end}); trigger it with a logical date"
        )
    return start, end


@dag(
    dag_id="ltr_feature_pipeline",
    # A data-interval timetable: "@daily" alone would be a cron *trigger* in Airflow 3,
    # whose runs have an empty data interval (start == end).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=6),
    tags=["ltr", "features", "feast", "daily"],
    doc_md=DOC_MD,
)
def ltr_feature_pipeline() -> None:
    @task
    def find_raw() -> list[str]:
        """The raw files of the interval; skips the rest of the run when none landed."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        from ltr.pipelines import feature_pipeline as fp
        from ltr.pipelines.conf import refuse_unknown_conf
        from ltr.pipelines.config import load_pipeline_config
        from ltr.pipelines.failures import fail_fast

        start, end = _interval()
        with fail_fast("find_raw"):
            conf = get_current_context()["dag_run"].conf
            refuse_unknown_conf(conf, (), "ltr_feature_pipeline")
            cfg = load_pipeline_config()
            files = fp.raw_files(start, end, cfg)
        if not files:
            days = ", ".join(d.isoformat() for d in fp.interval_days(start, end))
            raise AirflowSkipException(f"nothing landed under {fp.raw_dir(cfg)} for {days}")
        return [str(p) for p in files]

    @task
    def validate(files: list[str]) -> dict[str, Any]:
        """Great Expectations on every file; bad data fails the run without retries."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from ltr.pipelines import feature_pipeline as fp
        from ltr.pipelines.config import load_pipeline_config
        from ltr.pipelines.failures import fail_fast
        from ltr.validation import DataValidationError

        report_dir = fp.validation_report_dir()
        with fail_fast("validate"):
            cfg = load_pipeline_config()
            try:
                return fp.validate_raw([Path(f) for f in files], cfg, report_dir)
            except DataValidationError as exc:  # retrying cannot fix the data
                raise AirflowFailException(
                    f"raw data failed validation (reports under {report_dir}):\n{exc}"
                ) from exc

    @task
    def write_offline(files: list[str]) -> dict[str, Any]:
        """Each file into the offline store (features and labels), replacing a re-run's."""
        from pathlib import Path

        from ltr.pipelines import feature_pipeline as fp
        from ltr.pipelines.config import load_pipeline_config
        from ltr.pipelines.failures import fail_fast

        start, _ = _interval()
        with fail_fast("write_offline"):
            return fp.write_offline([Path(f) for f in files], start, load_pipeline_config())

    @task(task_id="apply")
    def apply_features() -> dict[str, Any]:
        """Register feature_repo/ with Feast."""
        from ltr.pipelines import feature_pipeline as fp
        from ltr.pipelines.failures import fail_fast

        with fail_fast("apply"):
            return fp.apply_features()

    @task
    def materialize() -> dict[str, Any]:
        """The interval (plus the configured overlap) into the online store."""
        from ltr.pipelines import feature_pipeline as fp
        from ltr.pipelines.config import load_pipeline_config
        from ltr.pipelines.failures import fail_fast

        start, end = _interval()
        with fail_fast("materialize"):
            return fp.materialize_interval(start, end, load_pipeline_config())

    @task(outlets=[FEATURES])
    def publish(written: dict[str, Any], materialized: dict[str, Any]) -> dict[str, Any]:
        """Record the Asset update (with what was written) for the retrain DAG."""
        from airflow.sdk import get_current_context

        start, end = _interval()
        extra = {
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "partitions": [f["partition"] for f in written["files"]],
            "query_doc_rows": written["query_doc_rows"],
            "label_rows": written["label_rows"],
            "online_rows": materialized["total_rows"],
            "online_store": materialized["online_store"],
        }
        get_current_context()["outlet_events"][FEATURES].extra = extra
        return extra

    # XComArgs at parse time, the values at run time: typed Any for the type checker.
    files: Any = find_raw()
    checked: Any = validate(files)
    written: Any = write_offline(files)
    applied: Any = apply_features()
    materialized: Any = materialize()
    checked >> written >> applied >> materialized
    publish(written, materialized)


ltr_feature_pipeline()
