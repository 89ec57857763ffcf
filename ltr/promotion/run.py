"""Promotion of a model-store version to production: deploy -> shift -> observe -> decide.

Shared by the promotion DAG and ``ltr promote`` / ``ltr rollback``. ``routing.json`` is
the serving truth and is only written through :func:`ltr.model_store.write_routing`
(validated, atomic). Every step appends a record to ``<models>/promotions.jsonl``
(``ts, promotion_id, step, version, from, to, strategy, reason, numbers``), rewritten
atomically; that history is also what :func:`rollback` uses to find the previous
production.

Decisions (see :func:`judge`): the challenger is promoted only when it received at least
``min_requests`` requests in the window, its error rate is at most ``max_error_rate`` and
its p99 latency (from the service's latency histogram; its mean latency when the histogram
is unavailable) is at most ``max_p99_ms``. Too little traffic is a failed observation and
rolls back like a failure (verdict ``insufficient_traffic``): a canary is never left half
on without anybody watching it, and the promotion can simply be run again with a longer
window or more traffic. During the window, a challenger whose error rate is already over
the limit on at least ``min_requests`` requests is rolled back at once.

The numbers are the whole fleet's (:func:`ltr.promotion.observation.fleet_for`): 5xx count
as errors, 4xx only beyond the champion's own 4xx rate, p99 covers failed requests too.
A rollback is never refused: routing.json is written by compare-and-swap on its version, a
running promotion sees the change at its next poll and stops (status ``preempted``) without
writing again. A rollout in flight is named in routing.json (``rollout``) so that one whose
promotion died can be reported, alerted on and resumed (:mod:`ltr.promotion.resume`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltr.model_store import RoutingChanged, read_routing, serve_single, write_routing
from ltr.promotion.eligibility import check_promotable
from ltr.promotion.errors import (
    ArtifactRejected,
    PromotionError,
    PromotionInProgress,
    PromotionPreempted,
)
from ltr.promotion.history import history, promotion_lock, record_step
from ltr.promotion.observation import Fetch, Observation, judge, observe, quantile, wait_for_routing
from ltr.promotion.plan import PromotionPlan
from ltr.promotion.rollback import _registry_promote, perform_rollback, registry_behind
from ltr.promotion.routing import _carry, _champion, verify_artifact, versions_in_flight

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- steps
def deploy(
    plan: PromotionPlan, models_dir: Path, *, promotion_id: str | None = None
) -> dict[str, Any]:
    """Check the artifact (present, sha256) and read who is in production now."""
    models_dir = Path(models_dir)
    v = plan.store_version
    meta = verify_artifact(models_dir, v)
    routing = read_routing(models_dir)
    busy = versions_in_flight(routing)
    if busy and v not in busy:
        raise PromotionInProgress(
            f"routing.json shows a {routing['strategy'] if routing else ''} rollout of "
            f"{', '.join(sorted(busy))}; finish it or run `ltr rollback` first"
        )
    champion = _champion(routing, v)
    rec = record_step(
        models_dir,
        "deploy",
        promotion_id=promotion_id,
        version=v,
        strategy=plan.strategy,
        **{"from": champion, "to": v},
        numbers={
            "sha256": meta.get("sha256"),
            "parity_max_abs_diff": (meta.get("parity") or {}).get("max_abs_diff"),
            "routing_version": (routing or {}).get("version"),
        },
        plan=plan.to_dict(),  # what `ltr promote --resume` continues with
    )
    return {**rec, "champion": champion, "metadata_version": meta.get("version")}


def shift_traffic(
    plan: PromotionPlan,
    models_dir: Path,
    *,
    promotion_id: str | None = None,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Route part (canary) or all (blue-green) of the traffic to the new version.

    Blue-green writes two routing versions: the new version as the idle colour (the
    service loads it), then the switch of ``live`` to it. With ``service_url`` the switch
    waits until the service has applied the first; if it does not, nothing is switched.
    """
    models_dir = Path(models_dir)
    v = plan.store_version
    routing = read_routing(models_dir)
    champion = _champion(routing, v)
    if champion is None or champion == v:
        raise PromotionError(f"no other production version to shift traffic from to {v}")
    extra = _carry(routing, {v})
    extra["rollout"] = {
        "promotion_id": promotion_id or "manual",
        "version": v,
        "started_at": round(time.time(), 3),
        "window_s": plan.window_s,
    }
    expect = int((routing or {}).get("version", 0))
    written: list[dict[str, Any]] = []

    def cas(body: dict[str, Any]) -> dict[str, Any]:
        try:
            return write_routing(models_dir, body, expect_version=expect)
        except RoutingChanged as exc:
            raise PromotionPreempted(f"not shifting traffic to {v}: {exc}") from None

    if plan.strategy == "canary":
        p = round(float(plan.canary_percent), 2)
        written.append(
            cas(
                {
                    "strategy": "canary",
                    "production": champion,
                    "variants": [
                        {"name": "champion", "version": champion, "weight": round(100 - p, 2)},
                        {"name": "challenger", "version": v, "weight": p},
                    ],
                    **extra,
                },
            )
        )
    else:
        bg = (routing or {}).get("blue_green") or {}
        old_colour = next((c for c in ("blue", "green") if bg.get(c) == champion), "blue")
        new_colour = "green" if old_colour == "blue" else "blue"
        colours = {old_colour: champion, new_colour: v}
        for live, production in ((old_colour, champion), (new_colour, v)):
            body = {
                "strategy": "blue_green",
                "production": production,
                "blue_green": {**colours, "live": live},
                **extra,
            }
            if routing and routing.get("blue_green") == body["blue_green"]:
                continue  # resumed: this step was written already
            if written and plan.observes:
                why = wait_for_routing(
                    plan.service_url,
                    int(written[-1]["version"]),
                    timeout_s=plan.apply_timeout_s,
                    fetch=fetch,
                    sleep=sleep,
                    clock=clock,
                    plan=plan,
                )
                if why:
                    raise PromotionError(f"not switching to {v}: {why}")
            written.append(cas(body))
            expect = int(written[-1]["version"])
    final = written[-1] if written else routing or {}
    rec = record_step(
        models_dir,
        "shift",
        promotion_id=promotion_id,
        version=v,
        strategy=plan.strategy,
        **{"from": champion, "to": v},
        numbers={
            "routing_version": final.get("version"),
            "weights": {w["version"]: w["weight"] for w in final.get("variants", [])} or {v: 100.0},
        },
    )
    return {**rec, "routing": final, "routing_version": final.get("version")}


