"""Load test of the rank service next to the stack a user would assemble, in one run.

    python -m bench.serving [--redis-url redis://127.0.0.1:6379/11] [--seconds 15]

Builds a Feast online store in Redis from the project's synthetic data (46 features, 40
query-document + 6 document-only; 100-document queries and a few 1000-document ones),
trains and exports an MLP (served, 90 %) and LightGBM (canary, 10 %) that read all their
features online, then starts, one after the other, under uvicorn in a child process
(uvloop + httptools, no access log, one ONNX Runtime thread per process):

- the platform's service (cache off, so every request does the full path);
- the assembled stack (``bench/assembled_stack.py``): FastAPI + Feast
  ``FeatureStore.get_online_features`` + ONNX Runtime on the same artifact (the MLP), the
  same registry and the same Redis, written the straightforward way.

Both get the same requests from the same raw-asyncio load generator, with the same number
of uvicorn workers (1, then 2). Per configuration: saturation throughput (closed loop, 8
connections), then p50/p99 at 100 candidates at one fixed rate for both (open loop, at least
500 requests; half the assembled stack's saturation, at most 200 req/s, so that neither is
past saturation and the latencies are service times, not queue lengths). The platform's
service also runs at 200 req/s (1 vs 2 workers) and, with one worker, at 1000 candidates.
The in-process floor is the same requests' feature read (``RedisFeatureReader.read``) +
matrix + ONNX Runtime + sort, timed in this process without HTTP, just before the
platform's one-worker run (its server idle), paced at the common rate like the service's
run (the target) and back to back (printed beside it: at 20-50 req/s a CPU idles between
requests and the same work takes up to 3x longer than back to back).

Targets are ratios measured in the same run (absolute times move about 2x between
machines), with one worker each: p50 and p99 >= 10x lower than the assembled stack's,
saturation throughput >= 5x higher, end-to-end p50 <= 2x the in-process floor, ``GET
/health`` p99 <= 50 ms while saturated (probed every 0.1 s on a connection of its own during
the closed loop); plus the service's memory with both models loaded, no failed request on
either stack, and the assembled stack's answers identical to the platform's where the
champion served (so both do the same work). Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench._targets import Targets
from bench.loadgen import HealthProbe, LoadResult, closed_loop, http_post, open_loop
from ltr.demo.service import free_port, stop_process

UVICORN_ARGS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")
MAX_FIXED_RATE = 200.0  # req/s: the platform's absolute run, and the cap of the common rate
SAT_CONNECTIONS = 8
MIN_FIXED_REQUESTS = 500  # a fixed-rate run lasts long enough for this many requests
FLOOR_PACED = 300  # requests of the in-process floor paced at the common rate
# Ratio targets (DESIGN.md), one worker each
MIN_LATENCY_RATIO = 10.0
MIN_THROUGHPUT_RATIO = 5.0
MAX_FLOOR_RATIO = 2.0
MAX_RSS_MB = 400.0
HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
MAX_HEALTH_P99_MS = 50.0  # GET /health while the service is saturated


def build(home: Path, redis_url: str, project: str) -> dict[str, Any]:
    """Data -> Feast (apply, materialize into Redis) -> two exported models -> routing."""
    from ltr.data.dataset import LetorDataset
    from ltr.data.synth import generate_synthetic, split_queries
    from ltr.export.onnx_export import export_ranker
    from ltr.features.definitions import DEFAULT_FEATURE_SERVICE, online_schema
    from ltr.features.ingest import ingest_letor
    from ltr.features.store import apply, materialize, offline_dir
    from ltr.model_store import write_routing
    from ltr.settings import Settings
    from ltr.training.config import ExperimentConfig
    from ltr.training.trainer import fit

    settings = Settings(home=home, redis_url=redis_url, feast_project=project)
    small = generate_synthetic(
        n_queries=60,
        n_features=46,
        n_doc_only=6,
        mean_docs=100,
        min_docs=100,
        max_docs=100,
        seed=1,
        qid_prefix="q",
    )
    big = generate_synthetic(
        n_queries=4,
        n_features=46,
        n_doc_only=6,
        mean_docs=1000,
        min_docs=1000,
        max_docs=1000,
        seed=2,
        qid_prefix="big",
    )
    big = LetorDataset(
        big.features, big.labels, big.qids, np.array([f"B{d}" for d in big.doc_ids], dtype=object)
    )
    ds = LetorDataset.concat([small, big])
    doc_cols = list(range(40, 46))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ingest_letor(ds, offline_dir(settings), doc_feature_indices=doc_cols, event_timestamp=t0)
    apply(settings)
    mat = materialize(t0 - timedelta(days=1), t0 + timedelta(days=1), settings)

    train, valid, _ = split_queries(small, (0.6, 0.2, 0.2), seed=0)
    schema, views = online_schema(small.feature_names, doc_cols)
    models = home / "models"
    versions = []
    for name, spec in (
        (
            "mlp",
            {
                "model": {"type": "mlp", "params": {"hidden": [128, 64]}},
                "training": {"epochs": 5, "threads": 1, "device": "cpu"},
            },
        ),
        ("lgbm", {"model": {"type": "lightgbm", "params": {"n_estimators": 200}}}),
    ):
        cfg = ExperimentConfig.model_validate(
            {"name": name, "tracking": {"enabled": False}, **spec}
        )
        ranker = fit(cfg, train, valid, progress=False).ranker
        meta = {"model_type": cfg.model.type, "loss": cfg.loss.name, "run_name": name}
        export_ranker(
            ranker,
            meta,
            valid,
            models,
            version=f"bench-{name}",
            latency=False,
            feature_sources=schema,
            feature_views=views,
            feature_service=DEFAULT_FEATURE_SERVICE,
            overwrite=True,
        )
        versions.append(f"bench-{name}")
    write_routing(
        models,
        {
            "strategy": "canary",
            "production": versions[0],
            "variants": [
                {"name": "champion", "version": versions[0], "weight": 90},
                {"name": "canary", "version": versions[1], "weight": 10},
            ],
        },
    )
    queries: dict[str, list[str]] = {}
    for qid, rows in ds.iter_queries():
        queries[qid] = [str(d) for d in ds.doc_ids[rows]]
    return {"models": models, "champion": versions[0], "queries": queries, "materialize": mat}


def request_dicts(
    queries: dict[str, list[str]], n_docs: int, count: int, seed: int
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    eligible = [q for q, docs in queries.items() if len(docs) >= n_docs]
    return [
        {
            "query_id": (q := eligible[i % len(eligible)]),
            "user_id": f"u{int(rng.integers(1_000_000))}",
            "candidates": [{"doc_id": d} for d in queries[q][:n_docs]],
        }
        for i in range(count)
    ]


def encode(requests: list[dict[str, Any]]) -> list[bytes]:
    return [http_post("/api/v1/rank", json.dumps(body).encode()) for body in requests]


# ----------------------------------------------------------------------------- servers
def start_platform(
    home: Path, redis_url: str, project: str, port: int, workers: int
) -> subprocess.Popen[bytes]:
    """The platform's service as the benchmark runs it: cache off, no access log."""
    from ltr.demo.service import start_service
    from ltr.settings import Settings

    settings = Settings(home=home, redis_url=redis_url, feast_project=project)
    return start_service(
        settings,
        port,
        timeout_s=120.0,
        extra_env={"LTR_CACHE_ENABLED": "false", "LTR_REDIS_TIMEOUT_MS": "200"},
        uvicorn_args=(*UVICORN_ARGS, "--workers", str(workers)),
    )


