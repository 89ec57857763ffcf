"""Offline ranking metrics (NDCG@k, MAP, MRR, ERR@k, P@k), vectorised over many queries.

Inputs are flat arrays with query offsets: query ``i`` owns rows ``offsets[i]:offsets[i+1]``
of ``labels: [n_docs]`` and ``scores: [n_docs]``. Every query is ranked and scored in a few
NumPy passes (no Python loop over queries), because training calls this every epoch.

Conventions (each one is an option of :class:`MetricOptions`):

===================  ===========================================================================
gain                 ``"exp"`` (default): 2^rel - 1; ``"linear"``: rel. Negative labels gain 0
                     (as in trec_eval).
discount             1 / log2(rank + 1), rank starting at 1.
relevant             rel >= ``relevance_threshold`` (default 1); used by MAP, MRR, P@k and to
                     decide whether a query has any relevant document.
NDCG@k / NDCG        DCG of the top k / ideal DCG of the top k of the ideal labels (all
                     judged labels of the query when ``ideal_labels`` is given). A query whose
                     ideal DCG is 0 counts as having no relevant document. ``ndcg`` = full list.
MAP                  average precision divides by ALL relevant documents of the query,
                     including judged relevant documents missing from the ranked list.
MRR                  1 / rank of the first relevant document; 0 if none is retrieved.
ERR@k                Chapelle et al. (2009): R = (2^rel - 1) / 2^max_grade, ERR = sum over
                     ranks r <= k of R_r / r * prod_{i<r} (1 - R_i). ``max_grade`` defaults to
                     the largest label of the whole evaluated set (labels and ideal labels);
                     ``gain`` does not apply to ERR.
P@k                  relevant documents in the top k, divided by k even when the list is
                     shorter than k (trec_eval's ``P_k``).
ties                 ``"pessimistic"`` (default): among equal scores lower labels come first,
                     so a constant scorer gets the worst value and never profits from input
                     order. ``"input_order"``: equal scores keep their input order.
no relevant doc      ``"skip"`` (default): NaN per query, left out of the mean; ``"zero"``:
                     0; ``"one"``: 1.
===================  ===========================================================================

With ``MetricOptions(gain="linear", no_relevant="zero")`` the values equal trec_eval's
``ndcg_cut_k``, ``ndcg``, ``map``, ``recip_rank`` and ``P_k`` (on lists without tied scores).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr")

# name -> whether a cutoff "@k" is allowed / required
_CUTOFF_RULES: dict[str, Literal["optional", "required", "none"]] = {
    "ndcg": "optional",
    "err": "optional",
    "p": "required",
    "map": "none",
    "mrr": "none",
}
_VALID_HELP = "ndcg, ndcg@k, err, err@k, p@k, map, mrr"
_METRIC_RE = re.compile(r"^\s*([a-z]+)\s*(?:@\s*(\d+))?\s*$")


@dataclass(frozen=True)
class MetricOptions:
    """How metrics treat gains, ties and queries without relevant documents (see module doc)."""

    gain: Literal["exp", "linear"] = "exp"
    no_relevant: Literal["skip", "zero", "one"] = "skip"
    ties: Literal["pessimistic", "input_order"] = "pessimistic"
    relevance_threshold: float = 1.0
    max_grade: float | None = None  # for ERR; None = max label of the evaluated set

    def __post_init__(self) -> None:
        if self.gain not in ("exp", "linear"):
            raise ValueError(f"unknown gain {self.gain!r}; valid: exp, linear")
        if self.no_relevant not in ("skip", "zero", "one"):
            raise ValueError(f"unknown no_relevant {self.no_relevant!r}; valid: skip, zero, one")
        if self.ties not in ("pessimistic", "input_order"):
            raise ValueError(f"unknown ties {self.ties!r}; valid: pessimistic, input_order")
        if not math.isfinite(self.relevance_threshold):
            raise ValueError("relevance_threshold must be finite")
        if self.max_grade is not None and not (
            math.isfinite(self.max_grade) and self.max_grade >= 0
        ):
            raise ValueError(f"max_grade must be finite and >= 0, got {self.max_grade!r}")


def parse_metric(name: str) -> tuple[str, int | None]:
    """Parse ``"ndcg@10"`` into ``("ndcg", 10)``, ``"map"`` into ``("map", None)``.

    Case-insensitive. Unknown names, a missing or zero cutoff for ``p`` and a cutoff on
    ``map``/``mrr`` raise ``ValueError`` listing the valid names.
    """
    match = _METRIC_RE.match(str(name).lower())
    base = match.group(1) if match else None
    rule = _CUTOFF_RULES.get(base) if base else None
    if match is None or base is None or rule is None:
        raise ValueError(f"unknown metric {name!r}; valid: {_VALID_HELP}")
    k = int(match.group(2)) if match.group(2) is not None else None
    if k is None and rule == "required":
        raise ValueError(f"metric {name!r} needs a cutoff, e.g. {base}@10; valid: {_VALID_HELP}")
    if k is not None and rule == "none":
        raise ValueError(f"metric {name!r} takes no cutoff; valid: {_VALID_HELP}")
    if k is not None and k < 1:
        raise ValueError(f"metric {name!r}: the cutoff must be >= 1")
    return base, k


def metric_key(name: str) -> str:
    """Canonical spelling of a metric name (``"NDCG @10"`` -> ``"ndcg@10"``)."""
    base, k = parse_metric(name)
    return base if k is None else f"{base}@{k}"


def rank_order(scores: np.ndarray, labels: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """Indices of one list, best first: ``scores, labels: [n]`` -> ``[n]``.

    ``ties="pessimistic"`` puts lower labels first among equal scores; ``"input_order"``
    keeps equal scores in their input order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D")
    return _grouped_order(scores, labels, np.zeros(len(scores), dtype=np.int64), ties)


