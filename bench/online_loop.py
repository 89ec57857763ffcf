"""The online loop over HTTP: simulated users -> rank service -> Redis Streams -> drain -> metrics.

Trains the calibration pair of `bench.online_power` on MQ2008 Fold 1 (LightGBM on all 46
features vs without BM25 and LMIR.JM), exports both to ONNX with request features, serves
them under uvicorn in team-draft interleaving (weak = a, strong = b) with events on Redis,
sends 2,000 simulated users (`ltr simulate-traffic`'s simulator: held-out test queries,
PBM clicks on the graded labels), drains the streams and computes the online metrics and
the interleaving test from the Parquet files.

Targets: 2,000 simulated queries in under 60 s; every answered query drained exactly once.
Run: ``python -m bench.online_loop [--queries 2000] [--redis redis://127.0.0.1:6379/9]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import redis

from bench._targets import Targets

DATASETS = Path(
    os.environ.get("LTR_DATASETS_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)


def export_pair(models: Path) -> dict[str, float]:
    from ltr.data.folds import load_fold
    from ltr.export.onnx_export import export_ranker, feature_schema
    from ltr.metrics import evaluate
    from ltr.model_store import write_routing
    from ltr.models.gbdt import LightGBMRanker
    from ltr.online.power import weak_columns

    train, valid, test = load_fold(DATASETS / "mq2008", 1)
    columns = weak_columns

    ndcg = {}
    for version, (tr, va, te) in {
        "strong": (train, valid, test),
        "weak": (columns(train), columns(valid), columns(test)),
    }.items():
        ranker, _ = LightGBMRanker.fit(tr, va, seed=42, threads=1)
        ndcg[version] = evaluate(te.labels, ranker.score(te), te.offsets, ["ndcg@10"])["ndcg@10"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_ranker(
                ranker,
                {"model_type": "lightgbm", "metrics": {"test": {"ndcg@10": ndcg[version]}}},
                va,
                models,
                version=version,
                latency=False,
                feature_sources=feature_schema(list(tr.feature_names)),
            )
    write_routing(
        models,
        {
            "strategy": "interleave",
            "production": "strong",
            "interleave": {"a": "weak", "b": "strong", "percent": 100},
        },
    )
    return ndcg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args(argv)

    from ltr.data.folds import load_fold
    from ltr.demo.service import free_port, start_service, stop_process
    from ltr.online.analysis import interleaving_test
    from ltr.online.clickmodel import ClickModel
    from ltr.online.drain import Drainer, read_events
    from ltr.online.metrics import click_log, interleaving_outcomes, online_metrics
    from ltr.online.simulate import TrafficSimulator
    from ltr.settings import Settings

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    prefix = f"bench:{uuid.uuid4().hex[:8]}:events"
    client = redis.Redis.from_url(args.redis, socket_timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        t = time.perf_counter()
        ndcg = export_pair(home / "models")
        print(
            f"trained and exported the pair in {time.perf_counter() - t:.1f} s: NDCG@10 on the "
            f"test split strong {ndcg['strong']:.4f}, weak {ndcg['weak']:.4f}"
        )
        port = free_port()
        env = {
            "LTR_EVENTS_REDIS_URL": args.redis,
            "LTR_EVENTS_STREAM_PREFIX": prefix,
            "LTR_CACHE_ENABLED": "false",
            "LTR_FEAST_REPO": str(home / "no-feature-repo"),
        }
        proc = start_service(Settings(_env_file=None, home=home), port, extra_env=env)
        try:
            _, _, test = load_fold(DATASETS / "mq2008", 1)
            sim = TrafficSimulator(
                f"http://127.0.0.1:{port}",
                test,
                click_model=ClickModel("pbm", eta=1.0, max_grade=2),
                seed=1,
                n_users=500,
                send_features=True,
                concurrency=args.concurrency,
            )
            report = sim.run(args.queries, max_seconds=600)
        finally:
            stop_process(proc)
        print(
            f"simulated: {report.answered}/{report.sent} answered in {report.seconds:.1f} s "
            f"({report.answered / max(report.seconds, 1e-9):.0f} queries/s with "
            f"{args.concurrency} clients), {report.clicks} clicks, errors {report.errors}"
        )
        streams = {"impressions": f"{prefix}:impressions", "clicks": f"{prefix}:clicks"}
        try:
            t = time.perf_counter()
            drained = Drainer(client, home / "events", streams=streams).drain()
            drain_s = time.perf_counter() - t
        finally:
            client.delete(*streams.values())
        imp = read_events(home / "events", "impressions").to_pandas()
        clk = read_events(home / "events", "clicks").to_pandas()
        print(f"drained {drained.written} events in {drain_s:.2f} s")
        log = click_log(imp, clk)
        for row in online_metrics(log):
            print(
                f"  {row['model_version']:<12} {row['variant']:<10} impressions "
                f"{row['impressions']:>5}  CTR@1 {row['ctr_at']['1']:.3f}  CTR@10 "
                f"{row['ctr_at']['10']:.3f}  MRR {row['mrr']:.3f}  abandonment "
                f"{row['abandonment']:.3f}"
            )
        outcomes = interleaving_outcomes(log)
        decided = outcomes[(outcomes["a"] + outcomes["b"]) > 0]
        result = interleaving_test(list(decided["winner"]))
        print(
            f"interleaving: strong (b) won {result.wins_b}, weak (a) won {result.wins_a}, "
            f"ties {result.ties}; preference {result.preference:+.3f} "
            f"[{result.ci[0]:+.3f}, {result.ci[1]:+.3f}], binomial p = {result.p_value}"
        )
    targets = Targets()
    targets.at_most(f"{args.queries} simulated queries over HTTP", report.seconds, 60.0, "s", ".1f")
    targets.check(
        "every answered query drained exactly once",
        f"{len(imp)} impressions ({imp['request_id'].nunique()} distinct) "
        f"for {report.answered} answers",
        "equal, distinct",
        len(imp) == imp["request_id"].nunique() == report.answered and not report.errors,
    )
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
