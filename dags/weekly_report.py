"""Weekly: online metrics, experiment analysis and the report e-mail; results fed back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from ltr.pipelines.config import load_pipeline_config
from ltr.pipelines.forms import report_defaults

_defaults = report_defaults()  # YAML + pydantic only, never fails: cheap at parse time

DOC_MD = """
# ltr_weekly_report

Every Monday 06:00 UTC for the week before (Monday to Monday), or by hand for any week
(**Trigger** -> `week`: any date inside it).

1. **drain**: the event streams into the offline store first, so the week is complete.
2. **collect**: the week's impressions and clicks -> per version and variant: impressions,
   CTR@1/3/10, clicks per query, MRR of clicks, abandonment; latency p50/p99 and error rate
   (Prometheus when `prometheus_url` is set, else the service's counters); team-draft
   interleaving (binomial test, bootstrap interval); A/B per user (Welch) with a
   sample-ratio check; offline NDCG@10 of each version; trends of earlier weeks.
3. **render**: `$LTR_HOME/reports/weekly/<monday>/report.html|json|txt` + PNG charts.
4. **feed_back**: the decision (`$LTR_HOME/experiments/decision.json`, read by the retrain
   and the promotion) and position-debiased click labels
   (`$LTR_HOME/feast/data/click_labels/week=<monday>/`).
5. **email**: through the Airflow SMTP connection (`smtp_conn_id`, default `smtp_default`);
   with no recipients configured the message is written as `report.eml` instead. A missing
   connection fails this task with how to define it; the artifacts stay.

Defaults come from the `report:` section of the pipeline config.
"""


@dag(
    dag_id="ltr_weekly_report",
    schedule="0 6 * * 1",
    start_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=5)},
    dagrun_timeout=timedelta(hours=2),
    tags=["ltr", "report", "weekly"],
    doc_md=DOC_MD,
    params={
        "week": Param(
            None,  # optional fields accept null: a string-only one is required in the UI form
            type=["null", "string"],
            title="Week",
            description="Any date (YYYY-MM-DD) in the week to report; empty: the week before "
            "the run's logical date.",
            pattern=r"^(|\d{4}-\d{2}-\d{2})$",
        ),
        "recipients": Param(
            list(_defaults.recipients),
            type="array",
            items={"type": "string", "format": "email"},
            title="Recipients",
            description="E-mail addresses; empty: the message is written as report.eml.",
        ),
        "service_url": Param(
            _defaults.service_url or None,
            type=["null", "string"],
            title="Rank service URL",
            description="Where latency and errors are read when no Prometheus URL is set "
            "(e.g. http://127.0.0.1:8000); empty: not shown in the report.",
        ),
        "prometheus_url": Param(
            _defaults.prometheus_url or None,
            type=["null", "string"],
            title="Prometheus URL",
            description="Prometheus base URL (aggregates every replica); preferred over the "
            "service URL; empty: the service URL is used.",
        ),
    },
)
def ltr_weekly_report() -> None:
    @task
    def drain() -> dict[str, Any]:
        """The streams into the offline store (skipped without an event log)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ltr.pipelines.online import drain_events
        from ltr.settings import get_settings

        if not get_settings().events_redis:
            raise AirflowSkipException("no event log configured (LTR_EVENTS_REDIS_URL)")
        return drain_events()

    @task(trigger_rule="none_failed")
    def collect() -> dict[str, Any]:
        """Metrics, analysis and decision of the week."""
        from ltr.pipelines.conf import refuse_unknown_conf
        from ltr.pipelines.failures import fail_fast
        from ltr.pipelines.online import collect as collect_week
        from ltr.pipelines.online import report_week

        ctx = get_current_context()
        params = ctx["params"]
        with fail_fast("collect"):
            refuse_unknown_conf(ctx["dag_run"].conf, ctx["dag"].params.keys(), "ltr_weekly_report")
            monday = report_week(ctx["logical_date"], params.get("week") or None)
            alpha = load_pipeline_config().report.alpha
        return collect_week(
            monday,
            service_url=params.get("service_url") or None,
            prometheus_url=params.get("prometheus_url") or None,
            alpha=alpha,
        )

    @task
    def render(data: dict[str, Any]) -> dict[str, Any]:
        """report.html, report.json, report.txt and the charts."""
        from ltr.pipelines.online import render as render_week

        return render_week(data)

    @task
    def feed_back(data: dict[str, Any]) -> dict[str, Any]:
        """The decision for retrain/promotion and the week's debiased click labels."""
        from ltr.pipelines.online import feed_back as feed

        return feed(data)

    @task
    def email(paths: dict[str, Any]) -> dict[str, Any]:
        """Send through the SMTP connection, or write report.eml without recipients."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from ltr.online.mail import ReportMailError
        from ltr.pipelines.online import send

        cfg = load_pipeline_config().report
        recipients = list(get_current_context()["params"].get("recipients") or [])
        if not recipients:
            eml = Path(paths["html"]).with_name("report.eml")
            return send(paths, recipients=["report@localhost"], sender=cfg.sender, eml_path=eml)
        try:
            return send(paths, recipients=recipients, sender=cfg.sender, conn_id=cfg.smtp_conn_id)
        except ReportMailError as exc:  # retrying cannot create a connection
            raise AirflowFailException(f"{exc} (the report is kept at {paths['html']})") from exc

    data = collect()
    paths = render(data)
    drain() >> data
    feed_back(data)
    email(paths)


ltr_weekly_report()
