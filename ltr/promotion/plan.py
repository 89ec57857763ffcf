"""What a promotion is asked to do: :class:`PromotionPlan` (a leaf module: the steps in
:mod:`ltr.promotion.run`, the observation and the eligibility check all read it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class PromotionPlan:
    store_version: str
    strategy: Literal["canary", "blue_green"] = "canary"
    canary_percent: float = 10
    observe_minutes: float = 10
    max_error_rate: float = 0.01
    max_p99_ms: float = 50
    min_requests: int = 50
    service_url: str | None = None  # e.g. http://127.0.0.1:8000
    poll_seconds: float = 5.0  # between reads of the service's counters
    apply_timeout_s: float = 60.0  # for the service to pick up the new routing.json
    # Where the numbers come from (see ltr.promotion.observation.fleet_for): a Prometheus
    # that scrapes every replica, else each replica's URL, else the Kubernetes Service whose
    # endpoints are the replicas, else service_url alone (one replica).
    replica_urls: tuple[str, ...] = ()
    prometheus_url: str | None = None
    prometheus_selector: str = ""  # label matchers, e.g. namespace="ltr",service="ltr-serving"
    kubernetes_service: str | None = None  # [namespace/]name, read from inside the cluster
    # promote a version without a passing gate verdict or registration (ltr.promotion.eligibility)
    allow_ungated: bool = False
    override_reason: str | None = None  # required with allow_ungated; recorded in the history

    def __post_init__(self) -> None:
        problems = []
        if self.strategy not in ("canary", "blue_green"):
            problems.append(f"strategy must be canary or blue_green, not {self.strategy!r}")
        p = self.canary_percent
        if not 0 < p < 100 or abs(p * 100 - round(p * 100)) > 1e-6:
            problems.append(f"canary_percent must be in (0, 100), in steps of 0.01, not {p}")
        if not self.observe_minutes >= 0:
            problems.append("observe_minutes must be >= 0")
        if not 0 <= self.max_error_rate <= 1:
            problems.append("max_error_rate must be in [0, 1]")
        if not self.max_p99_ms > 0:
            problems.append("max_p99_ms must be > 0")
        if self.min_requests < 1:
            problems.append("min_requests must be >= 1")
        if not self.poll_seconds > 0 or not self.apply_timeout_s > 0:
            problems.append("poll_seconds and apply_timeout_s must be > 0")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "replica_urls", tuple(self.replica_urls))

    @property
    def observes(self) -> bool:
        """A source of numbers is configured (the rollout can be watched)."""
        return bool(
            self.service_url or self.replica_urls or self.prometheus_url or self.kubernetes_service
        )

    @property
    def window_s(self) -> float:
        """How long a rollout may take before it is overdue: the service's time to apply
        the routing plus the observation window (routing.json's ``rollout.window_s``)."""
        return self.apply_timeout_s + self.observe_minutes * 60

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "replica_urls": list(self.replica_urls)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromotionPlan:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
