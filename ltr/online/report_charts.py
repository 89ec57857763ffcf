"""The weekly report's charts: small PNGs drawn with matplotlib's object API.

Each chart is built on its own ``Figure`` with an Agg canvas (no ``pyplot``, no
``matplotlib.use``), so drawing a report changes no global state the rest of the process
relies on. A chart function takes the report's view (:func:`ltr.online.report_view.build_view`)
and returns ``None`` when its section has no data to draw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ltr.utils.io import atomic_path

log = logging.getLogger(__name__)

#: Pixels per inch of every PNG: with the sizes below a chart is 800 x 300 px, a few tens of kB.
DPI = 100
_SIZE = (8.0, 3.0)
_NAN = float("nan")


def _safe(label: str | None, limit: int = 28) -> str:
    """A label matplotlib draws as written: ``$`` would start mathtext (and can fail to parse)."""
    s = label or "?"
    if len(s) > limit:  # keep both ends: versions often share a prefix and differ at the end
        head = (limit - 1) // 2
        s = s[:head] + "…" + s[len(s) - (limit - 1 - head) :]
    return s.replace("\\", "\\\\").replace("$", r"\$")


def _value(v: float | None) -> float:
    return _NAN if v is None else v


def _figure() -> Figure:
    fig = Figure(figsize=_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def trend_chart(view: Mapping[str, Any]) -> Figure | None:
    """CTR@10 and MRR per week, one line per model version (and variant)."""
    rows = [r for r in view["trend"] if r["ctr_at_10"] is not None or r["mrr"] is not None]
    if not rows:
        return None
    weeks = sorted({r["week_start"] for r in rows})
    series = sorted({r["label"] for r in rows})
    at = {(r["week_start"], r["label"]): r for r in rows}
    fig = _figure()
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, title in ((axes[0], "ctr_at_10", "CTR@10"), (axes[1], "mrr", "MRR")):
        for label in series:
            ys = [_value(at[(w, label)][key]) if (w, label) in at else _NAN for w in weeks]
            ax.plot(range(len(weeks)), ys, marker="o", label=_safe(label))
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(weeks)), [_safe(w, 10) for w in weeks], fontsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def variants_chart(view: Mapping[str, Any]) -> Figure | None:
    """This week's click metrics, the variants' bars side by side per metric."""
    variants = view["variants"]
    metrics = [f"CTR@{k}" for k in view["ctr_ks"]] + ["MRR", "Abandonment"]
    table = [[v for _, v in row["ctr_at"]] + [row["mrr"], row["abandonment"]] for row in variants]
    if not any(v is not None for values in table for v in values):
        return None
    fig = _figure()
    ax = fig.subplots()
    width = 0.8 / len(variants)
    for i, (row, values) in enumerate(zip(variants, table, strict=True)):
        xs = [m + (i - (len(variants) - 1) / 2) * width for m in range(len(metrics))]
        ax.bar(xs, [_value(v) for v in values], width=width, label=_safe(row["label"], 40))
    ax.set_xticks(range(len(metrics)), metrics, fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def offline_online_chart(view: Mapping[str, Any]) -> Figure | None:
    """Offline NDCG@10 against online MRR, one labelled point per model version."""
    points = [
        r
        for r in view["offline_vs_online"]
        if r["offline_ndcg_at_10"] is not None and r["online_mrr"] is not None
    ]
    if not points:
        return None
    fig = _figure()
    ax = fig.subplots()
    ax.scatter([p["offline_ndcg_at_10"] for p in points], [p["online_mrr"] for p in points])
    for p in points:
        ax.annotate(
            _safe(p["model_version"]),
            (p["offline_ndcg_at_10"], p["online_mrr"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("offline NDCG@10", fontsize=9)
    ax.set_ylabel("online MRR", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.margins(0.2)
    ax.grid(alpha=0.3)
    return fig


def interleaving_chart(view: Mapping[str, Any]) -> Figure | None:
    """Wins for a, ties, wins for b; and b's preference with its confidence interval."""
    il = view["interleaving"]
    if il is None:
        return None
    counts = [il["wins_a"], il["ties"], il["wins_b"]]
    has_counts = any(c for c in counts)
    if not has_counts and il["preference"] is None:
        return None
    fig = _figure()
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    if has_counts:
        labels = [f"a {_safe(il['a'], 20)}", "ties", f"b {_safe(il['b'], 20)}"]
        bars = left.barh(labels, [c or 0 for c in counts], color=["#4c72b0", "#bbbbbb", "#dd8452"])
        left.bar_label(bars, fontsize=8, padding=2)
        left.margins(x=0.15)
        left.invert_yaxis()  # a on top, b at the bottom: the order of the title
    left.set_title(f"queries (n = {il['n'] if il['n'] is not None else '?'})", fontsize=10)
    left.tick_params(labelsize=8)
    if il["preference"] is not None:
        pref = il["preference"]
        xerr = None
        if il["ci"] is not None:
            low, high = il["ci"]
            xerr = [[max(pref - low, 0.0)], [max(high - pref, 0.0)]]
        right.errorbar([pref], [0], xerr=xerr, fmt="o", capsize=6, color="#333333")
        right.axvline(0.0, color="#999999", linestyle="--", linewidth=1)
        spread = max([abs(pref), *(abs(x) for x in il["ci"] or ())]) or 0.05
        right.set_xlim(-1.3 * spread, 1.3 * spread)
    right.set_yticks([])
    right.set_title("preference for b (95% CI)", fontsize=10)
    right.tick_params(labelsize=8)
    return fig


