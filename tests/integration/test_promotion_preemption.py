"""Rollback always wins: ``ltr promote`` and ``ltr rollback`` as real processes against a
real rank service (uvicorn, with traffic), and a promotion killed with SIGTERM or SIGKILL.

- a rollback during the observation window pre-empts the running promotion, which stops
  without writing routing.json again;
- routing.json is written by compare-and-swap on its ``version``, so a promote that lost
  the race (a rollback came between its read and its write) writes nothing;
- SIGTERM: the promotion rolls its canary back before it exits;
- SIGKILL: routing.json keeps the rollout (promotion id, start, window); ``ltr promote
  --status`` reports it and whether it is overdue, the service exports its deadline (the
  ``PromotionRolloutOverdue`` alert's metric), and ``ltr promote --resume`` finishes it
  within its window or undoes it after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.models import FEATURES
from support.net import WAIT_S, wait_until
from support.service import LiveService, random_features, service_settings

from ltr.model_store import RoutingChanged, read_routing, write_routing
from ltr.promotion import (
    Observation,
    PromotionPlan,
    PromotionPreempted,
    history,
    promote,
    rollback,
    shift_traffic,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LTR = [sys.executable, "-m", "ltr.cli.main"]


@pytest.fixture
def live(models: Path) -> Iterator[LiveService]:
    with LiveService(service_settings(models), random_features(FEATURES)) as svc:
        yield svc


def env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LTR_HOME": str(tmp / "home"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(ROOT),
    }


def start_promote(models: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    args = [
        *LTR,
        "promote",
        "v2",
        "--models-dir",
        str(models),
        "--replica",
        url,
        "--canary-percent",
        "50",
        "--min-requests",
        "5",
        "--max-p99-ms",
        "1000",
        "--no-registry",
        "--allow-ungated",
        "--override-reason",
        "preemption test",
        *extra,
    ]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env(models.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def ltr(models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LTR, *args],
        cwd=ROOT,
        env=env(models.parent),
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_rollout(models: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """routing.json once it names the rollout of v2 (the promotion is in its window)."""

    def rolled_out() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"promote exited early: {proc.communicate()}")
        return ((read_routing(models) or {}).get("rollout") or {}).get("version") == "v2"

    assert wait_until(rolled_out, timeout=4 * WAIT_S)
    routing = read_routing(models)
    assert routing is not None
    return routing


def steps_of(models: Path, promotion_id: str) -> list[str]:
    return [
        r["step"]
        for r in history(models)
        if r.get("promotion_id") == promotion_id and r["step"] != "override"
    ]


# ----------------------------------------------------------------- pre-emption
def test_a_rollback_during_the_window_preempts_the_running_promotion(
    models: Path, live: LiveService
) -> None:
    proc = start_promote(models, live.url, "--observe-minutes", "2", "--apply-timeout", "30")
    try:
        canary = wait_for_rollout(models, proc)
        back = ltr(models, "rollback", "--models-dir", str(models), "--no-registry", "--json")
        assert back.returncode == 0, back.stderr
        rolled = json.loads(back.stdout)
        assert (rolled["from"], rolled["to"]) == ("v2", "v1")
        out, err = proc.communicate(timeout=4 * WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (out, err)
    assert "pre-empted" in err
    routing = read_routing(models)
    assert routing is not None
    assert (routing["strategy"], routing["production"]) == ("single", "v1")
    assert routing["version"] == rolled["routing"]["version"]  # nothing written after it
    pid = canary["rollout"]["promotion_id"]
    assert steps_of(models, pid) == ["deploy", "shift", "observe"]
    assert [r for r in history(models) if r.get("promotion_id") == pid][-1][
        "verdict"
    ] == "preempted"
    live.wait_for_production("v1")


def test_promote_does_not_overwrite_a_rollback_that_came_after_the_observation(
    models: Path,
) -> None:
    p = PromotionPlan(store_version="v2", observe_minutes=0)
    shifted = shift_traffic(p, models, promotion_id="p1")
    observed = Observation(
        "promote", "looked fine", "v2", routing_version=shifted["routing_version"]
    )
    rollback(models, reason="operator", to_version="v1")
    after = (models / "routing.json").read_bytes()
    with pytest.raises(PromotionPreempted, match="not promoting v2"):
        promote(p, models, observation=observed)
    with pytest.raises(PromotionPreempted, match="not promoting v2"):
        promote(p, models, expect_routing_version=shifted["routing_version"])
    assert (models / "routing.json").read_bytes() == after
    assert [r["step"] for r in history(models)][-1] == "rollback"


CAS_CHILD = """
import sys
from pathlib import Path
from ltr.model_store import RoutingChanged, write_routing
try:
    out = write_routing(Path(sys.argv[1]), {"strategy": "single", "production": sys.argv[2]},
                        expect_version=int(sys.argv[3]))
    print("won", out["version"])
except RoutingChanged as exc:
    print("lost", exc.found)
