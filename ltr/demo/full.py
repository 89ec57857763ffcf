"""The platform demo: the real DAGs on embedded defaults, then the service serving the result.

day 1 raw file -> ltr_feature_pipeline -> ltr_retrain (challenger + promotion request)
  -> ltr_promotion (first version: promoted directly) -> rank service up, ranked lists
day 2 raw file -> ltr_feature_pipeline -> ltr_retrain -> ltr_promotion as a canary observed
  on live traffic -> promoted or rolled back -> ranked lists -> service stopped
Each DAG runs in a child process (``ltr pipeline run``), recorded in the Airflow metadata
database under ``<LTR_HOME>/airflow`` (browse it with ``make airflow``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ltr.demo.online import event_redis, online_loop, stream_prefix
from ltr.pipelines.config import HOME_CONFIG_NAME
from ltr.settings import Settings

DAY1, DAY2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
N_FEATURES, N_DOC_ONLY = 20, 5
DAY1_QUERIES = 80  # of 400: day 2 lands the other 320


def _write_inputs(home: Path) -> tuple[Path, list[Path]]:
    """Two days of synthetic raw data and the demo's pipeline + experiment configs."""
    from ltr.data.letor import write_letor
    from ltr.data.synth import generate_synthetic

    ds = generate_synthetic(n_queries=400, n_features=N_FEATURES, n_doc_only=N_DOC_ONLY, seed=7)
    # Day 1 is a first, small batch of judgments; day 2 brings four times as many, so the
    # nightly retrain has something to learn and its challenger beats the champion on the
    # same held-out queries: the demo shows canary -> observe -> promote under live traffic.
    cut = DAY1_QUERIES
    raws = []
    for day, idx in ((DAY1, range(cut)), (DAY2, range(cut, ds.n_queries))):
        path = home / "raw" / f"{day:%Y-%m-%d}" / "judgments.txt"
        write_letor(ds.subset_queries(list(idx)), path)
        raws.append(path)
    cfg_dir = home / "demo" / "configs"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    mlp = {
        "name": "demo-mlp-lambdarank",
        "seed": 42,
        "model": {"type": "mlp", "params": {"hidden": [128, 64], "dropout": 0.1}},
        "loss": {"name": "lambdarank"},
        "training": {"epochs": 30, "patience": 8, "batch_size": 16, "device": "cpu"},
    }
    lgbm = {
        "name": "demo-lightgbm",
        "seed": 42,
        "model": {"type": "lightgbm", "params": {"n_estimators": 300}},
    }
    for name, body in (("mlp.yaml", mlp), ("lightgbm.yaml", lgbm)):
        (cfg_dir / name).write_text(yaml.safe_dump(body, sort_keys=False))
    pipeline = {
        "validation": {
            "label_set": [0, 1, 2, 3, 4],
            "n_features": N_FEATURES,
            "min_docs_per_query": 1,
            "max_docs_per_query": 1000,
        },
        "doc_feature_indices": list(range(N_FEATURES - N_DOC_ONLY, N_FEATURES)),
        "training": {"configs": [str(cfg_dir / "mlp.yaml"), str(cfg_dir / "lightgbm.yaml")]},
        "gates": {"metric": "ndcg@10", "min_margin": 0.0, "latency_budget_ms": 50.0},
        "promotion": {
            "strategy": "canary",
            "canary_percent": 50,
            "observe_minutes": 0.25,
            "min_requests": 20,
            "max_error_rate": 0.01,
            "max_p99_ms": 250,
            # no service_url: the demo's service lives on a free port only while the demo
            # runs, so its URL goes in each promotion run's conf, never into the config that
            # `make airflow` reads afterwards (a dead default)
        },
    }
    # <LTR_HOME>/pipeline.yaml: the DAGs find it there on their own (ltr.pipelines.config),
    # so `make airflow` on the same home runs them on the demo's data
    path = home / HOME_CONFIG_NAME
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path, raws