def promote(
    plan: PromotionPlan,
    models_dir: Path,
    *,
    registry_name: str | None = None,
    promotion_id: str | None = None,
    observation: Observation | None = None,
    expect_routing_version: int | None = None,
) -> dict[str, Any]:
    """Serve the new version alone (routing ``single``) and make it the registry champion.

    ``registry_name`` None leaves the MLflow registry alone; a version that is not
    registered there is promoted in routing and noted as unregistered. routing.json is
    written by compare-and-swap: when it is no longer at ``expect_routing_version`` (by
    default the routing version the observation watched), or changes between the read and
    the write, :class:`PromotionPreempted` is raised and nothing is written: a rollback in
    between wins.
    """
    models_dir = Path(models_dir)
    v = plan.store_version
    verify_artifact(models_dir, v)
    routing = read_routing(models_dir)
    found = int((routing or {}).get("version", 0))
    expect = expect_routing_version
    if expect is None and observation is not None:
        expect = observation.routing_version
    if expect is not None and found != expect:
        raise PromotionPreempted(
            f"not promoting {v}: routing.json is at version {found}, not the rollout's "
            f"{expect} (a rollback or another promotion changed it)"
        )
    champion = _champion(routing, v)
    if routing and routing.get("strategy") == "single" and routing.get("production") == v:
        final, changed = routing, False
    else:
        try:
            final = serve_single(models_dir, v, expect_version=found, **_carry(routing, {v}))
        except RoutingChanged as exc:
            raise PromotionPreempted(f"not promoting {v}: {exc}") from None
        changed = True
    fields: dict[str, Any] = {
        "promotion_id": promotion_id,
        "version": v,
        "strategy": plan.strategy,
        "from": champion if champion != v else None,
        "to": v,
        "reason": observation.reason if observation else "promoted without observation",
        "numbers": {
            "routing_version": final.get("version"),
            "observation": observation.to_dict() if observation else None,
        },
    }
    reg: dict[str, Any] | None = None
    if registry_name:
        try:
            reg = _registry_promote(registry_name, v)
        except Exception as exc:
            record_step(models_dir, "promote", **fields, registry={"error": str(exc)})
            raise PromotionError(
                f"routing now serves {v}, but the registry alias could not be moved: {exc}; "
                "run the promotion again to retry"
            ) from exc
    rec = record_step(models_dir, "promote", **fields, registry=reg)
    return {**rec, "routing": final, "changed": changed}


