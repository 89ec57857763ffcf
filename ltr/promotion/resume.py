"""A rollout left behind by a promotion that died (SIGKILL, a lost machine): see it, finish it.

A rollout in flight is written into routing.json itself (``rollout``: promotion id, version,
start, window), so it survives the process that wrote it, the service exports it as gauges
(``ltr_rollout_deadline_timestamp_seconds``: an alert fires once it is past), and
:func:`promotion_status` reports it. :func:`resume_promotion` (``ltr promote --resume``)
finishes it: within its window it watches the rest of the window and decides as the
promotion would have; past its window it undoes it (rolls back to the champion), since
nobody watched the traffic it got. ``ltr rollback`` undoes it at any time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltr.model_store import read_routing
from ltr.promotion.errors import PromotionError, PromotionPreempted
from ltr.promotion.history import LOCK_FILE, history, promotion_lock, record_step
from ltr.promotion.observation import Fetch, observe
from ltr.promotion.plan import PromotionPlan
from ltr.promotion.rollback import perform_rollback
from ltr.promotion.routing import _champion, versions_in_flight
from ltr.promotion.run import _decide, _preempted

log = logging.getLogger(__name__)


def _lock_held(models_dir: Path) -> bool:
    """True while a promotion process holds the model store (it is alive and running)."""
    path = Path(models_dir) / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def promotion_status(models_dir: Path, *, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """What routing.json has in flight: ``rollout`` (None when nothing is), whether a
    promotion process is running it (``running``), and ``overdue`` (past
    ``started_at + window_s``: the condition of the ``PromotionRolloutOverdue`` alert)."""
    models_dir = Path(models_dir)
    routing = read_routing(models_dir)
    rollout = (routing or {}).get("rollout")
    busy = sorted(versions_in_flight(routing))
    out: dict[str, Any] = {
        "routing_version": (routing or {}).get("version"),
        "strategy": (routing or {}).get("strategy"),
        "production": (routing or {}).get("production"),
        "in_flight": busy,
        "rollout": rollout,
        "running": _lock_held(models_dir),
        "overdue": False,
        "overdue_s": 0.0,
    }
    if rollout:
        deadline = float(rollout["started_at"]) + float(rollout["window_s"])
        over = now() - deadline
        out.update(
            deadline=dt.datetime.fromtimestamp(deadline, dt.UTC).isoformat(),
            overdue=over > 0,
            overdue_s=round(max(0.0, over), 3),
        )
    return out


def _plan_of(models_dir: Path, promotion_id: str, version: str) -> PromotionPlan:
    for rec in reversed(history(models_dir)):
        mine = rec.get("promotion_id") == promotion_id and rec.get("step") == "deploy"
        if mine and rec.get("plan"):
            return PromotionPlan.from_dict({**rec["plan"], "store_version": version})
    return PromotionPlan(store_version=version)


def resume_promotion(
    models_dir: Path,
    *,
    registry_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Finish the rollout routing.json names, after its promotion died.

    ``status``: ``nothing_to_resume``, ``promoted``, ``rolled_back`` or ``preempted``.
    The plan is the one the promotion recorded with its ``deploy`` step; ``overrides``
    (non-None values) replace its fields, e.g. where to read the service. Refused while the
    promotion is still running (:class:`PromotionInProgress`).
    """
    models_dir = Path(models_dir)
    with promotion_lock(models_dir):
        routing = read_routing(models_dir)
        rollout = (routing or {}).get("rollout")
        if not routing or not rollout or rollout["version"] not in versions_in_flight(routing):
            return {
                "status": "nothing_to_resume",
                "changed": False,
                "reason": "routing.json names no rollout in flight",
                "routing": routing,
            }
        v, pid = str(rollout["version"]), str(rollout["promotion_id"])
        plan = _plan_of(models_dir, pid, v)
        changes = {k: val for k, val in (overrides or {}).items() if val is not None}
        if changes:
            plan = dataclasses.replace(plan, **changes)
        champion = _champion(routing, v)
        routing_version = int(routing["version"])
        left = float(rollout["started_at"]) + float(rollout["window_s"]) - now()
        out: dict[str, Any] = {
            "version": v,
            "strategy": plan.strategy,
            "changed": True,
            "promotion_id": pid,
            "champion": champion,
            "observation": None,
            "resumed": True,
        }
        common = {"promotion_id": pid, "version": v, "strategy": plan.strategy}
        out["steps"] = steps = [
            record_step(
                models_dir,
                "resume",
                **common,
                **{"from": champion, "to": v},
                reason=f"{round(left, 1)} s of the window left",
            )
        ]
        try:
            if left <= 0 or not plan.observes:
                why = (
                    f"resumed {-left:.0f} s after the rollout's window ended, unobserved"
                    if left <= 0
                    else "resumed without a way to observe the service"
                )
                back = perform_rollback(
                    models_dir,
                    reason=f"{why}: undone; run the promotion again",
                    to_version=champion,
                    registry_name=registry_name,
                    promotion_id=pid,
                    expect_version=routing_version,
                )
                steps.append(back)
                return {**out, "status": "rolled_back", "reason": back["reason"]}
            remaining = dataclasses.replace(
                plan, observe_minutes=max(0.0, min(plan.observe_minutes * 60, left)) / 60
            )
            obs = observe(
                remaining,
                fetch=fetch,
                sleep=sleep,
                clock=clock,
                routing_version=routing_version,
                models_dir=models_dir,
            )
        except PromotionPreempted as exc:
            return _preempted(out, models_dir, str(exc))
        if champion is None:
            raise PromotionError(f"routing.json names no champion to compare {v} with")
        return _decide(
            plan,
            models_dir,
            out,
            obs,
            routing_version=routing_version,
            registry_name=registry_name,
        )


__all__ = ["promotion_status", "resume_promotion"]
