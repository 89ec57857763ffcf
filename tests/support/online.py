"""Simulated traffic for the online-loop tests: queries whose graded labels follow the
linear model v1 of ``support.serving`` (so v1 is the better ranker by construction)."""

from __future__ import annotations

import numpy as np

from ltr.data.dataset import LetorDataset
from support.serving import WEIGHTS


def graded_by_v1(n_queries: int = 60, docs: int = 12, seed: int = 3) -> LetorDataset:
    """Queries whose labels (0..2) are v1's linear score plus a little noise, by tercile."""
    rng = np.random.default_rng(seed)
    w, b = WEIGHTS["v1"]
    x = rng.standard_normal((n_queries * docs, 4)).astype(np.float32)
    s = x @ w + b + rng.normal(0, 0.5, len(x))
    labels = np.zeros(len(x), dtype=np.float32)
    for q in range(n_queries):
        sl = slice(q * docs, (q + 1) * docs)
        cut = np.quantile(s[sl], [0.6, 0.85])
        labels[sl] = np.digitize(s[sl], cut)
    return LetorDataset(
        features=x,
        labels=labels,
        qids=np.repeat([f"q{q}" for q in range(n_queries)], docs).astype(object),
        doc_ids=np.array([f"q{i // docs}-d{i % docs}" for i in range(len(x))], dtype=object),
        feature_names=["f0", "f1", "f2", "f3"],
    )
