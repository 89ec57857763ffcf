"""Rollback of a promotion and the MLflow registry side of promoting and rolling back.

Shared by :func:`ltr.promotion.rollback`, :func:`ltr.promotion.run_promotion` and the
promotion DAG's steps (:mod:`ltr.pipelines.promotion`). See :mod:`ltr.promotion`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from ltr.model_store import RoutingChanged, read_routing, serve_single
from ltr.promotion.errors import PromotionError, PromotionPreempted
from ltr.promotion.history import HISTORY_FILE, history, record_step
from ltr.promotion.routing import _carry, verify_artifact, versions_in_flight

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _registry_promote(name: str, version: str) -> dict[str, Any]:
    """Move the ``champion`` alias to the registered version of model-store ``version``."""
    from ltr import registry

    rv = registry.find_store_version(version, name)
    if rv is None:
        return {"name": name, "registered": False, "note": f"{version} is not registered"}
    moved = registry.set_champion(name, rv.version)
    registry.tag_version(name, rv.version, {"ltr.promoted_at": _now()})
    return {"name": name, "registered": True, "model_version": rv.version, **moved}


def _previous_production(models_dir: Path, current: str) -> str | None:
    for rec in reversed(history(models_dir)):
        if rec.get("step") == "promote" and rec.get("to") == current:
            prev = rec.get("from")
            if prev and prev != current:
                return str(prev)
    return None


def _registry_rollback(name: str, target: str, withdrawn: set[str], reason: str) -> dict[str, Any]:
    """Tag withdrawn versions; give ``champion`` back to ``target`` if a withdrawn one had it."""
    from ltr import registry

    out: dict[str, Any] = {"name": name, "champion": "unchanged"}
    for w in sorted(withdrawn):
        rv = registry.find_store_version(w, name)
        if rv is not None:
            registry.tag_version(name, rv.version, {"ltr.rolled_back": f"{_now()} {reason}"})
    champ = registry.get_alias(name, registry.CHAMPION)
    back = registry.find_store_version(target, name)
    if champ is not None and champ.store_version in withdrawn and back is not None:
        registry.set_alias(name, registry.CHAMPION, back.version)
        prev = registry.get_alias(name, registry.PREVIOUS_CHAMPION)
        if prev is not None and prev.version == back.version:
            registry.delete_alias(name, registry.PREVIOUS_CHAMPION)
        out["champion"] = back.version
    return out


def perform_rollback(
    models_dir: Path,
    *,
    reason: str,
    to_version: str | None,
    registry_name: str | None,
    promotion_id: str | None,
    expect_version: int | None = None,
) -> dict[str, Any]:
    """Serve the rollback target alone; routing.json is written by compare-and-swap.

    ``expect_version`` (a promotion undoing its own rollout): routing.json must still be at
    that version, else :class:`PromotionPreempted` (somebody else changed it: theirs
    stands). Without it (a manual rollback), a concurrent write makes it read again and
    recompute, a few times.
    """
    for attempt in range(5):
        try:
            return _rollback_once(
                models_dir,
                reason=reason,
                to_version=to_version,
                registry_name=registry_name,
                promotion_id=promotion_id,
                expect_version=expect_version,
            )
        except RoutingChanged as exc:
            if expect_version is not None:
                raise PromotionPreempted(f"not rolling back: {exc}") from None
            log.info("routing changed during the rollback (attempt %d): %s", attempt + 1, exc)
    raise PromotionError(
        f"{models_dir / 'routing.json'} kept changing during the rollback; run it again"
    )


def _rollback_once(
    models_dir: Path,
    *,
    reason: str,
    to_version: str | None,
    registry_name: str | None,
    promotion_id: str | None,
    expect_version: int | None,
) -> dict[str, Any]:
    routing = read_routing(models_dir)
    if expect_version is not None and int((routing or {}).get("version", 0)) != expect_version:
        raise PromotionPreempted(
            f"not rolling back: routing.json is no longer at version {expect_version} "
            f"(now {(routing or {}).get('version')}); whoever changed it decided"
        )
    if routing is None:
        raise PromotionError(f"nothing to roll back: {models_dir / 'routing.json'} does not exist")
    current = str(routing["production"])
    strategy = routing.get("strategy")
    busy = versions_in_flight(routing)
    target = to_version
    if target is None and strategy == "canary":
        target = current
    elif target is None and strategy == "blue_green":
        shifts = [r for r in history(models_dir) if r.get("step") == "shift"]
        last = shifts[-1] if shifts else {}
        if last.get("from") in busy and last.get("to") in busy:
            target = str(last["from"])
        else:
            target = next(iter(sorted(busy - {current})), current)
    elif target is None:
        target = _previous_production(models_dir, current)
        if target is None:
            raise PromotionError(
                f"no production before {current} is recorded in {HISTORY_FILE}; "
                "name the version to return to (--to VERSION)"
            )
    withdrawn = (busy | {current}) - {target}
    if strategy == "single" and current == target:
        return {
            "step": "rollback",
            "changed": False,
            "to": target,
            "reason": f"{target} already serves",
        }
    verify_artifact(models_dir, target)
    final = serve_single(
        models_dir,
        target,
        expect_version=int(routing["version"]),
        **_carry(routing, withdrawn | {target}),
    )
    reg: dict[str, Any] | None = None
    if registry_name:
        try:
            reg = _registry_rollback(registry_name, target, withdrawn, reason)
        except Exception as exc:  # routing is restored; the registry is secondary here
            log.error("rolled back routing to %s, but the registry update failed: %s", target, exc)
            reg = {"name": registry_name, "error": str(exc)}
    rec = record_step(
        models_dir,
        "rollback",
        promotion_id=promotion_id,
        version=target,
        strategy=strategy,
        **{"from": ",".join(sorted(withdrawn)) or current, "to": target},
        reason=reason,
        numbers={"routing_version": final.get("version"), "routing_before": routing},
        registry=reg,
    )
    return {**rec, "routing": final, "changed": True}


def registry_behind(registry_name: str | None, version: str) -> bool:
    """True when ``version`` is registered but not (yet) the registry's champion."""
    if not registry_name:
        return False
    from ltr import registry

    rv = registry.find_store_version(version, registry_name)
    return rv is not None and registry.CHAMPION not in rv.aliases
