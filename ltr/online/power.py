"""Calibration of the online tests on the click simulator: how often they find a known winner.

Everything runs in process (no service, no HTTP) on a held-out LETOR dataset and two
rankers' scores per document. Simulated traffic samples queries uniformly with replacement
among the queries with at least one relevant document (label > 0); a user is one query.

* **Interleaving** (:func:`interleaving_power`): per impression, the two rankings of the
  query are merged by :func:`serving.interleaving.team_draft_interleave` (the serving code
  itself, ``rng_seed = "power:<seed>:<impression>"``, ``k`` documents shown), a
  :class:`ltr.online.clickmodel.ClickModel` clicks on the shown list given its graded labels,
  and :func:`serving.interleaving.interleave_credit` credits the teams. Impressions with at
  least one attributed click go to :func:`ltr.online.analysis.interleaving_test`. The power
  is the fraction of seeds with ``p < alpha`` *and* the better ranker as winner; with the
  same scores on both sides (A/A, ``better=None``) it is the false-win rate.
* **A/B** (:func:`ab_required_impressions`): each impression goes to one ranker by a fair
  coin and shows its top ``k``; the per-user metric is a click metric of that one impression
  (default ``"click_mrr"``: 1 / rank of the first click, 0 without a click: the online
  counterpart of MRR, sensitive to where the first useful result sits). Welch's test
  (:func:`ltr.online.analysis.ab_test`) on a doubling grid of total impressions finds the
  smallest one at which ``target_power`` of the seeds detect the better ranker.

Seeds make every number reproducible: query draws, arm assignment and clicks of seed ``s``
come from ``numpy.random.default_rng`` seeded by ``s`` (and the grid size for A/B).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.online.analysis import ab_test, interleaving_test
from ltr.online.clickmodel import ClickModel
from serving.interleaving import interleave_credit, team_draft_interleave

__all__ = [
    "ABPowerResult",
    "PowerResult",
    "QueryPool",
    "RankerPair",
    "ab_required_impressions",
    "build_query_pool",
    "interleaving_power",
    "mq2008_ranker_pair",
    "simulate_ab",
    "simulate_interleaving",
]

logger = logging.getLogger(__name__)

ABMetric = Literal["click_mrr", "click@1", "clicks"]
AB_METRICS: tuple[ABMetric, ...] = ("click_mrr", "click@1", "clicks")
Side = Literal["a", "b"]


# ---------------------------------------------------------------------------- query pool
@dataclass(frozen=True)
class QueryPool:
    """The queries traffic is drawn from, with both rankings of each.

    Documents are named by their position inside the query (``"0"``, ``"1"``, ...), which
    is unique even where a file repeats a document id. ``rankings_*[q]``: those names, best
    first by score (equal scores keep file order, as a service would: it has no labels);
    ``labels[q]``: graded labels by position.
    """

    qids: tuple[str, ...]
    rankings_a: tuple[list[str], ...]
    rankings_b: tuple[list[str], ...]
    labels: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.qids)


def build_query_pool(
    dataset: LetorDataset, scores_a: np.ndarray, scores_b: np.ndarray
) -> QueryPool:
    """Queries of ``dataset`` with at least one relevant document, ranked by both scorers.

    scores_a, scores_b: [n_docs] aligned with the dataset's rows.
    """
    sa = np.asarray(scores_a, dtype=np.float64)
    sb = np.asarray(scores_b, dtype=np.float64)
    for name, s in (("scores_a", sa), ("scores_b", sb)):
        if s.shape != (dataset.n_docs,):
            raise ValueError(f"{name} has shape {s.shape}, expected ({dataset.n_docs},)")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{name} has non-finite values")
    qids, ra, rb, labels = [], [], [], []
    for qid, rows in dataset.iter_queries():
        lab = dataset.labels[rows].astype(np.float64)
        if not np.any(lab > 0):
            continue
        names = np.array([str(i) for i in range(len(lab))], dtype=object)
        qids.append(qid)
        ra.append(names[np.argsort(-sa[rows], kind="stable")].tolist())
        rb.append(names[np.argsort(-sb[rows], kind="stable")].tolist())
        labels.append(lab)
    if not qids:
        raise ValueError("no query of the dataset has a relevant document (label > 0)")
    return QueryPool(tuple(qids), tuple(ra), tuple(rb), tuple(labels))


# ---------------------------------------------------------------------------- interleaving
def simulate_interleaving(
    pool: QueryPool,
    n_impressions: int,
    seed: int,
    *,
    click_model: ClickModel = ClickModel(),
    k: int = 10,
) -> list[str]:
    """Winners (``"a"``/``"b"``/``"tie"``) of the impressions of one seed that have at least
    one click credited to a team; impressions without one are left out."""
    if n_impressions < 1:
        raise ValueError(f"n_impressions must be >= 1, got {n_impressions}")
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, len(pool), size=n_impressions)
    winners: list[str] = []
    for i, q in enumerate(queries.tolist()):
        shown, team = team_draft_interleave(
            pool.rankings_a[q], pool.rankings_b[q], rng_seed=f"power:{seed}:{i}", k=k
        )
        labels = pool.labels[q][[int(doc) for doc in shown]]
        clicked = click_model.clicks(labels, rng)
        if len(clicked) == 0:
            continue
        credit = interleave_credit(team, [shown[j] for j in clicked.tolist()])
        if credit["a"] + credit["b"] > 0:
            winners.append(credit["winner"])
    return winners


@dataclass(frozen=True)
class PowerResult:
    """Interleaving outcomes over seeds.

    ``power``: fraction of seeds whose test is significant with ``better`` as winner; when
    ``better`` is ``None`` (A/A) the fraction significant with either winner (false wins).
    ``significant``: seeds with a winner, by winner.
    """

    n_seeds: int
    n_impressions: int
    alpha: float
    better: str | None
    power: float
    significant: dict[str, int]
    mean_preference: float
    mean_clicked_impressions: float
    p_values: list[float | None]
    seconds: float

    @property
    def false_wins(self) -> int:
        """Seeds with a significant winner other than ``better`` (any winner for A/A)."""
        return sum(n for side, n in self.significant.items() if side != self.better)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "false_wins": self.false_wins}


def interleaving_power(
    dataset: LetorDataset,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    n_impressions: int = 2000,
    seeds: Iterable[int] = range(60),
    alpha: float = 0.05,
    better: Side | None = "b",
    click_model: ClickModel = ClickModel(),
    k: int = 10,
) -> PowerResult:
    """Run :func:`simulate_interleaving` and :func:`interleaving_test` once per seed.

    For an A/A test pass the same scores twice and ``better=None``.
    """
    if better not in ("a", "b", None):
        raise ValueError(f"better must be 'a', 'b' or None (A/A), got {better!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    began = time.perf_counter()
    pool = build_query_pool(dataset, scores_a, scores_b)
    significant = {"a": 0, "b": 0}
    p_values: list[float | None] = []
    preferences, clicked = [], []
    for seed in seeds:
        winners = simulate_interleaving(pool, n_impressions, seed, click_model=click_model, k=k)
        if not winners:  # no click at all: nothing significant
            p_values.append(None)
            clicked.append(0)
            continue
        res = interleaving_test(winners, alpha=alpha, seed=seed)
        p_values.append(res.p_value)
        preferences.append(res.preference)
        clicked.append(res.n)
        if res.winner is not None:
            significant[res.winner] += 1
    hits = significant[better] if better is not None else sum(significant.values())
    seconds = time.perf_counter() - began
    logger.info("interleaving power: %d seeds x %d in %.1f s", len(seeds), n_impressions, seconds)
    return PowerResult(
        n_seeds=len(seeds),
        n_impressions=n_impressions,
        alpha=alpha,
        better=better,
        power=hits / len(seeds),
        significant=significant,
        mean_preference=float(np.mean(preferences)) if preferences else 0.0,
        mean_clicked_impressions=float(np.mean(clicked)),
        p_values=p_values,
        seconds=seconds,
    )


# ------------------------------------------------------------------------------------- A/B
def _top_k_attraction(
    pool: QueryPool, rankings: Sequence[list[str]], click_model: ClickModel, k: int
) -> np.ndarray:
    """[n_queries, k] attraction of the documents each ranker shows; 0 past a short list."""
    out = np.zeros((len(pool), k))
    for q, ranking in enumerate(rankings):
        top = [int(doc) for doc in ranking[:k]]
        out[q, : len(top)] = click_model.attraction(pool.labels[q][top])
    return out


def _click_metric(clicks: np.ndarray, metric: ABMetric) -> np.ndarray:
    """clicks: bool [n, k] -> per-impression metric [n]."""
    if metric == "clicks":
        return clicks.sum(axis=1).astype(np.float64)
    if metric == "click@1":
        return clicks[:, 0].astype(np.float64)
    first = np.argmax(clicks, axis=1)
    return np.where(clicks.any(axis=1), 1.0 / (first + 1.0), 0.0)


def simulate_ab(
    pool: QueryPool,
    n_impressions: int,
    seed: int,
    *,
    click_model: ClickModel = ClickModel(),
    k: int = 10,
    metric: ABMetric = "click_mrr",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user metric values of arm ``a`` and arm ``b`` (fair coin per impression)."""
    attraction = (
        _top_k_attraction(pool, pool.rankings_a, click_model, k),
        _top_k_attraction(pool, pool.rankings_b, click_model, k),
    )
    return _simulate_ab(attraction, n_impressions, seed, click_model, metric)


