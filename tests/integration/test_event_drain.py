"""The event drain against a real Redis: exactly once into Parquet, even when killed.

A child process runs the drain and SIGKILLs itself at a chosen step (after a read, after a
file was written, after an ack); the test then keeps writing events, runs the drain again
and compares the stream ids in the Parquet files with the ids Redis assigned on write:
nothing lost, nothing twice, nothing left pending. Uses db 7 of ``LTR_TEST_REDIS_URL`` with
unique stream names that are deleted afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from support.redis import redis_client

from ltr.online.drain import SCHEMAS, Drainer, DrainError, read_events

REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = redis_client(REDIS_URL)
    yield c
    c.close()


@pytest.fixture
def streams(client: redis.Redis) -> Iterator[dict[str, str]]:
    base = f"test:{uuid.uuid4().hex}:events"
    names = {"impressions": f"{base}:impressions", "clicks": f"{base}:clicks"}
    yield names
    client.delete(*names.values())


def write_events(
    client: redis.Redis, streams: dict[str, str], n: int, start: int = 0
) -> dict[str, list[str]]:
    """``n`` impressions and ``n // 3`` click entries, as the service writes them; returns
    the ids Redis assigned, by kind."""
    ids: dict[str, list[str]] = {"impressions": [], "clicks": []}
    pipe = client.pipeline(transaction=False)
    kinds = []
    for i in range(start, start + n):
        docs = [f"d{(i + j) % 50}" for j in range(10)]
        fields = {
            "v": "1",
            "ts_ms": "1767225600000",
            "request_id": f"r{i}",
            "user_id": f"u{i % 13}",
            "variant": "production",
            "model_version": "v1",
            "query_id": f"q{i % 40}",
            "doc_ids": json.dumps(docs),
        }
        pipe.xadd(streams["impressions"], fields)
        kinds.append("impressions")
        if i % 3 == 0:
            clicks = json.dumps([[docs[1], 1]])
            pipe.xadd(
                streams["clicks"],
                {
                    "v": "1",
                    "ts_ms": "1767225600000",
                    "request_id": f"r{i}",
                    "user_id": "",
                    "clicks": clicks,
                },
            )
            kinds.append("clicks")
    for kind, entry_id in zip(kinds, pipe.execute(), strict=True):
        ids[kind].append(entry_id.decode())
    return ids


def drained_ids(root: Path, kind: str) -> list[str]:
    return read_events(root, kind, columns=["stream_id"]).column("stream_id").to_pylist()


CHILD = """
import os, signal, sys, json, redis
from ltr.online.drain import Drainer
url, root, stage = sys.argv[1], sys.argv[2], sys.argv[4]
streams, after = json.loads(sys.argv[3]), int(sys.argv[5])
seen = {"n": 0}
def hook(s, kind):
    if s == stage:
        seen["n"] += 1
        if seen["n"] == after:
            os.kill(os.getpid(), signal.SIGKILL)
Drainer(redis.Redis.from_url(url), root, streams=streams, batch_size=250, hook=hook).drain()
print("finished without being killed")
"""


def run_killed(root: Path, streams: dict[str, str], stage: str, after: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, REDIS_URL, str(root), json.dumps(streams), stage, str(after)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("stage", "after"),
    [
        ("read", 1),  # between the first read and its write
        ("read", 3),  # after two batches were committed
        ("written", 1),  # between the first write and its ack
        ("written", 4),
        ("acked", 2),  # after an ack, before the next read
    ],
)
def test_a_drain_killed_at_any_step_loses_and_duplicates_nothing(
    tmp_path, client, streams, stage, after
):
    written = write_events(client, streams, 1200)
    run_killed(tmp_path, streams, stage, after)
    # the service keeps logging while the drain is down
    more = write_events(client, streams, 300, start=1200)
    report = Drainer(client, tmp_path, streams=streams, batch_size=250).drain()
    for kind in ("impressions", "clicks"):
        expected = written[kind] + more[kind]
        got = drained_ids(tmp_path, kind)
        assert sorted(got) == sorted(expected), f"{kind}: lost or extra ids"
        assert len(got) == len(set(got)), f"{kind}: duplicated ids {Counter(got).most_common(3)}"
        assert Drainer(client, tmp_path, streams=streams).pending_count(kind) == 0
    if stage == "written":
        # the killed run wrote a file before it could acknowledge: the re-run only acked it
        assert report.streams["impressions"].already_written == 250
    # drained entries were trimmed (MINID ~ removes whole nodes of 100 entries)
    assert report.streams["impressions"].trimmed >= 1300


def _sid(value: str) -> tuple[int, int]:
    ms, seq = value.split("-")
    return int(ms), int(seq)


def test_trimming_never_removes_an_entry_that_is_not_in_a_file(tmp_path, client, streams):
    written = write_events(client, streams, 1000)
    report = Drainer(client, tmp_path, streams=streams, batch_size=100).drain(max_entries=450)
    imp = report.streams["impressions"]
    assert imp.written == 500  # whole batches: the fifth ends at 500
    assert imp.trimmed >= 400
    left = {e[0].decode() for e in client.xrange(streams["impressions"])}
    undrained = set(written["impressions"]) - set(drained_ids(tmp_path, "impressions"))
    assert len(undrained) == 500 and undrained <= left
    mark = _sid(imp.watermark or "")
    assert all(_sid(i) > mark for i in undrained)


def test_a_state_file_behind_the_files_does_not_cause_duplicates(tmp_path, client, streams):
    """Killed between a file's rename and the state update: the file names still count."""
    written = write_events(client, streams, 600)
    run_killed(tmp_path, streams, "written", 2)
    state = tmp_path / "_state" / "impressions.json"
    first_file = Drainer(client, tmp_path, streams=streams).files("impressions")[0]
    # roll the state back to the first file's end, as if the kill came before its update
    state.write_text(json.dumps({"watermark": first_file.stem.split("_")[1]}))
    Drainer(client, tmp_path, streams=streams, batch_size=250).drain()
    got = drained_ids(tmp_path, "impressions")
    assert sorted(got) == sorted(written["impressions"])
    assert len(got) == len(set(got))


