"""Materialization into Redis: the project's path next to Feast's plain file -> Redis path.

    python -m bench.materialize [--redis-url redis://127.0.0.1:6379/11] [--queries 320]
                                [--repeats 3]

Writes the project's synthetic data (46 features: 40 query-document, 6 document-only;
about 20,000 online rows at the default size) into the Parquet offline store once, applies
the repository's feature views in two Feast projects of this run's own, and materializes the
same window of the same rows into the same Redis, alternately:

- ``ltr.features.store.materialize``: the project's path, with whatever offline and online
  store classes it configures (both are printed);
- Feast's plain path: ``FeatureStore.materialize`` with Feast's own ``file`` (Dask) offline
  store and ``redis`` online store, on the same registry objects.

Each run starts from no keys of its project (the writers compare event times with what is
already stored). Both timings include building the ``FeatureStore``; the medians are
compared. Afterwards it checks that both paths wrote the same keys and that every field
Feast wrote (feature vector, event time) is identical in the project's keys (sampled),
prints rows/s side by side and their ratio, and deletes the keys of both projects.

Targets (DESIGN.md): >= 3x Feast's rows/s measured in this run, and >= 10,000 rows/s.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._targets import Targets

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DOC_COLS = list(range(40, 46))  # MQ2008-like: 46 features, 41-46 document-only
MIN_RATIO = 3.0
MIN_ROWS_PER_SECOND = 10_000.0
SAMPLE_KEYS = 500


def project_keys(client: Any, project: str) -> list[bytes]:
    """Keys of a Feast project's Redis online store (Feast ends every key with the project)."""
    return list(client.scan_iter(match=f"*{project}".encode(), count=1000))


def delete_project_keys(client: Any, project: str) -> None:
    keys = project_keys(client, project)
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def feast_plain_store(settings: Any) -> Any:
    """A FeatureStore of ``settings`` on Feast's plain path: its own ``file`` (Dask) offline
    store, ``redis`` online store and ``local`` batch engine, whatever the project
    configures instead."""
    from feast import FeatureStore

    from ltr.features.store import redis_connection_string, repo_config

    config = repo_config(settings)
    config.offline_config = {"type": "file"}
    config.batch_engine_config = "local"  # Feast's own local engine, not the project's
    config.online_config = {
        "type": "redis",
        "connection_string": redis_connection_string(settings.redis_url),
    }
    return FeatureStore(repo_path=str(config.repo_path), config=config)


def store_types(store: Any) -> str:
    config = store.config
    engine = config.batch_engine_config
    engine = engine.get("type") if isinstance(engine, dict) else engine
    return (
        f"offline {config.offline_store.type}, online {config.online_store.type}, "
        f"batch engine {engine}"
    )


