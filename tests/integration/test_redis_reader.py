"""``RedisFeatureReader`` and ``SdkFeatureReader`` against real Feast writes in a real Redis.

A temporary Feast repository with the platform's shape (entities ``query``/``document``,
views ``query_doc_features`` and ``doc_features`` with one ``Array(Float32)`` field ``features``,
Redis online store in db 6) is applied under a unique project name; features are written with
``FeatureStore.write_to_online_store``; every read is compared with
``FeatureStore.get_online_features(...).to_dict()`` on the same keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio

from serving.features import FeatureStoreUnavailable
from serving.features.feast_layout import field_hash, float_list_header, redis_key
from serving.features.redis_reader import (
    FeatureReadResult,
    FeatureViewSpec,
    RedisFeatureReader,
    redis_client_from_connection_string,
)
from serving.features.redis_wire import RedisWire
from serving.redis_guard import fail_fast_async_redis

pytestmark = pytest.mark.integration

REDIS = os.environ.get("LTR_TEST_REDIS", "127.0.0.1:6379,db=6")
MODES = ["lua", "pipeline"]

QD_DIM, DOC_DIM, QUERY_DIM = 40, 6, 3
VIEWS = (
    FeatureViewSpec("query_doc_features", ("query_id", "doc_id"), QD_DIM),
    FeatureViewSpec("doc_features", ("doc_id",), DOC_DIM),
)
QUERY_VIEW = FeatureViewSpec("query_features", ("query_id",), QUERY_DIM)
QUERY = "q-ü/1"
OTHER_QUERY = "q2"
UNKNOWN_QUERY = "nobody"


def candidate_ids() -> list[str]:
    """100 candidates: plain, unicode, long and empty ids, with one duplicate."""
    ids = [f"d{i}" for i in range(95)]
    ids += ["dok-ß中😀", "x" * 300, "", "with space", ids[0]]
    return ids


def qd_present(i: int) -> bool:
    return i % 7 != 3


def doc_present(i: int) -> bool:
    return i % 5 != 1


@dataclass
class FeastEnv:
    store: Any
    project: str
    repo: Path
    docs: list[str]
    frames: dict[str, Any]  # view name -> the DataFrame written


def vectors(rng: np.random.Generator, n: int, dim: int) -> list[list[float]]:
    out = rng.standard_normal((n, dim)).astype(np.float32)
    special = np.array([-0.0, 1e-45, 3.4e38, -1e-39], dtype=np.float32)
    out[0, : min(dim, 4)] = special[:dim]  # sign of zero, subnormals, near-max
    return [row.tolist() for row in out]


def write_repo(
    root: Path, project: str, online_store: str, docs: list[str]
) -> tuple[Any, dict[str, Any]]:
    """Create, apply and fill a Feast repository; returns the store and what was written."""
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32

    root.mkdir(parents=True)
    (root / "feature_store.yaml").write_text(
        f"project: {project}\n"
        f"registry: {root / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n{online_store}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    rng = np.random.default_rng(42)
    when = datetime(2024, 6, 1, tzinfo=UTC)
    unique = list(dict.fromkeys(docs))
    qd_docs = [d for i, d in enumerate(unique) if qd_present(i)]
    frames = {
        "query_doc_features": pd.DataFrame(
            {
                "query_id": [QUERY] * len(qd_docs) + [OTHER_QUERY] * len(unique),
                "doc_id": qd_docs + unique,
                "features": vectors(rng, len(qd_docs) + len(unique), QD_DIM),
                "event_timestamp": when,
            }
        ),
        "doc_features": pd.DataFrame(
            {
                "doc_id": [d for i, d in enumerate(unique) if doc_present(i)],
                "features": vectors(rng, sum(map(doc_present, range(len(unique)))), DOC_DIM),
                "event_timestamp": when,
            }
        ),
        "query_features": pd.DataFrame(
            {
                "query_id": [QUERY, OTHER_QUERY],
                "features": vectors(rng, 2, QUERY_DIM),
                "event_timestamp": when,
            }
        ),
    }
    query = Entity(
        name="query",
        join_keys=["query_id"],
        value_type=ValueType.STRING,
        description="a search query",
    )
    document = Entity(
        name="document",
        join_keys=["doc_id"],
        value_type=ValueType.STRING,
        description="a candidate document",
    )
    entities = {
        "query_doc_features": [query, document],
        "doc_features": [document],
        "query_features": [query],
    }
    objects: list[Any] = [query, document]
    for name, frame in frames.items():
        frame.to_parquet(root / f"{name}.parquet")
        objects.append(
            FeatureView(
                name=name,
                entities=entities[name],
                schema=[Field(name="features", dtype=Array(Float32))],
                source=FileSource(
                    name=f"{name}_source",
                    path=str(root / f"{name}.parquet"),
                    timestamp_field="event_timestamp",
                ),
                ttl=timedelta(0),
                online=True,
            )
        )
    store = FeatureStore(repo_path=str(root))
    store.apply(objects)
    for name, frame in frames.items():
        store.write_to_online_store(name, frame)
    return store, frames


@pytest.fixture(scope="module")
def redis_client() -> redis.Redis:
    client = redis_client_from_connection_string(REDIS, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS}: {exc}")
    return client


@pytest.fixture(scope="module")
def feast_redis(redis_client, tmp_path_factory):
    project = f"ltrtest_{uuid.uuid4().hex[:10]}"
    docs = candidate_ids()
    root = tmp_path_factory.mktemp("feast") / "repo"
    online = f'  type: redis\n  connection_string: "{REDIS}"\n'
    store, frames = write_repo(root, project, online, docs)
    yield FeastEnv(store=store, project=project, repo=root, docs=docs, frames=frames)
    keys = list(redis_client.scan_iter(match=f"*{project}".encode(), count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="module")
def feast_sqlite(tmp_path_factory):
    project = f"ltrtest_{uuid.uuid4().hex[:10]}"
    docs = candidate_ids()
    root = tmp_path_factory.mktemp("feast_sqlite") / "repo"
    online = f"  type: sqlite\n  path: {root / 'online.db'}\n"
    store, frames = write_repo(root, project, online, docs)
    return FeastEnv(store=store, project=project, repo=root, docs=docs, frames=frames)


def feast_expected(
    env: FeastEnv, query_id: str, docs: list[str], views=VIEWS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What Feast's SDK returns, as (NaN-filled float32 [n, dim], found [n]) per view."""
    response = env.store.get_online_features(
        features=[f"{v.name}:{v.field}" for v in views],
        entity_rows=[{"query_id": query_id, "doc_id": d} for d in docs],
        full_feature_names=True,
    ).to_dict()
    out = {}
    for view in views:
        column = response[f"{view.name}__{view.field}"]
        found = np.array([value is not None for value in column], dtype=bool)
        rows = [value if value is not None else [np.nan] * view.dim for value in column]
        out[view.name] = (np.asarray(rows, dtype=np.float32).reshape(len(docs), view.dim), found)
    return out


