"""The comparison table and chart of tracked runs (no MLflow needed: rows are given)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from ltr.compare import format_table, plot_runs, run_label

ROWS = [
    {
        "run_id": "a",
        "run_name": "demo-lightgbm-20260102T020000Z-1a2b3c4d",
        "model_type": "lightgbm",
        "loss": "lambdarank",
        "fit_seconds": 1.5,
        "ndcg@1": 0.5,
        "ndcg@5": 0.6,
        "ndcg@10": 0.7,
        "map": 0.65,
        "mrr": 0.72,
    },
    {
        "run_id": "b",
        "run_name": "demo-lightgbm-20260103T020000Z-5e6f7a8b",
        "model_type": "lightgbm",
        "loss": "lambdarank",
        "fit_seconds": None,
        "ndcg@1": 0.55,
        "ndcg@5": None,
        "ndcg@10": 0.75,
        "map": 0.66,
        "mrr": 0.73,
    },
]


def test_runs_of_the_same_model_and_loss_get_distinct_chart_labels_naming_the_run():
    labels = [run_label(r) for r in ROWS]
    assert len(set(labels)) == 2
    for label, row in zip(labels, ROWS, strict=True):
        assert row["run_name"] in label and "lightgbm/lambdarank" in label


def test_the_chart_legend_carries_one_label_per_run(tmp_path: Path, monkeypatch):
    import matplotlib.axes

    seen: list[str] = []
    original = matplotlib.axes.Axes.bar

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    out = plot_runs(ROWS, tmp_path / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen == [run_label(r) for r in ROWS]


def test_the_table_shows_a_dash_for_a_missing_metric():
    table = format_table(ROWS).splitlines()
    assert table[2].split()[-6:] == ["0.5000", "0.6000", "0.7000", "0.6500", "0.7200", "1.5"]
    assert table[3].split()[-6:] == ["0.5500", "-", "0.7500", "0.6600", "0.7300", "-"]


def test_the_table_shows_whole_run_names():
    table = format_table(ROWS)
    for row in ROWS:
        assert row["run_name"] in table
