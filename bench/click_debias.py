"""Click debiasing on real data: PBM-EM propensities, and rankers trained on click labels.

    python -m bench.click_debias [--datasets DIR] [--fold 1] [--impressions-per-query 200]
                                 [--seeds 0 1 2 3 4] [--loggers lgbm|pagerank]
                                 [--method em|ips] [--smoothing 10] [--grading uniform|quantile]
                                 [--max-grade 2] [--model-seeds 3] [--eta 2]

On MQ2008 (fold ``--fold``: train S1-S3, test S5; labels 0-2) it simulates logged traffic:

1. Logging rankers (three, so the same document is shown at different ranks): LightGBM
   lambdarank ``lgbm-a`` trained on the true labels of a random 10% of the train queries,
   ``lgbm-a-noisy`` (its scores plus Gaussian noise of one score standard deviation, drawn
   per impression) and a third one: ``lgbm-b`` trained on another 10% (``--loggers lgbm``)
   or ``pagerank``, a popularity heuristic ordering by the PageRank feature (feature 41,
   worse than random on MQ2008; ``--loggers pagerank``).
2. Traffic: impressions sample train queries with replacement (``--impressions-per-query``
   times the number of train queries), pick a logging ranker uniformly, show its top 10 and
   draw clicks from ``ClickModel("pbm", eta)`` with the graded labels as truth (``--eta``,
   default 2: users who look at rank 2 a quarter as often as at rank 1; with ``--eta 1`` the
   naive labels already train a ranker as good as the true grades on MQ2008 and debiasing
   has no margin to win, see BENCHMARKS.md).
3. PBM-EM (:mod:`ltr.online.propensity`) estimates the propensities of ranks 1-10; they are
   compared with the true ``(1/r)**eta``.
4. Labels (:mod:`ltr.online.click_labels`): naive CTR and debiased (EM relevance or IPS),
   both shrunk by the same ``--smoothing`` pseudo-impressions and graded the same way.
   Label quality is measured directly: NDCG@10 of the click labels (as a ranking, ties
   pessimistic) against the true grades of the same training documents.
5. LightGBM lambdarank models with the same parameters on the train split's features with
   each label set, scored by NDCG@10 on the test split's graded labels (the mean of
   ``--model-seeds`` bagged models per label set, to damp the learner's own variance).
   A model on the true labels of the same documents and the logging rankers are printed
   as references.

Targets: max |propensity error| over ranks 1-10 <= 0.05 (every seed), and debiased
NDCG@10 > naive NDCG@10 (mean over seeds). Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOP_K = 10
LOGGER_FRACTION = 0.1
NOISY_SD = 1.0  # noise of the noisy logger, in standard deviations of its scores
PAGERANK_FEATURE = 40  # 0-based column of MQ2008 feature 41 (PageRank, document-only)
PROPENSITY_TOLERANCE = 0.05
LOGGER_PARAMS: dict[str, Any] = {
    "num_leaves": 7,
    "learning_rate": 0.1,
    "min_data_in_leaf": 5,
    "rounds": 30,
}
CLICK_MODEL_PARAMS: dict[str, Any] = {
    "num_leaves": 15,
    "learning_rate": 0.05,
    "min_data_in_leaf": 20,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.8,
    "rounds": 150,
}


@dataclass(frozen=True)
class DebiasConfig:
    """One simulated run (the CLI flags; the constants above are the rest)."""

    datasets: str
    fold: int = 1
    impressions_per_query: int = 200
    eta: float = 2.0
    seed: int = 0
    loggers: str = "lgbm"
    method: str = "em"
    smoothing: float = 10.0
    grading: str = "uniform"
    max_grade: int = 2
    model_seeds: int = 3
    train_models: bool = True


@dataclass
class DebiasResult:
    """What one run measured."""

    config: DebiasConfig
    log_rows: int
    impressions: int
    clicks: int
    propensities: list[float]
    true_propensities: list[float]
    errors: list[float]
    max_error: float
    em_iterations: int
    em_converged: bool
    seconds: dict[str, float] = field(default_factory=dict)
    label_ndcg10: dict[str, float] = field(default_factory=dict)
    pair_precision: dict[str, float] = field(default_factory=dict)
    label_pairs: dict[str, int] = field(default_factory=dict)
    ndcg10: dict[str, float] = field(default_factory=dict)
    train_docs: dict[str, int] = field(default_factory=dict)


def train_lambdarank(ds: Any, params: dict[str, Any], seed: int) -> Any:
    """A LightGBM lambdarank booster on ``ds`` (fixed rounds; no early stopping, so no
    held-out labels take part in training)."""
    import lightgbm as lgb

    p = dict(params)
    rounds = int(p.pop("rounds"))
    lgb_params = {
        "objective": "lambdarank",
        "metric": "None",
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        "num_threads": 2,
        **p,
    }
    dtrain = lgb.Dataset(ds.features, label=ds.labels, group=ds.group_sizes)
    return lgb.train(lgb_params, dtrain, num_boost_round=rounds)


def logging_rankers(
    train: Any, seed: int, kind: str = "lgbm"
) -> tuple[dict[str, tuple[np.ndarray, float]], dict[str, Any]]:
    """``name -> (scores of every train row, per-impression noise sd)`` of the three
    logging rankers (module docstring), and the LightGBM boosters among them by name."""
    if kind not in ("lgbm", "pagerank"):
        raise ValueError(f"unknown loggers {kind!r}; valid: lgbm, pagerank")
    rng = np.random.default_rng(seed)
    order = rng.permutation(train.n_queries)
    n_part = max(2, round(LOGGER_FRACTION * train.n_queries))
    names = ("lgbm-a", "lgbm-b") if kind == "lgbm" else ("lgbm-a",)
    rankers: dict[str, tuple[np.ndarray, float]] = {}
    boosters: dict[str, Any] = {}
    for i, name in enumerate(names):
        part = train.subset_queries(order[i * n_part : (i + 1) * n_part])
        boosters[name] = train_lambdarank(part, LOGGER_PARAMS, seed + i)
        scores = np.asarray(boosters[name].predict(train.features), dtype=np.float64)
        rankers[name] = (scores, 0.0)
    a_scores = rankers["lgbm-a"][0]
    rankers["lgbm-a-noisy"] = (a_scores, NOISY_SD * float(np.std(a_scores)))
    if kind == "pagerank":
        rankers["pagerank"] = (train.features[:, PAGERANK_FEATURE].astype(np.float64), 0.0)
    return rankers, boosters


def simulate_log(
    ds: Any,
    rankers: dict[str, tuple[np.ndarray, float]],
    n_impressions: int,
    eta: float,
    seed: int,
    top_k: int = TOP_K,
) -> pd.DataFrame:
    """The click log (platform schema) of ``n_impressions`` simulated impressions."""
    from ltr.online.clickmodel import ClickModel

    model = ClickModel("pbm", eta=eta, max_grade=int(ds.labels.max()))
    rng = np.random.default_rng(seed)
    offsets = ds.offsets
    names = list(rankers)
    queries = rng.integers(0, ds.n_queries, size=n_impressions)
    variants = rng.integers(0, len(names), size=n_impressions)
    rows: list[np.ndarray] = []
    clicked: list[np.ndarray] = []
    for q, v in zip(queries, variants, strict=True):
        lo, hi = int(offsets[q]), int(offsets[q + 1])
        scores, noise_sd = rankers[names[v]]
        s = scores[lo:hi]
        if noise_sd > 0:
            s = s + rng.normal(0.0, noise_sd, size=hi - lo)
        shown = lo + np.argsort(-s, kind="stable")[:top_k]
        hit = np.zeros(len(shown), dtype=bool)
        hit[model.clicks(ds.labels[shown], rng)] = True
        rows.append(shown)
        clicked.append(hit)
    lengths = np.array([len(r) for r in rows])
    row = np.concatenate(rows)
    impression = np.repeat(np.arange(n_impressions), lengths)
    return pd.DataFrame(
        {
            "impression_id": np.char.add("imp-", impression.astype(str)),
            "query_id": ds.qids[row].astype(str),
            "doc_id": ds.doc_ids[row].astype(str),
            "position": np.concatenate([np.arange(n) for n in lengths]).astype(np.int64),
            "clicked": np.concatenate(clicked),
            "model_version": np.repeat(np.asarray(names, dtype=object)[variants], lengths),
        }
    )


def ndcg10(booster: Any, test: Any) -> float:
    from ltr.metrics.ranking import evaluate

    scores = np.asarray(booster.predict(test.features), dtype=np.float64)
    return float(evaluate(test.labels, scores, test.offsets, ["ndcg@10"])["ndcg@10"])


def true_labels_of(ds: Any, source: Any) -> np.ndarray:
    """The labels ``source`` gives the documents of ``ds`` (matched on query and doc id)."""
    rows = pd.MultiIndex.from_arrays([ds.qids.astype(str), ds.doc_ids.astype(str)])
    everything = pd.MultiIndex.from_arrays([source.qids.astype(str), source.doc_ids.astype(str)])
    where = everything.get_indexer(rows)
    if (where < 0).any():
        raise ValueError("some documents are not in the source dataset")
    return np.asarray(source.labels[where], dtype=np.float32)


def label_quality(ds: Any, truth: np.ndarray) -> float:
    """NDCG@10 of the click labels of ``ds``, read as a ranking, against ``truth``."""
    from ltr.metrics.ranking import evaluate

    return float(evaluate(truth, ds.labels.astype(np.float64), ds.offsets, ["ndcg@10"])["ndcg@10"])


def pair_precision(ds: Any, truth: np.ndarray) -> tuple[float, int]:
    """Of the within-query document pairs the click labels of ``ds`` order (the pairs
    lambdarank learns from), the fraction ``truth`` orders the same way; and their count."""
    agree = total = 0
    for _, rows in ds.iter_queries():
        label, true = ds.labels[rows], truth[rows]
        ordered = label[:, None] > label[None, :]
        agree += int(np.sum(ordered & (true[:, None] > true[None, :])))
        total += int(np.sum(ordered))
    return (agree / total if total else float("nan")), total


def run(config: DebiasConfig) -> DebiasResult:
    """Simulate, estimate and (``config.train_models``) train and score; see the docstring."""
    from ltr.data.folds import load_fold
    from ltr.online.click_labels import debiased_labels, labelled_dataset, naive_labels
    from ltr.online.clickmodel import ClickModel
    from ltr.online.propensity import estimate_propensities

    seconds: dict[str, float] = {}
    began = time.perf_counter()
    train, _vali, test = load_fold(Path(config.datasets) / "mq2008", config.fold)
    seconds["load"] = time.perf_counter() - began

    t = time.perf_counter()
    rankers, boosters = logging_rankers(train, config.seed, config.loggers)
    n_impressions = config.impressions_per_query * train.n_queries
    click_log = simulate_log(train, rankers, n_impressions, config.eta, config.seed + 1000)
    seconds["loggers + simulation"] = time.perf_counter() - t

    t = time.perf_counter()
    estimate = estimate_propensities(click_log, max_rank=TOP_K)
    seconds["em"] = time.perf_counter() - t
    truth = ClickModel("pbm", eta=config.eta).examination(TOP_K)
    errors = np.abs(estimate.propensities[:TOP_K] - truth)
    result = DebiasResult(
        config=config,
        log_rows=len(click_log),
        impressions=n_impressions,
        clicks=int(click_log["clicked"].sum()),
        propensities=[float(x) for x in estimate.propensities],
        true_propensities=[float(x) for x in truth],
        errors=[float(x) for x in errors],
        max_error=float(np.nanmax(errors)) if len(errors) == TOP_K else float("nan"),
        em_iterations=estimate.iterations,
        em_converged=estimate.converged,
        seconds=seconds,
    )
    if not config.train_models:
        return result

    t = time.perf_counter()
    common: dict[str, Any] = {
        "smoothing": config.smoothing,
        "max_grade": config.max_grade,
        "grading": config.grading,
    }
    label_sets = {
        "naive": naive_labels(click_log, **common),
        "debiased": debiased_labels(
            click_log,
            estimate,
            method=config.method,  # type: ignore[arg-type]
            **common,
        ),
    }
    datasets = {name: labelled_dataset(labels, train) for name, labels in label_sets.items()}
    reference = labelled_dataset(label_sets["naive"], train)
    reference.labels = true_labels_of(reference, train)
    for name, ds in datasets.items():
        result.train_docs[name] = ds.n_docs
        truth_of_ds = true_labels_of(ds, train)
        result.label_ndcg10[name] = label_quality(ds, truth_of_ds)
        result.pair_precision[name], result.label_pairs[name] = pair_precision(ds, truth_of_ds)
    datasets["true labels"] = reference
    for name, ds in datasets.items():
        result.ndcg10[name] = float(
            np.mean(
                [
                    ndcg10(train_lambdarank(ds, CLICK_MODEL_PARAMS, config.seed * 100 + s), test)
                    for s in range(config.model_seeds)
                ]
            )
        )
    for name, booster in boosters.items():
        result.ndcg10[f"logger {name}"] = ndcg10(booster, test)
    seconds["labels + training"] = time.perf_counter() - t
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.click_debias", description=__doc__)
    ap.add_argument("--datasets", default=None, help="shared datasets folder")
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--impressions-per-query", type=int, default=200)
    ap.add_argument("--eta", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--loggers", choices=["lgbm", "pagerank"], default="lgbm")
    ap.add_argument("--method", choices=["em", "ips"], default="em")
    ap.add_argument("--smoothing", type=float, default=10.0)
    ap.add_argument("--grading", choices=["uniform", "quantile"], default="uniform")
    ap.add_argument("--max-grade", type=int, default=2)
    ap.add_argument("--model-seeds", type=int, default=3)
    args = ap.parse_args(argv)
    from bench._targets import Targets

    datasets = (
        args.datasets
        or os.environ.get("LTR_DATASETS_DIR")
        or str((Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets").resolve())
    )
    began = time.perf_counter()
    print(
        f"click debiasing, MQ2008 fold {args.fold}, loggers {args.loggers}, "
        f"{args.impressions_per_query} impressions/query, eta {args.eta}, method {args.method}, "
        f"smoothing {args.smoothing}, {args.grading} grades 0-{args.max_grade}; "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    results: list[DebiasResult] = []
    for seed in args.seeds:
        config = DebiasConfig(
            datasets=datasets,
            fold=args.fold,
            impressions_per_query=args.impressions_per_query,
            eta=args.eta,
            seed=seed,
            loggers=args.loggers,
            method=args.method,
            smoothing=args.smoothing,
            grading=args.grading,
            max_grade=args.max_grade,
            model_seeds=args.model_seeds,
        )
        r = run(config)
        results.append(r)
        print(
            f"seed {seed}: {r.impressions} impressions, {r.log_rows} log rows, {r.clicks} clicks;"
            f" EM {r.em_iterations} iterations (converged={r.em_converged})"
        )
        print("  rank      " + " ".join(f"{k:>6d}" for k in range(1, TOP_K + 1)))
        print("  estimated " + " ".join(f"{x:6.3f}" for x in r.propensities))
        print("  true      " + " ".join(f"{x:6.3f}" for x in r.true_propensities))
        print("  |error|   " + " ".join(f"{x:6.3f}" for x in r.errors))
        print(
            "  label NDCG@10 vs truth (train docs): "
            + ", ".join(f"{k} {v:.4f}" for k, v in r.label_ndcg10.items())
            + f"; train docs {r.train_docs}"
        )
        print(
            "  label pairs ordered like the truth: "
            + ", ".join(f"{k} {v:.3f} of {r.label_pairs[k]}" for k, v in r.pair_precision.items())
        )
        print("  test NDCG@10: " + ", ".join(f"{k} {v:.4f}" for k, v in r.ndcg10.items()))
        print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items()))
    naive = float(np.mean([r.ndcg10["naive"] for r in results]))
    debiased = float(np.mean([r.ndcg10["debiased"] for r in results]))
    wins = sum(r.ndcg10["debiased"] > r.ndcg10["naive"] for r in results)
    reference = float(np.mean([r.ndcg10["true labels"] for r in results]))
    print(
        f"mean test NDCG@10 over {len(results)} seed(s): naive {naive:.4f}, debiased "
        f"{debiased:.4f}, margin {debiased - naive:+.4f} (debiased wins {wins} of "
        f"{len(results)}); true labels {reference:.4f}"
    )
    print(f"wall time {time.perf_counter() - began:.1f} s")

    targets = Targets()
    targets.at_most(
        "max |propensity error|, ranks 1-10, worst seed",
        float(max(r.max_error for r in results)),
        PROPENSITY_TOLERANCE,
        fmt=".3f",
    )
    targets.check(
        "debiased NDCG@10 > naive NDCG@10 (mean over seeds)",
        f"{debiased:.4f} vs {naive:.4f} ({debiased - naive:+.4f})",
        "debiased > naive",
        debiased > naive,
    )
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
