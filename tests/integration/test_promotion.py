"""Promotion: deploy -> shift -> observe -> promote or roll back, on real exported artifacts.

Most tests watch a fake service (a fetch function that plays GET /api/v1/models and
/metrics, with a fake clock); the last two run the real rank service under uvicorn, send it
traffic over HTTP and let the promotion watch its real counters.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.env import isolated_home
from support.models import FEATURES
from support.service import LiveService, random_features, service_settings

from ltr.model_store import read_routing
from ltr.promotion import (
    ArtifactRejected,
    Observation,
    PromotionError,
    PromotionInProgress,
    PromotionPlan,
    deploy,
    history,
    observe,
    promotion_lock,
    quantile,
    rollback,
    run_promotion,
    shift_traffic,
)
from serving.routing import RoutingConfig

URL = "http://rank.test"


# ----------------------------------------------------------------- artifacts
# `templates` and `models` (v1, v2, v3; v1 in production): tests/integration/conftest.py
def plan(version: str = "v2", **kw: Any) -> PromotionPlan:
    defaults: dict[str, Any] = {
        "canary_percent": 10,
        "observe_minutes": 0.1,  # 6 s of fake time
        "poll_seconds": 1.0,
        "min_requests": 50,
        "service_url": URL,
    }
    return PromotionPlan(store_version=version, **{**defaults, **kw})


def steps(models_dir: Path) -> list[str]:
    return [r["step"] for r in history(models_dir)]


# ----------------------------------------------------------------- a fake service
class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-3)


class FakeService:
    """GET /api/v1/models and /metrics of a service that serves what routing.json says.

    Each read of /api/v1/models first adds one poll's worth of traffic: ``traffic[v] =
    (requests, errors, latency_ms)`` for each version the routing serves. ``lag`` reads
    answer with the previous routing version first (a service that has not reloaded yet).
    """

    def __init__(
        self,
        models_dir: Path,
        traffic: dict[str, tuple[int, int, float]],
        *,
        histogram: bool = False,
        lag: int = 0,
    ) -> None:
        from serving.telemetry import create_telemetry

        self.models_dir = models_dir
        self.traffic = traffic
        self.counts: dict[str, list[float]] = {}
        self.tel = create_telemetry() if histogram else None
        self.lag = lag
        self.reads = 0

    def __call__(self, url: str) -> str:
        if url == f"{URL}/metrics":
            if self.tel is None:
                raise ConnectionError("no /metrics here")
            from prometheus_client import generate_latest

            return generate_latest(self.tel.registry).decode()
        assert url == f"{URL}/api/v1/models"
        self.reads += 1
        routing = RoutingConfig.load(self.models_dir / "routing.json")
        served = routing.referenced_versions()
        for v in served:
            n, e, lat = self.traffic.get(v, (0, 0, 1.0))
            c = self.counts.setdefault(v, [0, 0, 0.0])
            c[0] += n
            c[1] += e
            c[2] += n * lat
            if self.tel is not None:
                for _ in range(n - e):
                    self.tel.request_latency.labels(
                        endpoint="rank", model_version=v, variant="x"
                    ).observe(lat / 1000)
        return json.dumps(
            {
                "routing_version": routing.version - (1 if self.reads <= self.lag else 0),
                "strategy": routing.strategy,
                "production": routing.production,
                "versions": [
                    {
                        "version": v,
                        "requests": int(c[0]),
                        "errors": int(c[1]),
                        "mean_latency_ms": c[2] / c[0] if c[0] else None,
                        "roles": ["served"] if v in served else [],
                    }
                    for v, c in sorted(self.counts.items())
                ],
            }
        )


def watch(models_dir: Path, p: PromotionPlan, svc: FakeService, **kw: Any) -> Any:
    t = FakeTime()
    return observe(p, fetch=svc, sleep=t.sleep, clock=t.clock, **kw)


def promote_with(models_dir: Path, p: PromotionPlan, svc: FakeService, **kw: Any) -> Any:
    t = FakeTime()
    return run_promotion(p, models_dir, fetch=svc, sleep=t.sleep, clock=t.clock, **kw)


# ----------------------------------------------------------------- deploy and shift
def test_deploy_refuses_a_version_that_is_not_in_the_store(models: Path) -> None:
    with pytest.raises(ArtifactRejected, match="no exported model"):
        deploy(plan("v9"), models)


def test_deploy_refuses_an_artifact_whose_sha256_does_not_match(models: Path) -> None:
    with open(models / "versions" / "v2" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    before = (models / "routing.json").read_bytes()
    with pytest.raises(ArtifactRejected, match="sha256"):
        run_promotion(plan(), models, observe_traffic=False)
    assert (models / "routing.json").read_bytes() == before


def test_deploy_names_the_current_production_as_champion(models: Path) -> None:
    out = deploy(plan(), models)
    assert (out["champion"], out["to"]) == ("v1", "v2")
    assert steps(models) == ["deploy"]


def test_canary_shift_writes_a_valid_canary_routing(models: Path) -> None:
    out = shift_traffic(plan(canary_percent=12.5), models)
    cfg = RoutingConfig.load(models / "routing.json")
    assert cfg.strategy == "canary"
    assert cfg.production == "v1"
    assert [(v.name, v.version, v.weight) for v in cfg.variants] == [
        ("champion", "v1", 87.5),
        ("challenger", "v2", 12.5),
    ]
    assert out["routing_version"] == cfg.version == 2
    assert history(models)[-1]["numbers"]["weights"] == {"v1": 87.5, "v2": 12.5}


def test_blue_green_shift_preloads_the_idle_colour_then_switches_to_it(models: Path) -> None:
    svc = FakeService(models, {})
    t = FakeTime()
    shift_traffic(plan(strategy="blue_green"), models, fetch=svc, sleep=t.sleep, clock=t.clock)
    cfg = RoutingConfig.load(models / "routing.json")
    assert cfg.strategy == "blue_green"
    assert cfg.blue_green is not None
    assert (cfg.blue_green.blue, cfg.blue_green.green, cfg.blue_green.live) == ("v1", "v2", "green")
    assert cfg.production == "v2"
    assert cfg.version == 3  # v1 single (1), v2 idle (2), switch (3)
    assert svc.reads >= 1  # the switch waited for the service to apply version 2


def test_a_promotion_is_refused_while_another_versions_canary_runs(models: Path) -> None:
    shift_traffic(plan("v3"), models)
    with pytest.raises(PromotionInProgress, match="v3"):
        deploy(plan("v2"), models)


def test_a_second_promotion_is_refused_while_one_holds_the_store(models: Path) -> None:
    with promotion_lock(models), pytest.raises(PromotionInProgress, match="another promotion"):
        run_promotion(plan(), models, observe_traffic=False)


# ----------------------------------------------------------------- observe
def test_observe_rolls_back_when_the_error_rate_is_above_the_limit(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v1": (90, 0, 2.0), "v2": (10, 1, 2.0)})
    obs = watch(models, plan(), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "rollback"
    assert "error rate 10.00%" in obs.reason and "above the limit 1.00%" in obs.reason
    assert obs.requests >= 50 and obs.errors == obs.requests // 10
    assert obs.error_rate == pytest.approx(0.1)
    assert obs.champion is not None and obs.champion["version"] == "v1"
    assert obs.champion["errors"] == 0


def test_observe_stops_early_once_enough_requests_show_the_error_rate(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v2": (30, 30, 2.0)})
    obs = watch(models, plan(observe_minutes=10), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "rollback"
    assert "stopped early" in obs.reason
    assert obs.observed_s < 60


def test_observe_promotes_a_healthy_challenger_with_the_numbers(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v1": (90, 0, 2.0), "v2": (10, 0, 3.0)}, histogram=True)
    obs = watch(models, plan(), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "promote", obs.reason
    assert obs.requests == 60  # 6 polls of 10 in the window; earlier traffic does not count
    assert obs.errors == 0
    assert obs.mean_latency_ms == pytest.approx(3.0)
    assert obs.latency_source == "histogram"
    assert obs.p99_ms is not None and 2.0 < obs.p99_ms <= 3.0  # inside the (2, 3] ms bucket
    assert Observation.from_dict(json.loads(json.dumps(obs.to_dict()))) == obs  # for XCom


def test_observe_rolls_back_when_p99_latency_is_above_the_limit(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v2": (20, 0, 80.0)}, histogram=True)
    obs = watch(models, plan(), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "rollback"
    assert obs.reason.startswith("p99 latency") and "above the limit 50 ms" in obs.reason


def test_observe_judges_mean_latency_when_the_histogram_is_unavailable(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v2": (20, 0, 70.0)}, histogram=False)
    obs = watch(models, plan(), svc, routing_version=shift["routing_version"])
    assert (obs.verdict, obs.latency_source) == ("rollback", "mean")
    assert obs.reason.startswith("mean latency 70.0 ms")


def test_observe_reports_insufficient_traffic_below_min_requests(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v1": (90, 0, 2.0), "v2": (2, 0, 2.0)})
    obs = watch(models, plan(), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "insufficient_traffic"
    assert "only 12 request(s) reached v2, 50 needed" in obs.reason


def test_observe_waits_for_the_service_to_apply_the_new_routing(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v2": (10, 0, 2.0)}, lag=3)
    obs = watch(models, plan(), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "promote"
    assert obs.requests == 60  # counted from the first read that showed the new routing


def test_observe_rolls_back_when_the_service_never_applies_the_routing(models: Path) -> None:
    shift = shift_traffic(plan(), models)
    svc = FakeService(models, {"v2": (10, 0, 2.0)}, lag=10**6)
    obs = watch(models, plan(apply_timeout_s=5), svc, routing_version=shift["routing_version"])
    assert obs.verdict == "rollback"
    assert "did not apply routing version 2" in obs.reason


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    buckets = {0.001: 0.0, 0.002: 100.0, float("inf"): 100.0}
    assert quantile(0.99, buckets) == pytest.approx(0.001 + 0.001 * 0.99)
    assert quantile(0.99, {0.05: 0.0, float("inf"): 10.0}) == 0.05
    assert quantile(0.99, {0.05: 0.0, float("inf"): 0.0}) is None


# ----------------------------------------------------------------- run_promotion
def test_a_healthy_canary_is_promoted_and_every_step_is_recorded(models: Path) -> None:
    svc = FakeService(models, {"v1": (90, 0, 2.0), "v2": (10, 0, 2.0)})
    out = promote_with(models, plan(), svc)
    assert out["status"] == "promoted"
    cfg = RoutingConfig.load(models / "routing.json")
    assert (cfg.strategy, cfg.production) == ("single", "v2")
    recs = history(models)
    assert [r["step"] for r in recs] == ["deploy", "shift", "observe", "promote"]
    assert {r["promotion_id"] for r in recs} == {out["promotion_id"]}
    assert all(r["from"] == "v1" and r["to"] == "v2" for r in recs)
    assert recs[2]["verdict"] == "promote"
    assert recs[2]["numbers"]["requests"] == 60
    assert all("ts" in r for r in recs)


def test_a_failing_canary_is_rolled_back_automatically_with_the_reason(models: Path) -> None:
    svc = FakeService(models, {"v1": (90, 0, 2.0), "v2": (10, 5, 2.0)})
    out = promote_with(models, plan(), svc)
    assert out["status"] == "rolled_back"
    assert out["reason"].startswith("rollback: error rate 50.00%")
    assert read_routing(models) is not None
    cfg = RoutingConfig.load(models / "routing.json")
    assert (cfg.strategy, cfg.production) == ("single", "v1")
    recs = history(models)
    assert [r["step"] for r in recs] == ["deploy", "shift", "observe", "rollback"]
    assert (recs[-1]["from"], recs[-1]["to"]) == ("v2", "v1")
    assert recs[-1]["reason"] == out["reason"]


def test_insufficient_traffic_rolls_the_canary_back(models: Path) -> None:
    svc = FakeService(models, {"v1": (90, 0, 2.0)})
    out = promote_with(models, plan(), svc)
    assert out["status"] == "rolled_back"
    assert out["observation"]["verdict"] == "insufficient_traffic"
    assert out["reason"].startswith("insufficient_traffic: only 0 request(s)")
    assert RoutingConfig.load(models / "routing.json").production == "v1"


def test_a_blue_green_rollout_that_fails_switches_back_to_the_old_colour(models: Path) -> None:
    svc = FakeService(models, {"v2": (20, 20, 2.0)})
    out = promote_with(models, plan(strategy="blue_green"), svc)
    assert out["status"] == "rolled_back"
    cfg = RoutingConfig.load(models / "routing.json")
    assert (cfg.strategy, cfg.production) == ("single", "v1")


def test_blue_green_does_not_switch_when_the_service_never_loads_the_idle_colour(
    models: Path,
) -> None:
    svc = FakeService(models, {"v2": (20, 0, 2.0)}, lag=10**6)
    out = promote_with(models, plan(strategy="blue_green", apply_timeout_s=3), svc)
    assert out["status"] == "rolled_back"
    assert out["reason"].startswith("traffic shift failed: PromotionError: not switching to v2")
    assert "did not apply routing version 2" in out["reason"]
    cfg = RoutingConfig.load(models / "routing.json")
    assert (cfg.strategy, cfg.production) == ("single", "v1")
    assert steps(models) == ["deploy", "rollback"]


def test_the_production_version_of_an_ab_test_is_made_single_without_a_canary(
    models: Path,
) -> None:
    from ltr.model_store import write_routing

    write_routing(
        models,
        {
            "strategy": "ab",
            "production": "v2",
            "variants": [
                {"name": "a", "version": "v2", "weight": 50},
                {"name": "b", "version": "v1", "weight": 50},
            ],
        },
    )
    out = run_promotion(plan(), models)  # nothing to observe: v2 is production already
    assert out["status"] == "promoted"
    assert steps(models) == ["deploy", "promote"]
    assert RoutingConfig.load(models / "routing.json").strategy == "single"


def test_an_unexpected_failure_while_observing_still_rolls_back(models: Path) -> None:
    def broken_sleep(seconds: float) -> None:
        raise OSError("disk on fire")

    out = run_promotion(plan(), models, fetch=FakeService(models, {}), sleep=broken_sleep)
    assert out["status"] == "rolled_back"
    assert "observation failed: OSError: disk on fire" in out["reason"]
    assert RoutingConfig.load(models / "routing.json").production == "v1"


def test_observing_without_a_service_url_is_refused_before_any_change(models: Path) -> None:
    before = (models / "routing.json").read_bytes()
    with pytest.raises(PromotionError, match="service URL"):
        run_promotion(plan(service_url=None), models)
    assert (models / "routing.json").read_bytes() == before
    assert history(models) == []


def test_re_running_a_completed_promotion_changes_nothing(models: Path) -> None:
    run_promotion(plan(), models, observe_traffic=False)
    routing = (models / "routing.json").read_bytes()
    log = (models / "promotions.jsonl").read_bytes()
    out = run_promotion(plan(), models, observe_traffic=False)
    assert (out["status"], out["changed"]) == ("already_promoted", False)
    assert (models / "routing.json").read_bytes() == routing
    assert (models / "promotions.jsonl").read_bytes() == log


def test_an_interrupted_canary_of_the_same_version_resumes(models: Path) -> None:
    shift_traffic(plan(), models)  # a previous run stopped after the shift
    out = run_promotion(plan(), models, observe_traffic=False)
    assert out["status"] == "promoted"
    assert RoutingConfig.load(models / "routing.json").production == "v2"


def test_the_first_version_of_an_empty_store_is_promoted_directly(
    tmp_path: Path, templates: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(templates / "versions", root / "versions")
    out = run_promotion(plan("v1", service_url=None), root)
    assert out["status"] == "promoted"
    assert steps(root) == ["deploy", "promote"]
    assert RoutingConfig.load(root / "routing.json").production == "v1"


# ----------------------------------------------------------------- rollback
def test_rollback_restores_the_previous_production(models: Path) -> None:
    run_promotion(plan(), models, observe_traffic=False)
    out = rollback(models, reason="bad clicks")
    assert (out["from"], out["to"], out["changed"]) == ("v2", "v1", True)
    cfg = RoutingConfig.load(models / "routing.json")
    assert (cfg.strategy, cfg.production) == ("single", "v1")
    rec = history(models)[-1]
    assert (rec["step"], rec["reason"]) == ("rollback", "bad clicks")
    assert rec["numbers"]["routing_before"]["production"] == "v2"


def test_rollback_during_a_canary_returns_all_traffic_to_the_champion(models: Path) -> None:
    shift_traffic(plan(), models)
    out = rollback(models, reason="looks wrong")
    assert (out["from"], out["to"]) == ("v2", "v1")
    assert RoutingConfig.load(models / "routing.json").strategy == "single"


def test_rollback_without_a_recorded_previous_production_needs_a_target(models: Path) -> None:
    with pytest.raises(PromotionError, match="--to"):
        rollback(models, reason="x")
    out = rollback(models, reason="x", to_version="v2")
    assert out["to"] == "v2"
    assert RoutingConfig.load(models / "routing.json").production == "v2"


def test_rollback_refuses_a_tampered_target(models: Path) -> None:
    run_promotion(plan(), models, observe_traffic=False)
    (models / "versions" / "v1" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactRejected):
        rollback(models, reason="x")
    assert RoutingConfig.load(models / "routing.json").production == "v2"


# ----------------------------------------------------------------- the MLflow registry
@pytest.fixture
def mlflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with isolated_home(tmp_path / "home", monkeypatch):
        yield tmp_path / "home"


def test_promote_moves_the_champion_alias_and_rollback_restores_it(
    models: Path, mlflow_home: Path
) -> None:
    from ltr import registry

    v1 = registry.register_model(models / "versions" / "v1", name="ranker")
    registry.set_champion("ranker", v1.version)
    v2 = registry.register_model(models / "versions" / "v2", name="ranker")

    out = run_promotion(plan(), models, observe_traffic=False, registry_name="ranker")

    assert out["steps"][-1]["registry"]["champion"] == v2.version
    assert registry.get_alias("ranker", "champion").store_version == "v2"  # type: ignore[union-attr]
    assert registry.get_alias("ranker", "previous_champion").store_version == "v1"  # type: ignore[union-attr]
    # a second run is a no-op for routing and registry alike
    again = run_promotion(plan(), models, observe_traffic=False, registry_name="ranker")
    assert again["status"] == "already_promoted"

    rollback(models, reason="regression", registry_name="ranker")

    assert registry.get_alias("ranker", "champion").store_version == "v1"  # type: ignore[union-attr]
    assert registry.get_alias("ranker", "previous_champion") is None
    rolled = registry.find_store_version("v2", "ranker")
    assert rolled is not None and "regression" in rolled.tags["ltr.rolled_back"]


def test_a_rolled_back_canary_leaves_the_champion_alias_alone(
    models: Path, mlflow_home: Path
) -> None:
    from ltr import registry

    v1 = registry.register_model(models / "versions" / "v1", name="ranker")
    registry.set_champion("ranker", v1.version)
    registry.register_model(models / "versions" / "v2", name="ranker")
    svc = FakeService(models, {"v2": (10, 10, 2.0)})
    out = promote_with(models, plan(), svc, registry_name="ranker")
    assert out["status"] == "rolled_back"
    assert registry.get_alias("ranker", "champion").store_version == "v1"  # type: ignore[union-attr]
    assert registry.get_alias("ranker", "challenger").store_version == "v2"  # type: ignore[union-attr]


# ----------------------------------------------------------------- the real service
def live_service(models_dir: Path) -> LiveService:
    """The rank service over ``models_dir`` under uvicorn, sending itself random traffic."""
    return LiveService(service_settings(models_dir), random_features(FEATURES))


def _live_plan(version: str, url: str) -> PromotionPlan:
    return PromotionPlan(
        store_version=version,
        canary_percent=50,
        observe_minutes=3 / 60,
        poll_seconds=0.5,
        min_requests=20,
        max_error_rate=0.05,
        max_p99_ms=1000,  # loaded 2-core CI: this test is about the mechanism, not speed
        service_url=url,
        apply_timeout_s=15,
    )


@pytest.mark.integration
def test_real_service_a_healthy_canary_is_promoted(models: Path) -> None:
    with live_service(models) as live:
        out = run_promotion(_live_plan("v2", live.url), models)
        assert out["status"] == "promoted", out.get("observation")
        obs = out["observation"]
        assert obs["requests"] >= 20 and obs["errors"] == 0
        assert obs["latency_source"] == "histogram" and obs["p99_ms"] > 0
        assert obs["champion"]["version"] == "v1" and obs["champion"]["requests"] > 0
        live.wait_for_production("v2")
    assert steps(models) == ["deploy", "shift", "observe", "promote"]


@pytest.mark.integration
def test_real_service_a_canary_whose_requests_fail_is_rolled_back(models: Path) -> None:
    # v3 requires the request feature f_extra, which the traffic never sends: every request
    # routed to it is answered 422. A 4xx is the client's fault unless the challenger
    # refuses more than the champion does on the same traffic: here 100% against 0%.
    with live_service(models) as live:
        out = run_promotion(_live_plan("v3", live.url), models)
        assert out["status"] == "rolled_back"
        assert out["reason"].startswith("rollback: 4xx rate 100.00%"), out["reason"]
        assert "exceeds the champion's 0.00%" in out["reason"]
        assert live.statuses.get(422, 0) > 0
        doc = live.wait_for_production("v1")
        assert "v3" not in {v["version"] for v in doc["versions"]}
    recs = history(models)
    assert [r["step"] for r in recs] == ["deploy", "shift", "observe", "rollback"]
    numbers = recs[2]["numbers"]
    assert numbers["client_errors"] == numbers["requests"] >= 20 and numbers["errors"] == 0
