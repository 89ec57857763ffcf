"""The weekly report's input, made safe to render: every field present, typed, and bounded.

The report's input (``data``) comes from the online-metrics job and may be partial: a week
without traffic, a missing experiment, ``None`` where a metric could not be computed, a
model version typed by a user. :func:`build_view` turns whatever arrived into a complete
structure of plain values (``None`` where there is nothing to show), so the templates and
the charts never look a key up that is not there and never have to guess a type.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Longest label (model version, variant) shown in a table or chart; the rest is elided.
MAX_LABEL = 60
#: Longest free text (a decision's reason) shown.
MAX_TEXT = 2000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def text(value: Any, limit: int = MAX_LABEL) -> str | None:
    """One printable line: control characters become spaces, long text ends in an ellipsis."""
    if value is None:
        return None
    s = " ".join(_CONTROL.sub(" ", str(value)).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def number(value: Any) -> float | None:
    """A finite float, or ``None`` for anything else (booleans, strings, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def integer(value: Any) -> int | None:
    """An int for an integral number, else ``None``."""
    f = number(value)
    return int(f) if f is not None and f.is_integer() else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rows(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return []
    return [row for row in value if isinstance(row, Mapping)]


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        return None
    low, high = number(value[0]), number(value[1])
    return None if low is None or high is None else (low, high)


def _label(row: Mapping[str, Any]) -> str:
    version = text(row.get("model_version")) or "?"
    variant = text(row.get("variant"))
    return f"{version} ({variant})" if variant else version


def _k_key(k: str) -> tuple[int, str]:
    return (int(k), k) if k.isdigit() else (1 << 30, k)


def _week(value: Any) -> dict[str, str | None]:
    week = _mapping(value)
    start, end = text(week.get("start")), text(week.get("end"))
    last_day = end
    if end is not None:
        # ``end`` is exclusive: the report names the last day it covers
        with contextlib.suppress(ValueError):
            last_day = (dt.date.fromisoformat(end) - dt.timedelta(days=1)).isoformat()
    return {"start": start, "end": end, "last_day": last_day}


def _variants(value: Any) -> tuple[list[dict[str, Any]], list[str]]:
    rows = _rows(value)
    ks = sorted(
        {text(k) or "" for row in rows for k in _mapping(row.get("ctr_at"))} - {""}, key=_k_key
    )
    out = []
    for row in rows:
        ctr = {text(k): number(v) for k, v in _mapping(row.get("ctr_at")).items()}
        out.append(
            {
                "label": _label(row),
                "model_version": text(row.get("model_version")),
                "variant": text(row.get("variant")),
                "impressions": integer(row.get("impressions")),
                "queries": integer(row.get("queries")),
                "ctr_at": [(k, ctr.get(k)) for k in ks],
                "clicks_per_query": number(row.get("clicks_per_query")),
                "mrr": number(row.get("mrr")),
                "abandonment": number(row.get("abandonment")),
                "latency_p50_ms": number(row.get("latency_p50_ms")),
                "latency_p99_ms": number(row.get("latency_p99_ms")),
                "error_rate": number(row.get("error_rate")),
                "requests": integer(row.get("requests")),
            }
        )
    return out, ks


def _trend(value: Any) -> list[dict[str, Any]]:
    rows = [
        {
            "week_start": text(row.get("week_start")) or "?",
            "label": _label(row),
            "ctr_at_10": number(row.get("ctr_at_10")),
            "mrr": number(row.get("mrr")),
            "impressions": integer(row.get("impressions")),
        }
        for row in _rows(value)
    ]
    return sorted(rows, key=lambda r: (r["week_start"], r["label"]))


def _offline_vs_online(value: Any) -> list[dict[str, Any]]:
    return [
        {
            "model_version": text(row.get("model_version")) or "?",
            "offline_ndcg_at_10": number(row.get("offline_ndcg_at_10")),
            "online_mrr": number(row.get("online_mrr")),
            "online_ctr_at_10": number(row.get("online_ctr_at_10")),
        }
        for row in _rows(value)
    ]


def _interleaving(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    a, b = text(value.get("a")) or "a", text(value.get("b")) or "b"
    winner = text(value.get("winner"))
    return {
        "a": a,
        "b": b,
        "n": integer(value.get("n")),
        "wins_a": integer(value.get("wins_a")),
        "wins_b": integer(value.get("wins_b")),
        "ties": integer(value.get("ties")),
        "preference": number(value.get("preference")),
        "ci": _interval(value.get("ci")),
        "p_value": number(value.get("p_value")),
        # the analysis names the winning side ("a" / "b"); the report names its version
        "winner": {"a": a, "b": b}.get(winner or "", winner),
        "alpha": number(value.get("alpha")),
    }


def _srm(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    observed, expected = _mapping(value.get("observed")), _mapping(value.get("expected"))
    arms = list(dict.fromkeys([*observed, *expected]))
    mismatch = value.get("mismatch")
    return {
        "arms": [
            {
                "arm": text(arm),
                "observed": integer(observed.get(arm)),
                "expected": number(expected.get(arm)),
            }
            for arm in arms
        ],
        "p_value": number(value.get("p_value")),
        "mismatch": mismatch if isinstance(mismatch, bool) else None,
    }


def _ab(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return {
        "control": text(value.get("control")) or "control",
        "treatment": text(value.get("treatment")) or "treatment",
        "metric": text(value.get("metric")),
        "n_a": integer(value.get("n_a")),
        "n_b": integer(value.get("n_b")),
        "mean_a": number(value.get("mean_a")),
        "mean_b": number(value.get("mean_b")),
        "difference": number(value.get("difference")),
        "ci": _interval(value.get("ci")),
        "p_value": number(value.get("p_value")),
        "winner": text(value.get("winner")),
        "srm": _srm(value.get("srm")),
    }


def _decision(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping) or not value:
        return None
    return {
        "winner": text(value.get("winner")),
        "source": text(value.get("source")),
        "effect": number(value.get("effect")),
        "ci": _interval(value.get("ci")),
        "p_value": number(value.get("p_value")),
        "recommendation": text(value.get("recommendation")),
        "reason": text(value.get("reason"), MAX_TEXT),
    }


def _events(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping) or not value:
        return None
    return {
        "impressions": integer(value.get("impressions")),
        "clicks": integer(value.get("clicks")),
        "drained_until": text(value.get("drained_until")),
    }


def build_view(data: Mapping[str, Any], rendered_at: str) -> dict[str, Any]:
    """Every section of the report from ``data``; ``None`` or ``[]`` for a section without data.

    ``rendered_at`` stands in for ``data["generated_at"]`` when that is missing.
    """
    data = _mapping(data)
    variants, ks = _variants(data.get("variants"))
    return {
        "week": _week(data.get("week")),
        "generated_at": text(data.get("generated_at")) or rendered_at,
        "variants": variants,
        "ctr_ks": ks,
        "trend": _trend(data.get("trend")),
        "offline_vs_online": _offline_vs_online(data.get("offline_vs_online")),
        "interleaving": _interleaving(data.get("interleaving")),
        "ab": _ab(data.get("ab")),
        "decision": _decision(data.get("decision")),
        "events": _events(data.get("events")),
    }


def subject(view: Mapping[str, Any]) -> str:
    """A one-line subject: the week and, when there is one, the decision."""
    week = view["week"]
    if week["start"] or week["last_day"]:
        span = f" {week['start'] or '?'} to {week['last_day'] or '?'}"
    else:
        span = ""
    decision = view["decision"]
    if decision and (decision["recommendation"] or decision["winner"]):
        what = decision["recommendation"] or "winner"
        tail = f": {what}" + (f" ({decision['winner']})" if decision["winner"] else "")
    else:
        tail = ": no decision"
    return text(f"[LTR] Weekly online metrics{span}{tail}", 200) or "[LTR] Weekly online metrics"


def to_json_safe(value: Any) -> Any:
    """``value`` with NaN/infinities as ``None`` and tuples as lists, so strict JSON accepts it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