def write_feast_yaml(folder: Path, home: Path, redis_url: str, project: str) -> Path:
    """The ``feature_store.yaml`` a user would write: the platform's registry and Redis,
    Feast's stock Redis online store."""
    from ltr.features.definitions import ENTITY_KEY_SERIALIZATION_VERSION, REGISTRY_FILE
    from ltr.features.store import redis_connection_string

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "feature_store.yaml").write_text(
        f"project: {project}\n"
        f"registry: {(home / REGISTRY_FILE).resolve()}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "{redis_connection_string(redis_url)}"\n'
        "offline_store:\n"
        "  type: file\n"
        f"entity_key_serialization_version: {ENTITY_KEY_SERIALIZATION_VERSION}\n"
    )
    return folder


def start_assembled(
    model_dir: Path, feast_repo: Path, port: int, workers: int, probe: bytes, timeout_s: float
) -> subprocess.Popen[bytes]:
    """``bench/assembled_stack.py`` under uvicorn, returned once a rank request answers 200."""
    from bench.assembled_stack import FEAST_REPO_ENV, MODEL_DIR_ENV

    env = {**os.environ, MODEL_DIR_ENV: str(model_dir), FEAST_REPO_ENV: str(feast_repo)}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.assembled_stack:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *UVICORN_ARGS,
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, env=env)
    body = probe.split(b"\r\n\r\n", 1)[1]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the assembled stack exited during start-up ({proc.returncode})")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/rank",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status == 200:
                    return proc
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"the assembled stack was not ready after {timeout_s:.0f} s")


