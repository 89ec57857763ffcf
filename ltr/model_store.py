"""The ltr side of the model store: publish versions and write ``routing.json`` atomically.

The serving side (``serving.model_store``) reads what this module writes; the routing file
is validated with the same schema (``serving.routing.RoutingConfig``) before it is written,
so a bad file never reaches a running service.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ltr.utils.io import write_json_atomic

ROUTING_FILE = "routing.json"
#: Held for the few milliseconds of a read-compare-write of routing.json.
ROUTING_LOCK_FILE = ".routing.lock"


class RoutingChanged(RuntimeError):
    """routing.json is not at the version a compare-and-swap expected (someone else wrote it)."""

    def __init__(self, message: str, expected: int, found: int | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


@contextlib.contextmanager
def routing_lock(models_dir: Path) -> Iterator[None]:
    """Exclusive while held: writers of routing.json go one at a time (a blocking flock)."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(models_dir) / ROUTING_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_routing(models_dir: Path) -> dict[str, Any] | None:
    path = Path(models_dir) / ROUTING_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_routing(
    models_dir: Path, routing: dict[str, Any], *, expect_version: int | None = None
) -> dict[str, Any]:
    """Validate, bump ``version`` past the current file's, and write atomically.

    ``expect_version``: compare-and-swap; the write happens only if routing.json is still
    at that version (0: only if there is no routing.json), else :class:`RoutingChanged`.
    Writers hold :func:`routing_lock` between the read and the rename, so two of them
    cannot both succeed against the same version.
    """
    with routing_lock(models_dir):
        return _write_routing(Path(models_dir), routing, expect_version)


def _write_routing(
    models_dir: Path, routing: dict[str, Any], expect_version: int | None
) -> dict[str, Any]:
    from serving.routing import RoutingConfig

    current = read_routing(models_dir)
    found = int(current["version"]) if current is not None else None
    if expect_version is not None and (found or 0) != expect_version:
        raise RoutingChanged(
            f"{models_dir / ROUTING_FILE} changed: expected routing version {expect_version}, "
            f"found {found if found is not None else 'no file'} (another promotion or a "
            "rollback wrote it)",
            expect_version,
            found,
        )
    body = dict(routing)
    body["version"] = max(int(body.get("version", 0)), int((current or {}).get("version", 0)) + 1)
    for v in RoutingConfig.model_validate(body).referenced_versions():
        folder = models_dir / "versions" / v
        if not (folder / "model.onnx").is_file() or not (folder / "metadata.json").is_file():
            raise FileNotFoundError(f"routing names version {v!r}, but {folder} is not an artifact")
    write_json_atomic(models_dir / ROUTING_FILE, body)
    return body


def serve_single(
    models_dir: Path, version: str, *, expect_version: int | None = None, **extra: Any
) -> dict[str, Any]:
    """Route all traffic to ``version`` (compare-and-swap with ``expect_version``)."""
    return write_routing(
        models_dir,
        {"strategy": "single", "production": version, **extra},
        expect_version=expect_version,
    )
