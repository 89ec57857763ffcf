"""The event log against a real Redis: fields, bounded streams, consumer groups, failures.

Uses db 7 of ``LTR_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/7``) with unique
stream names that are deleted afterwards; skips when Redis does not answer.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from support.redis import CountingRedis, counting_client, fail_fast_client

from serving.errors import EventLogUnavailable
from serving.events import JSON_FIELDS, EventLog
from serving.redis_guard import RedisGuard, fail_fast_redis

REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")


def dead_client() -> CountingRedis:
    return counting_client(port=1)  # nothing listens there


@pytest.fixture
def live() -> Iterator[redis.Redis]:
    with fail_fast_client(REDIS_URL) as client:
        yield client


@pytest.fixture
def streams(live: redis.Redis) -> Iterator[dict[str, str]]:
    base = f"test:{uuid.uuid4().hex}:events"
    names = {"impressions_stream": f"{base}:impressions", "clicks_stream": f"{base}:clicks"}
    yield names
    live.delete(*names.values())


@pytest.mark.integration
def test_an_impression_lands_in_its_stream_with_flat_string_fields(live, streams):
    log = EventLog(live, **streams)
    before_ms = time.time_ns() // 1_000_000
    assert log.log_impression(
        "req-1",
        "alice",
        "treatment",
        "v13",
        "q7",
        ["d3", "d1", "d2"],
        shadow={"version": "v14", "doc_ids": ["d1", "d3", "d2"]},
        interleave={"a": "v12", "b": "v13", "teams": {"d3": "a", "d1": "b"}},
    )
    assert log.log_impression("req-2", None, "control", "v12", "q8", [])
    first, second = log.read_impressions(10)
    fields = first.fields
    assert {k: v for k, v in fields.items() if k != "ts_ms"} == {
        "v": "1",
        "request_id": "req-1",
        "user_id": "alice",
        "variant": "treatment",
        "model_version": "v13",
        "query_id": "q7",
        "doc_ids": '["d3","d1","d2"]',
        "shadow": '{"version":"v14","doc_ids":["d1","d3","d2"]}',
        "interleave": '{"a":"v12","b":"v13","teams":{"d3":"a","d1":"b"}}',
    }
    assert before_ms <= int(fields["ts_ms"]) <= time.time_ns() // 1_000_000
    assert all(json.loads(fields[k]) for k in JSON_FIELDS & fields.keys())
    assert second.fields["user_id"] == "" and second.fields["doc_ids"] == "[]"
    assert "shadow" not in second.fields and "interleave" not in second.fields
    ms_1, seq_1 = map(int, first.id.split("-"))
    ms_2, seq_2 = map(int, second.id.split("-"))
    assert (ms_1, seq_1) < (ms_2, seq_2) and abs(ms_1 - int(fields["ts_ms"])) < 5_000
    assert live.xlen(streams["impressions_stream"]) == 2
    assert log.written == {streams["impressions_stream"]: 2}


@pytest.mark.integration
def test_clicks_land_in_the_clicks_stream(live, streams):
    log = EventLog(live, **streams)
    assert log.log_clicks("req-1", "alice", [("d3", 1), ("d2", 3)])
    (entry,) = log.read_clicks(10)
    assert entry.fields["request_id"] == "req-1" and entry.fields["user_id"] == "alice"
    assert json.loads(entry.fields["clicks"]) == [["d3", 1], ["d2", 3]]
    assert log.read_impressions(10) == []


@pytest.mark.integration
def test_approximate_trimming_keeps_the_stream_near_maxlen(live, streams):
    log = EventLog(live, maxlen=100, **streams)
    for i in range(1000):
        assert log.log_clicks(f"req-{i}", "u", [("d", 1)])
    # MAXLEN ~ drops whole nodes of stream-node-max-entries (100 by default)
    assert 100 <= live.xlen(streams["clicks_stream"]) <= 200


@pytest.mark.integration
def test_exact_trimming_keeps_exactly_the_newest_maxlen_entries(live, streams):
    log = EventLog(live, maxlen=100, approximate_trim=False, **streams)
    for i in range(1000):
        log.log_clicks(f"req-{i}", "u", [("d", 1)])
    kept = log.read_clicks(1000)
    assert len(kept) == 100
    assert [e.fields["request_id"] for e in kept] == [f"req-{i}" for i in range(900, 1000)]


@pytest.mark.integration
def test_a_consumer_group_reads_each_entry_once_and_unacked_entries_stay_pending(live, streams):
    log = EventLog(live, **streams)
    stream = streams["impressions_stream"]
    for i in range(3):  # written before the group exists: the group still sees them
        log.log_impression(f"req-{i}", "u", "control", "v12", "q", ["d1"])
    assert log.ensure_consumer_group(stream, "drain") is True
    assert log.ensure_consumer_group(stream, "drain") is False
    for i in range(3, 5):
        log.log_impression(f"req-{i}", "u", "control", "v12", "q", ["d1"])

    batch = log.read_group(stream, "drain", "worker-1", count=3)
    assert [e.fields["request_id"] for e in batch] == ["req-0", "req-1", "req-2"]
    # the drain crashed before writing: nothing acknowledged, the batch comes back as pending
    again = log.read_group(stream, "drain", "worker-1", count=10, pending=True)
    assert again == batch
    assert log.ack(stream, "drain", [e.id for e in batch]) == 3
    assert log.read_group(stream, "drain", "worker-1", count=10, pending=True) == []
    rest = log.read_group(stream, "drain", "worker-1", count=10)
    assert [e.fields["request_id"] for e in rest] == ["req-3", "req-4"]
    assert log.ack(stream, "drain", [e.id for e in rest]) == 2
    assert log.ack(stream, "drain", [e.id for e in rest]) == 0  # already acknowledged
    assert log.ack(stream, "drain", []) == 0
    assert live.xpending(stream, "drain")["pending"] == 0


@pytest.mark.integration
def test_read_group_waits_at_most_block_ms_when_nothing_is_new(live, streams):
    log = EventLog(live, **streams)
    stream = streams["clicks_stream"]
    log.ensure_consumer_group(stream, "drain")
    started = time.perf_counter()
    assert log.read_group(stream, "drain", "w", count=10, block_ms=100) == []
    assert time.perf_counter() - started >= 0.08  # it did wait (an upper bound is a bench's job)
    assert log.read_group(stream, "drain", "w", count=10, block_ms=0) == []  # no wait


@pytest.mark.integration
def test_a_decoded_client_gives_the_same_entries(streams):
    client = fail_fast_redis(REDIS_URL, timeout_seconds=0.5, decode_responses=True, protocol=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    log = EventLog(client, **streams)
    log.log_clicks("req-1", None, [("d1", 2)])
    log.ensure_consumer_group(streams["clicks_stream"], "g")
    (entry,) = log.read_group(streams["clicks_stream"], "g", "c", count=5)
    assert entry.fields["request_id"] == "req-1" and entry.fields["clicks"] == '[["d1",2]]'
    assert log.read_clicks(5) == [entry]
    client.close()


def test_a_dead_redis_drops_events_without_raising_and_the_breaker_stops_calling_it():
    client = dead_client()
    guard = RedisGuard(failure_threshold=3, cooldown_seconds=60)
    log = EventLog(client, guard=guard)
    for i in range(5):
        assert log.log_impression(f"r{i}", "u", "control", "v12", "q", ["d1"]) is False
        assert log.log_clicks(f"r{i}", "u", [("d1", 1)]) is False
    assert client.calls == 3
    assert log.errors == {"ConnectionError": 3} and guard.skipped == 7
    assert log.dropped == {"ltr:events:impressions": 5, "ltr:events:clicks": 5}
    assert sum(log.written.values()) == 0


def test_without_a_client_events_are_dropped_and_counted():
    log = EventLog(None)
    assert log.log_clicks("r", None, [("d1", 1)]) is False
    assert log.dropped == {"ltr:events:clicks": 1} and not log.enabled
    with pytest.raises(EventLogUnavailable):
        log.read_clicks(1)


def test_reading_from_a_dead_redis_raises_a_named_error_for_the_drain_job():
    log = EventLog(dead_client())
    for read in (
        lambda: log.read_impressions(10),
        lambda: log.ensure_consumer_group("s", "g"),
        lambda: log.read_group("s", "g", "c", 10),
        lambda: log.ack("s", "g", ["1-0"]),
    ):
        with pytest.raises(EventLogUnavailable, match="failed"):
            read()


@pytest.mark.integration
def test_feedback_once_writes_the_first_call_only_and_the_marker_expires(live, streams):
    log = EventLog(live, **streams)
    assert log.log_feedback_once("r1", "u", [("d1", 0)], ttl_seconds=60) is True
    assert log.log_feedback_once("r1", "u", [("d2", 1)], ttl_seconds=60) is None
    assert log.log_feedback_once("r2", None, [("d2", 1)], ttl_seconds=60) is True
    entries = log.read_clicks()
    assert [e.fields["request_id"] for e in entries] == ["r1", "r2"]
    assert json.loads(entries[0].fields["clicks"]) == [["d1", 0]]
    marker = f"{streams['clicks_stream']}:seen:r1"
    assert 0 < live.ttl(marker) <= 60
    live.delete(marker, f"{streams['clicks_stream']}:seen:r2")


@pytest.mark.integration
def test_an_impression_keeps_at_most_max_docs_documents(live, streams):
    log = EventLog(live, **streams, max_docs=3)
    docs = [f"d{i}" for i in range(10)]
    teams = {d: "a" if i % 2 else "b" for i, d in enumerate(docs)}
    log.log_impression(
        "r", "u", "interleave", "a|b", "q", docs, interleave={"a": "a", "b": "b", "teams": teams}
    )
    fields = log.read_impressions()[0].fields
    assert json.loads(fields["doc_ids"]) == docs[:3]
    assert fields["n_shown"] == "10"
    assert set(json.loads(fields["interleave"])["teams"]) == set(docs[:3])


def test_feedback_once_without_a_client_is_dropped_and_counted():
    log = EventLog(None)
    assert log.log_feedback_once("r", None, [("d", 0)], ttl_seconds=5) is False
    assert log.dropped[log.clicks_stream] == 1
