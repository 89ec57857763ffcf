"""Redis for the tests: clients of the shared server (or a skip), Feast projects of a test's
own whose keys are deleted afterwards, a command-counting client, and a private server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from support.net import LOOPBACK, free_port, wait_until


def redis_client(url: str, *, socket_timeout: float = 10.0) -> redis.Redis:
    """A client of the shared Redis at ``url``, or a skip when it does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=socket_timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis does not answer at {url}: {exc}")
    return client


@contextlib.contextmanager
def fail_fast_client(url: str) -> Iterator[redis.Redis]:
    """The serving side's fail-fast client of ``url`` (0.5 s, not 50 ms: the test machine is
    shared and a slow answer is not what the tests are about), or a skip; closed after."""
    from serving.redis_guard import fail_fast_redis

    client = fail_fast_redis(url, timeout_seconds=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    yield client
    client.close()


def unique_project(prefix: str) -> str:
    """A Feast project name of this test run's own: its Redis keys end with it."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def project_keys(client: Any, project: str) -> list[bytes]:
    """The keys of a Feast project's online store (Feast ends each key with the project)."""
    return list(client.scan_iter(match=f"*{project}", count=1000))


def delete_project_keys(client: Any, project: str) -> None:
    keys = project_keys(client, project)
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


class CountingRedis(redis.Redis):
    """A real client that counts the commands it sends (reaching the network or not)."""

    calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.calls += 1
        return super().execute_command(*args, **options)


def counting_client(port: int) -> CountingRedis:
    """A counting client of a loopback port with 50 ms timeouts and no retries."""
    return CountingRedis(
        host=LOOPBACK,
        port=port,
        socket_timeout=0.05,
        socket_connect_timeout=0.05,
        retry=Retry(NoBackoff(), 0),
    )


class PrivateRedis:
    """A redis-server of our own on a spare loopback port, stoppable and restartable (on the
    same port, empty again: nothing is persisted)."""

    def __init__(self, tmp: Path, *, start_timeout: float = 5.0) -> None:
        self.port = free_port()
        self.dir = tmp
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # no retries: redis-py's default backs off for about a second on "connection refused"
        probe = redis.Redis(
            host=LOOPBACK,
            port=self.port,
            socket_connect_timeout=0.2,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            if not wait_until(lambda: _pings(probe), timeout=self.start_timeout):
                self.stop()
                pytest.skip(f"private redis-server on port {self.port} did not start")
        finally:
            probe.close()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@contextlib.contextmanager
def running_private_redis(tmp: Path, *, start_timeout: float = 5.0) -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis` under ``tmp``, stopped on exit (a fixture's body)."""
    server = PrivateRedis(tmp, start_timeout=start_timeout)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
