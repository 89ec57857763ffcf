"""A week of online metrics with data for every chart of the weekly report (the shape
``ltr.pipelines.online.collect`` returns), shared by the report and mail tests."""

from __future__ import annotations

from typing import Any


def full_data() -> dict[str, Any]:
    """A week with every section present: two variants, three weeks of trend, both tests."""

    def variant(version: str, name: str, ctr10: float, mrr: float) -> dict[str, Any]:
        return {
            "model_version": version,
            "variant": name,
            "impressions": 1200,
            "queries": 1200,
            "ctr_at": {"1": ctr10 / 2, "3": ctr10 * 0.8, "10": ctr10},
            "clicks_per_query": 0.9,
            "mrr": mrr,
            "abandonment": 0.34,
            "latency_p50_ms": 3.1,
            "latency_p99_ms": 9.0,
            "error_rate": 0.001,
            "requests": 1210,
        }

    return {
        "week": {"start": "2026-01-05", "end": "2026-01-12"},
        "generated_at": "2026-01-12T06:00:00+00:00",
        "variants": [variant("v1", "production", 0.61, 0.41), variant("v2", "canary", 0.66, 0.45)],
        "trend": [
            {
                "week_start": w,
                "model_version": "v1",
                "variant": "production",
                "ctr_at_10": c,
                "mrr": m,
                "impressions": 900,
            }
            for w, c, m in (
                ("2025-12-22", 0.59, 0.40),
                ("2025-12-29", 0.6, 0.41),
                ("2026-01-05", 0.61, 0.41),
            )
        ]
        + [
            {
                "week_start": "2026-01-05",
                "model_version": "v2",
                "variant": "canary",
                "ctr_at_10": 0.66,
                "mrr": 0.45,
                "impressions": 1200,
            }
        ],
        "offline_vs_online": [
            {
                "model_version": "v1",
                "offline_ndcg_at_10": 0.68,
                "online_mrr": 0.41,
                "online_ctr_at_10": 0.61,
            },
            {
                "model_version": "v2",
                "offline_ndcg_at_10": 0.71,
                "online_mrr": 0.45,
                "online_ctr_at_10": 0.66,
            },
        ],
        "interleaving": {
            "a": "v1",
            "b": "v2",
            "n": 2000,
            "wins_a": 300,
            "wins_b": 420,
            "ties": 1280,
            "preference": 0.06,
            "ci": [0.03, 0.09],
            "p_value": 0.0004,
            "winner": "b",
            "alpha": 0.05,
        },
        "ab": {
            "control": "v1",
            "treatment": "v2",
            "metric": "clicks_mrr_per_user",
            "n_a": 500,
            "n_b": 510,
            "mean_a": 0.4,
            "mean_b": 0.43,
            "difference": 0.03,
            "ci": [0.0, 0.06],
            "p_value": 0.04,
            "winner": "v2",
            "srm": {
                "observed": {"v1": 500, "v2": 510},
                "expected": {"v1": 505.0, "v2": 505.0},
                "p_value": 0.75,
                "mismatch": False,
            },
        },
        "decision": {
            "winner": "v2",
            "source": "interleaving",
            "effect": 0.06,
            "ci": [0.03, 0.09],
            "p_value": 0.0004,
            "recommendation": "promote_b",
            "reason": "interleaving prefers v2",
        },
        "events": {"impressions": 3200, "clicks": 2100, "drained_until": "1700000000000-0"},
    }
