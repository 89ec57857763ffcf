"""Fixtures of the rank-service tests: tiny real models with known weights, a model store on
disk, the app, a Redis database of our own and a private redis-server.

The helpers they are built from (and that the tests import) are in ``support.serving``,
``support.redis`` and ``support.service``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.redis import PrivateRedis, running_private_redis
from support.serving import REDIS_URL, Store, TestClient, export_templates, make_settings, serve


@pytest.fixture(scope="session")
def artifact_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the exported versions v1, v2 (request features) and vfv
    (feature view); tests copy versions out of it."""
    root = tmp_path_factory.mktemp("templates")
    export_templates(root)
    return root


@pytest.fixture
def store(tmp_path: Path, artifact_templates: Path) -> Store:
    """A fresh model store with v1, v2 and vfv installed and all traffic on v1."""
    s = Store(tmp_path / "models", artifact_templates)
    s.install("v1", "v2", "vfv")
    s.serve("v1")
    return s


@pytest.fixture(autouse=True)
def _no_ltr_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the caller's LTR_* variables."""
    for name in list(os.environ):
        if name.startswith("LTR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    """The app over ``store`` without Redis."""
    with serve(make_settings(store)) as c:
        yield c


@pytest.fixture
def redis_db() -> Iterator[Any]:
    """Database 8 of the shared Redis, emptied before and after (FLUSHDB on db 8 only)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} does not answer: {exc}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with running_private_redis(tmp_path) as server:
        yield server
