"""Task bodies of the event-drain and weekly-report DAGs (also run by ``ltr report weekly``).

Weekly report, one ISO week ``[monday, next monday)`` (UTC):

1. :func:`collect`: the week's drained impressions and clicks -> online metrics per version
   and variant, latency and errors (Prometheus when ``prometheus_url`` is set, else the
   service's own counters when ``service_url`` answers), the interleaving outcome, the A/B
   comparison with its sample-ratio check, offline NDCG@10 of each version, the trend of
   earlier weeks' reports, and one decision.
2. :func:`render`: ``<home>/reports/weekly/<monday>/`` (report.html, report.json, report.txt,
   PNG charts).
3. :func:`feed_back`: the decision for retrain and promotion
   (``<home>/experiments/decision.json``, and per week) and click-derived training labels
   with position-bias correction (``<home>/feast/data/click_labels/week=<monday>/``).
4. :func:`send`: the e-mail through Airflow's SMTP connection, or a ``.eml`` file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from ltr.settings import Settings, get_settings
from ltr.utils.io import write_json_atomic

log = logging.getLogger(__name__)

TREND_WEEKS = 8
DECISION_FILE = "decision.json"


# --------------------------------------------------------------------------- drain
def drain_events(
    settings: Settings | None = None, max_entries: int | None = None
) -> dict[str, Any]:
    """Drain the streams into ``<home>/feast/data/events`` (see :mod:`ltr.online.drain`)."""
    import redis

    from ltr.online.drain import Drainer, DrainError

    settings = settings or get_settings()
    url = settings.events_redis
    if not url:
        raise DrainError("no event log configured: set LTR_EVENTS_REDIS_URL or LTR_REDIS_URL")
    prefix = settings.events_stream_prefix
    streams = {"impressions": f"{prefix}:impressions", "clicks": f"{prefix}:clicks"}
    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    try:
        report = Drainer(client, settings.events_dir, streams=streams).drain(max_entries)
    finally:
        client.close()
    return report.to_dict()


# --------------------------------------------------------------------------- weeks
def week_of(day: date | datetime | str) -> date:
    """The Monday of the ISO week holding ``day`` (an ISO date string is accepted)."""
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day[:10])
        except ValueError:
            raise ValueError(f"week: expected a date as YYYY-MM-DD, got {day!r}") from None
    if isinstance(day, datetime):
        day = day.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def report_week(logical_date: datetime, requested: str | None = None) -> date:
    """The week a run reports: the one asked for, else the full week before ``logical_date``."""
    if requested:
        return week_of(requested)
    return week_of(logical_date) - timedelta(days=7)


def week_dir(settings: Settings, monday: date) -> Path:
    return settings.reports_dir / "weekly" / monday.isoformat()


# --------------------------------------------------------------------------- collect
def _offline_ndcg(settings: Settings, version: str) -> float | None:
    meta_path = settings.models_dir / "versions" / version / "metadata.json"
    if not meta_path.is_file():
        return None
    metrics = json.loads(meta_path.read_text()).get("metrics") or {}
    for split in ("test", "valid"):
        value = (metrics.get(split) or {}).get("ndcg@10")
        if value is not None:
            return round(float(value), 6)
    return None


def _service_figures(
    service_url: str | None, prometheus_url: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    from ltr.online.metrics import prometheus_counters, service_counters

    if prometheus_url:
        try:
            return prometheus_counters(prometheus_url), None
        except Exception as exc:  # the report says what it could not read
            return None, f"Prometheus at {prometheus_url} did not answer: {exc}"
    if service_url:
        try:
            return service_counters(service_url), None
        except Exception as exc:
            return None, f"the service at {service_url} did not answer: {exc}"
    return None, "no service_url or prometheus_url configured: latency and errors not shown"


def _ab(
    log_df: Any, routing: Mapping[str, Any] | None, alpha: float
) -> tuple[Any, Any, dict[str, Any] | None]:
    """A/B between the variants of the routing in force (strategy ``ab`` or ``canary``):
    per-user MRR of clicks on the impressions each variant served with its configured
    version, and the sample-ratio check against the configured weights. None when the
    routing splits no users (traffic from other set-ups, such as an earlier canary, would
    compare different periods and clients, not variants)."""
    from ltr.online.analysis import ab_test, srm_check
    from ltr.online.metrics import per_user

    if not routing or routing.get("strategy") not in ("ab", "canary"):
        return None, None, None
    arms = {v["name"]: v["version"] for v in routing.get("variants", []) if v["weight"] > 0}
    if len(arms) != 2:
        return None, None, None
    users = per_user(log_df)
    if users.empty:
        return None, None, None
    served = users[
        [arms.get(v) == m for v, m in zip(users["variant"], users["model_version"], strict=True)]
    ]
    names = list(arms)
    if arms[names[1]] == routing.get("production"):
        names.reverse()
    control, treatment = names
    a = served.loc[served["variant"] == control, "value"].to_numpy()
    b = served.loc[served["variant"] == treatment, "value"].to_numpy()
    if len(a) < 2 or len(b) < 2:
        return None, None, None
    result = ab_test(
        a, b, alpha=alpha, control=control, treatment=treatment, metric="clicks_mrr_per_user"
    )
    weights = {v["name"]: float(v["weight"]) for v in routing["variants"] if v["name"] in arms}
    total = sum(weights.values())
    srm = srm_check(
        {control: len(a), treatment: len(b)}, {k: w / total for k, w in weights.items()}
    )
    summary = {
        **result.to_dict(),
        "control": arms[control],
        "treatment": arms[treatment],
        "variants": {"control": control, "treatment": treatment},
        "srm": srm.to_dict(),
    }
    return result, srm, summary


def collect(
    monday: date,
    *,
    settings: Settings | None = None,
    service_url: str | None = None,
    prometheus_url: str | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The report's data for the week starting ``monday`` (see the module docstring)."""
    from ltr.model_store import read_routing
    from ltr.online.analysis import decide, interleaving_test
    from ltr.online.drain import read_events
    from ltr.online.metrics import (
        attach_service_figures,
        click_log,
        interleaving_outcomes,
        online_metrics,
    )

    settings = settings or get_settings()
    start = datetime.combine(monday, time(0), UTC)
    end = start + timedelta(days=7)
    imp = read_events(settings.events_dir, "impressions", start=start, end=end).to_pandas()
    clk = read_events(settings.events_dir, "clicks", start=start, end=end + timedelta(hours=1))
    clk_df = clk.to_pandas()
    log_df = click_log(imp, clk_df)
    figures, figures_note = _service_figures(service_url, prometheus_url)
    variants = attach_service_figures(online_metrics(log_df), figures)

    interleaving = None
    inter_result = None
    outcomes = interleaving_outcomes(log_df)
    decided = outcomes[(outcomes["a"] + outcomes["b"]) > 0] if len(outcomes) else outcomes
    if len(decided):
        pair = str(decided["pair"].mode().iloc[0])
        decided = decided[decided["pair"] == pair]
        inter_result = interleaving_test(list(decided["winner"]), alpha=alpha)
        a, _, b = pair.partition("|")
        interleaving = {"a": a, "b": b, **inter_result.to_dict()}
        interleaving["impressions"] = int((outcomes["pair"] == pair).sum())

    routing = read_routing(settings.models_dir)
    ab_result, srm, ab = _ab(log_df, routing, alpha)
    if inter_result is None and ab_result is None:
        decision: dict[str, Any] = {
            "winner": None,
            "source": None,
            "effect": None,
            "ci": None,
            "p_value": None,
            "recommendation": "no_experiment",
            "reason": "No interleaving and no A/B traffic with clicks this week.",
        }
    else:
        decision = decide(interleaving=inter_result, ab=ab_result, srm=srm).to_dict()
    if interleaving is not None and decision.get("source") == "interleaving":
        side = decision.get("winner")
        decision["winner_version"] = (
            interleaving["a"] if side == "a" else interleaving["b"] if side == "b" else None
        )
    elif ab is not None and decision.get("source") == "ab":
        side = decision.get("winner")
        decision["winner_version"] = (
            ab["control"]
            if side == ab["variants"]["control"]
            else ab["treatment"]
            if side == ab["variants"]["treatment"]
            else None
        )
    decision["week"] = monday.isoformat()
    if interleaving is not None and decision.get("source") in ("interleaving", None):
        decision["compared"] = {"a": interleaving["a"], "b": interleaving["b"]}
    elif ab is not None:
        decision["compared"] = {"a": ab["control"], "b": ab["treatment"]}

    trend = _trend(settings, monday, variants)
    offline = [
        {
            "model_version": row["model_version"],
            "offline_ndcg_at_10": _offline_ndcg(settings, row["model_version"]),
            "online_mrr": row["mrr"],
            "online_ctr_at_10": row["ctr_at"].get("10"),
        }
        for row in variants
        if "|" not in row["model_version"]
    ]
    orphan = 0
    if len(clk_df):
        orphan = int((~clk_df["request_id"].isin(set(imp["request_id"]))).sum())
    return {
        "week": {"start": monday.isoformat(), "end": (monday + timedelta(days=7)).isoformat()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "variants": variants,
        "trend": trend,
        "offline_vs_online": offline,
        "interleaving": interleaving,
        "ab": ab,
        "decision": decision,
        "events": {
            "impressions": len(imp),
            "clicks": int(sum(len(d) for d in clk_df["doc_ids"])) if len(clk_df) else 0,
            "click_entries_without_impression": orphan,
            "drained_until": _watermark(settings),
        },
        "notes": [figures_note] if figures_note else [],
    }


def _watermark(settings: Settings) -> str | None:
    state = settings.events_dir / "_state" / "impressions.json"
    if not state.is_file():
        return None
    value = json.loads(state.read_text()).get("watermark")
    return str(value) if value else None


def _trend(settings: Settings, monday: date, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for back in range(TREND_WEEKS - 1, 0, -1):
        week = monday - timedelta(days=7 * back)
        path = week_dir(settings, week) / "report.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("skipping unreadable report %s", path)
            continue
        rows.extend(_trend_rows(week, data.get("variants") or []))
    rows.extend(_trend_rows(monday, current))
    return rows


def _trend_rows(week: date, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "week_start": week.isoformat(),
            "model_version": v["model_version"],
            "variant": v["variant"],
            "ctr_at_10": (v.get("ctr_at") or {}).get("10"),
            "mrr": v.get("mrr"),
            "impressions": v.get("impressions"),
        }
        for v in variants
    ]


# --------------------------------------------------------------------------- render
def render(data: Mapping[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """HTML + JSON + text + charts under ``<home>/reports/weekly/<monday>/``."""
    from ltr.online.report import render_report

    settings = settings or get_settings()
    monday = date.fromisoformat(data["week"]["start"])
    art = render_report(data, week_dir(settings, monday))
    return {
        "html": str(art.html_path),
        "json": str(art.json_path),
        "text": str(art.text_path),
        "images": {k: str(v) for k, v in art.images.items()},
        "subject": art.subject,
    }


def artifacts_from(paths: Mapping[str, Any]) -> Any:
    from ltr.online.report import ReportArtifacts

    return ReportArtifacts(
        html_path=Path(paths["html"]),
        json_path=Path(paths["json"]),
        text_path=Path(paths["text"]),
        images={k: Path(v) for k, v in paths["images"].items()},
        subject=str(paths["subject"]),
    )


# --------------------------------------------------------------------------- feed back
def feed_back(data: Mapping[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """The decision where retrain and promotion read it, and click-derived labels."""
    settings = settings or get_settings()
    monday = date.fromisoformat(data["week"]["start"])
    decision = dict(data["decision"])
    exp = settings.home / "experiments"
    write_json_atomic(exp / "decisions" / f"{monday.isoformat()}.json", decision)
    latest = exp / DECISION_FILE
    current = json.loads(latest.read_text()) if latest.is_file() else {}
    if str(current.get("week", "")) <= monday.isoformat():
        write_json_atomic(latest, decision)
    return {"decision": str(latest), "labels": click_labels(monday, settings)}


def click_labels(monday: date, settings: Settings) -> dict[str, Any]:
    """Position-debiased labels from the week's clicks (PBM propensities by EM)."""
    from ltr.online.click_labels import debiased_labels, naive_labels, write_click_labels
    from ltr.online.drain import read_events
    from ltr.online.metrics import click_log
    from ltr.online.propensity import estimate_propensities

    start = datetime.combine(monday, time(0), UTC)
    end = start + timedelta(days=7)
    imp = read_events(settings.events_dir, "impressions", start=start, end=end).to_pandas()
    clk = read_events(settings.events_dir, "clicks", start=start, end=end + timedelta(hours=1))
    log_df = click_log(imp, clk.to_pandas())
    # interleaved lists mix two rankers; every shown document still has a position
    if log_df.empty or not log_df["clicked"].any():
        return {"status": "skipped", "reason": "no clicks this week"}
    log_df = log_df.assign(clicked=log_df["clicked"].astype(bool))
    estimate = estimate_propensities(log_df)
    folder = settings.home / "feast" / "data" / "click_labels" / f"week={monday.isoformat()}"
    debiased = debiased_labels(log_df, estimate)
    write_click_labels(debiased, folder / "labels.parquet")
    write_click_labels(naive_labels(log_df), folder / "naive_labels.parquet")
    write_json_atomic(folder / "propensities.json", estimate.to_dict())
    return {
        "status": "written",
        "path": str(folder / "labels.parquet"),
        "pairs": len(debiased),
        "propensities": estimate.to_dict()["propensities"],
    }


def latest_decision(settings: Settings | None = None) -> dict[str, Any] | None:
    """The newest online decision (what the retrain and the promotion read), or None."""
    settings = settings or get_settings()
    path = settings.home / "experiments" / DECISION_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# --------------------------------------------------------------------------- send
def send(
    paths: Mapping[str, Any],
    *,
    recipients: list[str],
    sender: str = "ltr-platform@localhost",
    conn_id: str = "smtp_default",
    eml_path: Path | None = None,
) -> dict[str, Any]:
    """E-mail the rendered report through Airflow's SMTP connection ``conn_id``; with
    ``eml_path``, write the message there instead."""
    from ltr.online.mail import build_message, send_via_airflow, write_eml

    message = build_message(artifacts_from(paths), sender=sender, recipients=recipients)
    size = len(message.as_bytes())
    if eml_path is not None:
        write_eml(message, eml_path)
        return {"status": "written", "eml": str(eml_path), "bytes": size}
    send_via_airflow(message, conn_id=conn_id)
    return {"status": "sent", "conn_id": conn_id, "recipients": recipients, "bytes": size}
