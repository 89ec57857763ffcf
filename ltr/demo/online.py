"""The online end of the demo: an event log for the service, simulated users on two variants,
the hourly drain and the weekly report (e-mailed to a local SMTP server the demo starts).

Events need a Redis: ``LTR_EVENTS_REDIS_URL`` or ``LTR_REDIS_URL`` when set, else a private
``redis-server`` on a free loopback port (nothing kept on disk), when one is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ltr.settings import Settings

DEMO_QUERIES = 2000


@contextlib.contextmanager
def event_redis(settings: Settings, home: Path) -> Iterator[str | None]:
    """The Redis URL for the event streams, or None when there is none to be had."""
    if settings.events_redis:
        yield settings.events_redis
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    import redis

    from ltr.demo.service import free_port, stop_process

    port = free_port()
    folder = home / "demo" / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [binary, *args, "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited (code {proc.returncode})") from None
                time.sleep(0.1)
        client.close()
        yield url
    finally:
        stop_process(proc, 10.0)


def stream_prefix(home: Path) -> str:
    """Streams of this demo home alone (a shared Redis may serve several)."""
    return f"ltr-demo-{hashlib.sha256(str(home).encode()).hexdigest()[:8]}:events"


@dataclass
class _Inbox:
    folder: Path
    received: list[Path] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"message-{len(self.received) + 1:02d}.eml"
        path.write_bytes(bytes(envelope.original_content))
        self.received.append(path)
        return "250 OK"


@contextlib.contextmanager
def smtp_sink(folder: Path) -> Iterator[tuple[dict[str, Any] | None, _Inbox | None]]:
    """A local SMTP server (aiosmtpd) that files what it receives; (connection, inbox), or
    (None, None) when aiosmtpd is not installed."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        yield None, None
        return
    from ltr.demo.service import free_port

    inbox = _Inbox(folder)
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1},
    }
    try:
        yield conn, inbox
    finally:
        controller.stop()


def interleave_last_two(models_dir: Path) -> tuple[str, str] | None:
    """Route half of the users to team-draft interleaving of production (b) and the other
    version the demo trained (a); (a, b), or None with only one version."""
    from ltr.model_store import read_routing, write_routing

    routing = read_routing(models_dir) or {}
    production = routing.get("production")
    versions = sorted(
        (p for p in (models_dir / "versions").iterdir() if p.is_dir() and p.name[0] != "."),
        key=lambda p: p.stat().st_mtime,
    )
    others = [p.name for p in versions if p.name != production]
    if not production or not others:
        return None
    a = others[-1]
    write_routing(
        models_dir,
        {
            "strategy": "interleave",
            "production": production,
            "interleave": {"a": a, "b": production, "percent": 50},
        },
    )
    return a, str(production)


def online_loop(
    base_url: str,
    raw: Path,
    settings: Settings,
    run_dag: Callable[..., dict[str, Any]],
    env: dict[str, str],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Simulated users -> events -> ltr_event_drain -> ltr_weekly_report (mailed)."""
    from ltr.data.letor import read_letor
    from ltr.online.clickmodel import ClickModel
    from ltr.online.simulate import TrafficSimulator
    from ltr.pipelines.config import load_pipeline_config
    from ltr.pipelines.holdout import split_queries

    home = settings.home.resolve()
    pair = interleave_last_two(settings.models_dir)
    if pair is None:
        say("  only one model version: no experiment to run")
        return {"status": "skipped"}
    a, b = pair
    say(f"\n== online: {b} (production) against {a}, team-draft interleaving for half the users")
    time.sleep(3.0)  # the service re-reads routing.json every 2 s
    held_out = split_queries(read_letor(raw), load_pipeline_config().training.holdout)["test"]
    sim = TrafficSimulator(
        base_url,
        held_out,
        click_model=ClickModel("pbm", eta=1.0, max_grade=4),
        seed=7,
        n_users=400,
        concurrency=4,
    )
    report = sim.run(DEMO_QUERIES, max_seconds=300)
    say(
        f"  simulated users: {report.answered}/{report.sent} queries answered in "
        f"{report.seconds:.0f} s, {report.clicks} clicks (PBM clicks on graded labels, seed 7)"
    )
    say(
        "  NDCG@10 of what users saw: "
        + ", ".join(f"{k} {v:.4f}" for k, v in report.shown_ndcg_at_10.items())
    )
    now = datetime.now(UTC)
    drained = run_dag("ltr_event_drain", now)
    streams = (drained.get("xcom", {}).get("drain") or {}).get("streams", {})
    say(
        "  drained into the offline store: "
        + ", ".join(f"{k} {v.get('written', 0)}" for k, v in streams.items())
        + f" ({settings.events_dir})"
    )
    with smtp_sink(home / "demo" / "mail") as (conn, inbox):
        conf: dict[str, Any] = {"week": now.date().isoformat(), "service_url": base_url}
        if conn is not None:
            env["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps(conn)
            conf["recipients"] = ["ml-team@localhost"]
        else:
            conf["recipients"] = []
        weekly = run_dag("ltr_weekly_report", now, conf)
    xcom = weekly.get("xcom", {})
    data = xcom.get("collect") or {}
    inter = data.get("interleaving") or {}
    decision = data.get("decision") or {}
    if inter:
        p = inter.get("p_value")
        say(
            f"  interleaving: {inter.get('b')} won {inter.get('wins_b')}, {inter.get('a')} won "
            f"{inter.get('wins_a')}, ties {inter.get('ties')} "
            f"(binomial p = {'undefined' if p is None else f'{p:.4g}'})"
        )
    say(f"  decision: {decision.get('recommendation')} - {decision.get('reason')}")
    paths = xcom.get("render") or {}
    mail = xcom.get("email") or {}
    if paths:
        say(f"  weekly report: {paths.get('html')}")
    if inbox is not None and inbox.received:
        say(f"  e-mail received by the demo's SMTP server: {inbox.received[-1]}")
    elif mail.get("eml"):
        say(f"  e-mail written as {mail['eml']}")
    return {
        "status": weekly.get("state"),
        "simulated": report.to_dict(),
        "decision": decision,
        "report": paths.get("html"),
    }
