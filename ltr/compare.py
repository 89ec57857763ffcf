"""Compare tracked runs: a table of metrics from MLflow and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltr.settings import Settings, get_settings
from ltr.tracking import configure_mlflow, metric_key

DEFAULT_COLUMNS = ("ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr")


def fetch_runs(
    experiment: str | None = None,
    *,
    split: str = "test",
    run_ids: list[str] | None = None,
    limit: int = 50,
    settings: Settings | None = None,
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Finished runs of ``experiment`` with their final metrics on ``split`` (newest first)."""
    import mlflow

    s = settings or get_settings()
    configure_mlflow(tracking_uri, s)
    name = experiment or s.mlflow_experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {name!r} at {mlflow.get_tracking_uri()}")
    filt = "attributes.status = 'FINISHED'"
    runs = mlflow.search_runs(
        experiment_ids=[exp.experiment_id],
        filter_string=filt,
        max_results=limit,
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    rows = []
    for r in runs:
        if run_ids and r.info.run_id not in run_ids:
            continue
        m = r.data.metrics
        values = {c: m.get(metric_key(f"final_{split}_{c}")) for c in DEFAULT_COLUMNS}
        if all(v is None for v in values.values()):
            values = {c: m.get(metric_key(f"final_valid_{c}")) for c in DEFAULT_COLUMNS}
        rows.append(
            {
                "run_id": r.info.run_id,
                "run_name": r.info.run_name,
                "model_type": r.data.tags.get("ltr.model_type", "?"),
                "loss": r.data.tags.get("ltr.loss", "?"),
                "fit_seconds": m.get("fit_seconds"),
                **values,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = DEFAULT_COLUMNS) -> str:
    w = min(max([len("run"), *(len(r["run_name"]) for r in rows)]), 60)
    head = f"{'run':<{w}} {'model':<10} {'loss':<11}" + "".join(f"{c:>9}" for c in columns)
    lines = [head + f"{'fit s':>8}", "-" * (len(head) + 8)]
    for r in rows:
        vals = "".join(f"{r[c]:>9.4f}" if r.get(c) is not None else f"{'-':>9}" for c in columns)
        fit = f"{r['fit_seconds']:>8.1f}" if r.get("fit_seconds") is not None else f"{'-':>8}"
        lines.append(f"{r['run_name'][:w]:<{w}} {r['model_type']:<10} {r['loss']:<11}{vals}{fit}")
    return "\n".join(lines)


def run_label(row: dict[str, Any]) -> str:
    """A chart label that tells runs apart: the run's name (config name, and for pipeline
    runs the day it was trained on) with its model and loss."""
    return f"{row['run_name']} ({row['model_type']}/{row['loss']})"


def plot_runs(
    rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...] = DEFAULT_COLUMNS
) -> Path:
    """Grouped bar chart of the runs' metrics, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ltr.utils.io import atomic_path

    if not rows:
        raise ValueError("no runs to plot")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(columns) + 0.4 * len(rows)), 4.5))
    width = 0.8 / len(rows)
    x = np.arange(len(columns))
    for i, r in enumerate(rows):
        vals = [r.get(c) or 0.0 for c in columns]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=run_label(r))
    ax.set_xticks(x, columns)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("ranking quality by run")
    # below the axes, so that no label hides a bar
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