class Runner:
    """Runs DAGs in child processes, logs to files, returns their structured results."""

    def __init__(self, home: Path, env: dict[str, str], say: Callable[[str], None]) -> None:
        self.home, self.env, self.say = home, env, say
        self.logs = home / "demo" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def run(
        self, dag_id: str, logical: datetime, conf: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.n += 1
        result = self.logs / f"{self.n:02d}-{dag_id}.json"
        log = self.logs / f"{self.n:02d}-{dag_id}.log"
        cmd = [
            sys.executable,
            "-m",
            "ltr.cli.main",
            "pipeline",
            "run",
            dag_id,
            "--logical-date",
            logical.isoformat(),
            "--result-file",
            str(result),
        ]
        if conf:
            cmd += ["--conf", json.dumps(conf)]
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            proc = subprocess.run(
                cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, check=False
            )
        if not result.is_file():
            raise RuntimeError(f"{dag_id} did not run (exit {proc.returncode}); see {log}")
        out: dict[str, Any] = json.loads(result.read_text())
        self.say(
            f"[airflow] {dag_id}: {out['state']} in {time.perf_counter() - t0:.0f} s "
            f"(log {log.relative_to(self.home)})"
        )
        return out


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


def _show_rankings(base: str, raw: Path, say: Callable[[str], None], n: int = 2) -> None:
    from ltr.data.letor import read_letor

    ds = read_letor(raw)
    shown = 0
    for qid, rows in ds.iter_queries():
        labels = dict(zip(map(str, ds.doc_ids[rows]), ds.labels[rows].tolist(), strict=True))
        if max(labels.values()) <= 0 or len(labels) < 6:
            continue
        out = _post(
            f"{base}/api/v1/rank",
            {
                "query_id": qid,
                "user_id": f"demo-{shown}",
                "candidates": [{"doc_id": d} for d in labels],
                "top_k": 4,
            },
        )
        ranked = ", ".join(
            f"{r['doc_id']} (label {labels[r['doc_id']]:.0f})" for r in out["ranked"]
        )
        say(f"  query {qid} [{out['model_version']}, {out['variant']}]: {ranked}")
        shown += 1
        if shown == n:
            return


class Traffic(threading.Thread):
    """Steady ranking traffic during the canary's observation window."""

    def __init__(self, base: str, raw: Path) -> None:
        super().__init__(daemon=True)
        from ltr.data.letor import read_letor

        ds = read_letor(raw)
        self.bodies = [
            {"query_id": q, "candidates": [{"doc_id": str(d)} for d in ds.doc_ids[rows]]}
            for q, rows in ds.iter_queries()
        ]
        self.base, self.stop, self.ok, self.failed = base, threading.Event(), 0, 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            body = {**self.bodies[i % len(self.bodies)], "user_id": f"user-{i}"}
            try:
                _post(f"{self.base}/api/v1/rank", body)
                self.ok += 1
            except OSError:
                self.failed += 1
            i += 1
            time.sleep(0.02)


def run_platform_demo(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    from ltr.demo.service import free_port, start_service, stop_process

    t0 = time.perf_counter()
    home = settings.home.resolve()
    port = free_port()
    pipeline_yaml, raws = _write_inputs(home)
    say(
        f"raw data: {raws[0].relative_to(home)} and {raws[1].relative_to(home)} "
        f"(synthetic, {N_FEATURES} features, {N_DOC_ONLY} document-only)"
    )
    env = {
        **os.environ,
        "LTR_HOME": str(home),
        "LTR_PIPELINE_CONFIG": str(pipeline_yaml),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONWARNINGS": "ignore",
    }
    runner = Runner(home, env, say)
    summary: dict[str, Any] = {"days": []}
    proc = None
    stack = contextlib.ExitStack()
    events_url = stack.enter_context(event_redis(settings, home))
    service_env: dict[str, str] = {}
    if events_url:
        service_env = {
            "LTR_EVENTS_REDIS_URL": events_url,
            "LTR_EVENTS_STREAM_PREFIX": stream_prefix(home),
        }
        env.update(service_env)
    try:
        for day_no, day in enumerate((DAY1, DAY2), start=1):
            say(f"\n== day {day_no}: {day:%Y-%m-%d}")
            feat = runner.run("ltr_feature_pipeline", day + timedelta(days=1))
            if feat["state"] != "success":
                raise RuntimeError("the feature pipeline failed; see its log")
            mat = feat["xcom"].get("materialize") or {}
            say(
                f"  features: {mat.get('total_rows', '?')} rows into the "
                f"{mat.get('online_store', '?')} online store"
            )
            retrain = runner.run("ltr_retrain", day + timedelta(days=1, hours=2))
            if retrain["state"] != "success":
                raise RuntimeError("the retrain DAG failed; see its log")
            ev = retrain["xcom"].get("evaluate_against_champion") or {}
            for c in ev.get("candidates", []):
                say(f"  candidate {c['run_name']}: held-out {ev.get('metric')} {c['value']:.4f}")
            if ev.get("champion_value") is not None:
                say(
                    f"  champion {ev['champion']['version']}: {ev['champion_value']:.4f} "
                    f"(margin {ev['margin']:+.4f})"
                )
            decision = retrain["xcom"].get("register_and_request") or {}
            say(f"  gates: {decision.get('status')} - {decision.get('reason')}")
            day_out: dict[str, Any] = {"retrain": decision.get("status")}
            if decision.get("status") == "requested":
                version = decision["version"]
                traffic = None
                if proc is not None:
                    traffic = Traffic(f"http://127.0.0.1:{port}", raws[0])
                    traffic.start()
                promo = runner.run(
                    "ltr_promotion",
                    day.replace(day=day.day + 1, hour=3),
                    {"model_version": version, "service_url": f"http://127.0.0.1:{port}"},
                )
                if traffic is not None:
                    traffic.stop.set()
                    traffic.join()
                    say(
                        f"  traffic during the canary: {traffic.ok} answered, "
                        f"{traffic.failed} failed"
                    )
                report = promo["xcom"].get("report") or {}
                say(f"  promotion of {version}: {report.get('status')} - {report.get('reason')}")
                day_out["promotion"] = report.get("status")
            summary["days"].append(day_out)
            if proc is None and (home / "models" / "routing.json").is_file():
                settings_for_service = Settings(
                    home=home, redis_url=settings.redis_url, feast_project=settings.feast_project
                )
                proc = start_service(settings_for_service, port, extra_env=service_env)
                say(f"  rank service up on http://127.0.0.1:{port}")
            if proc is not None:
                _show_rankings(f"http://127.0.0.1:{port}", raws[day_no - 1], say)
        if proc is not None and events_url:
            summary["online"] = online_loop(
                f"http://127.0.0.1:{port}", raws[1], settings, runner.run, env, say
            )
        elif proc is not None:
            say("\nno Redis for the event log (install redis-server or set LTR_REDIS_URL): ")
            say("the online loop (simulated users, drain, weekly report) is skipped")
    finally:
        if proc is not None:
            stop_process(proc)
            say("rank service stopped")
        stack.close()
    routing = json.loads((home / "models" / "routing.json").read_text())
    summary.update({"routing": routing, "seconds": round(time.perf_counter() - t0, 1)})
    from ltr.compare import fetch_runs, format_table, plot_runs

    rows = fetch_runs(settings.mlflow_experiment, split="test", settings=settings)
    if rows:
        chart = plot_runs(rows, home / "reports" / "demo-compare.png")
        say("\nruns tracked in MLflow (held-out test split):\n" + format_table(rows))
        say(f"chart:           {chart}")
    say(f"\nserving now: {routing.get('production')} ({routing.get('strategy')})")
    say(f"raw data:        {home / 'raw'}")
    say(f"offline store:   {home / 'feast' / 'data'}  (Feast registry {home / 'feast'})")
    say(f"models:          {home / 'models'}  (routing.json, promotions.jsonl)")
    say(f"mlflow:          {settings.tracking_uri}")
    say(f"pipeline config: {pipeline_yaml}  (the DAGs read it from LTR_HOME)")
    say(f"reports:         {home / 'reports'}  (weekly/<monday>/report.html)")
    say(f"events:          {settings.events_dir}")
    say(f"airflow runs:    {home / 'airflow'}")
    say(
        f"\nopen these runs in the Airflow UI: make airflow LTR_HOME={home}\n"
        "  then http://localhost:8080, user admin, password in "
        f"{home / 'airflow' / 'simple_auth_manager_passwords.json.generated'}"
    )
    return summary