def post_rank(port: int, raw: bytes) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/rank",
        data=raw.split(b"\r\n\r\n", 1)[1],
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def same_ranking(platform_answer: dict[str, Any], assembled_answer: dict[str, Any]) -> bool:
    """Same documents in the same order with the same scores (to float32 precision)."""
    p, a = platform_answer["ranked"], assembled_answer["ranked"]
    return [d["doc_id"] for d in p] == [d["doc_id"] for d in a] and bool(
        np.allclose([d["score"] for d in p], [d["score"] for d in a], rtol=1e-5, atol=1e-6)
    )


stop = stop_process


def rss_mb(pid: int) -> float:
    """Resident memory of a server: the process and its children (uvicorn workers)."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return float(total / 2**20)


def server_totals(port: int) -> dict[str, tuple[float, float]]:
    """(seconds, count) per stage (and end to end) from the service's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    totals: dict[str, list[float]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        for metric, label in (
            ("ltr_stage_latency_seconds", "stage"),
            ("ltr_request_latency_seconds", "endpoint"),
        ):
            for slot, suffix in enumerate(("_sum", "_count")):
                if name.startswith(metric + suffix + "{"):
                    key = name.split(f'{label}="', 1)[1].split('"', 1)[0]
                    totals.setdefault(key, [0.0, 0.0])[slot] += float(value)
    return {k: (v[0], v[1]) for k, v in totals.items()}