def assert_same_as_feast(result: FeatureReadResult, expected) -> None:
    missing = 0
    for name, (vectors, found) in expected.items():
        assert result.vectors[name].dtype == np.float32
        assert np.array_equal(result.found[name], found), name
        assert np.array_equal(result.vectors[name], vectors, equal_nan=True), name
        # float32-exact, sign of zero included
        assert np.array_equal(
            result.vectors[name][found].view(np.uint32), vectors[found].view(np.uint32)
        )
        missing += int((~found).sum())
    assert result.missing == missing
    assert result.invalid == 0


def reader(client: redis.Redis, env: FeastEnv, mode: str, views=VIEWS) -> RedisFeatureReader:
    return RedisFeatureReader(client, env.project, key_version=3, views=views, mode=mode)


# --- values equal Feast's ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_reader_returns_exactly_what_feast_get_online_features_returns(
    feast_redis, redis_client, mode
):
    expected = feast_expected(feast_redis, QUERY, feast_redis.docs)
    result = reader(redis_client, feast_redis, mode).read(QUERY, feast_redis.docs)
    assert_same_as_feast(result, expected)
    # the fixture really has both found and missing rows in both views
    for name, (_, found) in expected.items():
        assert 0 < found.sum() < len(found), name


@pytest.mark.parametrize("mode", MODES)
def test_query_doc_rows_belong_to_their_query(feast_redis, redis_client, mode):
    r = reader(redis_client, feast_redis, mode)
    for query_id in [OTHER_QUERY, UNKNOWN_QUERY]:
        result = r.read(query_id, feast_redis.docs)
        assert_same_as_feast(result, feast_expected(feast_redis, query_id, feast_redis.docs))
    assert r.read(OTHER_QUERY, feast_redis.docs).found["query_doc_features"].all()
    assert not r.read(UNKNOWN_QUERY, feast_redis.docs).found["query_doc_features"].any()


