"""The promotion verdict on a challenger's 4xx rate against the champion's: the early stop
during the window asks the excess to pass the limit beyond sampling noise; the verdict at
the end of the window compares the rates as measured."""

from __future__ import annotations

import math

import pytest

from ltr.promotion.observation import EARLY_STOP_Z, judge
from ltr.promotion.plan import PromotionPlan

PLAN = PromotionPlan(store_version="v2", max_error_rate=0.05, min_requests=20, max_p99_ms=1000)


def verdict(client_errors: int, requests: int, base: float, base_n: int, z: float) -> str:
    v, _ = judge(
        PLAN,
        requests,
        0,
        1.0,
        "p99",
        client_errors=client_errors,
        champion_client_rate=base,
        champion_requests=base_n,
        noise_z=z,
    )
    return v


def test_the_same_refusal_rate_seen_by_chance_does_not_stop_the_window_early():
    # 6/21 against 5/22: 5.8 points apart, within the noise of twenty requests each
    assert verdict(6, 21, 5 / 22, 22, 0.0) == "rollback"  # as measured
    assert verdict(6, 21, 5 / 22, 22, EARLY_STOP_Z) == "promote"  # not an early stop


@pytest.mark.parametrize(("errors", "requests"), [(21, 21), (12, 30), (60, 200)])
def test_a_clear_excess_stops_the_window_early(errors, requests):
    assert verdict(errors, requests, 0.0, 30, EARLY_STOP_Z) == "rollback"


def test_the_noise_margin_is_z_standard_errors_of_the_difference():
    c, n, b, m = 0.30, 100, 0.10, 100
    se = math.sqrt(c * (1 - c) / n + b * (1 - b) / m)
    edge = PLAN.max_error_rate + EARLY_STOP_Z * se  # 0.05 + 1.645 x 0.0529 = 0.137
    assert c - b > edge  # 0.20 passes it
    assert verdict(30, 100, b, m, EARLY_STOP_Z) == "rollback"
    # 22/100 against 10/100: 12 points, within 0.05 + 1.645 x 0.0511 = 0.134 of noise
    assert verdict(22, 100, b, m, EARLY_STOP_Z) == "promote"
    assert verdict(22, 100, b, m, 0.0) == "rollback"  # as measured: 12 points > 5
    assert verdict(14, 100, b, m, 0.0) == "promote"  # 4 points: under the limit
