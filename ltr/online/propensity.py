"""Position-bias propensities from a click log, by EM for the position-based model.

The position-based model (PBM) explains a click on document ``d`` of query ``q`` shown at
rank ``k`` as two independent events: the user examined rank ``k`` (probability
``theta_k``) and found the document relevant (probability ``gamma_{q,d}``)::

    P(click | q, d, k) = theta_k * gamma_{q,d}

Neither event is observed, only the click, so both are estimated together by
expectation-maximisation, as in Wang, Golbandi, Bendersky, Metzler & Najork, *Position
Bias Estimation for Unbiased Learning to Rank in Personal Search* (WSDM 2018), section 4.
This module implements the plain EM of that paper, **without** its regression-EM step
(which replaces ``gamma_{q,d}`` by a feature-based model); every ``(q, d)`` pair gets its
own free ``gamma``. Each iteration:

* E-step: a click means examined and relevant. A non-click at rank ``k`` means examined
  and not relevant with posterior ``theta_k (1 - gamma) / (1 - theta_k gamma)``, or not
  examined and relevant with posterior ``(1 - theta_k) gamma / (1 - theta_k gamma)``.
* M-step: ``theta_k`` is the mean posterior of "examined" over the rows shown at rank
  ``k``; ``gamma_{q,d}`` the mean posterior of "relevant" over the rows of ``(q, d)``.

The rows are first collapsed to one cell per ``(q, d, rank)`` with its impression and
click counts, so an iteration is a few ``np.bincount`` calls over the cells, not a loop.

Only the ranks above ``max_rank`` (0-based positions ``0 .. max_rank - 1``) are modelled;
rows shown deeper are **ignored** (not pooled): they are counted in ``rows_ignored`` and
take no part in either ``theta`` or ``gamma``. Rank variation across rankers is what
makes ``theta`` identifiable: a document always shown at the same rank only tells EM the
product ``theta_k * gamma``.

``theta`` and ``gamma`` are identified only up to a common scale (``c * theta``,
``gamma / c`` fit equally well while both stay in [0, 1]), so the result reports
``theta_k / theta_1``: the propensity relative to the top rank, which is what inverse
propensity weighting needs.

Iteration stops (``converged=True``) when, in one step, no ``theta`` moves by more than
``tol`` and the log-likelihood changes by less than ``tol`` relative to its size; or after
``max_iter`` steps (``converged=False``). Both are reported. ``gamma`` is deliberately not
in the criterion: a document clicked more often than any ``theta`` allows has its maximum
likelihood ``gamma`` on the boundary 1, which EM approaches only slowly (thousands of steps
of ever smaller moves that change neither the likelihood nor ``theta``).

:func:`estimate_relevance` re-fits ``gamma`` alone with ``theta`` fixed at an estimate and
an optional Beta prior (``smoothing`` pseudo-impressions): the per-document relevance that
click labels are made of (:mod:`ltr.online.click_labels`), without letting the prior bias
the propensities.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "LOG_COLUMNS",
    "REQUIRED_COLUMNS",
    "PropensityEstimate",
    "estimate_propensities",
    "estimate_relevance",
    "pair_codes",
    "validate_click_log",
]

#: Columns of the click log the platform hands over (one row per shown document).
LOG_COLUMNS: tuple[str, ...] = (
    "impression_id",
    "query_id",
    "doc_id",
    "position",
    "clicked",
    "model_version",
)
#: Columns the estimation reads; ``impression_id`` and ``model_version`` are not needed
#: because PBM treats every shown document as an independent trial.
REQUIRED_COLUMNS: tuple[str, ...] = ("query_id", "doc_id", "position", "clicked")

_EPS = 1e-9  # probabilities are kept in [_EPS, 1 - _EPS] so no posterior divides by 0


@dataclass(frozen=True)
class PropensityEstimate:
    """The result of :func:`estimate_propensities`.

    propensities:  float64 [n_ranks]: ``theta_k / theta_1`` for ranks 1..n_ranks (index 0
                   is rank 1, always 1.0); ``n_ranks = min(max_rank, deepest position + 1)``.
                   A rank inside that range with no impression is NaN.
    relevance:     one row per modelled ``(query_id, doc_id)``: ``gamma`` (EM relevance, on
                   EM's own scale: compare within one estimate only), ``impressions`` and
                   ``clicks`` counted over the modelled rows (position < max_rank).
    examination:   float64 [n_ranks]: the absolute ``theta_k`` EM ended on (one point of
                   the scale ridge described in the module docstring).
    """

    propensities: np.ndarray
    relevance: pd.DataFrame
    iterations: int
    converged: bool
    log_likelihood: float
    tol: float
    max_iter: int
    max_rank: int
    rows_used: int
    rows_ignored: int
    examination: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no per-document relevance; NaN becomes ``None``)."""
        return {
            "method": "pbm-em",
            "propensities": [_json_float(v) for v in self.propensities],
            "examination": [_json_float(v) for v in self.examination],
            "iterations": int(self.iterations),
            "converged": bool(self.converged),
            "log_likelihood": _json_float(self.log_likelihood),
            "tol": float(self.tol),
            "max_iter": int(self.max_iter),
            "max_rank": int(self.max_rank),
            "rows_used": int(self.rows_used),
            "rows_ignored": int(self.rows_ignored),
            "documents": len(self.relevance),
        }


def _log_likelihood(p_click: np.ndarray, clicks: np.ndarray, misses: np.ndarray) -> float:
    """Bernoulli log-likelihood of cells with ``clicks`` and ``misses`` at ``p_click``."""
    return float(np.sum(clicks * np.log(p_click) + misses * np.log1p(-p_click)))


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------- validation
def validate_click_log(log_df: pd.DataFrame, required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    """Raise ``ValueError`` naming what is wrong with a click log, else return ``None``.

    Checks: a DataFrame with the ``required`` columns, at least one row, no missing query
    or document ids, integer ``position >= 0`` and boolean ``clicked`` (NumPy ``bool`` or
    pandas ``boolean`` without missing values; 0/1 integers are refused so that a column
    of click *counts* is not silently read as clicks).
    """
    if not isinstance(log_df, pd.DataFrame):
        raise ValueError(f"click log must be a pandas DataFrame, got {type(log_df).__name__}")
    missing = [c for c in required if c not in log_df.columns]
    if missing:
        raise ValueError(f"click log is missing column(s) {missing}; required: {list(required)}")
    if len(log_df) == 0:
        raise ValueError("click log is empty: no impressions to learn from")
    for col in ("query_id", "doc_id"):
        if col in required and log_df[col].isna().any():
            raise ValueError(
                f"click log column {col!r} has {int(log_df[col].isna().sum())} missing ids"
            )
    if "position" in required:
        pos = log_df["position"]
        if not pd.api.types.is_integer_dtype(pos.dtype) or pos.isna().any():
            raise ValueError(
                f"click log column 'position' must hold integers (0-based ranks), "
                f"got dtype {pos.dtype}"
            )
        negative = int((pos < 0).sum())
        if negative:
            raise ValueError(
                f"click log column 'position' has {negative} negative value(s) "
                f"(min {int(pos.min())}); positions are 0-based ranks"
            )
    if "clicked" in required:
        clicked = log_df["clicked"]
        if not pd.api.types.is_bool_dtype(clicked.dtype) or clicked.isna().any():
            raise ValueError(
                f"click log column 'clicked' must be boolean without missing values, "
                f"got dtype {clicked.dtype}"
            )


def pair_codes(log_df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer code per row for its ``(query_id, doc_id)`` pair, and the pairs by code.

    Returns ``codes: int64 [n_rows]`` and a DataFrame with ``query_id``, ``doc_id``
    (strings) whose row ``i`` is the pair of code ``i``.
    """
    q_codes, q_uniques = pd.factorize(log_df["query_id"].astype(str), sort=False)
    d_codes, d_uniques = pd.factorize(log_df["doc_id"].astype(str), sort=False)
    key = q_codes.astype(np.int64) * max(len(d_uniques), 1) + d_codes.astype(np.int64)
    unique_keys, codes = np.unique(key, return_inverse=True)
    n_docs = max(len(d_uniques), 1)
    pairs = pd.DataFrame(
        {
            "query_id": np.asarray(q_uniques, dtype=object)[unique_keys // n_docs],
            "doc_id": np.asarray(d_uniques, dtype=object)[unique_keys % n_docs],
        }
    )
    return codes.astype(np.int64), pairs


# ------------------------------------------------------------------------------- EM
@dataclass(frozen=True)
class _Cells:
    """The modelled rows collapsed to one cell per ``(pair, rank)``."""

    pairs: pd.DataFrame  # query_id, doc_id of each pair code
    cell_pair: np.ndarray  # int64 [n_cells]
    cell_rank: np.ndarray  # int64 [n_cells] (0-based)
    impressions: np.ndarray  # float64 [n_cells]
    clicks: np.ndarray  # float64 [n_cells]
    shown_at_rank: np.ndarray  # float64 [n_ranks]
    rows_used: int
    rows_ignored: int

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def n_ranks(self) -> int:
        return len(self.shown_at_rank)

    def per_pair(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.cell_pair, weights=values, minlength=self.n_pairs)


def _cells(log_df: pd.DataFrame, max_rank: int) -> _Cells:
    position = log_df["position"].to_numpy(dtype=np.int64)
    kept = position < max_rank
    rows_used = int(kept.sum())
    if rows_used == 0:
        raise ValueError(f"no click-log row has position < max_rank={max_rank}")
    rank = position[kept]
    clicked = log_df["clicked"].to_numpy(dtype=bool)[kept]
    n_ranks = int(rank.max()) + 1
    pair, pairs = pair_codes(log_df.loc[kept, ["query_id", "doc_id"]])
    cells, cell_of_row = np.unique(pair * n_ranks + rank, return_inverse=True)
    return _Cells(
        pairs=pairs,
        cell_pair=cells // n_ranks,
        cell_rank=cells % n_ranks,
        impressions=np.bincount(cell_of_row, minlength=len(cells)).astype(np.float64),
        clicks=np.bincount(cell_of_row, weights=clicked, minlength=len(cells)),
        shown_at_rank=np.bincount(rank, minlength=n_ranks).astype(np.float64),
        rows_used=rows_used,
        rows_ignored=len(log_df) - rows_used,
    )


def _check_iteration_args(tol: float, max_iter: int) -> None:
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")


def _em(
    cells: _Cells,
    theta: np.ndarray,
    *,
    fit_theta: bool,
    prior: tuple[float, float],
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, int, bool, float]:
    """EM from ``theta`` (kept fixed unless ``fit_theta``); ``gamma`` starts at 0.5 and
    gets ``prior = (a, b)`` pseudo-counts of relevant / irrelevant impressions.

    Returns ``(theta, gamma, iterations, converged, log_likelihood)``.
    """
    c, n = cells.clicks, cells.impressions
    nc = n - c
    observed = cells.shown_at_rank > 0
    rank_denominator = np.where(observed, cells.shown_at_rank, 1.0)
    gamma_denominator = cells.per_pair(n) + prior[0] + prior[1]
    gamma = np.full(cells.n_pairs, 0.5)
    log_likelihood = _log_likelihood(theta[cells.cell_rank] * gamma[cells.cell_pair], c, nc)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported after the loop)
        t = theta[cells.cell_rank]
        g = gamma[cells.cell_pair]
        miss = 1.0 - t * g  # P(no click)
        new_theta = theta
        if fit_theta:
            examined = c + nc * (t * (1.0 - g) / miss)
            new_theta = (
                np.bincount(cells.cell_rank, weights=examined, minlength=cells.n_ranks)
                / rank_denominator
            )
            new_theta = np.clip(np.where(observed, new_theta, 0.5), _EPS, 1.0 - _EPS)
        relevant = c + nc * ((1.0 - t) * g / miss)
        new_gamma = (cells.per_pair(relevant) + prior[0]) / gamma_denominator
        new_gamma = np.clip(new_gamma, _EPS, 1.0 - _EPS)
        new_ll = _log_likelihood(new_theta[cells.cell_rank] * new_gamma[cells.cell_pair], c, nc)
        theta_change = float(np.max(np.abs(new_theta - theta)))
        ll_change = abs(new_ll - log_likelihood) / max(abs(log_likelihood), 1.0)
        theta, gamma, log_likelihood = new_theta, new_gamma, new_ll
        if theta_change < tol and ll_change < tol:
            converged = True
            break
    if not converged:
        log.warning("PBM EM did not converge within %d iterations (tol %g)", max_iter, tol)
    return theta, gamma, iterations, converged, log_likelihood


def _relevance_frame(cells: _Cells, gamma: np.ndarray) -> pd.DataFrame:
    return cells.pairs.assign(
        gamma=gamma,
        impressions=cells.per_pair(cells.impressions).astype(np.int64),
        clicks=cells.per_pair(cells.clicks).astype(np.int64),
    )


def estimate_propensities(
    log_df: pd.DataFrame,
    *,
    max_rank: int = 10,
    tol: float = 1e-6,
    max_iter: int = 2000,
) -> PropensityEstimate:
    """Fit PBM by plain EM on ``log_df`` (see the module docstring) and return the estimate.

    log_df:   the click log, one row per shown document (columns in :data:`LOG_COLUMNS`;
              :data:`REQUIRED_COLUMNS` are read).
    max_rank: ranks modelled (positions ``0 .. max_rank - 1``); deeper rows are ignored.
    tol:      stop when no ``theta`` moves by more than ``tol`` and the log-likelihood by
              less than ``tol`` times its size in one step.
    max_iter: stop after this many iterations even if not converged (``converged=False``).

    Raises ``ValueError`` for an invalid log (:func:`validate_click_log`), for bad
    arguments, when no row lies above ``max_rank`` or when rank 1 was never shown.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    _check_iteration_args(tol, max_iter)
    validate_click_log(log_df)
    cells = _cells(log_df, max_rank)
    if cells.shown_at_rank[0] == 0:
        raise ValueError("no click-log row has position 0: propensities are relative to rank 1")
    theta, gamma, iterations, converged, log_likelihood = _em(
        cells,
        np.full(cells.n_ranks, 0.5),
        fit_theta=True,
        prior=(0.0, 0.0),
        tol=tol,
        max_iter=max_iter,
    )
    observed = cells.shown_at_rank > 0
    log.info(
        "PBM EM: %d rows (%d ignored below rank %d), %d documents, %d iterations, "
        "converged=%s, log-likelihood %.3f",
        cells.rows_used,
        cells.rows_ignored,
        max_rank,
        cells.n_pairs,
        iterations,
        converged,
        log_likelihood,
    )
    return PropensityEstimate(
        propensities=np.where(observed, theta / theta[0], np.nan),
        relevance=_relevance_frame(cells, gamma),
        iterations=iterations,
        converged=converged,
        log_likelihood=log_likelihood,
        tol=tol,
        max_iter=max_iter,
        max_rank=max_rank,
        rows_used=cells.rows_used,
        rows_ignored=cells.rows_ignored,
        examination=np.where(observed, theta, np.nan),
    )


def estimate_relevance(
    log_df: pd.DataFrame,
    estimate: PropensityEstimate,
    *,
    smoothing: float = 0.0,
    tol: float = 1e-6,
    max_iter: int = 2000,
) -> pd.DataFrame:
    """``gamma`` per ``(query_id, doc_id)`` of ``log_df`` with examination fixed at
    ``estimate.examination``: EM over ``gamma`` alone, with a Beta prior of ``smoothing``
    pseudo-impressions whose mean is the estimate's impression-weighted mean ``gamma``.

    The prior is the maximum-a-posteriori remedy for documents with few examined
    impressions: one click in a handful of views at rank 9 has maximum-likelihood ``gamma``
    1, which would label a random document highly relevant. Because the prior weighs
    against the *examined* views (an unexamined non-click says nothing about relevance), a
    document seen only deep is shrunk more than one seen as often at the top. Fitting
    ``theta`` under such a prior would bias it (shrinking ``gamma`` pushes ``theta`` up), so
    ``theta`` stays at the plain EM estimate. ``smoothing=0`` gives ``estimate.relevance``
    again (for the same log). Returns columns ``query_id, doc_id, gamma, impressions,
    clicks``; rows shown at or below ``estimate.max_rank`` are ignored as in the estimate.
    """
    if not (smoothing >= 0 and math.isfinite(smoothing)):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    _check_iteration_args(tol, max_iter)
    validate_click_log(log_df)
    cells = _cells(log_df, estimate.max_rank)
    theta = np.full(cells.n_ranks, np.nan)
    known = min(cells.n_ranks, len(estimate.examination))
    theta[:known] = estimate.examination[:known]
    if np.isnan(theta[cells.cell_rank]).any():
        raise ValueError("the log shows documents at ranks the estimate has no propensity for")
    rel = estimate.relevance
    weights = rel["impressions"].to_numpy(np.float64)
    mean = float(np.average(rel["gamma"].to_numpy(np.float64), weights=weights))
    _, gamma, iterations, converged, _ = _em(
        cells,
        np.nan_to_num(theta, nan=0.5),
        fit_theta=False,
        prior=(smoothing * mean, smoothing * (1.0 - mean)),
        tol=tol,
        max_iter=max_iter,
    )
    log.info(
        "PBM relevance: %d documents, smoothing %g towards %.4f, %d iterations, converged=%s",
        cells.n_pairs,
        smoothing,
        mean,
        iterations,
        converged,
    )
    return _relevance_frame(cells, gamma)
