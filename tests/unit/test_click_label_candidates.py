"""The retrain's click-label source: the newest weekly click labels relabel the train split
(held-out splits keep their judgments); nothing when there are none or too few."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ltr.data.synth import generate_synthetic
from ltr.online.click_labels import write_click_labels
from ltr.pipelines.retrain import _click_label_splits
from ltr.settings import Settings
from ltr.training.runner import Splits


def splits() -> Splits:
    ds = generate_synthetic(n_queries=30, n_features=6, seed=1)
    return Splits(
        ds.subset_queries(range(20)),
        ds.subset_queries(range(20, 25)),
        ds.subset_queries(range(25, 30)),
    )


def labels_for(ds, n_queries: int, grade_of) -> pd.DataFrame:
    rows = []
    wanted = set(list(dict.fromkeys(map(str, ds.qids)))[:n_queries])
    for q, d in zip(map(str, ds.qids), map(str, ds.doc_ids), strict=True):
        if q in wanted:
            rows.append(
                {
                    "query_id": q,
                    "doc_id": d,
                    "impressions": 10,
                    "clicks": 1,
                    "score": 0.1,
                    "label": grade_of(d),
                }
            )
    return pd.DataFrame(rows)


def test_the_newest_weeks_click_labels_relabel_the_train_split_only(tmp_path: Path) -> None:
    s = splits()
    settings = Settings(_env_file=None, home=tmp_path)
    base = tmp_path / "feast" / "data" / "click_labels"
    write_click_labels(
        labels_for(s.train, 10, lambda d: 0), base / "week=2026-01-05" / "labels.parquet"
    )
    newest = labels_for(s.train, 12, lambda d: int(d[-1]) % 3)
    write_click_labels(newest, base / "week=2026-01-12" / "labels.parquet")
    out = _click_label_splits(s, settings)
    assert out is not None
    assert out.valid is s.valid and out.test is s.test
    assert out.train.n_queries == 12
    expected = {(r.query_id, r.doc_id): r.label for r in newest.itertuples()}
    got = {
        (q, d): lab
        for q, d, lab in zip(
            map(str, out.train.qids),
            map(str, out.train.doc_ids),
            out.train.labels.tolist(),
            strict=True,
        )
    }
    assert got == {k: float(v) for k, v in expected.items()}
    assert np.any(out.train.labels > 0)


def test_no_click_labels_or_too_few_queries_means_judgments_only(tmp_path: Path) -> None:
    s = splits()
    settings = Settings(_env_file=None, home=tmp_path)
    assert _click_label_splits(s, settings) is None
    path = tmp_path / "feast" / "data" / "click_labels" / "week=2026-01-05" / "labels.parquet"
    write_click_labels(labels_for(s.train, 3, lambda d: 1), path)
    assert _click_label_splits(s, settings) is None
