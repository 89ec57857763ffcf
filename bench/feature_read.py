"""Online feature read: the service's direct readers next to ``FeatureStore.get_online_features``.

    python -m bench.feature_read [--stores redis,sqlite] [--redis HOST:PORT,db=N]
                                 [--candidates 100] [--rounds 20]

For each online store (Redis: ``RedisFeatureReader``; the embedded SQLite default:
``SqliteFeatureReader``, on the platform's ``LtrSqliteOnlineStore``), builds a temporary Feast
repository (views ``query_doc_features`` and ``doc_features``, one ``Array(Float32)`` field
each), writes one query's candidates with ``FeatureStore.write_to_online_store``, checks that
the direct reader returns values identical to Feast's on the same keys, then times both in
interleaved rounds on the same keys and prints p50/p99 and the speed-up. Variants: 46
features (40 + 6) and 136 features (130 + 6). The bench's keys are removed from Redis
afterwards.

Redis readers: the blocking client's two modes (one ``EVALSHA``; the default, one ``HGET``
per key packed in one write on a pooled connection) and the event loop's read (``aread``
through a ``RedisWire``: the same packed ``HGET``s, timed with one ``run_until_complete``
step of a uvloop loop around each call). When Redis runs on this machine, each one's Redis
CPU per read is also printed (the server process's CPU time over 2,000 reads).

Target (DESIGN.md): each store's default reader (Redis: packed HGETs; SQLite: one query per
view) >= 10x faster at p50 than ``FeatureStore.get_online_features`` on the same store, timed in
the same run, with identical values (a difference stops the run before timing). Exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench._targets import Targets
from serving.features.redis_reader import (
    FeatureReadResult,
    FeatureViewSpec,
    RedisFeatureReader,
    redis_client_from_connection_string,
)
from serving.features.sqlite_reader import SqliteFeatureReader

QUERY = "q-bench"
BASELINE = "FeatureStore.get_online_features().to_dict()"
DEFAULT_READER = "RedisFeatureReader.read, pipeline (default)"
WIRE_READER = "RedisFeatureReader.aread, RedisWire"
CPU_READS = 2000  # reads per reader when measuring Redis's CPU time
SQLITE_READER = "SqliteFeatureReader.read (default)"
SQLITE_STORE = "ltr.features.online_store.LtrSqliteOnlineStore"
STORES = ("redis", "sqlite")
MIN_SPEEDUP = 10.0
VARIANTS = {"46": (40, 6), "136": (130, 6)}
MISSING_EVERY = 20  # every 20th candidate has no query-doc row, like a real request


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


def import_seconds(module: str) -> float:
    """Cold import time of ``module`` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def build_store(
    root: Path, project: str, online_store: str, dims: tuple[int, int], docs: list[str]
) -> Any:
    """Apply a two-view repository and write the candidates; returns the FeatureStore.

    ``online_store``: the ``online_store:`` block of ``feature_store.yaml`` (indented lines).
    """
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32

    root.mkdir(parents=True)
    (root / "feature_store.yaml").write_text(
        f"project: {project}\nregistry: {root / 'registry.db'}\nprovider: local\n"
        f"online_store:\n{online_store}"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    rng = np.random.default_rng(0)
    when = datetime.now(UTC)
    qd_docs = [d for i, d in enumerate(docs) if i % MISSING_EVERY != MISSING_EVERY - 1]
    frames = {
        "query_doc_features": pd.DataFrame(
            {
                "query_id": QUERY,
                "doc_id": qd_docs,
                "features": list(rng.standard_normal((len(qd_docs), dims[0]), np.float32)),
                "event_timestamp": when,
            }
        ),
        "doc_features": pd.DataFrame(
            {
                "doc_id": docs,
                "features": list(rng.standard_normal((len(docs), dims[1]), np.float32)),
                "event_timestamp": when,
            }
        ),
    }
    for frame in frames.values():
        frame["features"] = frame["features"].map(lambda a: a.tolist())
    query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.STRING)
    document = Entity(name="document", join_keys=["doc_id"], value_type=ValueType.STRING)
    entities = {"query_doc_features": [query, document], "doc_features": [document]}
    objects: list[Any] = [query, document]
    for name, frame in frames.items():
        frame.to_parquet(root / f"{name}.parquet")
        source = FileSource(
            name=f"{name}_source",
            path=str(root / f"{name}.parquet"),
            timestamp_field="event_timestamp",
        )
        objects.append(
            FeatureView(
                name=name,
                entities=entities[name],
                schema=[Field(name="features", dtype=Array(Float32))],
                source=source,
                ttl=timedelta(0),
            )
        )
    store = FeatureStore(repo_path=str(root))
    store.apply(objects)
    for name, frame in frames.items():
        store.write_to_online_store(name, frame)
    return store


