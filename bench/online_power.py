"""Calibration of interleaving and A/B on the click simulator, with two real MQ2008 rankers.

    python -m bench.online_power [--datasets DIR] [--fold 1] [--seeds 60] [--queries 2000]
                                 [--aa-seeds 100] [--aa-ranker a|b] [--json PATH]

Trains the pair of :func:`ltr.online.power.mq2008_ranker_pair` (LightGBM on all 46 features
against the same recipe without the BM25 / LMIR.JM features, about 0.07 NDCG@10 apart on the
fold's test split) and, in process with the serving code's Team-Draft interleaving and the
default PBM click model (top 10 shown):

- interleaving power: ``--seeds`` seeds of ``--queries`` simulated queries each; a seed
  detects when the binomial test is significant at alpha = 0.05 with the better ranker as
  winner;
- A/A false wins: the control ranker (``a``, production) against itself, ``--aa-seeds``
  seeds, any significant winner is a false win;
- the A/B impressions (one user = one query, fair coin per user, clicks-MRR per user,
  Welch's test) needed for the same power, measured on a doubling grid.

Targets: interleaving power >= 0.90 over 60 seeds at 2,000 queries; A/A false wins <= 8 of
100. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from bench._targets import Targets

MIN_POWER = 0.90
MAX_AA_FALSE_WINS = 8
ALPHA = 0.05


def default_datasets_dir() -> Path:
    env = os.environ.get("LTR_DATASETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}; {usable} usable cores ({os.cpu_count()} online); {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=default_datasets_dir())
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=60, help="seeds of the interleaving power")
    ap.add_argument("--queries", type=int, default=2000, help="simulated queries per seed")
    ap.add_argument("--aa-seeds", type=int, default=100)
    ap.add_argument(
        "--aa-ranker", choices=("a", "b"), default="a", help="ranker run against itself"
    )
    ap.add_argument("--ab-seeds", type=int, default=60)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if min(args.seeds, args.queries, args.aa_seeds, args.ab_seeds) < 1:
        ap.error("--seeds, --queries, --aa-seeds and --ab-seeds must be >= 1")

    from ltr.online.power import ab_required_impressions, interleaving_power, mq2008_ranker_pair

    began = time.perf_counter()
    print(f"online test calibration, {machine()}, Python {platform.python_version()}")
    pair = mq2008_ranker_pair(args.datasets / "mq2008", fold=args.fold)
    print(pair.description)
    print(
        f"held-out NDCG@10: a {pair.ndcg10_a:.4f}, b {pair.ndcg10_b:.4f}, "
        f"difference {pair.difference:+.4f} (trained in {pair.seconds:.1f} s)"
    )
    queries = sum(1 for _, rows in pair.test.iter_queries() if pair.test.labels[rows].max() > 0)
    print(
        f"traffic: {queries} test queries with a relevant document, drawn uniformly; "
        "PBM clicks (eta 1, noise 0.1), top 10 shown, alpha 0.05\n"
    )

    power = interleaving_power(
        pair.test,
        pair.scores_a,
        pair.scores_b,
        n_impressions=args.queries,
        seeds=range(args.seeds),
        alpha=ALPHA,
        better="b",
    )
    print(
        f"interleaving a vs b: {power.significant['b']} of {power.n_seeds} seeds find b, "
        f"{power.significant['a']} find a; power {power.power:.3f}; mean preference "
        f"{power.mean_preference:+.4f} over {power.mean_clicked_impressions:.0f} clicked of "
        f"{args.queries} impressions ({power.seconds:.1f} s)"
    )
    aa_scores = pair.scores_a if args.aa_ranker == "a" else pair.scores_b
    aa = interleaving_power(
        pair.test,
        aa_scores,
        aa_scores,
        n_impressions=args.queries,
        seeds=range(args.aa_seeds),
        alpha=ALPHA,
        better=None,
    )
    print(
        f"A/A ({args.aa_ranker} vs {args.aa_ranker}): {aa.false_wins} of {aa.n_seeds} seeds "
        f"with a significant winner ({aa.significant}) ({aa.seconds:.1f} s)"
    )
    ab = ab_required_impressions(
        pair.test,
        pair.scores_a,
        pair.scores_b,
        target_power=MIN_POWER,
        seeds=range(args.ab_seeds),
        alpha=ALPHA,
        better="b",
        metric="click_mrr",
    )
    print(f"\nA/B on clicks-MRR per user, same power target ({ab.target_power:.2f}):")
    print("| total impressions | power | seconds |\n|---|---|---|")
    for point in ab.grid:
        print(f"| {point['impressions']:,.0f} | {point['power']:.3f} | {point['seconds']:.2f} |")
    needed = ab.required_impressions
    if needed is None:
        print(f"A/B did not reach the power by {ab.grid[-1]['impressions']:,.0f} impressions")
    else:
        print(
            f"A/B needs {needed:,} impressions (grid), "
            f"{needed / args.queries:.1f}x interleaving's {args.queries:,}"
        )
    wall = time.perf_counter() - began
    print(f"\nwall time {wall:.1f} s\n")

    targets = Targets()
    targets.at_least(
        f"interleaving power, {args.seeds} seeds x {args.queries} queries",
        power.power,
        MIN_POWER,
        "",
        ".3f",
    )
    targets.at_most(
        f"A/A false wins of {args.aa_seeds} seeds", aa.false_wins, MAX_AA_FALSE_WINS, "", ".0f"
    )
    if args.json is not None:
        result = {
            "machine": machine(),
            "pair": {
                "description": pair.description,
                "ndcg10_a": pair.ndcg10_a,
                "ndcg10_b": pair.ndcg10_b,
                "difference": pair.difference,
            },
            "interleaving": power.to_dict(),
            "aa": aa.to_dict(),
            "ab": ab.to_dict(),
            "wall_seconds": wall,
            "targets": targets.as_dicts(),
        }
        args.json.write_text(json.dumps(result, indent=2))
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
