"""The online half of the demo: features into Feast's online store, the rank service, real
ranking requests, printed ranked lists, then shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ltr.data.dataset import LetorDataset
from ltr.settings import Settings

FEATURE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL (a process already gone is left)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_online_store(
    parts: list[LetorDataset], doc_feature_indices: list[int], settings: Settings
) -> dict[str, Any]:
    """Ingest into the offline tables, ``feast apply``, materialize into the online store."""
    from ltr.features.ingest import ingest_letor
    from ltr.features.store import apply, materialize, offline_dir

    for i, ds in enumerate(parts):
        ingest_letor(
            ds,
            offline_dir(settings),
            doc_feature_indices=doc_feature_indices,
            event_timestamp=FEATURE_TIME,
            name=f"demo-part{i}",
        )
    apply(settings)
    return materialize(FEATURE_TIME - timedelta(days=1), FEATURE_TIME + timedelta(days=1), settings)


def _call(url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def start_service(
    settings: Settings,
    port: int,
    timeout_s: float = 120.0,
    *,
    extra_env: dict[str, str] | None = None,
    uvicorn_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """The rank service under uvicorn in a child process, returned once /ready says so."""
    env = {
        **os.environ,
        "LTR_HOME": str(settings.home),
        "LTR_MODEL_STORE": str(settings.models_dir),
        "LTR_FEAST_PROJECT": settings.feast_project,
        "LTR_FEAST_REPO": str(settings.home / "feast"),
    }
    if settings.redis_url:
        env["LTR_REDIS_URL"] = settings.redis_url
    env.update(extra_env or {})
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *uvicorn_args,
    ]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the rank service exited during start-up (code {proc.returncode})")
        try:
            if _call(f"http://127.0.0.1:{port}/ready", timeout=2).get("ready"):
                return proc
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"the rank service was not ready after {timeout_s:.0f} s")


def query_service(
    test: LetorDataset, settings: Settings, say: Callable[[str], None], n_queries: int = 3
) -> list[dict[str, Any]]:
    """Start the service, rank a few held-out queries by doc id alone, print, stop."""
    port = free_port()
    t0 = time.perf_counter()
    proc = start_service(settings, port)
    base = f"http://127.0.0.1:{port}"
    say(
        f"rank service up on {base} in {time.perf_counter() - t0:.1f} s "
        f"(online store: {'Redis' if settings.redis_url else 'SQLite, read directly'})"
    )
    answers = []
    try:
        shown = 0
        for qid, rows in test.iter_queries():
            labels = dict(
                zip(map(str, test.doc_ids[rows]), test.labels[rows].tolist(), strict=True)
            )
            if max(labels.values()) <= 0 or len(labels) < 5:
                continue
            body = {
                "query_id": qid,
                "user_id": f"demo-user-{shown}",
                "candidates": [{"doc_id": d} for d in labels],
                "top_k": 5,
            }
            t = time.perf_counter()
            out = _call(f"{base}/api/v1/rank", body)
            ms = (time.perf_counter() - t) * 1000
            answers.append(out)
            say(
                f"\nquery {qid}: {len(labels)} candidates -> top 5 from {out['model_version']} "
                f"({ms:.1f} ms over HTTP)"
            )
            for r in out["ranked"]:
                say(
                    f"  {r['rank']}. {r['doc_id']:<12} score {r['score']:+.3f}   "
                    f"true label {labels[r['doc_id']]:.0f}"
                )
            shown += 1
            if shown == n_queries:
                break
        if answers:
            first = answers[0]
            fb = _call(
                f"{base}/api/v1/feedback",
                {
                    "request_id": first["request_id"],
                    "clicks": [{"doc_id": first["ranked"][0]["doc_id"], "position": 0}],
                },
            )
            say(
                f"\nfeedback for {fb['request_id'][:8]}…: {fb['accepted']} click(s) "
                f"{'logged' if fb['logged'] else 'not logged (no Redis)'}"
            )
        models = _call(f"{base}/api/v1/models")
        say(
            "served: "
            + ", ".join(f"{v['version']} ({v['requests']} requests)" for v in models["versions"])
        )
    finally:
        stop_process(proc)
    say("rank service stopped")
    return answers


def online_demo(
    ranker: Any,
    meta: dict[str, Any],
    splits: Any,
    doc_feature_indices: list[int],
    settings: Settings,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from ltr.export.onnx_export import export_ranker
    from ltr.features.definitions import DEFAULT_FEATURE_SERVICE, online_schema
    from ltr.model_store import serve_single

    parts = [p for p in (splits.train, splits.valid, splits.test) if p is not None]
    mat = load_online_store(parts, doc_feature_indices, settings)
    say(
        f"\nfeatures: {mat['total_rows']} rows materialized into {mat['online_store']} "
        f"at {mat['rows_per_second'] or 0:.0f} rows/s"
    )
    schema, views = online_schema(ranker.feature_names, doc_feature_indices)
    version = f"{meta['run_name']}-online"
    exported = export_ranker(
        ranker,
        meta,
        splits.valid,
        settings.models_dir,
        version=version,
        overwrite=True,
        latency=False,
        feature_sources=schema,
        feature_views=views,
        feature_service=DEFAULT_FEATURE_SERVICE,
    )
    serve_single(settings.models_dir, version)
    say(f"serving {version} (reads its {len(schema)} features from the online store)")
    answers = query_service(splits.test or splits.valid, settings, say)
    return {
        "version": version,
        "artifact": exported["path"],
        "materialize": mat,
        "answers": len(answers),
        "models_dir": str(Path(settings.models_dir)),
    }
