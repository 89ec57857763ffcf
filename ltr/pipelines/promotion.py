"""Task functions of the promotion DAG (``dags/promotion.py``), one per step.

Each takes the run's Params (a plain mapping) and the small dicts the steps before it
returned, and returns a small JSON-able dict for XCom. They call the code behind
``ltr promote`` / ``ltr rollback`` (:mod:`ltr.promotion`): the same artifact checks, the
same validated routing writes and the same ``promotions.jsonl`` records (``deploy``,
``shift``, ``observe``, then ``promote`` or ``rollback``, under one promotion id), so a
promotion run from Airflow and one run from a shell leave the same history.

What differs from :func:`ltr.promotion.run_promotion` is what a multi-task DAG imposes:
the model-store lock is taken per step (not across the observation window; the DAG's
``max_active_runs=1`` and :func:`deploy_step`'s in-flight check keep rollouts apart), and
a step that still fails after its retries is answered by :func:`rollback_step`, which the
DAG runs whatever happened upstream, so a canary is never left half on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ltr.model_store import read_routing
from ltr.pipelines.config import PromotionDefaults, load_pipeline_config
from ltr.pipelines.forms import SERVICE_URL_ENV, service_url_default
from ltr.promotion import (
    Observation,
    PromotionPlan,
    deploy,
    observe,
    perform_rollback,
    promote,
    promotion_lock,
    record_step,
    registry_behind,
    shift_traffic,
    versions_in_flight,
)
from ltr.promotion.eligibility import check_promotable
from ltr.settings import get_settings

log = logging.getLogger(__name__)

Decision = Literal["promote", "rollback", "nothing_to_do"]


def plan_from_params(
    params: Mapping[str, Any], defaults: PromotionDefaults | None = None
) -> PromotionPlan:
    """The PromotionPlan of a run; a missing or null Param takes the pipeline config's default.

    Raises ValueError (with every problem) on values the plan refuses.
    """
    d = defaults or load_pipeline_config().promotion

    def get(name: str) -> Any:
        value = params.get(name)
        return getattr(d, name) if value is None else value

    version = str(params.get("model_version") or "").strip()
    if not version:
        raise ValueError("model_version is required (a folder name under models/versions/)")
    strategy = str(get("strategy")).replace("-", "_")
    url = str(params.get("service_url") or service_url_default(d) or "").strip()
    reason = str(params.get("override_reason") or "").strip()
    return PromotionPlan(
        store_version=version,
        strategy=strategy,  # type: ignore[arg-type]  # validated by PromotionPlan
        canary_percent=float(get("canary_percent")),
        observe_minutes=float(get("observe_minutes")),
        max_error_rate=float(get("max_error_rate")),
        max_p99_ms=float(get("max_p99_ms")),
        min_requests=int(get("min_requests")),
        service_url=url or None,
        replica_urls=tuple(d.replica_urls),
        prometheus_url=d.prometheus_url,
        prometheus_selector=d.prometheus_selector,
        kubernetes_service=d.kubernetes_service,
        allow_ungated=bool(params.get("allow_ungated") or False),
        override_reason=reason or None,
    )


def _models_dir() -> Path:
    return get_settings().models_dir


def _registry_name() -> str:
    return load_pipeline_config().registry_name


def _summary(observation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not observation:
        return None
    keys = ("verdict", "requests", "errors", "error_rate", "p99_ms", "mean_latency_ms")
    return {k: observation.get(k) for k in keys}


# ----------------------------------------------------------------- steps
def deploy_step(params: Mapping[str, Any]) -> dict[str, Any]:
    """Verify the artifact and name the champion it would replace.

    ``status``: ``already_promoted`` (the version serves alone and is the registry champion:
    nothing to do, nothing recorded), ``registry_behind`` (it serves alone but the registry
    alias has not followed: only the promote step runs) or ``deployed``. Before anything is
    written, the version must be promotable (:func:`ltr.promotion.eligibility.
    check_promotable`: a passing gate verdict, a registration, or an explicit override).
    """
    plan = plan_from_params(params)
    models, registry_name, v = _models_dir(), _registry_name(), plan.store_version
    out: dict[str, Any] = {
        "version": v,
        "strategy": plan.strategy,
        "online_evidence": online_evidence(v),
    }
    with promotion_lock(models):
        routing = read_routing(models)
        if routing and routing.get("strategy") == "single" and routing.get("production") == v:
            if not registry_behind(registry_name, v):
                log.info("%s already serves all traffic and is the champion; nothing to do", v)
                return {**out, "status": "already_promoted", "champion": v, "promotion_id": None}
            pid = uuid.uuid4().hex[:12]
            return {**out, "status": "registry_behind", "champion": None, "promotion_id": pid}
        if routing is not None and not plan.observes:
            raise ValueError(
                "observing the rollout needs the rank service's URL: fill in service_url "
                f"(or set {SERVICE_URL_ENV} for Airflow, or promotion.service_url, "
                "promotion.prometheus_url, promotion.replica_urls or "
                "promotion.kubernetes_service in the pipeline config)"
            )
        pid = uuid.uuid4().hex[:12]
        eligibility = check_promotable(plan, models, registry_name=registry_name, promotion_id=pid)
        rec = deploy(plan, models, promotion_id=pid)
    return {
        **out,
        "status": "deployed",
        "champion": rec["champion"],
        "promotion_id": pid,
        "sha256": rec["numbers"]["sha256"],
        "eligibility": eligibility,
    }


def online_evidence(version: str) -> dict[str, Any] | None:
    """What the newest weekly online experiment says about ``version`` (advisory: it is
    logged and recorded with the promotion; the canary's own observation decides)."""
    from ltr.pipelines.online import latest_decision

    decision = latest_decision()
    if not decision:
        return None
    compared = decision.get("compared") or {}
    winner = decision.get("winner_version")
    involved = version in compared.values()
    verdict = "not compared"
    if involved and winner == version:
        verdict = "won"
    elif involved and winner:
        verdict = "lost"
    elif involved:
        verdict = "inconclusive"
    if verdict == "lost":
        log.warning(
            "the online experiment of the week of %s preferred %s over %s (%s)",
            decision.get("week"),
            winner,
            version,
            decision.get("reason"),
        )
    return {
        "week": decision.get("week"),
        "verdict": verdict,
        "winner_version": winner,
        "recommendation": decision.get("recommendation"),
        "p_value": decision.get("p_value"),
    }


def _needs_rollout(deployed: Mapping[str, Any]) -> bool:
    champion = deployed.get("champion")
    return deployed.get("status") == "deployed" and champion not in (None, deployed["version"])


def shift_step(params: Mapping[str, Any], deployed: Mapping[str, Any]) -> dict[str, Any]:
    """Route the canary share (or, blue-green, all traffic) to the new version."""
    if not _needs_rollout(deployed):
        why = {
            "already_promoted": "already promoted: nothing to do",
            "registry_behind": "serves alone already: only the registry alias is moved",
        }.get(str(deployed.get("status")), "no other production version: promoted directly")
        return {"shifted": False, "why": why}
    plan = plan_from_params(params)
    models = _models_dir()
    with promotion_lock(models):
        rec = shift_traffic(plan, models, promotion_id=deployed["promotion_id"])
    return {
        "shifted": True,
        "routing_version": rec["routing_version"],
        "weights": rec["numbers"]["weights"],
    }


def observe_step(
    params: Mapping[str, Any], deployed: Mapping[str, Any], shifted: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Watch the live service for ``observe_minutes``; the Observation (verdict, reason,
    numbers) as a dict, or None when nothing was shifted. A rollback verdict is a result,
    not an error: this step succeeds with it."""
    if not shifted.get("shifted"):
        return None
    plan = plan_from_params(params)
    models, v = _models_dir(), plan.store_version
    obs = observe(plan, routing_version=shifted["routing_version"])
    with promotion_lock(models):
        record_step(
            models,
            "observe",
            promotion_id=deployed["promotion_id"],
            version=v,
            strategy=plan.strategy,
            **{"from": deployed["champion"], "to": v},
            verdict=obs.verdict,
            reason=obs.reason,
            numbers=obs.to_dict(),
        )
    log.info("observation of %s: %s (%s)", v, obs.verdict, obs.reason)
    return obs.to_dict()


def decide(deployed: Mapping[str, Any], observation: Mapping[str, Any] | None) -> Decision:
    """``nothing_to_do`` for a version already promoted; otherwise the observation's verdict
    (``promote`` without an observation: a first version, or a registry catch-up)."""
    if deployed.get("status") == "already_promoted":
        return "nothing_to_do"
    if observation is None or observation.get("verdict") == "promote":
        return "promote"
    return "rollback"


def promote_step(
    params: Mapping[str, Any],
    deployed: Mapping[str, Any],
    observation: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Serve the version alone and move the registry's ``champion`` alias to it."""
    plan = plan_from_params(params)
    models = _models_dir()
    obs = Observation.from_dict(dict(observation)) if observation else None
    with promotion_lock(models):
        rec = promote(
            plan,
            models,
            registry_name=_registry_name(),
            promotion_id=deployed["promotion_id"],
            observation=obs,
        )
    return {
        "status": "promoted",
        "version": plan.store_version,
        "from": rec.get("from"),
        "reason": rec["reason"],
        "routing_version": rec["routing"].get("version"),
        "changed": rec["changed"],
        "registry": rec.get("registry"),
    }


def rollback_step(
    params: Mapping[str, Any],
    deployed: Mapping[str, Any] | None,
    observation: Mapping[str, Any] | None,
    failed_steps: Sequence[str] = (),
) -> dict[str, Any]:
    """Serve the champion alone again, with the reason, when the version is being rolled out.

    Reached on a rollback verdict, or after an earlier step failed for good
    (``failed_steps``); when the version is not in flight (it was never shifted, or another
    rollout owns the routing) nothing is touched.
    """
    v = str(params.get("model_version") or "").strip()
    if observation and observation.get("verdict") != "promote":
        reason = f"{observation['verdict']}: {observation['reason']}"
    elif failed_steps:
        reason = f"{', '.join(failed_steps)} failed; rolled back for safety (see the task log)"
    else:
        reason = "rolled back by the promotion DAG"
    models = _models_dir()
    with promotion_lock(models):
        routing = read_routing(models)
        if not v or v not in versions_in_flight(routing):
            why = f"{v or '(no version)'} is not being rolled out: nothing to roll back"
            log.info("%s", why)
            return {"status": "nothing_to_roll_back", "changed": False, "why": why}
        back = perform_rollback(
            models,
            reason=reason,
            to_version=(deployed or {}).get("champion"),
            registry_name=_registry_name(),
            promotion_id=(deployed or {}).get("promotion_id"),
        )
    return {
        "status": "rolled_back",
        "changed": True,
        "from": back["from"],
        "to": back["to"],
        "reason": reason,
        "routing_version": back["routing"].get("version"),
        "registry": back.get("registry"),
    }


def outcome(
    params: Mapping[str, Any],
    deployed: Mapping[str, Any] | None,
    observation: Mapping[str, Any] | None,
    promoted: Mapping[str, Any] | None,
    rolled_back: Mapping[str, Any] | None,
    failed_steps: Sequence[str] = (),
) -> dict[str, Any]:
    """What the run did and why: ``status`` is ``promoted``, ``already_promoted``,
    ``rolled_back`` (on the observation's verdict) or ``failed`` (see ``reason``)."""
    v = str(params.get("model_version") or "").strip()
    out: dict[str, Any] = {
        "version": v,
        "promotion_id": (deployed or {}).get("promotion_id"),
        "champion_before": (deployed or {}).get("champion"),
        "observation": _summary(observation),
        "failed_steps": list(failed_steps),
    }
    undone = bool(rolled_back and rolled_back.get("changed"))
    verdict = (observation or {}).get("verdict")
    if not failed_steps:
        if promoted:
            return {**out, "status": "promoted", "reason": promoted["reason"]}
        if deployed and deployed.get("status") == "already_promoted":
            reason = f"{v} already serves all traffic and is the champion; nothing changed"
            return {**out, "status": "already_promoted", "reason": reason}
        if undone and rolled_back:
            return {**out, "status": "rolled_back", "reason": rolled_back["reason"]}
    if failed_steps:
        reason = f"{', '.join(failed_steps)} failed (see the task log)"
    elif verdict not in (None, "promote"):
        reason = (
            f"{verdict}: {(observation or {}).get('reason')}; but {v} was no longer being "
            "rolled out (routing changed meanwhile): nothing to undo"
        )
    else:
        reason = "the promotion did not complete (see the task logs)"
    if undone and rolled_back:
        reason += f"; rolled back to {rolled_back['to']}"
    return {**out, "status": "failed", "reason": reason}


__all__ = [
    "Decision",
    "decide",
    "deploy_step",
    "observe_step",
    "outcome",
    "plan_from_params",
    "promote_step",
    "rollback_step",
    "shift_step",
]