@pytest.mark.parametrize("mode", MODES)
def test_missing_entities_are_not_found_nan_rows_and_counted(feast_redis, redis_client, mode):
    docs = ["never-written-1", feast_redis.docs[0], "never-written-2"]
    result = reader(redis_client, feast_redis, mode).read(QUERY, docs)
    assert result.found["doc_features"].tolist() == [False, True, False]
    assert np.isnan(result.vectors["doc_features"][[0, 2]]).all()
    assert not np.isnan(result.vectors["doc_features"][1]).any()
    assert result.missing == 2 + 2  # two unknown documents in each view
    assert_same_as_feast(result, feast_expected(feast_redis, QUERY, docs))


@pytest.mark.parametrize("mode", MODES)
def test_a_query_level_view_is_broadcast_to_every_candidate(feast_redis, redis_client, mode):
    views = (*VIEWS, QUERY_VIEW)
    r = reader(redis_client, feast_redis, mode, views)
    for query_id in [QUERY, UNKNOWN_QUERY]:
        expected = feast_expected(feast_redis, query_id, feast_redis.docs, views)
        assert_same_as_feast(r.read(query_id, feast_redis.docs), expected)


@pytest.mark.parametrize("mode", MODES)
def test_no_candidates_read_nothing(redis_client, mode):
    result = RedisFeatureReader(redis_client, "unused", key_version=3, views=VIEWS, mode=mode).read(
        QUERY, []
    )
    assert result.vectors["query_doc_features"].shape == (0, QD_DIM)
    assert result.found["doc_features"].shape == (0,)
    assert result.missing == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_value_of_the_wrong_dimension_is_counted_invalid_not_raised(
    feast_redis, redis_client, mode
):
    key = redis_key(feast_redis.project, ["doc_id"], ["bad-doc"], 3)
    wrong = float_list_header(DOC_DIM + 1) + np.zeros(DOC_DIM + 1, np.float32).tobytes()
    redis_client.hset(key, field_hash("doc_features", "features"), wrong)
    try:
        result = reader(redis_client, feast_redis, mode).read(
            QUERY, ["bad-doc", feast_redis.docs[0]]
        )
    finally:
        redis_client.delete(key)
    assert result.found["doc_features"].tolist() == [False, True]
    assert result.invalid == 1
    assert result.missing == 1 + 1  # bad-doc in both views


@pytest.mark.parametrize("mode", MODES)
def test_an_error_reply_among_the_reads_is_unavailable_and_the_next_read_is_clean(
    feast_redis, redis_client, mode
):
    """A key of the wrong type (HGET answers WRONGTYPE) in the middle of a request: the read
    fails as unavailable, and the connection it used does not hand its unread replies to the
    next read (each mode, one pooled connection reused)."""
    key = redis_key(feast_redis.project, ["doc_id"], ["string-doc"], 3)
    redis_client.set(key, b"not a hash")
    r = reader(redis_client, feast_redis, mode)
    docs = [*feast_redis.docs[:2], "string-doc", *feast_redis.docs[2:]]
    try:
        for _ in range(3):
            with pytest.raises(FeatureStoreUnavailable, match="WRONGTYPE"):
                r.read(QUERY, docs)
            result = r.read(OTHER_QUERY, feast_redis.docs)
            assert_same_as_feast(result, feast_expected(feast_redis, OTHER_QUERY, feast_redis.docs))
    finally:
        redis_client.delete(key)


# --- the SDK reader ------------------------------------------------------------------------------


def test_sdk_reader_on_the_redis_store_equals_the_redis_reader(feast_redis, redis_client):
    from serving.features.sdk_reader import SdkFeatureReader

    sdk = SdkFeatureReader(feast_redis.store, VIEWS)
    fast = reader(redis_client, feast_redis, "lua")
    for query_id in [QUERY, OTHER_QUERY, UNKNOWN_QUERY]:
        got = sdk.read(query_id, feast_redis.docs)
        assert_same_as_feast(got, feast_expected(feast_redis, query_id, feast_redis.docs))
        want = fast.read(query_id, feast_redis.docs)
        for name in got.vectors:
            assert np.array_equal(got.vectors[name], want.vectors[name], equal_nan=True)
            assert np.array_equal(got.found[name], want.found[name])
        assert got.missing == want.missing