def same_hashes(client: Any, ours: str, theirs: str) -> tuple[int, int, int]:
    """(keys of ours, keys of theirs, sampled keys where a field Feast wrote differs in ours).

    The project's writer may keep more fields per view (a created time); the fields that
    Feast's readers read (the feature vector and the event time) must be identical.
    """
    keys_ours = project_keys(client, ours)
    keys_theirs = project_keys(client, theirs)
    suffix = ours.encode()
    sample = keys_ours[:: max(1, len(keys_ours) // SAMPLE_KEYS)]
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.hgetall(key)
        pipe.hgetall(key[: -len(suffix)] + theirs.encode())
    values = pipe.execute()
    differ = sum(
        1
        for a, b in zip(values[::2], values[1::2], strict=True)
        if not b or any(a.get(field) != value for field, value in b.items())
    )
    return len(keys_ours), len(keys_theirs), differ


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--redis-url", default=os.environ.get("LTR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    )
    ap.add_argument("--queries", type=int, default=320, help="synthetic queries (~50 docs each)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per path (median is compared)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary LTR_HOME folders")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.queries < 1:
        ap.error("--repeats and --queries must be >= 1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import redis

    from ltr.data.synth import generate_synthetic
    from ltr.features.definitions import DOC_VIEW, QUERY_DOC_VIEW
    from ltr.features.ingest import ingest_letor
    from ltr.features.store import apply, get_feature_store, materialize, offline_dir
    from ltr.settings import Settings

    client = redis.Redis.from_url(args.redis_url, socket_timeout=10, socket_connect_timeout=2)
    server = client.info("server")["redis_version"]
    run_id = f"benchmat_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    projects = {"ltr": f"{run_id}_ltr", "feast": f"{run_id}_feast"}
    root = Path(tempfile.mkdtemp(prefix="ltr-bench-materialize-"))
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=1)
    try:
        settings = {
            name: Settings(home=root / name, redis_url=args.redis_url, feast_project=project)
            for name, project in projects.items()
        }
        ds = generate_synthetic(
            n_queries=args.queries, n_features=46, n_doc_only=6, mean_docs=50, seed=2
        )
        ingest_letor(
            ds, offline_dir(settings["ltr"]), doc_feature_indices=DOC_COLS, event_timestamp=T0
        )
        # Feast's path reads byte-identical files of its own home
        shutil.copytree(offline_dir(settings["ltr"]), offline_dir(settings["feast"]))
        for s in settings.values():
            apply(s)
        import feast

        types = {
            "ltr": store_types(get_feature_store(settings["ltr"])),
            "feast": store_types(feast_plain_store(settings["feast"])),
        }
        views = [QUERY_DOC_VIEW, DOC_VIEW]
        expected_rows: list[int] = []

        def ours() -> None:
            result = materialize(start, end, settings["ltr"], views=views)
            expected_rows.append(int(result["total_rows"]))

        def feasts() -> None:
            with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress on stdout
                feast_plain_store(settings["feast"]).materialize(
                    start_date=start, end_date=end, feature_views=views
                )

        paths: dict[str, Callable[[], None]] = {"ltr": ours, "feast": feasts}
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(args.repeats):
            order = list(paths) if i % 2 == 0 else list(reversed(paths))
            for name in order:
                delete_project_keys(client, projects[name])
                began = time.perf_counter()
                paths[name]()
                seconds[name].append(time.perf_counter() - began)
                print(f"  run {i + 1} {name}: {seconds[name][-1]:.2f} s", file=sys.stderr)
        rows = expected_rows[-1]
        n_ours, n_feast, differ = same_hashes(client, projects["ltr"], projects["feast"])
    finally:
        for project in projects.values():
            try:
                delete_project_keys(client, project)
            except redis.RedisError as exc:  # cleanup is best effort
                print(f"cleanup of Redis keys of {project} failed: {exc}", file=sys.stderr)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    rate = {name: rows / statistics.median(s) for name, s in seconds.items()}
    ratio = rate["ltr"] / rate["feast"]
    print(
        f"materialization into Redis, {datetime.now().astimezone():%Y-%m-%d}, "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Feast {feast.__version__}, Redis server {server} at {args.redis_url}"
    )
    print(
        f"data: {ds.n_docs} query-document + {rows - ds.n_docs} document rows = {rows} online "
        f"rows, 46 features (one Array(Float32) field per view); {args.repeats} runs per path, "
        f"alternating; each from an empty project"
    )
    for name, label in (("ltr", "ltr path"), ("feast", "baseline")):
        print(f"{label:<9} {types[name]}")
    print(
        f"online keys written: ltr {n_ours}, Feast {n_feast}; sampled keys where a field "
        f"Feast wrote differs: {differ}"
    )
    print("\n| path | seconds per run | median rows/s |\n|---|---|---|")
    labels = {
        "ltr": "ltr.features.store.materialize (stores above)",
        "feast": "Feast FeatureStore.materialize, file -> redis (baseline)",
    }
    for name, label in labels.items():
        runs = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(f"| {label} | {runs} | {rate[name]:,.0f} |")
    print(f"\nratio ltr / Feast: {ratio:.2f}x\n")
    targets = Targets()
    targets.check(
        "same rows online as Feast's",
        f"{n_ours} and {n_feast} keys, {differ} sampled keys differ",
        f"{rows} keys each, 0 differ",
        n_ours == n_feast == rows and differ == 0,
    )
    targets.at_least("rows/s vs Feast's plain file -> redis path", ratio, MIN_RATIO, "x", ".2f")
    targets.at_least("rows/s into Redis", rate["ltr"], MIN_ROWS_PER_SECOND, "rows/s", ",.0f")
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
