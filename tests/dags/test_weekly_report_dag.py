"""The ltr_weekly_report DAG end to end, on real simulated traffic.

A rank service (uvicorn, two real exported models: v2 against v1 in team-draft
interleaving for half the users, v1 for the rest) logs impressions and clicks to Redis
Streams; the traffic simulator sends it users whose clicks follow graded labels that favour
v1. Airflow then runs the DAG: drain -> collect -> render -> feed_back -> email, the e-mail
going to a real SMTP server (aiosmtpd) through the ``smtp_default`` connection.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from support.env import isolated_home
from support.online import graded_by_v1
from support.serving import REDIS_URL, LiveServer, export_templates, make_settings
from support.smtp import StoringHandler, smtp_sink

from ltr.online.clickmodel import ClickModel
from ltr.online.simulate import TrafficSimulator

pytestmark = [pytest.mark.dags, pytest.mark.integration]

DAG_ID = "ltr_weekly_report"


@dataclass
class Env:
    home: Path
    sim: dict[str, Any]
    prefix: str
    service_url: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, airflow_db: str) -> Iterator[Env]:
    from ltr.model_store import write_routing

    home = tmp_path_factory.mktemp("weekly_home")
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} does not answer: {exc}")
    prefix = f"test:{uuid.uuid4().hex[:12]}:events"
    models = home / "models"
    export_templates(models)
    write_routing(
        models,
        {
            "strategy": "interleave",
            "production": "v1",
            "interleave": {"a": "v2", "b": "v1", "percent": 50},
        },
    )
    settings = make_settings(
        models,
        events_enabled=True,
        events_redis_url=REDIS_URL,
        events_stream_prefix=prefix,
        cache_enabled=False,
    )
    try:
        with (
            isolated_home(
                home,
                unset=("LTR_PIPELINE_CONFIG", "LTR_REDIS_URL"),
                LTR_EVENTS_REDIS_URL=REDIS_URL,
                LTR_EVENTS_STREAM_PREFIX=prefix,
            ),
            LiveServer(settings) as server,
        ):
            sim = TrafficSimulator(
                server.url,
                graded_by_v1(80),
                click_model=ClickModel("pbm", eta=1.0, max_grade=2),
                seed=3,
                n_users=200,
                send_features=True,
                concurrency=3,
            ).run(1200, max_seconds=300)
            assert sim.answered == 1200, sim.errors
            yield Env(home, sim.to_dict(), prefix, server.url)
    finally:
        client.delete(f"{prefix}:impressions", f"{prefix}:clicks")
        client.close()


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[StoringHandler]:
    with smtp_sink(monkeypatch) as handler:
        yield handler


def run_dag(dagbag: Any, **conf: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    dag = dagbag.dags[DAG_ID]
    for t in dag.tasks:
        t.retries = 0
    dr = dag.test(run_conf=conf)
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    xcom = {t: ti.xcom_pull(task_ids=t) for t, ti in tis.items()}
    return str(dr.state), {t: str(ti.state) for t, ti in tis.items()}, xcom


def test_the_weekly_report_is_drained_analysed_rendered_fed_back_and_mailed(
    dagbag: Any, env: Env, inbox: StoringHandler
) -> None:
    today = datetime.now(UTC).date().isoformat()
    state, tasks, xcom = run_dag(
        dagbag, week=today, recipients=["team@example.com"], service_url=env.service_url
    )
    assert state == "success", tasks
    assert xcom["drain"]["streams"]["impressions"]["written"] == 1200

    data = xcom["collect"]
    assert data["events"]["impressions"] == 1200
    assert data["events"]["clicks"] == env.sim["clicks"]
    by = {(v["model_version"], v["variant"]): v for v in data["variants"]}
    assert set(by) == {("v1", "production"), ("v2|v1", "interleave")}
    assert sum(v["impressions"] for v in by.values()) == 1200
    # latency from the service's own counters, per version and variant
    assert by[("v1", "production")]["latency_p99_ms"] > 0
    assert by[("v1", "production")]["requests"] >= by[("v1", "production")]["impressions"]
    inter = data["interleaving"]
    assert (inter["a"], inter["b"]) == ("v2", "v1")
    assert inter["wins_b"] > inter["wins_a"] and inter["p_value"] < 0.05
    assert data["decision"]["winner_version"] == "v1"
    assert data["decision"]["source"] == "interleaving"

    # artifacts on disk
    paths = xcom["render"]
    html = Path(paths["html"]).read_text()
    assert Path(paths["json"]).is_file() and "v2" in html
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths["images"].values())

    # fed back: the decision where retrain/promotion read it, click labels with propensities
    from ltr.pipelines.online import latest_decision

    decision = latest_decision()
    assert decision is not None and decision["winner_version"] == "v1"
    labels = xcom["feed_back"]["labels"]
    assert labels["status"] == "written" and Path(labels["path"]).is_file()
    props = labels["propensities"]
    assert props[0] == pytest.approx(1.0) and props[1] < 0.9

    # the e-mail arrived through the SMTP connection, whole
    assert len(inbox.messages) == 1
    rcpt, raw = inbox.messages[0].rcpt_tos, inbox.messages[0].raw
    assert rcpt == ["team@example.com"] and len(raw) < 1_000_000
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    text, related = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    cids = {img["Content-ID"].strip("<>") for img in images}
    referenced = {ref for ref in html_part.get_content().split('src="cid:')[1:]}
    assert {r.split('"')[0] for r in referenced} == cids and cids


def test_without_an_smtp_connection_the_email_fails_clearly_and_the_report_stays(
    dagbag: Any, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    today = datetime.now(UTC).date().isoformat()
    state, tasks, xcom = run_dag(dagbag, week=today, recipients=["team@example.com"])
    assert state == "failed"
    assert tasks["email"] == "failed"
    assert tasks["render"] == "success" and tasks["feed_back"] == "success"
    assert Path(xcom["render"]["html"]).is_file()


def test_without_recipients_the_message_is_written_as_an_eml_file(dagbag: Any, env: Env) -> None:
    today = datetime.now(UTC).date().isoformat()
    state, tasks, xcom = run_dag(dagbag, week=today, recipients=[])
    assert state == "success", tasks
    eml = Path(xcom["email"]["eml"])
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"


def test_a_conf_key_the_form_does_not_have_fails_the_run_at_once(dagbag: Any, env: Env) -> None:
    state, tasks, _ = run_dag(dagbag, weeks="2026-01-05")  # a typo of week
    assert state == "failed"
    assert tasks["collect"] == "failed"
    assert tasks["render"] != "success"
