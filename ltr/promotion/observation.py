"""Watching a rollout on the live rank service, and the verdict on what was seen.

:func:`observe` reads ``GET {service_url}/api/v1/models`` (per-version requests, errors and
mean latency) every ``poll_seconds`` and ``GET /metrics`` (the per-version latency
histogram, for p99) at both ends of the window; every number is a delta over the window, so
traffic from before the rollout does not count, and a counter reset (a restarted service)
is detected. :func:`judge` turns the challenger's numbers into a verdict; see
:mod:`ltr.promotion` for what each verdict leads to.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ltr.promotion.run import PromotionPlan

log = logging.getLogger(__name__)

Verdict = Literal["promote", "rollback", "insufficient_traffic"]
#: GET url -> response body; raises on failure (tests pass fakes).
Fetch = Callable[[str], str]
_LATENCY_BUCKET = "ltr_request_latency_seconds_bucket"


@dataclass(frozen=True)
class Observation:
    verdict: Verdict
    reason: str
    version: str
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    mean_latency_ms: float | None = None
    p99_ms: float | None = None
    latency_source: str = "none"  # histogram (p99 from /metrics) | mean | none
    champion: dict[str, Any] | None = None
    observed_s: float = 0.0
    samples: int = 0
    fetch_failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observation:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def _http_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode("utf-8")


def _counters(doc: dict[str, Any]) -> dict[str, tuple[int, int, float]]:
    """{version: (requests, errors, latency sum in ms)} from GET /api/v1/models."""
    out = {}
    for row in doc.get("versions", []):
        n = int(row.get("requests") or 0)
        out[row["version"]] = (
            n,
            int(row.get("errors") or 0),
            (row.get("mean_latency_ms") or 0) * n,
        )
    return out


def _delta(
    now: tuple[int, int, float], base: tuple[int, int, float] | None
) -> tuple[int, int, float]:
    if base is None or now[0] < base[0]:  # new, or the service restarted (counters reset)
        return now
    return now[0] - base[0], now[1] - base[1], now[2] - base[2]


def _buckets(text: str, version: str) -> dict[float, float]:
    """Cumulative latency-histogram counts of ``version`` on /api/v1/rank, by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == _LATENCY_BUCKET
                and s.labels.get("model_version") == version
                and s.labels.get("endpoint") == "rank"
            ):
                le = float(s.labels["le"])
                out[le] = out.get(le, 0.0) + float(s.value)
    return out


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


def judge(
    plan: PromotionPlan, requests: int, errors: int, latency_ms: float | None, latency_kind: str
) -> tuple[Verdict, str]:
    """The verdict on a challenger's numbers over the observation window."""
    if requests < plan.min_requests:
        return "insufficient_traffic", (
            f"only {requests} request(s) reached {plan.store_version}, "
            f"{plan.min_requests} needed for a decision"
        )
    rate = errors / requests
    if rate > plan.max_error_rate:
        return "rollback", (
            f"error rate {rate:.2%} ({errors}/{requests}) above the limit {plan.max_error_rate:.2%}"
        )
    if latency_ms is not None and latency_ms > plan.max_p99_ms:
        return "rollback", (
            f"{latency_kind} latency {latency_ms:.1f} ms above the limit {plan.max_p99_ms:g} ms"
        )
    lat = f"{latency_kind} latency {latency_ms:.2f} ms" if latency_ms is not None else "latency n/a"
    return "promote", (
        f"error rate {rate:.2%} ({errors}/{requests}) <= {plan.max_error_rate:.2%}, "
        f"{lat} <= {plan.max_p99_ms:g} ms"
    )


