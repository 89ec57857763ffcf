"""Online metrics from the drained event log, per model version and variant.

Definitions (one *impression* = one ranked list shown, one rank request; clicks join to their
impression by ``request_id``; a click entry's positions are 0-based, ranks below are 1-based):

* ``impressions``: rank answers logged; ``users``: distinct non-empty user ids.
* ``ctr_at[k]``: share of impressions with at least one click in the top ``k``.
* ``clicks_per_query``: clicks per impression (each document counted once per impression).
* ``mrr``: mean over impressions of ``1 / rank of the first click`` (0 without clicks).
* ``abandonment``: share of impressions without any click.
* ``latency_p50_ms``, ``latency_p99_ms``, ``error_rate``, ``requests``: from Prometheus when
  a URL is configured, else from the service's own counters (``/metrics`` and
  ``/api/v1/models``); None when neither answers.

Interleaved impressions (variant ``interleave``) are reported as their own row, with the
model version ``a|b``; their outcome is scored per impression by team credit
(:func:`interleaving_outcomes`).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 3, 10)


def click_log(impressions: pd.DataFrame, clicks: pd.DataFrame) -> pd.DataFrame:
    """One row per shown document of each impression, with whether it was clicked.

    Columns: ``impression_id`` (the request id), ``query_id``, ``doc_id``, ``position``
    (0-based), ``clicked``, ``model_version``, ``variant``, ``user_id``, ``team`` (interleaving
    team, None otherwise), ``ts``. Clicks on documents that were not shown are ignored;
    malformed events (with an ``error``) are left out.
    """
    imp = impressions
    if "error" in imp.columns:
        imp = imp[imp["error"].isna()]
    cols = ["request_id", "query_id", "model_version", "variant", "user_id", "ts"]
    base = imp[[*cols, "doc_ids", "teams"]].rename(columns={"request_id": "impression_id"})
    base = base.drop_duplicates("impression_id")
    lengths = base["doc_ids"].map(len).to_numpy()
    if lengths.sum() == 0:
        return pd.DataFrame(
            columns=[
                "impression_id",
                "query_id",
                "doc_id",
                "position",
                "clicked",
                "model_version",
                "variant",
                "user_id",
                "team",
                "ts",
            ]
        )
    rep = base.loc[base.index.repeat(lengths)].reset_index(drop=True)
    rep["doc_id"] = np.concatenate([np.asarray(d, dtype=object) for d in base["doc_ids"] if len(d)])
    rep["position"] = np.concatenate([np.arange(n) for n in lengths if n])
    teams = [
        t if t is not None else [None] * n for t, n in zip(base["teams"], lengths, strict=True)
    ]
    rep["team"] = np.concatenate(
        [np.asarray(t, dtype=object) for t, n in zip(teams, lengths, strict=True) if n]
    )
    rep = rep.drop(columns=["doc_ids", "teams"])
    clicked = _clicked_pairs(clicks)
    key = pd.MultiIndex.from_arrays([rep["impression_id"], rep["doc_id"]])
    rep["clicked"] = key.isin(clicked)
    return rep


def _clicked_pairs(clicks: pd.DataFrame) -> pd.MultiIndex:
    if clicks.empty:
        return pd.MultiIndex.from_arrays([[], []])
    c = clicks
    if "error" in c.columns:
        c = c[c["error"].isna()]
    ex = c[["request_id", "doc_ids"]].explode("doc_ids").dropna()
    return pd.MultiIndex.from_arrays([ex["request_id"], ex["doc_ids"]]).unique()


def per_impression(log_df: pd.DataFrame, ks: Sequence[int] = DEFAULT_KS) -> pd.DataFrame:
    """Per impression: clicks, rank of the first click, clicked within each ``k``."""
    if log_df.empty:
        return pd.DataFrame()
    g = log_df.groupby("impression_id", sort=False)
    first = g.first()[["query_id", "model_version", "variant", "user_id"]]
    clicked = log_df[log_df["clicked"]]
    first["clicks"] = clicked.groupby("impression_id").size().reindex(first.index, fill_value=0)
    first_rank = clicked.groupby("impression_id")["position"].min() + 1
    first["first_click_rank"] = first_rank.reindex(first.index)
    for k in ks:
        first[f"click_at_{k}"] = first["first_click_rank"].le(k)
    first["rr"] = (1.0 / first["first_click_rank"]).fillna(0.0)
    return first.reset_index()


def online_metrics(log_df: pd.DataFrame, ks: Sequence[int] = DEFAULT_KS) -> list[dict[str, Any]]:
    """Metrics per (model_version, variant); see the module docstring."""
    imp = per_impression(log_df, ks)
    rows: list[dict[str, Any]] = []
    if imp.empty:
        return rows
    for (version, variant), grp in imp.groupby(["model_version", "variant"], sort=True):
        n = len(grp)
        rows.append(
            {
                "model_version": str(version),
                "variant": str(variant),
                "impressions": int(n),
                "queries": int(grp["query_id"].nunique()),
                "users": int(grp["user_id"].replace("", np.nan).dropna().nunique()),
                "ctr_at": {str(k): round(float(grp[f"click_at_{k}"].mean()), 6) for k in ks},
                "clicks_per_query": round(float(grp["clicks"].mean()), 6),
                "mrr": round(float(grp["rr"].mean()), 6),
                "abandonment": round(float((grp["clicks"] == 0).mean()), 6),
            }
        )
    return rows


def interleaving_outcomes(log_df: pd.DataFrame) -> pd.DataFrame:
    """Per interleaved impression: versions a and b and the winner (``a``/``b``/``tie``)
    by team-draft credit: clicked documents each team placed (unattributed ones ignored)."""
    inter = log_df[log_df["team"].isin(["a", "b", "none"])]
    if inter.empty:
        return pd.DataFrame(columns=["impression_id", "pair", "a", "b", "winner"])
    clicked = inter[inter["clicked"]]
    credit = clicked.pivot_table(
        index="impression_id", columns="team", values="doc_id", aggfunc="count", fill_value=0
    )
    ids = inter.drop_duplicates("impression_id").set_index("impression_id")
    out = pd.DataFrame(index=ids.index)
    out["pair"] = ids["model_version"]
    out["a"] = credit.get("a", pd.Series(dtype=int)).reindex(out.index, fill_value=0).astype(int)
    out["b"] = credit.get("b", pd.Series(dtype=int)).reindex(out.index, fill_value=0).astype(int)
    out["winner"] = np.where(out["a"] > out["b"], "a", np.where(out["b"] > out["a"], "b", "tie"))
    return out.reset_index()


def per_user(log_df: pd.DataFrame, metric: str = "rr") -> pd.DataFrame:
    """Per (variant, model_version, user): mean of ``metric`` over the user's impressions
    (non-interleaved impressions of identified users), the unit of an A/B test."""
    imp = per_impression(log_df)
    if imp.empty:
        return pd.DataFrame(columns=["variant", "model_version", "user_id", "value", "n"])
    imp = imp[(imp["variant"] != "interleave") & (imp["user_id"] != "")]
    out = imp.groupby(["variant", "model_version", "user_id"])[metric].agg(["mean", "size"])
    return out.rename(columns={"mean": "value", "size": "n"}).reset_index()


# --------------------------------------------------------------------------- service side
def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile`` on cumulative ``(le, count)`` pairs (the promotion's
    own implementation, :func:`ltr.promotion.observation.quantile`)."""
    from ltr.promotion.observation import quantile

    return quantile(q, dict(buckets))


