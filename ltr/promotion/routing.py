"""Routing helpers of :mod:`ltr.promotion`: artifact checks and who serves what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltr.promotion.errors import ArtifactRejected


def verify_artifact(models_dir: Path, version: str) -> dict[str, Any]:
    """metadata.json of ``version``, after the same checks the service makes when it loads a
    version (files present, sha256 of model.onnx, feature schema, ONNX input and output,
    a probe inference): a version that passes here is one the service will accept."""
    from serving.model_store import ArtifactError, load_version

    try:
        return load_version(Path(models_dir), version).metadata
    except ArtifactError as exc:
        raise ArtifactRejected(str(exc)) from None


def versions_in_flight(routing: dict[str, Any] | None) -> set[str]:
    """Versions being rolled out: canary challengers, both blue-green colours."""
    if not routing:
        return set()
    if routing.get("strategy") == "canary":
        return {v["version"] for v in routing.get("variants", [])} - {routing["production"]}
    if routing.get("strategy") == "blue_green":
        bg = routing["blue_green"]
        return {bg["blue"], bg["green"]}
    return set()


def _champion(routing: dict[str, Any] | None, version: str) -> str | None:
    """The production version that ``version`` would replace."""
    if not routing:
        return None
    if routing.get("strategy") == "blue_green":
        bg = routing["blue_green"]
        if version in (bg["blue"], bg["green"]):
            other = bg["green"] if bg["blue"] == version else bg["blue"]
            return str(other) if other != version else None
    return str(routing["production"])


def _carry(routing: dict[str, Any] | None, drop: set[str]) -> dict[str, Any]:
    """Settings kept across routing changes: the salt, and a shadow not being rolled out."""
    extra: dict[str, Any] = {}
    if routing and routing.get("salt"):
        extra["salt"] = routing["salt"]
    shadow = (routing or {}).get("shadow")
    if shadow and shadow.get("version") not in drop:
        extra["shadow"] = shadow
    return extra