def rollback(
    models_dir: Path,
    *,
    reason: str,
    to_version: str | None = None,
    registry_name: str | None = None,
) -> dict[str, Any]:
    """Serve the previous production alone again.

    The target: ``to_version``; during a canary, its champion; during a blue-green switch,
    the old colour; otherwise the version the current production replaced (from
    ``promotions.jsonl``). The registry ``champion`` alias goes back to the target only when
    it had moved to the withdrawn version; withdrawn versions get an ``ltr.rolled_back`` tag.

    Never refused because a promotion is running: it does not wait for the promotion's
    lock; it writes routing.json by compare-and-swap, and the running promotion, which
    checks routing's version at each look and writes by compare-and-swap too, stops
    without overwriting it (status ``preempted``).
    """
    models_dir = Path(models_dir)
    return perform_rollback(
        models_dir,
        reason=reason,
        to_version=to_version,
        registry_name=registry_name,
        promotion_id=uuid.uuid4().hex[:12],
    )


def run_promotion(
    plan: PromotionPlan,
    models_dir: Path,
    *,
    registry_name: str | None = None,
    observe_traffic: bool = True,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """deploy -> shift -> observe -> promote, or roll back automatically with the reason.

    ``status`` is ``promoted``, ``rolled_back``, ``preempted`` (a rollback or another
    writer changed routing.json during the rollout: theirs stands, nothing more is
    written) or ``already_promoted``. Idempotent: for a version that already serves alone
    (and is the registry champion, when a registry is given) nothing changes and nothing is
    recorded; an interrupted promotion of the same version starts its rollout again. The
    first version of an empty store is promoted directly.
    """
    models_dir = Path(models_dir)
    v = plan.store_version
    with promotion_lock(models_dir):
        routing = read_routing(models_dir)
        out: dict[str, Any] = {"version": v, "strategy": plan.strategy, "changed": True}
        if routing and routing.get("strategy") == "single" and routing.get("production") == v:
            if not registry_behind(registry_name, v):
                return {**out, "status": "already_promoted", "changed": False, "routing": routing}
            step = promote(plan, models_dir, registry_name=registry_name)  # registry catch-up
            return {**out, "status": "promoted", "steps": [step], "routing": step["routing"]}
        if observe_traffic and routing is not None and not plan.observes:
            raise PromotionError(
                "observing needs the service URL (--service-url, --replica, "
                "--kubernetes-service or --prometheus-url; or --no-observe)"
            )
        pid = uuid.uuid4().hex[:12]
        out["eligibility"] = check_promotable(  # gated, registered, or an explicit override
            plan, models_dir, registry_name=registry_name, promotion_id=pid
        )
        steps = [deploy(plan, models_dir, promotion_id=pid)]
        champion = steps[0]["champion"]
        out.update(promotion_id=pid, champion=champion, steps=steps, observation=None)
        if champion is None or champion == v:  # nothing to compare against
            step = promote(plan, models_dir, registry_name=registry_name, promotion_id=pid)
            steps.append(step)
            return {**out, "status": "promoted", "routing": step["routing"]}
        routing_version: int | None = None
        try:
            shifted = shift_traffic(
                plan, models_dir, promotion_id=pid, fetch=fetch, sleep=sleep, clock=clock
            )
            steps.append(shifted)
            routing_version = int(shifted["routing_version"])
            obs = None
            if observe_traffic:
                obs = observe(
                    plan,
                    fetch=fetch,
                    sleep=sleep,
                    clock=clock,
                    routing_version=routing_version,
                    models_dir=models_dir,
                )
        except PromotionPreempted as exc:
            return _preempted(out, models_dir, str(exc))
        except BaseException as exc:  # even an interrupt must not leave a canary behind
            what = "observation" if routing_version is not None else "traffic shift"
            reason = f"{what} failed: {type(exc).__name__}: {exc}"
            try:
                steps.append(
                    perform_rollback(
                        models_dir,
                        reason=reason,
                        to_version=champion,
                        registry_name=registry_name,
                        promotion_id=pid,
                        expect_version=routing_version,
                    )
                )
            except PromotionPreempted as pre:
                if not isinstance(exc, Exception):
                    raise
                return _preempted(out, models_dir, f"{reason}; {pre}")
            if not isinstance(exc, Exception):
                raise
            return {
                **out,
                "status": "rolled_back",
                "reason": reason,
                "routing": read_routing(models_dir),
            }
        return _decide(
            plan,
            models_dir,
            out,
            obs,
            routing_version=routing_version,
            registry_name=registry_name,
        )


def _preempted(out: dict[str, Any], models_dir: Path, reason: str) -> dict[str, Any]:
    log.warning("promotion of %s pre-empted: %s", out.get("version"), reason)
    return {
        **out,
        "status": "preempted",
        "changed": False,
        "reason": reason,
        "routing": read_routing(models_dir),
    }


def _decide(
    plan: PromotionPlan,
    models_dir: Path,
    out: dict[str, Any],
    obs: Observation | None,
    *,
    routing_version: int,
    registry_name: str | None,
) -> dict[str, Any]:
    """Record the observation, then promote or roll back (both by compare-and-swap on
    ``routing_version``, so a rollback that came in between stands)."""
    v, pid, champion = plan.store_version, out["promotion_id"], out["champion"]
    steps: list[dict[str, Any]] = out["steps"]
    if obs is not None:
        out["observation"] = obs.to_dict()
        steps.append(
            record_step(
                models_dir,
                "observe",
                promotion_id=pid,
                version=v,
                strategy=plan.strategy,
                **{"from": champion, "to": v},
                verdict=obs.verdict,
                reason=obs.reason,
                numbers=obs.to_dict(),
            )
        )
        if obs.verdict == "preempted":
            return _preempted(out, models_dir, obs.reason)
    try:
        if obs is None or obs.verdict == "promote":
            step = promote(
                plan,
                models_dir,
                registry_name=registry_name,
                promotion_id=pid,
                observation=obs,
                expect_routing_version=routing_version,
            )
            steps.append(step)
            return {**out, "status": "promoted", "routing": step["routing"]}
        back = perform_rollback(
            models_dir,
            reason=f"{obs.verdict}: {obs.reason}",
            to_version=champion,
            registry_name=registry_name,
            promotion_id=pid,
            expect_version=routing_version,
        )
    except PromotionPreempted as exc:
        return _preempted(out, models_dir, str(exc))
    steps.append(back)
    return {**out, "status": "rolled_back", "reason": back["reason"], "routing": back["routing"]}


__all__ = [
    "ArtifactRejected",
    "Observation",
    "PromotionError",
    "PromotionInProgress",
    "PromotionPlan",
    "deploy",
    "history",
    "judge",
    "observe",
    "promote",
    "quantile",
    "rollback",
    "run_promotion",
    "shift_traffic",
    "verify_artifact",
]
