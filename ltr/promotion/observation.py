"""Watching a rollout on the live rank service, and the verdict on what was seen.

:func:`observe` reads the whole fleet (:mod:`ltr.promotion.fleet`: Prometheus, or every
replica's ``GET /api/v1/models`` and ``GET /metrics``) every ``poll_seconds``; every number
is an increase over the window, summed over the replicas, so traffic from before the
rollout does not count and a restarted replica is detected (its counters drop). Latency is
that of every request the challenger handled, failures included. :func:`judge` turns the
challenger's numbers into a verdict; see :mod:`ltr.promotion.run` for what each leads to.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ltr.model_store import read_routing
from ltr.promotion.fleet import (
    Fetch,
    Fleet,
    FleetReading,
    PrometheusFleet,
    ScrapeFleet,
    VersionTotals,
    http_get,
    kubernetes_replicas,
)

if TYPE_CHECKING:
    from ltr.promotion.plan import PromotionPlan

log = logging.getLogger(__name__)

Verdict = Literal["promote", "rollback", "insufficient_traffic", "preempted"]


@dataclass(frozen=True)
class Observation:
    verdict: Verdict
    reason: str
    version: str
    requests: int = 0
    errors: int = 0  # server-side (5xx)
    client_errors: int = 0  # 4xx: held against the challenger only beyond the champion's rate
    error_rate: float | None = None  # errors / (requests - client_errors)
    mean_latency_ms: float | None = None
    p99_ms: float | None = None
    latency_source: str = "none"  # histogram (p99 from /metrics) | mean | none
    latency_requests: int | None = None  # requests in the latency histogram (failures too)
    champion: dict[str, Any] | None = None
    observed_s: float = 0.0
    samples: int = 0
    fetch_failures: int = 0
    source: str = ""  # where the numbers came from (replicas or Prometheus)
    routing_version: int | None = None  # the rollout's routing version that was observed
    replicas: dict[str, int | None] | None = None  # routing version per replica at the end

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observation:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def _http_get(url: str) -> str:
    return http_get(url)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Like PromQL's histogram_quantile: linear inside the bucket, the highest finite bound
    when the rank falls in the +Inf bucket; None without observations."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    rank = q * items[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in items:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


#: Standard errors by which a 4xx excess must pass the limit to stop a window early (one-sided
#: 95 %); the verdict at the window's end takes the rates as measured.
EARLY_STOP_Z = 1.645


def judge(
    plan: PromotionPlan,
    requests: int,
    errors: int,
    latency_ms: float | None,
    latency_kind: str,
    *,
    client_errors: int = 0,
    champion_client_rate: float | None = None,
    champion_requests: int | None = None,
    noise_z: float = 0.0,
) -> tuple[Verdict, str]:
    """The verdict on a challenger's numbers over the observation window.

    ``errors`` are server-side failures (5xx), judged on the requests that were not the
    client's fault. ``client_errors`` (4xx) are the client's fault unless the challenger
    refuses more requests than the champion does on the same traffic
    (``champion_client_rate``; without it, every 4xx is held against the challenger): an
    excess above ``max_error_rate`` rolls back (say, a feature the new model requires and
    the clients do not send). ``latency_ms`` covers every request, failures included.

    ``noise_z`` > 0 (the early stop during the window) asks more of the 4xx excess: it must
    pass ``max_error_rate`` by ``noise_z`` standard errors of the difference of the two
    rates (from ``champion_requests``), so that twenty requests of each version with the
    same refusal rate do not stop the rollout on chance; the verdict at the end of the
    window compares the rates as they are.
    """
    if requests < plan.min_requests:
        return "insufficient_traffic", (
            f"only {requests} request(s) reached {plan.store_version}, "
            f"{plan.min_requests} needed for a decision"
        )
    answerable = requests - client_errors
    rate = errors / answerable if answerable else 0.0
    if rate > plan.max_error_rate:
        return "rollback", (
            f"error rate {rate:.2%} ({errors}/{answerable}) "
            f"above the limit {plan.max_error_rate:.2%}"
        )
    c_rate = client_errors / requests
    base = champion_client_rate or 0.0
    noise = 0.0
    if noise_z > 0:
        variance = c_rate * (1 - c_rate) / requests
        if champion_client_rate is not None and champion_requests:
            variance += base * (1 - base) / champion_requests
        noise = noise_z * math.sqrt(variance)
    if c_rate - base > plan.max_error_rate + noise:
        vs = (
            f"the champion's {base:.2%}"
            if champion_client_rate is not None
            else "0% (no champion traffic to compare with)"
        )
        return "rollback", (
            f"4xx rate {c_rate:.2%} ({client_errors}/{requests}) exceeds {vs} by "
            f"{c_rate - base:.2%}, above the limit {plan.max_error_rate:.2%}"
        )
    if latency_ms is not None and latency_ms > plan.max_p99_ms:
        return "rollback", (
            f"{latency_kind} latency {latency_ms:.1f} ms above the limit {plan.max_p99_ms:g} ms"
        )
    lat = f"{latency_kind} latency {latency_ms:.2f} ms" if latency_ms is not None else "latency n/a"
    extra = f", {client_errors} client 4xx not counted" if client_errors else ""
    return "promote", (
        f"error rate {rate:.2%} ({errors}/{answerable}) <= {plan.max_error_rate:.2%}{extra}, "
        f"{lat} <= {plan.max_p99_ms:g} ms"
    )


def fleet_for(
    plan: PromotionPlan, fetch: Fetch | None = None, clock: Callable[[], float] = time.monotonic
) -> Fleet:
    """Where the plan's numbers come from: Prometheus when ``prometheus_url`` is set, else
    every replica (``replica_urls``, or the Kubernetes Service ``kubernetes_service``), else
    the one ``service_url`` (right for one replica only)."""
    if plan.prometheus_url:
        return PrometheusFleet(plan.prometheus_url, plan.prometheus_selector, fetch)
    if plan.replica_urls:
        return ScrapeFleet(list(plan.replica_urls), fetch)
    if plan.kubernetes_service:
        service = plan.kubernetes_service
        return ScrapeFleet(lambda: kubernetes_replicas(service), fetch)
    if plan.service_url:
        return ScrapeFleet([plan.service_url], fetch)
    raise ValueError(
        "observing needs the service: --service-url, --replica (each replica), "
        "--kubernetes-service or --prometheus-url"
    )


def _applied(routing: dict[str, int | None], routing_version: int | None) -> bool:
    """Every replica that answered serves ``routing_version`` (and one at least answered)."""
    seen = [v for v in routing.values() if v is not None]
    return bool(seen) and (routing_version is None or min(seen) >= routing_version)


def _wait_applied(
    fleet: Fleet,
    routing_version: int | None,
    *,
    timeout_s: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> dict[str, int | None] | None:
    t0 = clock()
    while True:
        routing = fleet.routing_versions()
        if _applied(routing, routing_version):
            return routing
        if clock() - t0 >= timeout_s:
            return None
        sleep(0.25)


def wait_for_routing(
    service_url: str | None,
    routing_version: int,
    *,
    timeout_s: float = 60.0,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    plan: PromotionPlan | None = None,
) -> str | None:
    """None once the service (every replica of ``plan``'s fleet, when given) serves
    ``routing_version``; otherwise why not (after the timeout)."""
    fleet = (
        fleet_for(plan, fetch, clock)
        if plan is not None
        else ScrapeFleet([service_url or ""], fetch)
    )
    if _wait_applied(fleet, routing_version, timeout_s=timeout_s, sleep=sleep, clock=clock):
        return None
    why = f" (last error: {fleet.last_error})" if fleet.last_error else ""
    return (
        f"the service did not apply routing version {routing_version} within {timeout_s:g} s{why}"
    )


def _preempted_by(
    reading: FleetReading | None, routing_version: int | None, models_dir: Path | None
) -> str | None:
    """Why the rollout no longer owns the routing (a rollback or another writer), or None."""
    if routing_version is None:
        return None
    if models_dir is not None:
        current = read_routing(models_dir)
        found = int(current["version"]) if current else None
        if found != routing_version:
            return f"routing.json moved from version {routing_version} to {found}"
    if reading is not None:
        ahead = {r: v for r, v in reading.routing.items() if v is not None and v > routing_version}
        if ahead:
            return (
                f"the service serves routing version {max(ahead.values())}, newer than the "
                f"rollout's {routing_version}"
            )
    return None


def _champion_numbers(reading: FleetReading, version: str) -> dict[str, Any] | None:
    champ_v = reading.production if reading.production != version else None
    if champ_v is None:
        champ_v = next((o for o in sorted(reading.versions) if o != version), None)
    t = reading.versions.get(champ_v or "")
    if champ_v is None or t is None:
        return None
    answerable = t.requests - t.client_errors
    return {
        "version": champ_v,
        "requests": t.requests,
        "errors": t.errors,
        "client_errors": t.client_errors,
        "error_rate": t.errors / answerable if answerable else None,
        "client_error_rate": t.client_errors / t.requests if t.requests else None,
        "mean_latency_ms": t.mean_latency_ms,
    }


def _latency(t: VersionTotals) -> tuple[float | None, str]:
    if t.p99_s is not None:
        return t.p99_s * 1000, "histogram"
    q = quantile(0.99, t.buckets) if t.buckets else None
    if q is not None:
        return q * 1000, "histogram"
    mean = t.mean_latency_ms
    return mean, "mean" if mean is not None else "none"


def observe(
    plan: PromotionPlan,
    *,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    routing_version: int | None = None,
    models_dir: Path | None = None,
) -> Observation:
    """Watch the challenger across the fleet (:func:`fleet_for`) for ``observe_minutes``
    and judge.

    The window starts once every replica reports ``routing_version``; if they do not within
    ``apply_timeout_s``, the verdict is ``rollback``. When routing moves past
    ``routing_version`` meanwhile (``models_dir``'s routing.json, or a replica serving a
    newer one: a rollback pre-empted the rollout), the verdict is ``preempted`` at once.
    """
    fleet = fleet_for(plan, fetch, clock)
    v = plan.store_version
    source = fleet.describe()
    first = _wait_applied(
        fleet, routing_version, timeout_s=plan.apply_timeout_s, sleep=sleep, clock=clock
    )
    common: dict[str, Any] = {"source": source, "routing_version": routing_version}
    if first is None:
        why = f" (last error: {fleet.last_error})" if fleet.last_error else ""
        return Observation(
            "rollback",
            f"the service did not apply routing version {routing_version} serving {v} "
            f"within {plan.apply_timeout_s:g} s{why}",
            v,
            fetch_failures=fleet.failures,
            **common,
        )
    fleet.start()
    start = clock()
    deadline = start + plan.observe_minutes * 60
    last: FleetReading | None = None
    samples, early = 1, False
    while clock() < deadline:
        sleep(max(0.0, min(plan.poll_seconds, deadline - clock())))
        reading = fleet.read()
        moved = _preempted_by(reading, routing_version, models_dir)
        if moved:
            return Observation(
                "preempted",
                f"the rollout of {v} was pre-empted: {moved}",
                v,
                observed_s=round(clock() - start, 3),
                samples=samples,
                fetch_failures=fleet.failures,
                **common,
            )
        if reading is None:
            continue
        samples += 1
        last = reading
        t = reading.versions.get(v, VersionTotals())
        if t.requests >= plan.min_requests:
            champ = _champion_numbers(reading, v)
            verdict, _ = judge(
                plan,
                t.requests,
                t.errors,
                None,
                "p99",
                client_errors=t.client_errors,
                champion_client_rate=(champ or {}).get("client_error_rate"),
                champion_requests=(champ or {}).get("requests"),
                noise_z=EARLY_STOP_Z,
            )
            if verdict == "rollback":
                early = True
                break
    if last is None:  # the window was too short for a sample, or every read failed
        last = fleet.read() or FleetReading({}, {})
        samples += 1
    t = last.versions.get(v, VersionTotals())
    latency, kind = _latency(t)
    champion = _champion_numbers(last, v)
    verdict, reason = judge(
        plan,
        t.requests,
        t.errors,
        latency,
        "p99" if kind == "histogram" else "mean",
        client_errors=t.client_errors,
        champion_client_rate=(champion or {}).get("client_error_rate"),
    )
    if early:
        reason += " (stopped early)"
    if fleet.failures and samples <= 1 and plan.observe_minutes > 0:
        reason += (
            f"; the service's counters could not be read ({fleet.failures}x: {fleet.last_error})"
        )
    answerable = t.requests - t.client_errors
    return Observation(
        verdict,
        reason,
        v,
        requests=t.requests,
        errors=t.errors,
        client_errors=t.client_errors,
        error_rate=t.errors / answerable if answerable else None,
        mean_latency_ms=t.mean_latency_ms,
        p99_ms=latency if kind == "histogram" else None,
        latency_source=kind,
        latency_requests=round(t.buckets[math.inf]) if math.inf in t.buckets else None,
        champion=champion,
        observed_s=round(clock() - start, 3),
        samples=samples,
        fetch_failures=fleet.failures,
        replicas=last.routing,
        **common,
    )


__all__ = [
    "Fetch",
    "Observation",
    "Verdict",
    "fleet_for",
    "judge",
    "observe",
    "quantile",
    "wait_for_routing",
]