def _simulate_ab(
    attraction: tuple[np.ndarray, np.ndarray],
    n_impressions: int,
    seed: int,
    click_model: ClickModel,
    metric: ABMetric,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised: the click model of :meth:`ClickModel.clicks`, drawn for all impressions
    at once. attraction: ([n_queries, k], [n_queries, k]) of arm a and arm b."""
    if metric not in AB_METRICS:
        raise ValueError(f"unknown A/B metric {metric!r}; valid: {', '.join(AB_METRICS)}")
    if n_impressions < 1:
        raise ValueError(f"n_impressions must be >= 1, got {n_impressions}")
    att_a, att_b = attraction
    k = att_a.shape[1]
    rng = np.random.default_rng([seed, n_impressions])
    queries = rng.integers(0, len(att_a), size=n_impressions)
    to_b = rng.random(n_impressions) < 0.5
    shown = np.where(to_b[:, None], att_b[queries], att_a[queries])
    u = rng.random(shown.shape)
    if click_model.kind == "pbm":
        clicks = u < click_model.examination(k)[None, :] * shown
    else:  # cascade: only the first position whose draw clicks
        hits = u < shown
        first = np.argmax(hits, axis=1)
        clicks = np.zeros_like(hits)
        rows = np.flatnonzero(hits.any(axis=1))
        clicks[rows, first[rows]] = True
    values = _click_metric(clicks, metric)
    return values[~to_b], values[to_b]


@dataclass(frozen=True)
class ABPowerResult:
    """Measured A/B power per total impressions; ``required_impressions`` is the first grid
    point reaching ``target_power`` (``None`` if none did up to the grid's end)."""

    metric: str
    alpha: float
    target_power: float
    n_seeds: int
    grid: list[dict[str, float]] = field(default_factory=list)
    required_impressions: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ab_required_impressions(
    dataset: LetorDataset,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    target_power: float = 0.9,
    seeds: Iterable[int] = range(60),
    alpha: float = 0.05,
    better: Side = "b",
    metric: ABMetric = "click_mrr",
    start: int = 1000,
    max_impressions: int = 1_024_000,
    click_model: ClickModel = ClickModel(),
    k: int = 10,
) -> ABPowerResult:
    """Power of an A/B test at ``start, 2*start, 4*start, ...`` total impressions, until
    ``target_power`` of the seeds detect ``better`` (significant Welch test with ``better``
    as winner) or ``max_impressions`` is passed."""
    if not 0.0 < target_power <= 1.0:
        raise ValueError(f"target_power must lie in (0, 1], got {target_power}")
    if start < 4 or max_impressions < start:
        raise ValueError(f"need 4 <= start <= max_impressions, got {start}, {max_impressions}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    began = time.perf_counter()
    pool = build_query_pool(dataset, scores_a, scores_b)
    attraction = (
        _top_k_attraction(pool, pool.rankings_a, click_model, k),
        _top_k_attraction(pool, pool.rankings_b, click_model, k),
    )
    grid: list[dict[str, float]] = []
    required: int | None = None
    n = start
    while n <= max_impressions:
        t0 = time.perf_counter()
        detected = 0
        for seed in seeds:
            va, vb = _simulate_ab(attraction, n, seed, click_model, metric)
            res = ab_test(va, vb, alpha=alpha, control="a", treatment="b", metric=metric)
            detected += res.winner == better
        power = detected / len(seeds)
        grid.append({"impressions": n, "power": power, "seconds": time.perf_counter() - t0})
        logger.info("A/B %s: %d impressions -> power %.3f", metric, n, power)
        if power >= target_power:
            required = n
            break
        n *= 2
    return ABPowerResult(
        metric=metric,
        alpha=alpha,
        target_power=target_power,
        n_seeds=len(seeds),
        grid=grid,
        required_impressions=required,
        seconds=time.perf_counter() - began,
    )


# ---------------------------------------------------------------------------- ranker pair
# LETOR 4.0 feature numbers (1-based) of BM25 (21-25) and LMIR.JM (36-40): the strongest
# single features of MQ2008; the weaker ranker is trained without them.
WEAK_DROPPED_FEATURES: tuple[int, ...] = (*range(21, 26), *range(36, 41))


@dataclass(frozen=True)
class RankerPair:
    """Two rankers' scores on the held-out test split of one fold, ``a`` the weaker."""

    test: LetorDataset
    scores_a: np.ndarray
    scores_b: np.ndarray
    ndcg10_a: float
    ndcg10_b: float
    description: str
    seconds: float

    @property
    def difference(self) -> float:
        return self.ndcg10_b - self.ndcg10_a


def weak_columns(ds: LetorDataset) -> LetorDataset:
    """``ds`` without the features of :data:`WEAK_DROPPED_FEATURES` (1-based ids)."""
    keep = [c for c in range(ds.n_features) if c + 1 not in WEAK_DROPPED_FEATURES]
    return LetorDataset(
        features=ds.features[:, keep],
        labels=ds.labels,
        qids=ds.qids,
        doc_ids=ds.doc_ids,
        feature_names=[ds.feature_names[c] for c in keep],
        source=ds.source,
    )


def mq2008_ranker_pair(
    root: str | Path, *, fold: int = 1, seed: int = 42, threads: int = 1
) -> RankerPair:
    """A pair about 0.07 NDCG@10 apart on MQ2008 fold ``fold``'s test split.

    ``b``: LightGBM LambdaMART with the default parameters of
    :class:`ltr.models.gbdt.LightGBMRanker` (early stopping on validation NDCG@10) on all 46
    features. ``a``: the same recipe without the BM25 and LMIR.JM features
    (:data:`WEAK_DROPPED_FEATURES`), a realistic "older feature set" ranker. NDCG@10 with the
    platform's conventions (:mod:`ltr.metrics.ranking`: queries without a relevant document
    left out). On Fold1: about 0.661 vs 0.730.
    """
    from ltr.data.folds import load_fold
    from ltr.metrics import evaluate
    from ltr.models.gbdt import LightGBMRanker

    began = time.perf_counter()
    train, valid, test = load_fold(root, fold)
    columns = weak_columns
    strong, _ = LightGBMRanker.fit(train, valid, seed=seed, threads=threads)
    weak, _ = LightGBMRanker.fit(columns(train), columns(valid), seed=seed, threads=threads)
    scores_b = strong.score(test)
    scores_a = weak.score(columns(test))

    def ndcg10(scores: np.ndarray) -> float:
        return evaluate(test.labels, scores, test.offsets, ["ndcg@10"])["ndcg@10"]

    return RankerPair(
        test=test,
        scores_a=scores_a,
        scores_b=scores_b,
        ndcg10_a=ndcg10(scores_a),
        ndcg10_b=ndcg10(scores_b),
        description=(
            f"MQ2008 Fold{fold}, test split: b = LightGBM LambdaMART on all "
            f"{train.n_features} features ({strong.best_iteration} trees), a = the same "
            f"without BM25/LMIR.JM features {WEAK_DROPPED_FEATURES[0]}-"
            f"{WEAK_DROPPED_FEATURES[4]}, {WEAK_DROPPED_FEATURES[5]}-"
            f"{WEAK_DROPPED_FEATURES[-1]} ({weak.best_iteration} trees)"
        ),
        seconds=time.perf_counter() - began,
    )
