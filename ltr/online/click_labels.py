"""Training labels from clicks: naive click-through rate, or relevance with position bias removed.

Both label functions return one row per ``(query_id, doc_id)`` of the click log with
``impressions`` and ``clicks`` (all rows of that pair in the log), a float ``score`` and an
integer ``label`` in ``0 .. max_grade`` that LightGBM's lambdarank can train on:

* :func:`naive_labels`: ``score`` = clicks / impressions. Biased towards whatever the
  logging rankers put on top, since a document at rank 1 is examined far more often.
* :func:`debiased_labels`: ``score`` from a :class:`~ltr.online.propensity.PropensityEstimate`.
  ``method="em"`` (default) takes the PBM-EM relevance ``gamma_{q,d}`` (the maximum-likelihood
  attraction once examination is explained away); ``method="ips"`` takes the
  inverse-propensity-weighted click rate ``sum(click / p_rank) / impressions``, with
  ``p_rank = theta_rank / theta_1``. EM is the default because it is less noisy: IPS divides
  rare clicks at deep ranks by small propensities. Only rows shown above the estimate's
  ``max_rank`` carry information here; a pair shown only deeper gets no row.

Scores become grades by one of two global schemes (``grading=``):

* ``"uniform"`` (default): equal-width bins of the score divided by its
  ``UNIFORM_REFERENCE`` (0.99) quantile: ``label = min(max_grade, floor((max_grade + 1) *
  score / reference))``. The grade is proportional to the estimated relevance, whatever
  the score's scale (EM's ``gamma`` is identified only up to a scale; CTR's depends on where
  the loggers showed documents), and the label distribution follows the data: with enough
  clicks, PBM attractions 0.1 / 0.37 / 0.9 of grades 0 / 1 / 2 come back as 0 / 1 / 2. A
  reference of 0.99 rather than the maximum keeps a few outliers (IPS weights of rare deep
  clicks) from squeezing every other document into grade 0.
* ``"quantile"``: the cut points are the score's quantiles at ``levels`` (default
  ``k / (max_grade + 1)``, equal-sized grades); a score strictly above ``j`` cut points gets
  grade ``j``, so a tie at a cut point (many documents never clicked) stays on the lower
  grade. It forces the label distribution, which is wrong when relevant documents are
  rare: on MQ2008 (81% irrelevant) its cuts fall among the irrelevant documents and split
  them by noise (bench/click_debias.py measured it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from ltr.data.dataset import LetorDataset
from ltr.online.propensity import (
    PropensityEstimate,
    estimate_relevance,
    pair_codes,
    validate_click_log,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEBIAS_METHODS",
    "GRADINGS",
    "LABEL_COLUMNS",
    "debiased_labels",
    "grade_scores",
    "labelled_dataset",
    "naive_labels",
    "write_click_labels",
]

DebiasMethod = Literal["em", "ips"]
DEBIAS_METHODS: tuple[DebiasMethod, ...] = ("em", "ips")
Grading = Literal["uniform", "quantile"]
GRADINGS: tuple[Grading, ...] = ("uniform", "quantile")
#: ``"uniform"`` grading divides scores by this quantile of theirs.
UNIFORM_REFERENCE = 0.99
LABEL_COLUMNS: tuple[str, ...] = ("query_id", "doc_id", "impressions", "clicks", "score", "label")


def grade_scores(
    scores: np.ndarray,
    max_grade: int = 2,
    *,
    grading: Grading = "uniform",
    levels: Sequence[float] | None = None,
) -> np.ndarray:
    """Integer grades ``0 .. max_grade`` of ``scores: float [n]`` (module docstring).

    ``levels`` (``"quantile"`` only): ``max_grade`` increasing quantile levels in (0, 1).
    Returns ``int64 [n]``. Raises ``ValueError`` for an unknown ``grading`` (listing the
    valid ones), bad ``levels`` or ``max_grade < 1``.
    """
    if grading not in GRADINGS:
        raise ValueError(f"unknown grading {grading!r}; valid: {', '.join(GRADINGS)}")
    if max_grade < 1:
        raise ValueError(f"max_grade must be >= 1, got {max_grade}")
    if levels is not None and grading != "quantile":
        raise ValueError("levels apply to grading='quantile' only")
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    if grading == "uniform":
        reference = float(np.quantile(values, UNIFORM_REFERENCE))
        if reference <= 0:
            return np.zeros(values.size, dtype=np.int64)
        bins = np.floor((max_grade + 1) * values / reference)
        return np.clip(bins, 0, max_grade).astype(np.int64)
    lv = (
        np.arange(1, max_grade + 1) / (max_grade + 1)
        if levels is None
        else np.asarray(levels, dtype=np.float64)
    )
    if lv.shape != (max_grade,) or np.any(lv <= 0) or np.any(lv >= 1) or np.any(np.diff(lv) <= 0):
        raise ValueError(
            f"levels must be {max_grade} increasing quantile levels in (0, 1), got {list(lv)}"
        )
    cuts = np.quantile(values, lv)
    return np.searchsorted(cuts, values, side="left").astype(np.int64)


def _counts(log_df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Row -> pair code, and per pair ``query_id, doc_id, impressions, clicks``."""
    codes, pairs = pair_codes(log_df)
    clicked = log_df["clicked"].to_numpy(dtype=bool)
    pairs = pairs.assign(
        impressions=np.bincount(codes, minlength=len(pairs)).astype(np.int64),
        clicks=np.bincount(codes, weights=clicked, minlength=len(pairs)).astype(np.int64),
    )
    return codes, pairs