def test_sdk_reader_on_embedded_sqlite_returns_the_same_values(
    feast_sqlite, feast_redis, redis_client
):
    from serving.features.sdk_reader import SdkFeatureReader

    sdk = SdkFeatureReader(feast_sqlite.repo, VIEWS)  # from the repository path
    fast = reader(redis_client, feast_redis, "lua")  # same data, written to Redis
    got = sdk.read(QUERY, feast_sqlite.docs)
    assert_same_as_feast(got, feast_expected(feast_sqlite, QUERY, feast_sqlite.docs))
    want = fast.read(QUERY, feast_redis.docs)
    for name in got.vectors:
        assert np.array_equal(got.vectors[name], want.vectors[name], equal_nan=True)
    assert sdk.read(QUERY, []).missing == 0


# --- the same reads awaited on the event loop ---------------------------------------------------


def async_client(connection_string: str = REDIS, timeout: float = 2.0) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for a Feast connection string (the service builds its own
    from LTR_REDIS_URL with ``fail_fast_async_redis``)."""
    node, *params = connection_string.split(",")
    host, port = node.rsplit(":", 1)
    db = int(dict(p.split("=", 1) for p in params).get("db", 0))
    return fail_fast_async_redis(f"redis://{host}:{port}/{db}", timeout_seconds=timeout)


def wire_of(connection_string: str = REDIS, timeout: float = 2.0) -> RedisWire:
    node, *params = connection_string.split(",")
    host, port = node.rsplit(":", 1)
    db = int(dict(p.split("=", 1) for p in params).get("db", 0))
    return RedisWire(host, int(port), db=db, timeout_s=timeout)


def aread_all(
    env_project: str,
    mode: str,
    calls: list[tuple[str, list[str]]],
    views=VIEWS,
    via: str = "asyncio",
    **client_kw: Any,
) -> list[FeatureReadResult]:
    """``aread`` of each (query, docs) in one event loop, the sync client unused; ``via``
    ``"wire"`` adds the reader's pipelined connection (pipelined HGETs in either mode)."""

    async def go() -> list[FeatureReadResult]:
        aclient = async_client(**client_kw)
        wire = wire_of(**client_kw) if via == "wire" else None
        sync = redis.Redis(port=1)  # never contacted: aread must use the async client
        r = RedisFeatureReader(
            sync,
            env_project,
            key_version=3,
            views=views,
            mode=mode,
            async_client=aclient,
            wire=wire,
        )
        assert r.reads_async
        try:
            return [await r.aread(q, docs) for q, docs in calls]
        finally:
            await aclient.aclose()
            if wire is not None:
                await wire.aclose()

    return asyncio.run(go())


VIAS = [("lua", "asyncio"), ("pipeline", "asyncio"), ("lua", "wire"), ("pipeline", "wire")]


@pytest.mark.parametrize(("mode", "via"), VIAS)
def test_aread_returns_what_feast_returns_and_what_read_returns(
    feast_redis, redis_client, mode, via
):
    views = (*VIEWS, QUERY_VIEW)
    docs = ["never-written-1", *feast_redis.docs, "never-written-2"]
    calls = [(QUERY, docs), (OTHER_QUERY, docs), (UNKNOWN_QUERY, docs), (QUERY, [])]
    results = aread_all(feast_redis.project, mode, calls, views, via=via)
    sync_reader = reader(redis_client, feast_redis, mode, views)
    for (query_id, ids), result in zip(calls[:3], results[:3], strict=True):
        assert_same_as_feast(result, feast_expected(feast_redis, query_id, ids, views))
        same = sync_reader.read(query_id, ids)
        for name in same.vectors:
            assert np.array_equal(result.vectors[name], same.vectors[name], equal_nan=True)
            assert np.array_equal(result.found[name], same.found[name])
    assert results[0].found["doc_features"][[0, -1]].tolist() == [False, False]
    assert results[3].vectors["query_doc_features"].shape == (0, QD_DIM)
    assert results[3].missing == 0


@pytest.mark.parametrize(("mode", "via"), VIAS)
def test_aread_with_redis_down_raises_feature_store_unavailable(mode, via):
    with pytest.raises(FeatureStoreUnavailable) as info:
        aread_all(
            "ltr", mode, [(QUERY, ["d1", "d2"])], via=via, connection_string="127.0.0.1:1,db=6"
        )
    assert isinstance(info.value.__cause__, redis.ConnectionError | OSError)


