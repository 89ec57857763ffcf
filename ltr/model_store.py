"""The ltr side of the model store: publish versions and write ``routing.json`` atomically.

The serving side (``serving.model_store``) reads what this module writes; the routing file
is validated with the same schema (``serving.routing.RoutingConfig``) before it is written,
so a bad file never reaches a running service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltr.utils.io import write_json_atomic

ROUTING_FILE = "routing.json"


def read_routing(models_dir: Path) -> dict[str, Any] | None:
    path = Path(models_dir) / ROUTING_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_routing(models_dir: Path, routing: dict[str, Any]) -> dict[str, Any]:
    """Validate, bump ``version`` past the current file's, and write atomically."""
    from serving.routing import RoutingConfig

    models_dir = Path(models_dir)
    current = read_routing(models_dir)
    body = dict(routing)
    body["version"] = max(int(body.get("version", 0)), int((current or {}).get("version", 0)) + 1)
    for v in RoutingConfig.model_validate(body).referenced_versions():
        folder = models_dir / "versions" / v
        if not (folder / "model.onnx").is_file() or not (folder / "metadata.json").is_file():
            raise FileNotFoundError(f"routing names version {v!r}, but {folder} is not an artifact")
    write_json_atomic(models_dir / ROUTING_FILE, body)
    return body


def serve_single(models_dir: Path, version: str, **extra: Any) -> dict[str, Any]:
    """Route all traffic to ``version``."""
    return write_routing(models_dir, {"strategy": "single", "production": version, **extra})
