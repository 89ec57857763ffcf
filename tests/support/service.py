"""The real rank service under uvicorn in a background thread, and traffic for it.

``LiveServer`` serves ``serving.main.create_app(settings)`` on a loopback port that is bound
when it is built, so its URL is known (and can go into a pipeline config) before it starts.
``LiveService`` adds a thread that sends rank requests from the moment the server listens
until it is closed, and counts every answer.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from support.net import LOOPBACK

if TYPE_CHECKING:
    from serving.settings import ServingSettings

Body = Callable[[int], dict[str, Any]]


def service_settings(models_dir: Path, **overrides: Any) -> ServingSettings:
    """A service over the model store ``models_dir`` alone: no Redis, no Feast repository
    (never the SDK fallback), no result cache nor event log, routing reloaded every 0.2 s."""
    from serving.settings import ServingSettings

    values: dict[str, Any] = {
        "model_store": models_dir,
        "redis_url": None,
        "reload_interval_s": 0.2,
        "cache_enabled": False,
        "events_enabled": False,
        "feast_repo": models_dir / "no-feature-repo",
        **overrides,
    }
    return ServingSettings(_env_file=None, **values)


class LiveServer:
    """The app under uvicorn in a background thread on a loopback port (``url``).

    ``start()`` / ``close()``, or ``with``. ``http_timeout`` is for the requests this object
    sends, ``wait_timeout`` for ``wait_for_production``.
    """

    def __init__(
        self,
        settings: ServingSettings,
        *,
        start_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        http_timeout: float = 5.0,
        wait_timeout: float = 10.0,
    ) -> None:
        import uvicorn

        from serving.main import create_app

        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.http_timeout = http_timeout
        self.wait_timeout = wait_timeout
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host=LOOPBACK,
                port=self.port,
                log_level="warning",
                lifespan="on",
                access_log=False,
            )
        )
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=self.stop_timeout)
        self.sock.close()

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> dict[str, Any]:
        """GET /api/v1/models."""
        import httpx

        doc: dict[str, Any] = httpx.get(
            f"{self.url}/api/v1/models", timeout=self.http_timeout
        ).json()
        return doc

    def wait_for_production(self, version: str) -> dict[str, Any]:
        """Wait until the service serves ``version`` alone; its /api/v1/models then."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            doc = self.models()
            if (doc["strategy"], doc["production"]) == ("single", version):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"the service still serves {doc}")
            time.sleep(0.1)


class LiveService(LiveServer):
    """A ``LiveServer`` and a thread that sends it ``POST /api/v1/rank`` with ``body(i)``
    (i = 0, 1, ...) every ``pause`` seconds while it runs.

    ``statuses`` counts every answer by status (-1: no answer), ``versions`` the 200s by the
    model version that answered, ``failures`` keeps what every other answer said.
    """

    def __init__(
        self, settings: ServingSettings, body: Body, *, pause: float = 0.005, **kwargs: Any
    ) -> None:
        super().__init__(settings, **kwargs)
        self.body = body
        self.pause = pause
        self.statuses: dict[int, int] = {}
        self.versions: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self.traffic = threading.Thread(target=self._traffic, daemon=True)

    def _traffic(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=self.http_timeout) as client:
            i = 0
            while not self._stop.is_set():
                body = self.body(i)
                i += 1
                try:
                    resp = client.post("/api/v1/rank", json=body)
                    status = resp.status_code
                    if status == 200:
                        v = resp.json()["model_version"]
                        self.versions[v] = self.versions.get(v, 0) + 1
                    else:
                        self.failures.append(f"{status}: {resp.text[:300]}")
                except httpx.HTTPError as exc:
                    status = -1
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.statuses[status] = self.statuses.get(status, 0) + 1
                time.sleep(self.pause)

    def start(self) -> None:
        super().start()
        self.traffic.start()

    def close(self) -> None:
        self._stop.set()
        if self.traffic.is_alive():
            self.traffic.join(timeout=self.stop_timeout)
        super().close()

    def __enter__(self) -> LiveService:
        self.start()
        return self


def random_features(features: Sequence[str], n_docs: int = 5, seed: int = 0) -> Body:
    """Requests of ``n_docs`` candidates with random values (one generator, ``seed``) for
    every request feature in ``features``; seven query ids, a new user per request."""
    rng = np.random.default_rng(seed)

    def body(i: int) -> dict[str, Any]:
        n = i + 1
        return {
            "query_id": f"q{n % 7}",
            "user_id": f"user-{n}",
            "candidates": [
                {
                    "doc_id": f"d{j}",
                    "features": dict(
                        zip(features, rng.random(len(features)).tolist(), strict=True)
                    ),
                }
                for j in range(n_docs)
            ],
        }

    return body