"""


def test_concurrent_routing_writers_expecting_one_version_let_exactly_one_win(
    models: Path,
) -> None:
    start = int((read_routing(models) or {})["version"])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CAS_CHILD, str(models), v, str(start)],
            cwd=ROOT,
            env=env(models.parent),
            stdout=subprocess.PIPE,
            text=True,
        )
        for v in ("v1", "v2", "v1", "v2")
    ]
    results = [p.communicate(timeout=120)[0].split() for p in procs]
    assert sorted(r[0] for r in results) == ["lost", "lost", "lost", "won"]
    assert all(r == ["lost", str(start + 1)] for r in results if r[0] == "lost")
    assert int((read_routing(models) or {})["version"]) == start + 1
    with pytest.raises(RoutingChanged, match=f"expected routing version {start}"):
        write_routing(models, {"strategy": "single", "production": "v1"}, expect_version=start)


# ----------------------------------------------------------------- interrupted promotions
def test_sigterm_rolls_the_canary_back_before_the_promotion_exits(
    models: Path, live: LiveService
) -> None:
    proc = start_promote(models, live.url, "--observe-minutes", "2", "--apply-timeout", "30")
    try:
        canary = wait_for_rollout(models, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=4 * WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "interrupted (SIGTERM): the rollout was rolled back" in err
    routing = read_routing(models)
    assert routing is not None and (routing["strategy"], routing["production"]) == ("single", "v1")
    assert "rollout" not in routing
    last = history(models)[-1]
    assert (last["step"], last["promotion_id"]) == ("rollback", canary["rollout"]["promotion_id"])
    assert "KeyboardInterrupt: SIGTERM" in last["reason"]
    live.wait_for_production("v1")


def test_after_sigkill_resume_finishes_the_rollout_within_its_window(
    models: Path, live: LiveService
) -> None:
    proc = start_promote(models, live.url, "--observe-minutes", "0.15", "--apply-timeout", "30")
    canary = wait_for_rollout(models, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=WAIT_S)
    st = ltr(models, "promote", "--status", "--models-dir", str(models), "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["rollout"]["version"] == "v2" and status["in_flight"] == ["v2"]
    assert (status["running"], status["overdue"]) == (False, False)
    done = ltr(
        models, "promote", "--resume", "--models-dir", str(models), "--no-registry", "--json"
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert (result["status"], result["resumed"]) == ("promoted", True)
    assert result["observation"]["requests"] >= 5
    routing = read_routing(models)
    assert routing is not None and (routing["strategy"], routing["production"]) == ("single", "v2")
    pid = canary["rollout"]["promotion_id"]
    assert steps_of(models, pid) == ["deploy", "shift", "resume", "observe", "promote"]
    live.wait_for_production("v2")


def _overdue_alert() -> dict[str, Any]:
    rules = yaml.safe_load((ROOT / "platform/prometheus/alerts.yml").read_text())
    found = [
        r for g in rules["groups"] for r in g["rules"] if r["alert"] == "PromotionRolloutOverdue"
    ]
    assert len(found) == 1
    return dict(found[0])


def _deadlines(live: LiveService) -> dict[str, float]:
    """ltr_rollout_deadline_timestamp_seconds of the live service, by version."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{live.url}/metrics", timeout=5).text
    return {
        s.labels["version"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "ltr_rollout_deadline_timestamp_seconds"
    }


def test_an_overdue_rollout_alerts_and_resume_undoes_it(models: Path, live: LiveService) -> None:
    rule = _overdue_alert()
    assert rule["expr"] == "max by (version) (ltr_rollout_deadline_timestamp_seconds) < time()"
    proc = start_promote(models, live.url, "--observe-minutes", "0.05", "--apply-timeout", "1")
    canary = wait_for_rollout(models, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=WAIT_S)
    rollout = canary["rollout"]
    deadline = rollout["started_at"] + rollout["window_s"]
    assert rollout["window_s"] == pytest.approx(1 + 3)  # apply timeout + observation window
    assert wait_until(lambda: "v2" in _deadlines(live), timeout=WAIT_S)
    exported = _deadlines(live)

    # the alert's condition, max by (version) (deadline) < time(), on the scraped values
    def alert_fires(at: float) -> bool:
        return any(value < at for value in exported.values())

    assert exported == {"v2": pytest.approx(deadline)}
    assert not alert_fires(rollout["started_at"])
    assert wait_until(lambda: alert_fires(time.time()), timeout=WAIT_S)
    st = json.loads(
        ltr(models, "promote", "--status", "--models-dir", str(models), "--json").stdout
    )
    assert (st["overdue"], st["running"]) == (True, False) and st["overdue_s"] > 0
    text = ltr(models, "promote", "--status", "--models-dir", str(models)).stdout
    assert "OVERDUE" in text and "ltr promote --resume" in text

    done = ltr(models, "promote", "--resume", "--models-dir", str(models), "--no-registry")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "after the rollout's window ended, unobserved: undone" in done.stderr
    routing = read_routing(models)
    assert routing is not None and (routing["strategy"], routing["production"]) == ("single", "v1")
    live.wait_for_production("v1")
    assert wait_until(lambda: _deadlines(live) == {}, timeout=WAIT_S)  # the alert clears
    pid = rollout["promotion_id"]
    assert steps_of(models, pid)[-2:] == ["resume", "rollback"]
    again = ltr(models, "promote", "--resume", "--models-dir", str(models), "--no-registry")
    assert again.returncode == 0 and "nothing to resume" in again.stdout