def service_latency(metrics_text: str) -> dict[tuple[str, str], dict[str, float | None]]:
    """p50/p99 (ms) of rank requests per (model_version, variant) from ``/metrics`` text."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "ltr_request_latency_seconds":
            continue
        for s in family.samples:
            if not s.name.endswith("_bucket") or s.labels.get("endpoint") != "rank":
                continue
            key = (s.labels.get("model_version", ""), s.labels.get("variant", ""))
            buckets.setdefault(key, []).append((float(s.labels["le"]), float(s.value)))
    out: dict[tuple[str, str], dict[str, float | None]] = {}
    for key, b in buckets.items():
        p50, p99 = histogram_quantile(b, 0.5), histogram_quantile(b, 0.99)
        out[key] = {
            "latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }
    return out


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


def service_counters(service_url: str) -> dict[str, Any]:
    """Latency per (version, variant) and requests/errors per version from a service."""
    base = service_url.rstrip("/")
    latency = service_latency(_get(f"{base}/metrics").decode())
    models = json.loads(_get(f"{base}/api/v1/models"))
    versions = {
        v["version"]: {"requests": int(v["requests"]), "errors": int(v["errors"])}
        for v in models.get("versions", [])
    }
    return {"source": f"service {base}", "latency": latency, "versions": versions}


def prometheus_counters(prometheus_url: str, window: str = "7d") -> dict[str, Any]:
    """The same figures from Prometheus (aggregated over every replica it scrapes)."""
    base = prometheus_url.rstrip("/")

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(_get(url))
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    latency: dict[tuple[str, str], dict[str, float | None]] = {}
    for q, name in ((0.5, "latency_p50_ms"), (0.99, "latency_p99_ms")):
        expr = (
            f"histogram_quantile({q}, sum by (le, model_version, variant) "
            f'(increase(ltr_request_latency_seconds_bucket{{endpoint="rank"}}[{window}])))'
        )
        for r in query(expr):
            key = (r["metric"].get("model_version", ""), r["metric"].get("variant", ""))
            value = float(r["value"][1])
            latency.setdefault(key, {})[name] = (
                None if math.isnan(value) else round(value * 1000, 3)
            )
    return {"source": f"prometheus {base}", "latency": latency, "versions": {}}


def attach_service_figures(
    rows: Iterable[dict[str, Any]], figures: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Rows of :func:`online_metrics` with latency, requests and error rate filled in."""
    out = []
    for row in rows:
        row = dict(row)
        lat = (figures or {}).get("latency", {}).get((row["model_version"], row["variant"]), {})
        ver = (figures or {}).get("versions", {}).get(row["model_version"])
        row["latency_p50_ms"] = lat.get("latency_p50_ms")
        row["latency_p99_ms"] = lat.get("latency_p99_ms")
        row["requests"] = ver["requests"] if ver else None
        row["error_rate"] = (
            round(ver["errors"] / ver["requests"], 6) if ver and ver["requests"] else None
        )
        out.append(row)
    return out