def test_pending_entries_of_another_consumer_are_claimed(tmp_path, client, streams):
    written = write_events(client, streams, 400)
    Drainer(client, tmp_path, streams=streams).drain(max_entries=0)  # creates the groups
    client.xreadgroup("ltr-drain", "old-host", {streams["impressions"]: ">"}, count=150)
    report = Drainer(client, tmp_path, streams=streams, consumer="new-host").drain()
    assert sorted(drained_ids(tmp_path, "impressions")) == sorted(written["impressions"])
    assert report.streams["impressions"].written == 400
    assert Drainer(client, tmp_path, streams=streams).pending_count("impressions") == 0


def test_entries_trimmed_before_the_drain_are_counted_not_fatal(tmp_path, client, streams):
    write_events(client, streams, 300)
    Drainer(client, tmp_path, streams=streams).drain(max_entries=0)
    client.xreadgroup("ltr-drain", "drain", {streams["impressions"]: ">"}, count=100)
    client.xtrim(streams["impressions"], maxlen=150, approximate=False)  # 100 pending gone
    report = Drainer(client, tmp_path, streams=streams).drain()
    imp = report.streams["impressions"]
    assert imp.trimmed_before_drain == 100
    assert imp.written == 150
    assert Drainer(client, tmp_path, streams=streams).pending_count("impressions") == 0


def test_undecodable_entries_are_kept_raw_with_the_reason(tmp_path, client, streams):
    write_events(client, streams, 5)
    bad = client.xadd(streams["impressions"], {"v": "1", "request_id": "r-bad"}).decode()
    bad_json = client.xadd(
        streams["clicks"], {"v": "1", "request_id": "r-x", "clicks": "[not json"}
    ).decode()
    report = Drainer(client, tmp_path, streams=streams).drain()
    assert report.streams["impressions"].malformed == 1
    rows = {r["stream_id"]: r for r in read_events(tmp_path, "impressions").to_pylist()}
    assert rows[bad]["error"] == "missing field 'doc_ids'"
    assert json.loads(rows[bad]["raw"]) == {"v": "1", "request_id": "r-bad"}
    clicks = {r["stream_id"]: r for r in read_events(tmp_path, "clicks").to_pylist()}
    assert clicks[bad_json]["error"] and clicks[bad_json]["raw"]


def test_files_are_named_by_their_id_range_and_hold_the_schema(tmp_path, client, streams):
    write_events(client, streams, 700)
    Drainer(client, tmp_path, streams=streams, batch_size=300).drain()
    files = Drainer(client, tmp_path, streams=streams).files("impressions")
    assert len(files) == 3
    for path in files:
        table = pq.read_table(path)
        assert table.schema.names == SCHEMAS["impressions"].names
        ids = table.column("stream_id").to_pylist()
        assert path.name == f"{ids[0]}_{ids[-1]}.parquet"
        assert path.parent.name.startswith("date=")
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_second_drain_of_the_same_stream_is_refused(tmp_path, client, streams):
    lock = tmp_path / "_state" / "impressions.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(DrainError, match="another drain of impressions"):
            Drainer(client, tmp_path, streams=streams).drain_stream("impressions")


def test_a_dead_redis_fails_with_a_named_error(tmp_path):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(DrainError, match="XGROUP CREATE"):
        Drainer(dead, tmp_path).drain()