def means_between(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean ms per stage over the requests served between two :func:`server_totals`."""
    out = {}
    for key, (total, count) in after.items():
        total0, count0 = before.get(key, (0.0, 0.0))
        if count > count0:
            out[key] = 1000 * (total - total0) / (count - count0)
    return out


# ----------------------------------------------------------------------------- floor
def floor_ms(
    models: Path,
    redis_url: str,
    project: str,
    requests: list[dict[str, Any]],
    passes: int,
    rate: float | None = None,
) -> np.ndarray:
    """Per-request ms of feature read + matrix + ONNX Runtime + sort, in this process.

    Back to back when ``rate`` is None (``passes`` times over ``requests``); else one pass
    paced at ``rate`` requests per second, like the open loop the service is measured with:
    a CPU that idles between requests wakes up slower, and the floor of a paced request is
    the same work done at the same pace.

    The model is the one the service's router picks for the request's user (canary split),
    the read the one a 100-candidate request takes in the service (``RedisFeatureReader
    .aread`` through a ``RedisWire`` on an event loop: the HGETs pipelined in one write),
    the session the service's (``load_version``: one thread, no spinning). No HTTP, no
    JSON, no pydantic. The loop is uvloop's, like the service's.
    """
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_floor(models, redis_url, project, requests, passes, rate))


async def _floor(
    models: Path,
    redis_url: str,
    project: str,
    requests: list[dict[str, Any]],
    passes: int,
    rate: float | None,
) -> np.ndarray:
    from ltr.features.store import redis_connection_string
    from serving.features.redis_reader import (
        FeatureViewSpec,
        RedisFeatureReader,
        redis_client_from_connection_string,
    )
    from serving.features.redis_wire import RedisWire
    from serving.features.schema import assemble
    from serving.model_store import ModelStore

    store = ModelStore(models, threads=1)
    store.load()
    snap = store.snapshot
    client = redis_client_from_connection_string(
        redis_connection_string(redis_url), socket_timeout=2.0, socket_connect_timeout=2.0
    )
    wire = RedisWire.from_url(redis_url, timeout_s=2.0)
    if wire is None:
        raise ValueError(f"the floor needs a plain redis:// URL, got {redis_url!r}")
    readers = {}
    for version, model in snap.models.items():
        declared = model.metadata.get("feature_views") or {}
        specs = [
            FeatureViewSpec(
                vc.view, tuple(declared[vc.view]["join_keys"]), declared[vc.view]["dim"]
            )
            for vc in model.schema.views
        ]
        readers[version] = RedisFeatureReader(
            client, project, key_version=3, views=specs, wire=wire
        )
    work = []
    for body in requests:
        model = snap.get(snap.router.decide(body["user_id"], "floor").version)
        doc_ids = [c["doc_id"] for c in body["candidates"]]
        work.append((readers[model.version], model, body["query_id"], doc_ids))

    async def one(reader: Any, model: Any, query_id: str, doc_ids: list[str]) -> None:
        result = await reader.aread(query_id, doc_ids)
        x, _ = assemble(model.schema, doc_ids, [None] * len(doc_ids), result.vectors, result.found)
        np.argsort(-model.score(x), kind="stable")

    for item in work[:50]:  # warm-up
        await one(*item)
    times = []
    if rate is not None:
        start = time.perf_counter()
        for i, item in enumerate(work):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.perf_counter()
            await one(*item)
            times.append(time.perf_counter() - t)
    for _ in range(passes if rate is None else 0):
        for item in work:
            t = time.perf_counter()
            await one(*item)
            times.append(time.perf_counter() - t)
    await wire.aclose()
    client.close()
    return np.asarray(times) * 1e3


# ----------------------------------------------------------------------------- load
@dataclass
class StackRun:
    """What one server configuration measured."""

    name: str
    workers: int
    sat: LoadResult
    fixed: dict[float, LoadResult] = field(default_factory=dict)  # rate -> result
    big: LoadResult | None = None
    rss_mb: float = float("nan")
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        runs = [self.sat, *self.fixed.values(), *([self.big] if self.big else [])]
        return sum(r.errors for r in runs)


def common_rate(assembled_sat: float) -> float:
    """The fixed rate both stacks get: half the assembled stack's saturation, at most 200/s."""
    return float(max(1.0, min(MAX_FIXED_RATE, round(0.5 * assembled_sat))))


async def measure(
    port: int,
    b100: list[bytes],
    workers: int,
    sat_seconds: float,
    seconds: float,
    rates_for: Callable[[float], list[float]],
    b1000: list[bytes] | None = None,
    stages: dict[str, float] | None = None,
) -> tuple[LoadResult, dict[float, LoadResult], LoadResult | None]:
    """Warm-up, saturation (closed loop), then the fixed rates ``rates_for(saturation)``
    (open loop), then 1000 candidates at 20 req/s when ``b1000`` is given. ``stages``, when
    given, receives the server-side means of the first fixed-rate run (one worker only:
    /metrics is per process)."""
    host = "127.0.0.1"
    await closed_loop(host, port, b100, 2 * workers + 2, 2.0 + 2.0 * workers)  # warm-up
    if b1000:
        await closed_loop(host, port, b1000, 1, 2.0)
    probe = HealthProbe(port)  # GET /health on its own connection while saturated
    probe.phase = "saturated"
    probe.start()
    try:
        sat = await closed_loop(host, port, b100, SAT_CONNECTIONS, sat_seconds)
    finally:
        probe.stop()
    sat.health_ms = [ms for _, ms in probe.samples]
    fixed = {}
    for i, rate in enumerate(rates_for(sat.throughput)):
        duration = max(seconds, MIN_FIXED_REQUESTS / rate)  # enough requests for a p99
        before = server_totals(port) if stages is not None and i == 0 else None
        fixed[rate] = await open_loop(host, port, b100, rate, duration, connections=16)
        if before is not None and stages is not None:
            stages.update(means_between(before, server_totals(port)))
    big = await open_loop(host, port, b1000, 20.0, 10.0, connections=4) if b1000 else None
    if b1000:  # the HTTP floor: a trivial route, same load generator, same first rate
        rate = next(iter(fixed))
        health = [HEALTH_REQUEST] * max(MIN_FIXED_REQUESTS, int(rate * seconds))
        sat.http_floor = await open_loop(host, port, health, rate, seconds, connections=16)
    return sat, fixed, big


# ----------------------------------------------------------------------------- report
def ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def print_side_by_side(platform_run: StackRun, assembled: StackRun, rate: float) -> None:
    p, a = platform_run, assembled
    pf, af = p.fixed[rate], a.fixed[rate]
    rows = [
        (
            f"saturation ({SAT_CONNECTIONS} conns)",
            f"{p.sat.throughput:.0f} req/s",
            f"{a.sat.throughput:.0f} req/s",
            p.sat.throughput / a.sat.throughput,
        ),
        (
            f"p50 @{rate:.0f} req/s",
            ms(pf.pct_ms(50)),
            ms(af.pct_ms(50)),
            af.pct_ms(50) / pf.pct_ms(50),
        ),
        (
            f"p99 @{rate:.0f} req/s",
            ms(pf.pct_ms(99)),
            ms(af.pct_ms(99)),
            af.pct_ms(99) / pf.pct_ms(99),
        ),
        (
            "saturation p50 latency",
            ms(p.sat.pct_ms(50)),
            ms(a.sat.pct_ms(50)),
            a.sat.pct_ms(50) / p.sat.pct_ms(50),
        ),
        ("resident memory", f"{p.rss_mb:.0f} MB", f"{a.rss_mb:.0f} MB", a.rss_mb / p.rss_mb),
        ("non-200 or failed", str(p.errors), str(a.errors), float("nan")),
    ]
    print(f"\n{p.workers} uvicorn worker(s) each, 100 candidates")
    print(f"  {'':<26}{'platform':>14}{'assembled':>14}{'platform better by':>20}")
    for name, pv, av, ratio in rows:
        r = "" if np.isnan(ratio) else f"{ratio:.1f}x"
        print(f"  {name:<26}{pv:>14}{av:>14}{r:>20}")
    for run in (p, a):
        loads = [run.sat, *run.fixed.values(), *([run.big] if run.big else [])]
        statuses: dict[int, int] = {}
        for load in loads:
            for code, n in load.statuses.items():
                if code != 200:
                    statuses[code] = statuses.get(code, 0) + n
        if statuses:
            print(f"  {run.name} non-200 statuses: {dict(sorted(statuses.items()))}")


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> str:
    load1, load5, _ = os.getloadavg()
    return f"{load1:.2f} (1 min) {load5:.2f} (5 min)"


def machine() -> str:
    return f"{platform.machine()}, {usable_cores()} usable cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--redis-url", default=os.environ.get("LTR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=15.0,
        help="least duration of each fixed-rate run (longer when under 500 requests)",
    )
    ap.add_argument("--sat-seconds", type=float, default=10.0, help="duration of saturation runs")
    ap.add_argument(
        "--workers",
        default="1,2",
        help="uvicorn worker counts to run both stacks with; targets use the first",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary LTR_HOME")
    args = ap.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not worker_counts or min(worker_counts) < 1:
        ap.error("--workers needs one or more positive integers")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    project = f"bench{os.getpid()}"
    home = Path(tempfile.mkdtemp(prefix="ltr-bench-serving-"))
    procs: list[subprocess.Popen[bytes] | None] = []
    try:
        t0 = time.perf_counter()
        built = build(home, args.redis_url, project)
        mat = built["materialize"]
        print(
            f"setup: {time.perf_counter() - t0:.0f} s; materialized {mat['total_rows']} rows "
            f"into Redis at {mat['rows_per_second']:.0f} rows/s",
            flush=True,
        )
        r100 = request_dicts(built["queries"], 100, 600, seed=0)
        b100 = encode(r100)
        b1000 = encode(request_dicts(built["queries"], 1000, 40, seed=1))
        feast_repo = write_feast_yaml(home / "assembled", home, args.redis_url, project)
        model_dir = built["models"] / "versions" / built["champion"]

        runs: dict[tuple[str, int], StackRun] = {}
        rates: dict[int, float] = {}
        floor = floor_hot = np.full(1, np.nan)
        assembled_answers: list[dict[str, Any]] = []
        compared = agree = 0
        load_before = load_average()
        for workers in worker_counts:
            port = free_port()
            proc = start_assembled(model_dir, feast_repo, port, workers, b100[0], 180.0)
            procs.append(proc)
            if workers == worker_counts[0]:
                assembled_answers = [post_rank(port, raw) for raw in b100[:20]]
            sat, fixed, _ = asyncio.run(
                measure(
                    port,
                    b100,
                    workers,
                    args.sat_seconds,
                    args.seconds,
                    lambda thr: [common_rate(thr)],
                )
            )
            rate = rates[workers] = next(iter(fixed))
            runs["assembled", workers] = StackRun(
                "assembled", workers, sat, fixed, rss_mb=rss_mb(proc.pid)
            )
            stop(proc)
            print(f"assembled stack, {workers} worker(s): measured", flush=True)

            port = free_port()
            proc = start_platform(home, args.redis_url, project, port, workers)
            procs.append(proc)
            primary = workers == worker_counts[0]
            if primary:
                # the same answers as the assembled stack where the champion served (the
                # canary is another model)
                for raw, theirs in zip(b100[:20], assembled_answers, strict=True):
                    ours = post_rank(port, raw)
                    if ours["model_version"] == built["champion"]:
                        compared += 1
                        agree += same_ranking(ours, theirs)
                # timed next to the run it is compared with (the server idles)
                floor_hot = floor_ms(built["models"], args.redis_url, project, r100, passes=3)
                floor = floor_ms(
                    built["models"], args.redis_url, project, r100[:FLOOR_PACED], 1, rate=rate
                )
            stages: dict[str, float] = {}
            sat, fixed, big = asyncio.run(
                measure(
                    port,
                    b100,
                    workers,
                    args.sat_seconds,
                    args.seconds,
                    lambda _, r=rate: sorted({r, MAX_FIXED_RATE}),
                    b1000 if primary else None,
                    stages if workers == 1 else None,
                )
            )
            run = StackRun("platform", workers, sat, fixed, big, rss_mb=rss_mb(proc.pid))
            run.stages = stages
            runs["platform", workers] = run
            stop(proc)
            print(f"platform's service, {workers} worker(s): measured", flush=True)

        print(
            f"\nrank service vs assembled FastAPI + Feast SDK + ONNX Runtime, "
            f"{datetime.now(UTC):%Y-%m-%d}, {machine()}, load average {load_before} before "
            f"the load runs and {load_average()} after; features from Redis (Feast layout), "
            "platform cache off, load generator in this process on the same cores"
        )
        for workers in worker_counts:
            print_side_by_side(
                runs["platform", workers], runs["assembled", workers], rates[workers]
            )
        first = runs["platform", worker_counts[0]]
        print("\nplatform's service only")
        floor_p50 = float(np.percentile(floor, 50))
        hot_p50 = float(np.percentile(floor_hot, 50))
        e2e_p50 = first.fixed[rates[worker_counts[0]]].pct_ms(50)
        print(
            f"  in-process floor at {rates[worker_counts[0]]:.0f} req/s (paced like the "
            f"service's run): p50 {floor_p50:.3f} ms, p99 {np.percentile(floor, 99):.3f} ms; "
            f"end-to-end p50 at that rate is {e2e_p50 / floor_p50:.2f}x the floor\n"
            f"  in-process floor back to back: p50 {hot_p50:.3f} ms, p99 "
            f"{np.percentile(floor_hot, 99):.3f} ms (end-to-end p50 {e2e_p50 / hot_p50:.2f}x)"
        )
        http = first.sat.http_floor
        if http is not None:
            assembled_p50 = runs["assembled", worker_counts[0]].fixed[rates[worker_counts[0]]]
            bound = assembled_p50.pct_ms(50) / (http.pct_ms(50) + floor_p50)
            print(
                f"  HTTP floor (GET /health, same load generator and rate): p50 "
                f"{http.pct_ms(50):.2f} ms, p99 {http.pct_ms(99):.2f} ms; the best p50 ratio "
                f"a service could reach through HTTP here, assembled p50 / (HTTP floor + "
                f"in-process floor): {bound:.1f}x"
            )
        late = np.asarray(first.fixed[rates[worker_counts[0]]].lateness_s) * 1e3
        if late.size:
            print(
                f"  load generator's own lateness (issued after the scheduled time, not counted "
                f"in latencies): p50 {np.percentile(late, 50):.2f} ms, p99 "
                f"{np.percentile(late, 99):.2f} ms"
            )
        for (name, workers), run in runs.items():
            h = np.asarray(run.sat.health_ms)
            print(
                f"  GET /health while saturated, {name}, {workers} worker(s): "
                f"p50 {np.percentile(h, 50):.1f} ms, p99 {np.percentile(h, 99):.1f} ms "
                f"({h.size} probes)"
            )
        for workers in worker_counts:
            r = runs["platform", workers].fixed[MAX_FIXED_RATE]
            print(
                f"  {workers} worker(s) @{MAX_FIXED_RATE:.0f} req/s: p50 {ms(r.pct_ms(50))}, "
                f"p99 {ms(r.pct_ms(99))} ({r.throughput:.0f}/s achieved); saturation "
                f"{runs['platform', workers].sat.throughput:.0f} req/s"
            )
        if first.big is not None:
            print(
                f"  1000 candidates @20 req/s ({worker_counts[0]} worker(s)): p50 "
                f"{ms(first.big.pct_ms(50))}, p99 {ms(first.big.pct_ms(99))}"
            )
        if first.stages:
            print(
                f"  server-side means @{rates[1]:.0f} req/s, 1 worker (ms): "
                + ", ".join(f"{k} {v:.3f}" for k, v in first.stages.items())
            )
        if 1 in worker_counts and 2 in worker_counts:
            one, two = runs["platform", 1], runs["platform", 2]
            thr = two.sat.throughput / one.sat.throughput
            p50 = one.fixed[MAX_FIXED_RATE].pct_ms(50) / two.fixed[MAX_FIXED_RATE].pct_ms(50)
            p99 = one.fixed[MAX_FIXED_RATE].pct_ms(99) / two.fixed[MAX_FIXED_RATE].pct_ms(99)
            votes = {thr > 1.0, p99 > 1.0}
            verdict = (
                "split: "
                + ("2 workers" if thr > 1.0 else "1 worker")
                + " on throughput, "
                + ("2 workers" if p99 > 1.0 else "1 worker")
                + " on p99"
                if len(votes) == 2
                else ("2 workers win" if True in votes else "1 worker wins")
            )
            print(
                f"  2 workers / 1 worker ({usable_cores()} cores): saturation x{thr:.2f}, "
                f"p50 @{MAX_FIXED_RATE:.0f} req/s x{1 / p50:.2f}, p99 x{1 / p99:.2f} "
                f"-> {verdict}"
            )
        print()

        w = worker_counts[0]
        p, a, rate = runs["platform", w], runs["assembled", w], rates[w]
        targets = Targets()
        for q in (50, 99):
            targets.at_least(
                f"p{q} @{rate:.0f} req/s, assembled / platform ({w} worker)",
                a.fixed[rate].pct_ms(q) / p.fixed[rate].pct_ms(q),
                MIN_LATENCY_RATIO,
                "x",
                ".1f",
            )
        targets.at_least(
            f"saturation throughput, platform / assembled ({w} worker)",
            p.sat.throughput / a.sat.throughput,
            MIN_THROUGHPUT_RATIO,
            "x",
            ".1f",
        )
        targets.at_most(
            f"end-to-end p50 @{rate:.0f} req/s / in-process floor p50",
            p.fixed[rate].pct_ms(50) / floor_p50,
            MAX_FLOOR_RATIO,
            "x",
            ".2f",
        )
        targets.at_most(
            f"GET /health p99 while saturated ({w} worker)",
            float(np.percentile(p.sat.health_ms, 99)),
            MAX_HEALTH_P99_MS,
            "ms",
            ".1f",
        )
        targets.at_most(
            f"service RSS, 2 models loaded ({w} worker)", p.rss_mb, MAX_RSS_MB, "MB", ".0f"
        )
        targets.check(
            "assembled stack ranks like the platform (champion's answers compared)",
            f"{agree} of {compared} identical",
            "all, at least 1",
            compared > 0 and agree == compared,
        )
        errors = sum(r.errors for r in runs.values())
        targets.at_most("non-200 or failed requests, both stacks", errors, 0, fmt="d")
        return targets.report()
    finally:
        for proc in procs:
            stop(proc)
        try:
            import redis

            client = redis.Redis.from_url(args.redis_url)
            suffix = project.encode()
            for key in client.scan_iter(count=1000):
                if key.endswith(suffix):
                    client.delete(key)
        except Exception as exc:  # cleanup is best effort
            print(f"cleanup of Redis keys failed: {exc}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
