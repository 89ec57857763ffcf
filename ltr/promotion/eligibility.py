"""Which model-store versions may be promoted: only gated ones, unless explicitly overridden.

A version may be promoted when either

- the retrain recorded that it passed every gate: ``versions/<v>/gates.json`` with
  ``accepted: true`` (:func:`write_gate_verdict`; the retrain publishes a challenger into
  the model store only then, so a rejected one is not there to pick), or
- it is registered in the MLflow registry the promotion keeps in step (``registry_name``):
  a registration is the deliberate act that puts a version in the registry's lineage (the
  retrain registers only what passed; ``ltr export`` + registration by hand is the other
  way in).

Anything else (a version exported by hand and never registered, one copied in, a rejected
candidate left in an old store) is refused with :class:`UngatedVersion`, a sentence that
says why and how to override. The override is explicit and leaves a trace:
``PromotionPlan(allow_ungated=True, override_reason="...")`` (``ltr promote
--allow-ungated --override-reason ...``, or the promotion form's override fields) is logged
as a warning and recorded as an ``override`` step of ``promotions.jsonl`` under the
promotion's id; with a registry, the version is registered then (tagged
``ltr.promotion.override`` with the reason), so that the ``champion`` alias, moved by the
promote step, still names what serves production.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltr.promotion.errors import ArtifactRejected, PromotionError
from ltr.promotion.history import record_step

if TYPE_CHECKING:
    from ltr.promotion.plan import PromotionPlan

log = logging.getLogger(__name__)

__all__ = [
    "OVERRIDE_TAG",
    "VERDICT_FILE",
    "UngatedVersion",
    "check_promotable",
    "read_gate_verdict",
    "write_gate_verdict",
]

#: The gate verdict the retrain writes beside model.onnx / metadata.json when it publishes.
VERDICT_FILE = "gates.json"
#: MLflow model-version tag of a version registered by an override promotion.
OVERRIDE_TAG = "ltr.promotion.override"


class UngatedVersion(PromotionError):
    """The version has no passing gate verdict and is not registered; nothing was changed."""


def write_gate_verdict(version_dir: Path, verdict: dict[str, Any]) -> Path:
    """Record a gate verdict (``accepted``, ``reason``, ``checks``, ...) in a version folder."""
    from ltr.utils.io import write_json_atomic

    path = Path(version_dir) / VERDICT_FILE
    write_json_atomic(path, dict(verdict))
    return path


def read_gate_verdict(version_dir: Path) -> dict[str, Any] | None:
    """The recorded gate verdict of a version folder, or None (none, or unreadable)."""
    path = Path(version_dir) / VERDICT_FILE
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return verdict if isinstance(verdict, dict) else None


def _why_not(version: str, verdict: dict[str, Any] | None, registry_name: str | None) -> str:
    if verdict is not None and not verdict.get("accepted"):
        return f"{version} was rejected by the retrain's gates ({verdict.get('reason')})"
    where = (
        f"is not registered in the MLflow registry {registry_name!r}"
        if registry_name
        else "was not checked against the MLflow registry (no registry given)"
    )
    return f"{version} has no passing gate verdict ({VERDICT_FILE}) and {where}"


def _register_override(
    models_dir: Path, version: str, registry_name: str, reason: str
) -> dict[str, Any]:
    """Register an overridden version (no alias) so the promote step can make it champion."""
    from ltr import registry

    rv = registry.register_model(
        Path(models_dir) / "versions" / version,
        name=registry_name,
        alias=None,
        tags={OVERRIDE_TAG: reason[:4000]},
    )
    return {"name": registry_name, "model_version": rv.version, "registered_by_override": True}


def check_promotable(
    plan: PromotionPlan,
    models_dir: Path,
    *,
    registry_name: str | None,
    promotion_id: str | None = None,
) -> dict[str, Any]:
    """May ``plan.store_version`` be promoted? Returns how it qualified, or raises.

    A version missing from the store raises :class:`~ltr.promotion.errors.ArtifactRejected`
    (the deploy step then checks the artifact itself).

    ``{"version", "eligible_by": "gates" | "registry" | "override", "detail"}``. Raises
    :class:`UngatedVersion` (nothing changed) for a version without a passing gate verdict
    that is not registered in ``registry_name``, unless ``plan.allow_ungated`` with a
    non-empty ``plan.override_reason``: then the override is logged, recorded in
    ``promotions.jsonl`` (step ``override``) and, with a registry, the version registered.
    """
    v = plan.store_version
    folder = Path(models_dir) / "versions" / v
    if not (folder / "metadata.json").is_file():  # named as missing, not as ungated
        raise ArtifactRejected(
            f"{v} is not in the model store ({folder} has no metadata.json): export it first"
        )
    verdict = read_gate_verdict(folder)
    if verdict is not None and verdict.get("accepted"):
        run = verdict.get("run_key")
        detail = f"passed the retrain's gates{f' (run {run})' if run else ''}"
        return {"version": v, "eligible_by": "gates", "detail": detail}
    registered = None
    if registry_name and (verdict is None or verdict.get("accepted")):
        from ltr import registry

        registered = registry.find_store_version(v, registry_name)
    if registered is not None:
        detail = f"registered in MLflow as {registry_name} version {registered.version}"
        return {"version": v, "eligible_by": "registry", "detail": detail}

    why = _why_not(v, verdict, registry_name)
    allow = bool(getattr(plan, "allow_ungated", False))
    reason = str(getattr(plan, "override_reason", None) or "").strip()
    if not allow:
        raise UngatedVersion(
            f"{why}, so it may not be promoted: promote a version the retrain accepted (see "
            "<LTR_HOME>/promotions/requests/), register this one, or override with "
            "allow_ungated and a reason (`ltr promote --allow-ungated --override-reason "
            "'...'`). Nothing was changed."
        )
    if not reason:
        raise UngatedVersion(
            f"{why}; allow_ungated needs a reason for the promotion history "
            "(override_reason / --override-reason). Nothing was changed."
        )
    reg: dict[str, Any] | None = None
    if registry_name:
        reg = _register_override(models_dir, v, registry_name, reason)
    log.warning("promoting %s WITHOUT gates by override: %s (%s)", v, reason, why)
    record_step(
        models_dir,
        "override",
        promotion_id=promotion_id,
        version=v,
        strategy=plan.strategy,
        reason=reason,
        numbers={"ungated": why, "at": dt.datetime.now(dt.UTC).isoformat()},
        registry=reg,
    )
    return {"version": v, "eligible_by": "override", "detail": f"override: {reason} ({why})"}
