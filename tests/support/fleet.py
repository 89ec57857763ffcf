"""Several rank-service processes over one model store (the replicas of a Deployment), and
a traffic thread that sends each request on a new connection (so a round-robin proxy in
front spreads it over the replicas)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from support.net import LOOPBACK, WAIT_S, free_port
from support.service import Body

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

#: The child: the app of support.service.service_settings (no Redis, no cache, routing
#: re-read every 0.2 s) under uvicorn on the given port.
CHILD = """
import sys
from pathlib import Path
import uvicorn
from support.service import service_settings
from serving.main import create_app
models, port = Path(sys.argv[1]), int(sys.argv[2])
uvicorn.run(create_app(service_settings(models)), host="127.0.0.1", port=port,
            log_level="warning", access_log=False, lifespan="on")
"""


class ReplicaFleet:
    """``n`` real service processes (``python -c CHILD``) on loopback ports; ``urls``."""

    def __init__(self, models_dir: Path, n: int = 3, log_dir: Path | None = None) -> None:
        self.models_dir = models_dir
        self.ports = [free_port() for _ in range(n)]
        self.log_dir = log_dir or models_dir.parent
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{p}" for p in self.ports]

    @property
    def backends(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, p) for p in self.ports]

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
        for i, port in enumerate(self.ports):
            log = open(self.log_dir / f"replica-{i}.log", "wb")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(self.models_dir), str(port)],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        import httpx

        deadline = time.monotonic() + 4 * WAIT_S
        pending = set(self.urls)
        while pending:
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    text = (self.log_dir / f"replica-{i}.log").read_text(errors="replace")
                    raise RuntimeError(f"replica {i} exited with {proc.returncode}:\n{text}")
            for url in list(pending):
                try:
                    if httpx.get(f"{url}/api/v1/models", timeout=2).status_code == 200:
                        pending.discard(url)
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas {sorted(pending)} did not start")
            time.sleep(0.2)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def models(self) -> list[dict[str, Any]]:
        import httpx

        return [httpx.get(f"{u}/api/v1/models", timeout=5).json() for u in self.urls]

    def wait_for_production(self, version: str) -> None:
        """Wait until every replica serves ``version`` alone."""
        deadline = time.monotonic() + WAIT_S
        while True:
            docs = self.models()
            if all((d["strategy"], d["production"]) == ("single", version) for d in docs):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the replicas serve {[d['production'] for d in docs]}")
            time.sleep(0.1)

    def __enter__(self) -> ReplicaFleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Traffic:
    """POST /api/v1/rank with ``body(i)`` to ``url``, one connection per request, every
    ``pause`` seconds until closed; ``statuses`` counts the answers (-1: none)."""

    def __init__(self, url: str, body: Body, pause: float = 0.01) -> None:
        self.url = url
        self.body = body
        self.pause = pause
        self.statuses: dict[int, int] = {}
        self.versions: dict[str, int] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, timeout=5, limits=limits) as client:
            i = 0
            while not self._stop.is_set():
                try:
                    resp = client.post("/api/v1/rank", json=self.body(i))
                    status = resp.status_code
                    if status == 200:
                        v = resp.json()["model_version"]
                        self.versions[v] = self.versions.get(v, 0) + 1
                except httpx.HTTPError:
                    status = -1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                i += 1
                time.sleep(self.pause)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


def with_extra(features: Sequence[str], extra: str, omit_every: int) -> Body:
    """Requests over ``features`` plus ``extra``, which every ``omit_every``-th request
    leaves out (a version that requires ``extra`` answers those 422)."""
    from support.service import random_features

    base = random_features(features)

    def body(i: int) -> dict[str, Any]:
        b = base(i)
        if i % omit_every:
            for c in b["candidates"]:
                c["features"][extra] = 0.5
        return b

    return body
