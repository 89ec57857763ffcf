"""Adversarial load: legitimate rank traffic while another process attacks the service.

    python -m bench.adversarial [--rate 50] [--seconds 20] [--redis-url URL]

Starts a private ``redis-server`` (``--maxmemory 64mb --maxmemory-policy allkeys-lru``, so
Redis' memory is bounded and measurable; ``--redis-url`` uses an existing Redis instead),
builds the online features and two models there (as ``bench.serving`` does) and starts the
platform's service under uvicorn with its production defaults: result cache and event log
on, features, cache and streams in that Redis, 50 ms Redis timeout.

Legitimate traffic: 100 candidates at a fixed rate (open loop; each request's candidate
order is shuffled, so every one is a cache miss that does the full path and writes a cache
entry and an impression), first unattacked, then for as long again while a second process
(multiprocessing) attacks with, concurrently:

- oversized bodies: 8 MiB, declared with Content-Length or streamed chunked;
- error-heavy bodies: about 3 MB of candidates whose feature values are strings, NaN or
  1e999 (each one a validation error), kept under the body limit so they get parsed;
- a feedback flood: POST /api/v1/feedback, 1000 clicks each, random request ids;
- slow clients: sockets that send the headers, or a declared body, a few bytes a second
  and hold the connection.

Reports the legitimate p50/p99 unattacked vs attacked, Redis' used memory (sampled every
0.25 s) against its bound, keys Redis evicted (online feature keys among them), the event
streams' length and memory afterwards, every 5xx answer to anyone (503 at capacity
included), and what the attackers got, with their rates. Targets: attacked p99 <= 3x the unattacked
p99 of the same run; used memory under the bound; no online feature key evicted; no 5xx;
every legitimate request answered 200. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._targets import Targets
from bench.loadgen import Connection, HealthProbe, LoadResult, closed_loop, http_post, open_loop
from ltr.demo.service import free_port, stop_process

MAXMEMORY_MB = 64
MAX_P99_RATIO = 3.0
OVERSIZED_BYTES = 8 * 2**20
ERROR_BODY_CANDIDATES = 60_000  # about 3 MB: under the service's 4 MiB body limit
FEEDBACK_CLICKS = 1000
SLOW_CLIENTS = 200
ATTACK_TIMEOUT_S = 30.0
#: Each attack comes from a loopback address of its own, as distinct attackers would (the
#: service tells clients apart by address); legitimate traffic comes from 127.0.0.1.
ATTACKERS = {
    "oversized": "127.0.0.2",
    "errors": "127.0.0.3",
    "feedback": "127.0.0.4",
    "slow": "127.0.0.5",
}


# ----------------------------------------------------------------------------- Redis
def start_private_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of our own, memory-bounded, nothing persisted; (process, URL)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: pass --redis-url to use another Redis")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(folder),
            "--maxmemory",
            f"{MAXMEMORY_MB}mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.ping():
                client.close()
                return proc, f"redis://127.0.0.1:{port}/0"
        except redis.RedisError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit(f"the private redis-server on port {port} did not start")


class MemorySampler(threading.Thread):
    """Samples Redis' ``used_memory`` every ``period`` seconds, tagged with the phase."""

    def __init__(self, url: str, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2)
        self.period = period
        self.phase = "setup"
        self.samples: list[tuple[str, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.period):
            with contextlib.suppress(Exception):  # a missed sample is not a result
                self.samples.append((self.phase, int(self.client.info("memory")["used_memory"])))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak_mb(self, phase: str) -> float:
        values = [v for p, v in self.samples if p == phase]
        return max(values) / 2**20 if values else float("nan")


# ----------------------------------------------------------------------------- attackers
def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _chunked(path: str, body: bytes, chunk: int = 64 * 1024) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    parts = [head]
    for i in range(0, len(body), chunk):
        piece = body[i : i + chunk]
        parts.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


Attack = tuple[str, bytes]  # (label, raw request)


def oversized_requests() -> list[Attack]:
    n = OVERSIZED_BYTES // 20
    body = json.dumps(
        {"query_id": "q0", "candidates": [{"doc_id": f"x{i:09d}"} for i in range(n)]}
    ).encode()[:OVERSIZED_BYTES]
    return [
        ("oversized, 8 MiB Content-Length", _post("/api/v1/rank", body)),
        ("oversized, 8 MiB chunked", _chunked("/api/v1/rank", body)),
    ]


def _bad_candidates(n: int, per_candidate: int, bad: str) -> bytes:
    features = ",".join(f'"f{j}":{bad}' for j in range(1, per_candidate + 1))
    candidates = ",".join(f'{{"doc_id":"e{i}","features":{{{features}}}}}' for i in range(n))
    return f'{{"query_id":"q0","candidates":[{candidates}]}}'.encode()


def error_heavy_requests() -> list[Attack]:
    """Candidate lists whose feature values are invalid (JSON text: strings, NaN, 1e999):
    one huge list, and lists at the default candidate limit (1000) that fit the body limit."""
    variants = [
        (f"error-heavy, {ERROR_BODY_CANDIDATES} x 1 string", ERROR_BODY_CANDIDATES, 1, '"x"'),
        ("error-heavy, 1000 x 100 strings", 1000, 100, '"x"'),
        ("error-heavy, 1000 x 20 NaN", 1000, 20, "NaN"),
        ("error-heavy, 1000 x 20 1e999", 1000, 20, "1e999"),
    ]
    return [
        (label, _post("/api/v1/rank", _bad_candidates(n, k, bad))) for label, n, k, bad in variants
    ]


def feedback_requests(rng: random.Random) -> list[Callable[[], Attack]]:
    """Feedback calls with random request ids: at the default click limit (100) and 10x it."""
    makers = []
    for clicks in (100, 1000):
        listed = json.dumps([{"doc_id": f"d{i:040d}", "position": i} for i in range(clicks)])

        def make(clicks: int = clicks, listed: str = listed) -> Attack:
            request_id = uuid.UUID(int=rng.getrandbits(128)).hex
            user = f"attacker{rng.randrange(10**6)}"
            body = f'{{"request_id":"{request_id}","user_id":"{user}","clicks":{listed}}}'
            return f"feedback flood, {clicks} clicks", _post("/api/v1/feedback", body.encode())

        makers.append(make)
    return makers


class Tally:
    """What the attackers got: outcome counts per attack, and one 5xx answer of each."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter[str]] = {}
        self.samples: dict[str, str] = {}
        self.held_s: dict[str, list[float]] = {}

    def add(self, label: str, outcome: str, body: bytes = b"") -> None:
        self.outcomes.setdefault(label, Counter())[outcome] += 1
        if outcome.isdigit() and int(outcome) >= 500:
            self.samples.setdefault(f"{label} {outcome}", body[:200].decode(errors="replace"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
            "samples": self.samples,
            "held_s": self.held_s,
        }


async def _hammer(
    port: int,
    makers: list[Callable[[], Attack]],
    stop: asyncio.Event,
    tally: Tally,
    source: str,
) -> None:
    """Closed loop on one connection from ``source``, cycling through ``makers``; a fresh
    connection after each refusal or reset."""
    conn = Connection("127.0.0.1", port, source)
    i = 0
    while not stop.is_set():
        label, raw = makers[i % len(makers)]()
        i += 1
        try:
            status, body = await asyncio.wait_for(conn.request(raw), ATTACK_TIMEOUT_S)
            tally.add(label, str(status), body)
            if status >= 400:
                conn.close()
                conn = Connection("127.0.0.1", port, source)
        except TimeoutError:
            tally.add(label, "timeout")
            conn.close()
            conn = Connection("127.0.0.1", port, source)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.add(label, "reset")
            conn.close()
            conn = Connection("127.0.0.1", port, source)
            await asyncio.sleep(0.01)
    conn.close()


async def _slow_client(port: int, i: int, stop: asyncio.Event, tally: Tally) -> None:
    """Sends a request a few bytes a second and never finishes it; records how it ended."""
    label = "slow headers" if i % 2 else "slow body"
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(ATTACKERS["slow"], 0)
        )
    except OSError:
        tally.add(label, "connect refused")
        return
    if label == "slow headers":  # slowloris: the headers never end
        writer.write(b"POST /api/v1/rank HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        drip = b"X-Pad: a\r\n"
    else:  # complete headers, a declared 100 kB body that arrives a byte a second
        head = _post("/api/v1/rank", b"").replace(b"Length: 0", b"Length: 100000")
        writer.write(head + b"{")
        drip = b" "
    t0 = time.perf_counter()
    read = asyncio.ensure_future(reader.read(65536))
    try:
        while not stop.is_set():
            done, _ = await asyncio.wait({read}, timeout=1.0)
            if done:
                data = read.result()
                tally.held_s.setdefault(label, []).append(time.perf_counter() - t0)
                if data:
                    tally.add(label, data[9:12].decode(errors="replace"), data)
                else:
                    tally.add(label, "closed by server")
                return
            writer.write(drip)
            await writer.drain()
        tally.add(label, "still held at the end")
    except (OSError, ConnectionError):
        tally.add(label, "reset")
    finally:
        read.cancel()
        writer.close()


async def _attack(port: int, stop_flag: Any, started: Any) -> dict[str, Any]:
    rng = random.Random(7)
    oversized = [(lambda a=a: a) for a in oversized_requests()]
    errors = [(lambda a=a: a) for a in error_heavy_requests()]
    feedback = feedback_requests(rng)
    tally = Tally()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_slow_client(port, i, stop, tally)) for i in range(SLOW_CLIENTS)]
    for kind, makers, connections in (
        ("oversized", oversized, 2),
        ("errors", errors, 2),
        ("feedback", feedback, 4),
    ):
        tasks += [
            asyncio.create_task(
                _hammer(port, makers[k:] + makers[:k], stop, tally, ATTACKERS[kind])
            )
            for k in range(connections)
        ]
    started.set()
    t0 = time.perf_counter()
    while not stop_flag.is_set():
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - t0
    stop.set()
    await asyncio.wait(tasks, timeout=ATTACK_TIMEOUT_S + 5)
    return {**tally.as_dict(), "seconds": seconds}


def attacker(port: int, stop_flag: Any, started: Any, results: Any) -> None:
    """The attacking process: every attack at once until ``stop_flag`` is set."""
    results.put(asyncio.run(_attack(port, stop_flag, started)))


# ----------------------------------------------------------------------------- legit
def legit_requests(queries: dict[str, list[str]], count: int, seed: int) -> list[bytes]:
    """100-candidate requests, candidate order shuffled (a distinct cache key each)."""
    rng = np.random.default_rng(seed)
    eligible = [q for q, docs in queries.items() if len(docs) == 100]
    out = []
    for i in range(count):
        q = eligible[i % len(eligible)]
        docs = [queries[q][j] for j in rng.permutation(100)]
        body = {
            "query_id": q,
            "user_id": f"u{int(rng.integers(1_000_000))}",
            "candidates": [{"doc_id": d} for d in docs],
        }
        out.append(http_post("/api/v1/rank", json.dumps(body).encode()))
    return out


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU time (user + system) of each process and its children, and of this process (the
    legitimate load generator), by name."""
    import psutil

    out: dict[str, float] = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        try:
            proc = psutil.Process(pid)
            out[name] = sum(proc.cpu_times()[:2])
            children = proc.children(recursive=True)
            if children:
                out[f"{name}'s children"] = sum(
                    sum(c.cpu_times()[:2]) for c in children if c.is_running()
                )
        except psutil.Error:
            out[name] = float("nan")
    out["load generator"] = sum(psutil.Process().cpu_times()[:2])
    return out


def load_average() -> str:
    load1, load5, _ = os.getloadavg()
    return f"{load1:.2f} (1 min) {load5:.2f} (5 min)"


def five_xx(statuses: dict[Any, int]) -> int:
    return sum(n for s, n in statuses.items() if str(s).isdigit() and int(s) >= 500)


def feature_keys(client: Any, project: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"*{project}", count=1000))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--redis-url", default=None, help="use this Redis (no private server)")
    ap.add_argument("--rate", type=float, default=50.0, help="legitimate requests per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each phase")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers of the service")
    ap.add_argument("--keep", action="store_true", help="keep the temporary LTR_HOME")
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import redis

    from bench.serving import build
    from ltr.demo.service import start_service
    from ltr.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="ltr-bench-adversarial-"))
    project = f"adv{os.getpid()}"
    redis_proc = None
    service = None
    sampler = None
    try:
        if args.redis_url is None:
            redis_proc, url = start_private_redis(home)
        else:
            url = args.redis_url
        client = redis.Redis.from_url(url, socket_timeout=5)
        bound = int(client.config_get("maxmemory").get("maxmemory", 0))
        t0 = time.perf_counter()
        built = build(home, url, project)
        print(f"setup: {time.perf_counter() - t0:.0f} s", flush=True)
        keys_before = feature_keys(client, project)
        n = int(args.rate * args.seconds)
        bodies = legit_requests(built["queries"], 2 * n + 200, seed=0)
        warm, calm, attacked_bodies = bodies[:200], bodies[200 : 200 + n], bodies[200 + n :]

        port = free_port()
        settings = Settings(home=home, redis_url=url, feast_project=project)
        service = start_service(
            settings,
            port,
            timeout_s=120.0,
            extra_env={
                "LTR_CACHE_ENABLED": "true",
                "LTR_EVENTS_ENABLED": "true",
                "LTR_EVENTS_STREAM_PREFIX": f"{project}:events",
            },
            uvicorn_args=(
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--workers",
                str(args.workers),
            ),
        )
        sampler = MemorySampler(url)
        sampler.start()
        health = HealthProbe(port)
        health.start()
        stats_before = client.info("stats")

        async def legit(requests: list[bytes]) -> LoadResult:
            return await open_loop("127.0.0.1", port, requests, args.rate, args.seconds, 16)

        asyncio.run(closed_loop("127.0.0.1", port, warm, 2, 3.0))
        load_before = load_average()
        sampler.phase = health.phase = "unattacked"
        calm_res = asyncio.run(legit(calm))

        ctx = mp.get_context("spawn")
        stop_flag, started, results = ctx.Event(), ctx.Event(), ctx.Queue()
        attack = ctx.Process(target=attacker, args=(port, stop_flag, started, results))
        attack.start()
        if not started.wait(60):
            raise RuntimeError("the attacking process did not start")
        time.sleep(1.0)  # let the slow clients connect and the floods get going
        sampler.phase = health.phase = "attacked"
        watched = {
            "attacker": attack.pid,
            "service": service.pid,
            "redis": redis_proc.pid if redis_proc else None,
        }
        cpu_before = cpu_seconds(watched)
        wall = time.perf_counter()
        attacked_res = asyncio.run(legit(attacked_bodies))
        cpu_after = cpu_seconds(watched)
        cpu_used = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
        wall = time.perf_counter() - wall
        stop_flag.set()
        try:
            attack_result: dict[str, Any] = results.get(timeout=ATTACK_TIMEOUT_S + 30)
        except queue.Empty:
            attack_result = {"outcomes": {}, "samples": {}, "held_s": {}}
        attackers: dict[str, dict[str, int]] = attack_result["outcomes"]
        attack.join(10)
        if attack.is_alive():
            attack.terminate()
        sampler.phase = health.phase = "after"
        time.sleep(0.5)
        sampler.stop()
        health.stop()
        stats_after = client.info("stats")
        memory = client.info("memory")
        evicted = int(stats_after["evicted_keys"]) - int(stats_before["evicted_keys"])
        keys_after = feature_keys(client, project)
        streams = {}
        for name in ("impressions", "clicks"):
            key = f"{project}:events:{name}"
            streams[name] = (int(client.xlen(key)), int(client.memory_usage(key) or 0) / 2**20)
        server_alive = service.poll() is None

        print(
            f"\nadversarial load on the rank service, {time.strftime('%Y-%m-%d')}, "
            f"{platform.machine()} {os.cpu_count()} cores, load average {load_before} before "
            f"and {load_average()} after; {args.workers} uvicorn worker(s), cache and events on, "
            f"Redis {'private, ' + str(MAXMEMORY_MB) + ' MB allkeys-lru' if redis_proc else url}"
        )
        print(
            "GET /health every 0.1 s: "
            + ", ".join(
                f"{ph} p50 {health.pct(ph, 50):.1f} ms p99 {health.pct(ph, 99):.1f} ms"
                for ph in ("unattacked", "attacked")
            )
        )
        print(
            f"CPU seconds during the attacked phase ({wall:.1f} s wall, "
            f"{os.cpu_count()} cores): "
            + ", ".join(f"{k} {v:.1f}" for k, v in cpu_used.items())
            + " (the service's children: its body-check helper)"
        )
        print(f"legitimate, 100 candidates @{args.rate:.0f} req/s for {args.seconds:.0f} s each:")
        for name, res in (("unattacked", calm_res), ("attacked", attacked_res)):
            print(
                f"  {name:<11} p50 {res.pct_ms(50):8.2f} ms   p99 {res.pct_ms(99):8.2f} ms   "
                f"{res.count} answered 200, statuses {dict(sorted(res.statuses.items()))}, "
                f"{res.errors} non-200 or failed"
            )
        attack_s = float(attack_result.get("seconds", float("nan")))
        print(f"attackers got in {attack_s:.0f} s (status code or outcome: count; rate):")
        for label, outcomes in sorted(attackers.items()):
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
            if not label.startswith("slow"):
                shown += f"; {sum(outcomes.values()) / attack_s:.1f}/s"
            held = attack_result["held_s"].get(label)
            if held:
                shown += f" (those closed were held {np.median(held):.1f} s, median)"
            print(f"  {label:<36} {shown}")
        samples = {
            f"legitimate {status}": body.decode(errors="replace")
            for res in (calm_res, attacked_res)
            for status, body in res.samples.items()
            if status >= 500
        }
        samples.update(attack_result["samples"])
        for label, body in sorted(samples.items()):
            print(f"  a 5xx answer, {label}: {body}")
        bound_text = f"{bound / 2**20:.0f} MB" if bound else "none"
        print(
            f"Redis used_memory peak: {sampler.peak_mb('unattacked'):.1f} MB unattacked, "
            f"{sampler.peak_mb('attacked'):.1f} MB attacked, {memory['used_memory'] / 2**20:.1f} "
            f"MB after (bound {bound_text}); keys evicted: {evicted}; online feature keys "
            f"{keys_before} before, {keys_after} after"
        )
        print(
            "event streams after: "
            + ", ".join(f"{k} {n} entries, {mb:.1f} MB" for k, (n, mb) in streams.items())
        )
        print(f"service process alive after the attack: {server_alive}\n")

        legit_5xx = five_xx(calm_res.statuses) + five_xx(attacked_res.statuses)
        attack_5xx = sum(five_xx(v) for v in attackers.values())
        targets = Targets()
        targets.at_most(
            "legitimate p99 attacked / unattacked",
            attacked_res.pct_ms(99) / calm_res.pct_ms(99),
            MAX_P99_RATIO,
            "x",
            ".2f",
        )
        peak = max(sampler.peak_mb("unattacked"), sampler.peak_mb("attacked"))
        if bound:
            targets.at_most("Redis used_memory peak", peak, bound / 2**20, "MB", ".1f")
        else:
            targets.check("Redis used_memory peak", f"{peak:.1f} MB", "a maxmemory bound", False)
        targets.at_most("online feature keys lost (evicted)", keys_before - keys_after, 0, fmt="d")
        targets.at_most("5xx answers to anyone", legit_5xx + attack_5xx, 0, fmt="d")
        targets.at_most(
            "legitimate requests not answered 200",
            calm_res.errors + attacked_res.errors,
            0,
            fmt="d",
        )
        targets.at_most(
            "GET /health p99 while attacked", health.pct("attacked", 99), 50.0, "ms", ".1f"
        )
        targets.check("attack results collected", str(bool(attackers)), "True", bool(attackers))
        return targets.report()
    finally:
        if sampler is not None:
            sampler.stop()
        stop_process(service)
        stop_process(redis_proc)
        if redis_proc is None and args.redis_url is not None:
            try:
                c = redis.Redis.from_url(args.redis_url)
                for pattern in (f"*{project}", f"{project}:events*", "ltr:cache:bench-*"):
                    for key in c.scan_iter(match=pattern, count=1000):
                        c.delete(key)
            except Exception as exc:  # cleanup is best effort
                print(f"cleanup of Redis keys failed: {exc}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
