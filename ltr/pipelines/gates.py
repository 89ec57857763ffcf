"""The quality gates of the retrain pipeline as a pure decision (STYLE: gates in config,
enforced by code).

A challenger is accepted only when every gate passes: its held-out metric beats the
champion's by at least ``gates.min_margin`` (or there is no champion yet), its ONNX export
reproduces the source model within ``gates.parity_tolerance``, and ONNX Runtime's p99 at
100 documents is within ``gates.latency_budget_ms``. A gate that was not measured fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ltr.pipelines.config import Gates

__all__ = [
    "LATENCY_ROWS",
    "GateCheck",
    "GateDecision",
    "check_latency",
    "check_margin",
    "check_parity",
    "judge_gates",
]

LATENCY_ROWS = 100  # the latency budget is ONNX Runtime p99 at this many documents


@dataclass(frozen=True)
class GateCheck:
    """One gate's outcome and a sentence with its numbers."""

    gate: str  # "margin" | "parity" | "latency"
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Accepted or not, why, and every gate's outcome."""

    accepted: bool
    reason: str
    checks: tuple[GateCheck, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "checks": {c.gate: {"passed": c.passed, "detail": c.detail} for c in self.checks},
        }


def check_margin(gates: Gates, challenger: float | None, champion: float | None) -> GateCheck:
    """Challenger minus champion on the same held-out queries >= ``gates.min_margin``."""
    m = gates.metric
    if challenger is None or not math.isfinite(challenger):
        return GateCheck("margin", False, f"challenger {m} is not a number ({challenger})")
    if champion is None:
        return GateCheck("margin", True, f"no champion yet; challenger {m} {challenger:.5f}")
    margin = challenger - champion
    ok = bool(margin >= gates.min_margin)
    word = "meets" if ok else "is below"
    return GateCheck(
        "margin",
        ok,
        f"{m} {challenger:.5f} vs champion {champion:.5f}: margin {margin:+.5f} {word} "
        f"the minimum {gates.min_margin:+.5f}",
    )


def check_parity(gates: Gates, max_abs_diff: float | None) -> GateCheck:
    """ONNX vs source model max abs score difference <= ``gates.parity_tolerance``."""
    tol = gates.parity_tolerance
    if max_abs_diff is None:
        return GateCheck("parity", False, "ONNX parity was not measured")
    ok = bool(max_abs_diff <= tol)
    word = "within" if ok else "exceeds"
    return GateCheck("parity", ok, f"ONNX max abs diff {max_abs_diff:.3e} {word} {tol:.1e}")


def check_latency(gates: Gates, p99_ms: float | None) -> GateCheck:
    """ONNX Runtime p99 at ``LATENCY_ROWS`` documents <= ``gates.latency_budget_ms``."""
    budget = gates.latency_budget_ms
    if p99_ms is None:
        return GateCheck("latency", False, f"ONNX latency at {LATENCY_ROWS} rows was not measured")
    ok = bool(p99_ms <= budget)
    word = "within" if ok else "over"
    return GateCheck(
        "latency", ok, f"ONNX p99 {p99_ms:.3f} ms at {LATENCY_ROWS} rows {word} {budget:g} ms"
    )


def judge_gates(
    gates: Gates,
    *,
    challenger_value: float | None,
    champion_value: float | None,
    parity_max_abs_diff: float | None,
    latency_p99_ms: float | None,
) -> GateDecision:
    """Accept only when every gate passes: margin over the champion (or no champion), ONNX
    parity and the latency budget. The reason names each failed gate (or all passed)."""
    checks = (
        check_margin(gates, challenger_value, champion_value),
        check_parity(gates, parity_max_abs_diff),
        check_latency(gates, latency_p99_ms),
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(f"{c.gate} gate failed: {c.detail}" for c in failed)
    else:
        reason = "all gates passed: " + "; ".join(c.detail for c in checks)
    return GateDecision(not failed, reason, checks)