def _grouped_order(
    scores: np.ndarray, labels: np.ndarray, qidx: np.ndarray, ties: str
) -> np.ndarray:
    """Order rows by query, then score descending, then by the tie rule (lexsort is stable)."""
    if ties == "pessimistic":
        return np.lexsort((labels, -scores, qidx))
    if ties == "input_order":
        return np.lexsort((-scores, qidx))
    raise ValueError(f"unknown ties {ties!r}; valid: pessimistic, input_order")


def _check_inputs(
    labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    offsets = np.asarray(offsets)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be 1-D")
    if len(labels) != len(scores):
        raise ValueError(f"labels has {len(labels)} rows but scores has {len(scores)}")
    if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError("offsets must be a 1-D integer array [n_queries + 1]")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != len(labels):
        raise ValueError(
            f"offsets must start at 0 and end at n_docs={len(labels)}, "
            f"got {offsets[0]}..{offsets[-1]}"
        )
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    for what, arr in (("scores", scores), ("labels", labels)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{what} must be finite: row {row} is {arr[row]} ({len(bad)} bad rows in all)"
            )
    return labels, scores, offsets


def _segment_ranks(qidx_sorted: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """0-based rank inside each query for rows already grouped by query."""
    ranks: np.ndarray = np.arange(len(qidx_sorted), dtype=np.int64) - offsets[qidx_sorted]
    return ranks


def _gains(labels: np.ndarray, gain: str) -> np.ndarray:
    clipped: np.ndarray = np.maximum(labels, 0.0)
    if gain == "exp":
        gains: np.ndarray = np.exp2(clipped) - 1.0
        return gains
    return clipped


def evaluate_per_query(
    labels: np.ndarray,
    scores: np.ndarray,
    offsets: np.ndarray,
    metrics: Sequence[str] = DEFAULT_METRICS,
    options: MetricOptions = MetricOptions(),
    ideal_labels: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-query metric values.

    labels, scores: [n_docs]; offsets: int [n_queries + 1]. ``ideal_labels`` (optional, one
    array per query) is the full judged label set of each query, for TREC-style evaluation
    where relevant documents may be missing from the ranked list.

    Returns ``{metric: [n_queries]}`` keyed by canonical metric name, NaN where the query has
    no relevant document and ``options.no_relevant == "skip"``.
    """
    labels, scores, offsets = _check_inputs(labels, scores, offsets)
    parsed = {metric_key(m): parse_metric(m) for m in metrics}
    if not parsed:
        raise ValueError(f"no metric requested; valid: {_VALID_HELP}")
    n_queries = len(offsets) - 1
    sizes = np.diff(offsets)
    qidx = np.repeat(np.arange(n_queries, dtype=np.int64), sizes)

    if ideal_labels is None:
        ideal, ideal_offsets, ideal_qidx = labels, offsets, qidx
    else:
        if len(ideal_labels) != n_queries:
            raise ValueError(
                f"ideal_labels has {len(ideal_labels)} queries but offsets describe {n_queries}"
            )
        parts = [np.asarray(x, dtype=np.float64).ravel() for x in ideal_labels]
        ideal = np.concatenate(parts) if parts else np.zeros(0)
        if not np.all(np.isfinite(ideal)):
            raise ValueError("ideal_labels must be finite")
        ideal_sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=n_queries)
        ideal_offsets = np.concatenate(([0], np.cumsum(ideal_sizes)))
        ideal_qidx = np.repeat(np.arange(n_queries, dtype=np.int64), ideal_sizes)

    order = _grouped_order(scores, labels, qidx, options.ties)
    ranked = labels[order]  # rows stay grouped by query, best first inside each
    rank0 = _segment_ranks(qidx, offsets)
    discount = 1.0 / np.log2(rank0 + 2.0)
    threshold = options.relevance_threshold
    is_rel = ranked >= threshold
    n_rel = np.bincount(ideal_qidx, weights=ideal >= threshold, minlength=n_queries)
    has_rel = n_rel > 0

    def per_query_sum(weights: np.ndarray, index: np.ndarray = qidx) -> np.ndarray:
        return np.bincount(index, weights=weights, minlength=n_queries)

    cache: dict[str, np.ndarray] = {}

    def ideal_ranks() -> np.ndarray:
        if "ideal_rank0" not in cache:
            ideal_order = np.lexsort((-ideal, ideal_qidx))
            cache["ideal_gain"] = _gains(ideal[ideal_order], options.gain)
            cache["ideal_rank0"] = _segment_ranks(ideal_qidx, ideal_offsets)
        return cache["ideal_rank0"]

    def ndcg(k: int | None) -> tuple[np.ndarray, np.ndarray]:
        if "gain" not in cache:
            cache["gain"] = _gains(ranked, options.gain) * discount
        i_rank0 = ideal_ranks()
        i_disc_gain = cache["ideal_gain"] / np.log2(i_rank0 + 2.0)
        dcg_w, idcg_w = cache["gain"], i_disc_gain
        if k is not None:
            dcg_w = np.where(rank0 < k, dcg_w, 0.0)
            idcg_w = np.where(i_rank0 < k, idcg_w, 0.0)
        dcg = per_query_sum(dcg_w)
        idcg = per_query_sum(idcg_w, ideal_qidx)
        valid = has_rel & (idcg > 0)
        return np.divide(dcg, idcg, out=np.zeros(n_queries), where=valid), valid

    def average_precision(_: int | None) -> tuple[np.ndarray, np.ndarray]:
        cum = np.cumsum(is_rel)
        before = np.concatenate(([0], cum))[offsets[:-1]]
        hits = cum - before[qidx]  # relevant docs at or above each rank, within the query
        precision_at_rel = np.where(is_rel, hits / (rank0 + 1.0), 0.0)
        ap = np.divide(
            per_query_sum(precision_at_rel), n_rel, out=np.zeros(n_queries), where=has_rel
        )
        return ap, has_rel

    def reciprocal_rank(_: int | None) -> tuple[np.ndarray, np.ndarray]:
        rel_rows = np.flatnonzero(is_rel)
        queries, first = np.unique(qidx[rel_rows], return_index=True)
        rr = np.zeros(n_queries)
        rr[queries] = 1.0 / (rank0[rel_rows[first]] + 1.0)
        return rr, has_rel

    def precision(k: int | None) -> tuple[np.ndarray, np.ndarray]:
        if k is None:  # parse_metric guarantees a cutoff
            raise ValueError("p needs a cutoff")
        return per_query_sum(is_rel & (rank0 < k)) / k, has_rel

    def err(k: int | None) -> tuple[np.ndarray, np.ndarray]:
        top = options.max_grade
        if top is None:
            top = max(0.0, float(labels.max(initial=0.0)), float(ideal.max(initial=0.0)))
        elif labels.size and labels.max() > top:
            raise ValueError(f"a label ({labels.max()}) exceeds max_grade={top} for ERR")
        r = (np.exp2(np.maximum(ranked, 0.0)) - 1.0) / np.exp2(top)
        log_keep = np.log1p(-r)  # r < 1 always, since label <= max_grade
        cum = np.cumsum(log_keep)
        before = np.concatenate(([0.0], cum))[offsets[:-1]]
        # probability that the user reaches each rank: prod of (1 - R) above it
        reach = np.exp(cum - log_keep - before[qidx])
        contrib = r * reach / (rank0 + 1.0)
        if k is not None:
            contrib = np.where(rank0 < k, contrib, 0.0)
        return per_query_sum(contrib), has_rel

    kernels: Mapping[str, Callable[[int | None], tuple[np.ndarray, np.ndarray]]] = {
        "ndcg": ndcg,
        "map": average_precision,
        "mrr": reciprocal_rank,
        "p": precision,
        "err": err,
    }
    fill = {"skip": np.nan, "zero": 0.0, "one": 1.0}[options.no_relevant]
    out: dict[str, np.ndarray] = {}
    for key, (base, k) in parsed.items():
        values, valid = kernels[base](k)
        out[key] = np.where(valid, values, fill)
    return out


def mean_metrics(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of each metric over the queries that are not NaN (skipped).

    Raises ``ValueError`` when every query of a metric is skipped, instead of returning NaN.
    """
    means: dict[str, float] = {}
    for key, values in per_query.items():
        kept = values[~np.isnan(values)]
        if kept.size == 0:
            raise ValueError(
                f"no query has a relevant document, so {key} is undefined "
                f"({values.size} queries, all skipped); "
                "use no_relevant='zero' or 'one' to score them"
            )
        means[key] = float(kept.mean())
    return means


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    offsets: np.ndarray,
    metrics: Sequence[str] = DEFAULT_METRICS,
    options: MetricOptions = MetricOptions(),
    ideal_labels: list[np.ndarray] | None = None,
) -> dict[str, float]:
    """Mean of each metric over the queries that are not skipped (see ``evaluate_per_query``).

    Raises ``ValueError`` if every query is skipped: a silent NaN would poison model selection.
    """
    return mean_metrics(evaluate_per_query(labels, scores, offsets, metrics, options, ideal_labels))