def feast_arrays(
    response: dict[str, list[Any]], views: list[FeatureViewSpec]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for view in views:
        column = response[f"{view.name}__{view.field}"]
        found = np.array([v is not None for v in column])
        rows = [v if v is not None else [np.nan] * view.dim for v in column]
        out[view.name] = (np.asarray(rows, dtype=np.float32), found)
    return out


def check_identical(result: FeatureReadResult, expected: dict[str, Any]) -> None:
    for name, (vectors, found) in expected.items():
        if not (
            np.array_equal(result.found[name], found)
            and np.array_equal(result.vectors[name], vectors, equal_nan=True)
        ):
            raise SystemExit(f"values differ from Feast's in view {name}: not benchmarking")


def time_rounds(
    methods: dict[str, Callable[[], object]], rounds: int, per_round: dict[str, int]
) -> dict[str, np.ndarray]:
    """Interleave the methods round by round so that machine noise hits all of them."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            for _ in range(per_round[name]):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: np.asarray(t) * 1e3 for name, t in times.items()}


def view_specs(dims: tuple[int, int]) -> list[FeatureViewSpec]:
    return [
        FeatureViewSpec("query_doc_features", ("query_id", "doc_id"), dims[0]),
        FeatureViewSpec("doc_features", ("doc_id",), dims[1]),
    ]


def feast_baseline(
    store: Any, views: list[FeatureViewSpec], docs: list[str]
) -> Callable[[], dict[str, Any]]:
    """``get_online_features(...).to_dict()`` of the request, as a function to time."""
    refs = [f"{v.name}:{v.field}" for v in views]
    rows = [{"query_id": QUERY, "doc_id": d} for d in docs]

    def feast_sdk() -> dict[str, Any]:
        response = store.get_online_features(
            features=refs, entity_rows=rows, full_feature_names=True
        )
        return dict(response.to_dict())

    return feast_sdk


def time_checked(
    feast_sdk: Callable[[], dict[str, Any]],
    views: list[FeatureViewSpec],
    readers: dict[str, Any],
    docs: list[str],
    rounds: int,
) -> dict[str, np.ndarray]:
    """Check every reader against Feast, then time Feast and them in interleaved rounds.

    ``readers``: method name -> reader; the first one is the SDK reader (timed as Feast).
    """
    expected = feast_arrays(feast_sdk(), views)
    for reader in readers.values():
        check_identical(reader.read(QUERY, docs), expected)
    methods: dict[str, Callable[[], object]] = {BASELINE: feast_sdk}
    for name, reader in readers.items():
        methods[name] = functools.partial(reader.read, QUERY, docs)
    # Feast is ~10x slower: fewer calls per round keep the run short.
    per_round = {name: 10 if i < 2 else 50 for i, name in enumerate(methods)}
    for fn in methods.values():  # warm-up
        for _ in range(3):
            fn()
    return time_rounds(methods, rounds, per_round)


class LoopReader:
    """``aread`` of a reader with a ``RedisWire``, called like ``read``: one step of its own
    uvloop loop per call (the service awaits it on uvicorn's loop instead)."""

    def __init__(self, client: Any, redis_conn: str, project: str, views: Any) -> None:
        import asyncio

        import uvloop

        from serving.features.redis_wire import RedisWire

        node, *params = redis_conn.split(",")
        host, port = node.rsplit(":", 1)
        options = dict(p.split("=", 1) for p in params)
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.wire = RedisWire(
            host,
            int(port),
            db=int(options.get("db", 0)),
            password=options.get("password"),
            timeout_s=2.0,
        )
        self.reader = RedisFeatureReader(
            client, project, key_version=3, views=views, wire=self.wire
        )

    def read(self, query_id: str, doc_ids: list[str]) -> FeatureReadResult:
        return self.loop.run_until_complete(self.reader.aread(query_id, doc_ids))

    def close(self) -> None:
        self.loop.run_until_complete(self.wire.aclose())
        self.loop.close()


def redis_cpu_us(pid: int | None, read: Callable[[], object], reads: int) -> float:
    """Redis's CPU microseconds per call of ``read`` (NaN when Redis is not local)."""
    if pid is None:
        return float("nan")
    import psutil

    try:
        server = psutil.Process(pid)
        before = sum(server.cpu_times()[:2])
        for _ in range(reads):
            read()
        return float((sum(server.cpu_times()[:2]) - before) / reads * 1e6)
    except psutil.Error:
        return float("nan")


def local_redis_pid(client: Any, redis_conn: str) -> int | None:
    """The Redis server's process id when it listens on this machine's loopback."""
    if not redis_conn.startswith(("127.0.0.1:", "localhost:")):
        return None
    info: dict[str, Any] = client.info("server")
    return int(info["process_id"])


def run_redis_variant(
    client: Any, redis_conn: str, root: Path, dims: tuple[int, int], docs: list[str], rounds: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Build, check and time one variant (and Redis's CPU per read of each fast reader);
    its keys are removed from Redis afterwards."""
    from serving.features.sdk_reader import SdkFeatureReader

    project = f"ltrbench_{uuid.uuid4().hex[:8]}"
    wire = None
    try:
        online = f'  type: redis\n  connection_string: "{redis_conn}"\n'
        store = build_store(root, project, online, dims, docs)
        views = view_specs(dims)
        wire = LoopReader(client, redis_conn, project, views)
        readers = {
            "SdkFeatureReader.read (Feast + arrays)": SdkFeatureReader(store, views),
            "RedisFeatureReader.read, lua": RedisFeatureReader(
                client, project, key_version=3, views=views, mode="lua"
            ),
            DEFAULT_READER: RedisFeatureReader(
                client, project, key_version=3, views=views, mode="pipeline"
            ),
            WIRE_READER: wire,
        }
        ms = time_checked(feast_baseline(store, views, docs), views, readers, docs, rounds)
        pid = local_redis_pid(client, redis_conn)
        cpu = {
            name: redis_cpu_us(pid, functools.partial(reader.read, QUERY, docs), CPU_READS)
            for name, reader in list(readers.items())[1:]
        }
        return ms, cpu
    finally:
        if wire is not None:
            wire.close()
        keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
        if keys:
            client.delete(*keys)


def run_sqlite_variant(
    root: Path, dims: tuple[int, int], docs: list[str], rounds: int
) -> dict[str, np.ndarray]:
    """Build, check and time one variant on the embedded SQLite store (under ``root``)."""
    from serving.features.sdk_reader import SdkFeatureReader

    project = f"ltrbench_{uuid.uuid4().hex[:8]}"
    online = f"  type: {SQLITE_STORE}\n  path: data/online.db\n"
    store = build_store(root, project, online, dims, docs)
    views = view_specs(dims)
    sqlite = SqliteFeatureReader.from_repo(root, views)
    readers = {
        "SdkFeatureReader.read (Feast + arrays)": SdkFeatureReader(store, views),
        SQLITE_READER: sqlite,
    }
    try:
        return time_checked(feast_baseline(store, views, docs), views, readers, docs, rounds)
    finally:
        sqlite.close()


def report(
    store: str, label: str, ms: dict[str, np.ndarray], default: str, speedups: dict[str, float]
) -> None:
    base = ms[BASELINE]
    base_p50, base_p99 = np.percentile(base, 50), np.percentile(base, 99)
    for name, t in ms.items():
        p50, p99 = np.percentile(t, 50), np.percentile(t, 99)
        speed = "" if t is base else f"{base_p50 / p50:5.1f}x / {base_p99 / p99:5.1f}x"
        print(f"{store:>6} {label:>11}  {name:<44}{p50:8.3f}{p99:8.3f}{len(t):7d}  {speed}")
    print(f"{'':>18}  values identical to Feast's for all readers (checked before timing)")
    speedups[f"{store}, {label}"] = float(base_p50 / np.percentile(ms[default], 50))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stores", default=",".join(STORES), help=f"comma list of {list(STORES)}")
    ap.add_argument(
        "--redis",
        default=os.environ.get("LTR_BENCH_REDIS", "127.0.0.1:6379,db=6"),
        help="Feast-style connection string of the Redis to use (its keys are removed after)",
    )
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds per variant")
    ap.add_argument("--variants", default="46,136", help=f"comma list of {sorted(VARIANTS)}")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {sorted(VARIANTS)}")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - set(STORES):
        ap.error(f"unknown stores in {args.stores!r}; valid: {list(STORES)}")

    import sqlite3

    import redis

    print(f"date      {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine   {machine()}")
    print(f"python    {platform.python_version()}, redis-py {redis.__version__}", end="")
    client = None
    if "redis" in stores:
        client = redis_client_from_connection_string(
            args.redis, socket_timeout=2, socket_connect_timeout=2
        )
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]  # sync client
        print(f", Redis server {info['redis_version']} at {args.redis}", end="")
    print(f", SQLite {sqlite3.sqlite_version}")
    reader_import = import_seconds("serving.features.redis_reader")
    sqlite_import = import_seconds("serving.features.sqlite_reader")
    start = time.perf_counter()
    import feast

    feast_import = time.perf_counter() - start
    print(
        f"feast     {feast.__version__}; import: feast {feast_import:.1f} s (warm disk), ", end=""
    )
    print(
        f"serving.features.redis_reader {reader_import * 1e3:.0f} ms, "
        f"sqlite_reader {sqlite_import * 1e3:.0f} ms (fresh interpreter)"
    )
    print(
        f"request   1 query x {args.candidates} candidates; every {MISSING_EVERY}th has no ", end=""
    )
    print("query-doc row; timings in ms over interleaved rounds\n")

    docs = [f"doc-{i:06d}" for i in range(args.candidates)]
    header = (
        f"{'store':>6} {'features':>11}  {'method':<44}{'p50':>8}{'p99':>8}{'calls':>7}  "
        "speed-up p50 / p99"
    )
    print(header)
    print("-" * len(header))
    speedups: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ltr-bench-feast-") as tmp:
        for store in stores:
            for variant in variants:
                dims = VARIANTS[variant]
                root = Path(tmp) / store / variant
                label = f"{variant} ({dims[0]}+{dims[1]})"
                if store == "redis":
                    ms, cpu = run_redis_variant(client, args.redis, root, dims, docs, args.rounds)
                    report(store, label, ms, DEFAULT_READER, speedups)
                    print(
                        f"{'':>18}  Redis CPU per read ({CPU_READS} reads each): "
                        + ", ".join(
                            f"{name.split('.', 1)[1]} {us:.0f} us" for name, us in cpu.items()
                        )
                    )
                else:
                    ms = run_sqlite_variant(root, dims, docs, args.rounds)
                    report(store, label, ms, SQLITE_READER, speedups)
    print()
    targets = Targets()
    for label, speedup in speedups.items():
        name = f"{label} features: default reader p50 speed-up vs Feast SDK on the same store"
        targets.at_least(name, speedup, MIN_SPEEDUP, "x", ".1f")
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