@pytest.mark.parametrize(("mode", "via"), VIAS)
def test_aread_from_a_redis_that_never_answers_times_out(mode, via):
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t = time.perf_counter()
        with pytest.raises(FeatureStoreUnavailable) as info:
            aread_all(
                "ltr",
                mode,
                [(QUERY, ["d1"])],
                via=via,
                connection_string=f"127.0.0.1:{port}",
                timeout=0.05,
            )
        waited = time.perf_counter() - t
    assert isinstance(info.value.__cause__, redis.TimeoutError)
    assert waited < 5.0  # one socket timeout (0.05 s), not a hang


def test_a_reader_without_async_client_refuses_aread(redis_client):
    r = RedisFeatureReader(redis_client, "ltr", key_version=3, views=VIEWS)
    assert not r.reads_async
    with pytest.raises(RuntimeError, match="async_client"):
        asyncio.run(r.aread(QUERY, ["d1"]))


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_redis_down_raises_feature_store_unavailable_on_every_call(mode):
    client = redis_client_from_connection_string(
        "127.0.0.1:1,db=6", socket_timeout=0.05, socket_connect_timeout=0.05
    )
    r = RedisFeatureReader(client, "ltr", key_version=3, views=VIEWS, mode=mode)
    for _ in range(3):  # also on the calls after the first failure
        with pytest.raises(FeatureStoreUnavailable) as info:
            r.read(QUERY, ["d1", "d2"])
        assert isinstance(info.value.__cause__, redis.ConnectionError)


@pytest.mark.parametrize("mode", MODES)
def test_a_redis_that_never_answers_times_out_after_one_attempt_without_retrying(mode):
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = redis_client_from_connection_string(
            f"127.0.0.1:{port}", socket_timeout=0.05, socket_connect_timeout=0.05
        )
        r = RedisFeatureReader(client, "ltr", key_version=3, views=VIEWS, mode=mode)
        with pytest.raises(FeatureStoreUnavailable) as info:
            r.read(QUERY, ["d1"])
        assert isinstance(info.value.__cause__, redis.TimeoutError)
        # exactly one connection was made: the reader did not retry (each retry would
        # cost another socket timeout)
        silent.setblocking(False)
        conn, _ = silent.accept()
        conn.close()
        with pytest.raises(BlockingIOError):
            silent.accept()


def test_a_client_with_retry_backoff_is_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="serving.features.redis_reader"):
        RedisFeatureReader(redis.Redis(port=1), "ltr", key_version=3, views=VIEWS)
    assert "retries" in caplog.text


def test_a_client_decoding_responses_is_refused():
    with pytest.raises(ValueError, match="decode_responses"):
        RedisFeatureReader(
            redis.Redis(port=1, decode_responses=True), "ltr", key_version=3, views=VIEWS
        )


def test_view_specs_are_validated():
    with pytest.raises(ValueError, match="join keys"):
        FeatureViewSpec("v", ("user_id",), 3)
    with pytest.raises(ValueError, match="dim"):
        FeatureViewSpec("v", ("doc_id",), 0)
    with pytest.raises(ValueError, match="duplicate"):
        RedisFeatureReader(redis.Redis(port=1), "ltr", key_version=3, views=[VIEWS[0], VIEWS[0]])
    with pytest.raises(ValueError, match="mode"):
        RedisFeatureReader(redis.Redis(port=1), "ltr", key_version=3, views=VIEWS, mode="eval")  # type: ignore[arg-type]


def test_connection_strings_in_feasts_format_give_a_fail_fast_client():
    client = redis_client_from_connection_string(
        "redis.example:6380,db=6,password=secret,ssl=false", socket_timeout=0.03
    )
    kwargs = client.get_connection_kwargs()
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6380, 6)
    assert kwargs["password"] == "secret" and kwargs["socket_timeout"] == 0.03
    assert client.get_retry().get_retries() == 0
    with pytest.raises(ValueError, match="host:port"):
        redis_client_from_connection_string("a:1,b:2")


def test_the_redis_path_imports_neither_feast_nor_torch_nor_protobuf():
    code = (
        "import sys, serving.features.redis_reader, serving.features.feast_layout; "
        "heavy = [m for m in ('feast', 'torch', 'google.protobuf') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