def _finish(
    pairs: pd.DataFrame,
    score: np.ndarray,
    max_grade: int,
    grading: Grading,
    levels: Sequence[float] | None,
) -> pd.DataFrame:
    grades = grade_scores(score, max_grade, grading=grading, levels=levels)
    log.info(
        "click labels: %d documents, %s grades %s",
        len(pairs),
        grading,
        np.bincount(grades, minlength=max_grade + 1).tolist(),
    )
    out = pairs.assign(score=score.astype(np.float64), label=grades)
    return out[list(LABEL_COLUMNS)].reset_index(drop=True)


def naive_labels(
    log_df: pd.DataFrame,
    *,
    smoothing: float = 0.0,
    max_grade: int = 2,
    grading: Grading = "uniform",
    levels: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Per ``(query_id, doc_id)``: ``score`` = click-through rate over all its rows,
    shrunk by ``smoothing`` pseudo-impressions towards the log's overall CTR."""
    _check_smoothing(smoothing)
    validate_click_log(log_df)
    _, pairs = _counts(log_df)
    clicks = pairs["clicks"].to_numpy(np.float64)
    impressions = pairs["impressions"].to_numpy(np.float64)
    mean = clicks.sum() / impressions.sum()
    score = (clicks + smoothing * mean) / (impressions + smoothing)
    return _finish(pairs, score, max_grade, grading, levels)


def _check_smoothing(smoothing: float) -> None:
    if not (smoothing >= 0 and np.isfinite(smoothing)):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")


def debiased_labels(
    log_df: pd.DataFrame,
    estimate: PropensityEstimate,
    *,
    method: DebiasMethod = "em",
    smoothing: float = 0.0,
    max_grade: int = 2,
    grading: Grading = "uniform",
    levels: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Per ``(query_id, doc_id)``: ``score`` with position bias removed (module docstring).

    ``estimate`` should come from :func:`~ltr.online.propensity.estimate_propensities` on
    the same log. ``smoothing``: pseudo-impressions of a prior at the log's mean score
    (for EM a Beta prior inside EM, :func:`~ltr.online.propensity.estimate_relevance`;
    for IPS the same shrinkage as :func:`naive_labels`). Pairs of ``log_df`` it has no
    relevance for are dropped (and counted in the log). Raises ``ValueError`` for an
    unknown ``method`` (listing the valid ones).
    """
    if method not in DEBIAS_METHODS:
        raise ValueError(f"unknown debiasing method {method!r}; valid: {', '.join(DEBIAS_METHODS)}")
    _check_smoothing(smoothing)
    validate_click_log(log_df)
    codes, pairs = _counts(log_df)
    if method == "em":
        relevance = estimate_relevance(log_df, estimate, smoothing=smoothing)
        rel = relevance[["query_id", "doc_id", "gamma"]].astype({"query_id": str, "doc_id": str})
        merged = pairs.merge(rel, on=["query_id", "doc_id"], how="left", validate="1:1")
        keep = merged["gamma"].notna().to_numpy()
        score = merged["gamma"].to_numpy(np.float64)
    else:
        prop = np.asarray(estimate.propensities, dtype=np.float64)
        position = log_df["position"].to_numpy(np.int64)
        inside = position < len(prop)
        p = np.full(len(position), np.nan)
        p[inside] = prop[position[inside]]
        usable = np.isfinite(p) & (p > 0)
        clicked = log_df["clicked"].to_numpy(dtype=bool)
        weighted = np.where(usable & clicked, 1.0 / np.where(usable, p, 1.0), 0.0)
        n_used = np.bincount(codes[usable], minlength=len(pairs)).astype(np.float64)
        total = np.bincount(codes, weights=weighted, minlength=len(pairs))
        keep = n_used > 0
        mean = total.sum() / n_used.sum() if n_used.sum() > 0 else 0.0
        score = np.divide(
            total + smoothing * mean,
            n_used + smoothing,
            out=np.full(len(pairs), np.nan),
            where=keep,
        )
    dropped = int((~keep).sum())
    if dropped:
        log.warning("debiased labels: %d document(s) have no estimate and are dropped", dropped)
    return _finish(pairs.loc[keep], score[keep], max_grade, grading, levels)


def labelled_dataset(
    labels: pd.DataFrame, features: LetorDataset, *, min_docs: int = 2
) -> LetorDataset:
    """``features`` with its labels replaced by the click labels of ``labels``.

    Joined on ``(query_id, doc_id)`` = ``(features.qids, features.doc_ids)`` as strings.
    Documents without a label row are dropped, then queries left with fewer than
    ``min_docs`` documents; order of queries and documents is kept.
    """
    missing = [c for c in ("query_id", "doc_id", "label") if c not in labels.columns]
    if missing:
        raise ValueError(f"labels are missing column(s) {missing}")
    if labels.duplicated(["query_id", "doc_id"]).any():
        raise ValueError("labels hold more than one row for some (query_id, doc_id)")
    key = pd.MultiIndex.from_arrays(
        [labels["query_id"].astype(str).to_numpy(), labels["doc_id"].astype(str).to_numpy()]
    )
    rows = pd.MultiIndex.from_arrays(
        [features.qids.astype(str), np.asarray([str(d) for d in features.doc_ids])]
    )
    where = key.get_indexer(rows)
    has_label = where >= 0
    qids = features.qids
    # Queries whose labelled documents number at least min_docs.
    _, q_codes = np.unique(qids.astype(str), return_inverse=True)
    per_query = np.bincount(q_codes, weights=has_label.astype(np.float64))
    keep = has_label & (per_query[q_codes] >= min_docs)
    label_values = labels["label"].to_numpy(np.float64)
    out = LetorDataset(
        features=features.features[keep],
        labels=label_values[where[keep]].astype(np.float32),
        qids=qids[keep],
        doc_ids=features.doc_ids[keep],
        feature_names=list(features.feature_names),
        missing_report=features.missing_report,
        source=features.source,
    )
    log.info(
        "click-labelled dataset: %d of %d documents, %d of %d queries",
        out.n_docs,
        features.n_docs,
        out.n_queries,
        features.n_queries,
    )
    return out


def write_click_labels(labels: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``labels`` (columns :data:`LABEL_COLUMNS`) to Parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ltr.utils.io import atomic_path

    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"labels are missing column(s) {missing}; expected {list(LABEL_COLUMNS)}")
    table = pa.Table.from_pandas(labels[list(LABEL_COLUMNS)], preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
