"""Event drain throughput: Redis Streams -> Parquet, exactly once, against a plain loop.

Writes N impressions (10 shown documents each, as the service logs them) and N/3 click
entries into streams of their own, then measures in the same run:

* **baseline**: a plain consumer-group loop (``XREADGROUP`` + ``XACK``, batches of 5,000,
  nothing decoded or written): the ceiling Redis and the client allow here;
* **drain**: :class:`ltr.online.drain.Drainer`: pending first, decode, one atomic Parquet
  file per batch with fsync, watermark, ``XACK``, ``XTRIM MINID``.

Targets: >= 10,000 events/s, and every event in a file exactly once.
Run: ``python -m bench.drain [--events 100000] [--redis redis://127.0.0.1:6379/9]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid

import redis

from bench._targets import Targets
from ltr.online.drain import Drainer, read_events

MIN_EVENTS_PER_SECOND = 10_000.0


def fill(client: redis.Redis, streams: dict[str, str], n: int) -> int:
    pipe = client.pipeline(transaction=False)
    written = 0
    for i in range(n):
        docs = [f"doc-{(i * 7 + j) % 5000}" for j in range(10)]
        pipe.xadd(
            streams["impressions"],
            {
                "v": "1",
                "ts_ms": str(int(time.time() * 1000)),
                "request_id": uuid.UUID(int=i).hex,
                "user_id": f"user-{i % 997}",
                "variant": "production" if i % 2 else "canary",
                "model_version": "v1" if i % 2 else "v2",
                "query_id": f"q{i % 1500}",
                "doc_ids": json.dumps(docs),
            },
        )
        written += 1
        if i % 3 == 0:
            pipe.xadd(
                streams["clicks"],
                {
                    "v": "1",
                    "ts_ms": str(int(time.time() * 1000)),
                    "request_id": uuid.UUID(int=i).hex,
                    "user_id": f"user-{i % 997}",
                    "clicks": json.dumps([[docs[0], 0]]),
                },
            )
            written += 1
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return written


def plain_loop(client: redis.Redis, streams: dict[str, str], batch: int = 5000) -> int:
    moved = 0
    for stream in streams.values():
        client.xgroup_create(stream, "plain", id="0")
        while True:
            raw = client.xreadgroup("plain", "c", {stream: ">"}, count=batch)
            if not raw:
                break
            ids = [entry_id for _name, entries in raw for entry_id, _ in entries]
            if not ids:
                break
            client.xack(stream, "plain", *ids)
            moved += len(ids)
    return moved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="impressions to write")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    args = ap.parse_args(argv)
    client = redis.Redis.from_url(args.redis, socket_timeout=60)
    base = f"bench:{uuid.uuid4().hex[:8]}"
    streams = {"impressions": f"{base}:impressions", "clicks": f"{base}:clicks"}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Redis {client.info()['redis_version']}"
    )
    try:
        t = time.perf_counter()
        total = fill(client, streams, args.events)
        print(f"wrote {total:,} entries in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        plain = plain_loop(client, streams)
        plain_s = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            report = Drainer(client, tmp, streams=streams).drain()
            drain_s = time.perf_counter() - t
            files = sum(len(s.files) for s in report.streams.values())
            ids = [
                (kind, i)
                for kind in ("impressions", "clicks")
                for i in read_events(tmp, kind, columns=["stream_id"])
                .column("stream_id")
                .to_pylist()
            ]
    finally:
        client.delete(*streams.values())
    plain_rate, drain_rate = plain / plain_s, report.written / drain_s
    print(f"plain consumer-group loop: {plain:,} entries in {plain_s:.2f} s = {plain_rate:,.0f}/s")
    print(
        f"drain to Parquet:          {report.written:,} entries in {drain_s:.2f} s = "
        f"{drain_rate:,.0f}/s ({files} files; {drain_rate / plain_rate:.2f}x the plain loop)"
    )
    targets = Targets()
    targets.check(
        "every entry in a file exactly once",
        f"{len(set(ids)):,} distinct of {len(ids):,} rows for {total:,} written",
        "all, no duplicates",
        len(ids) == len(set(ids)) == total,
    )
    targets.at_least("drain events/s", drain_rate, MIN_EVENTS_PER_SECOND, "events/s", ",.0f")
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