def latency_chart(view: Mapping[str, Any]) -> Figure | None:
    """Latency p50/p99 (ms) and error rate per version."""
    rows = [
        r
        for r in view["variants"]
        if any(r[k] is not None for k in ("latency_p50_ms", "latency_p99_ms", "error_rate"))
    ]
    if not rows:
        return None
    fig = _figure()
    lat, err = fig.subplots(1, 2, width_ratios=(3, 2))
    xs = range(len(rows))
    labels = [_safe(r["label"], 20) for r in rows]
    lat.bar([x - 0.2 for x in xs], [_value(r["latency_p50_ms"]) for r in rows], 0.4, label="p50")
    lat.bar([x + 0.2 for x in xs], [_value(r["latency_p99_ms"]) for r in rows], 0.4, label="p99")
    lat.set_xticks(list(xs), labels, fontsize=7, rotation=15)
    lat.set_title("latency (ms)", fontsize=10)
    lat.legend(fontsize=7, frameon=False)
    err.bar(list(xs), [_value(r["error_rate"]) * 100 for r in rows], 0.5, color="#c44e52")
    err.set_xticks(list(xs), labels, fontsize=7, rotation=15)
    err.set_title("error rate (%)", fontsize=10)
    for ax in (lat, err):
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return fig


#: Chart name (a file stem and a MIME Content-ID) -> (title, function), in report order.
CHARTS: dict[str, tuple[str, Callable[[Mapping[str, Any]], Figure | None]]] = {
    "variants": ("Variants this week", variants_chart),
    "latency": ("Latency and errors", latency_chart),
    "trend": ("Trend over weeks", trend_chart),
    "offline-online": ("Offline vs online quality", offline_online_chart),
    "interleaving": ("Interleaving outcome", interleaving_chart),
}


def draw_charts(view: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Draw every chart that has data into ``out_dir/<name>.png`` (atomically).

    Returns the charts drawn, by name; a chart file left from an earlier render of a chart
    that has no data now is removed, so the folder holds only what the report shows.
    """
    drawn: dict[str, Path] = {}
    for name, (_, draw) in CHARTS.items():
        path = out_dir / f"{name}.png"
        fig = draw(view)
        if fig is None:
            path.unlink(missing_ok=True)
            log.info("report chart %s: no data, skipped", name)
            continue
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
        drawn[name] = path
    return drawn