class _Service:
    """Reads of one rank service's counters, counting failed reads."""

    def __init__(self, url: str, fetch: Fetch | None) -> None:
        self.url = url.rstrip("/")
        self.get = fetch or _http_get
        self.failures = 0
        self.last_error = ""

    def models(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.get(f"{self.url}/api/v1/models"))
            return doc
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None

    def histogram(self, version: str) -> dict[float, float] | None:
        try:
            return _buckets(self.get(f"{self.url}/metrics"), version)
        except Exception as exc:
            log.info("no latency histogram from %s/metrics: %s", self.url, exc)
            return None

    def wait_applied(
        self,
        routing_version: int | None,
        version: str,
        *,
        timeout_s: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> dict[str, Any] | None:
        """The first /api/v1/models answer showing ``routing_version`` in force (or, without
        one, ``version`` served); None after ``timeout_s``."""
        t0 = clock()
        while True:
            doc = self.models()
            if doc is not None and (
                int(doc.get("routing_version", 0)) >= routing_version
                if routing_version is not None
                else any(
                    r.get("version") == version and r.get("roles") for r in doc.get("versions", [])
                )
            ):
                return doc
            if clock() - t0 >= timeout_s:
                return None
            sleep(0.25)


def wait_for_routing(
    service_url: str,
    routing_version: int,
    *,
    timeout_s: float = 60.0,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """None once the service serves ``routing_version``; otherwise why not (after the timeout)."""
    svc = _Service(service_url, fetch)
    if svc.wait_applied(routing_version, "", timeout_s=timeout_s, sleep=sleep, clock=clock):
        return None
    why = f" (last error: {svc.last_error})" if svc.last_error else ""
    return (
        f"the service did not apply routing version {routing_version} within {timeout_s:g} s{why}"
    )


def observe(
    plan: PromotionPlan,
    *,
    fetch: Fetch | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    routing_version: int | None = None,
) -> Observation:
    """Watch the challenger's counters on the service for ``observe_minutes`` and judge.

    The window starts once the service reports ``routing_version`` (or, without one, serves
    the challenger); if it does not within ``apply_timeout_s``, the verdict is ``rollback``.
    """
    if not plan.service_url:
        raise ValueError("observing needs the service URL (service_url / --service-url)")
    svc = _Service(plan.service_url, fetch)
    v = plan.store_version
    first = svc.wait_applied(
        routing_version, v, timeout_s=plan.apply_timeout_s, sleep=sleep, clock=clock
    )
    if first is None:
        why = f" (last error: {svc.last_error})" if svc.last_error else ""
        return Observation(
            "rollback",
            f"the service did not apply routing version {routing_version} serving {v} "
            f"within {plan.apply_timeout_s:g} s{why}",
            v,
            fetch_failures=svc.failures,
        )
    base = _counters(first)
    base_hist = svc.histogram(v)
    start = clock()
    deadline = start + plan.observe_minutes * 60
    last, samples, early = first, 1, False
    while clock() < deadline:
        sleep(max(0.0, min(plan.poll_seconds, deadline - clock())))
        doc = svc.models()
        if doc is None:
            continue
        samples += 1
        last = doc
        counts = _counters(doc)
        if v not in counts:
            return Observation(
                "rollback",
                f"the service stopped serving {v} during the observation (routing changed?)",
                v,
                observed_s=clock() - start,
                samples=samples,
                fetch_failures=svc.failures,
            )
        n, e, _ = _delta(counts[v], base.get(v))
        if n >= plan.min_requests and e / n > plan.max_error_rate:
            early = True
            break
    counts = _counters(last)
    n, e, lat_sum = _delta(counts.get(v, (0, 0, 0.0)), base.get(v))
    mean = lat_sum / n if n else None
    p99, source = None, "mean" if mean is not None else "none"
    end_hist = svc.histogram(v)
    if base_hist is not None and end_hist:
        delta = {le: c - base_hist.get(le, 0.0) for le, c in end_hist.items()}
        if min(delta.values(), default=0.0) < 0:  # counters reset
            delta = end_hist
        q = quantile(0.99, delta)
        if q is not None:
            p99, source = q * 1000, "histogram"
    prod = first.get("production")
    champ_v = prod if prod != v else next((o for o in counts if o != v), None)
    champion = None
    if champ_v in counts:
        cn, ce, cl = _delta(counts[champ_v], base.get(champ_v))
        champion = {
            "version": champ_v,
            "requests": cn,
            "errors": ce,
            "error_rate": ce / cn if cn else None,
            "mean_latency_ms": cl / cn if cn else None,
        }
    latency = p99 if p99 is not None else mean
    verdict, reason = judge(plan, n, e, latency, "p99" if source == "histogram" else "mean")
    if early:
        reason += " (stopped early)"
    if svc.failures and samples <= 1 and plan.observe_minutes > 0:
        reason += f"; the service's counters could not be read ({svc.failures}x: {svc.last_error})"
    return Observation(
        verdict,
        reason,
        v,
        requests=n,
        errors=e,
        error_rate=e / n if n else None,
        mean_latency_ms=mean,
        p99_ms=p99,
        latency_source=source,
        champion=champion,
        observed_s=round(clock() - start, 3),
        samples=samples,
        fetch_failures=svc.failures,
    )


__all__ = ["Fetch", "Observation", "Verdict", "judge", "observe", "quantile", "wait_for_routing"]
