"""The project's batch engine writes into Redis exactly what Feast's writers write.

``ltr.features.compute_engine.LtrComputeEngine`` encodes the rows from Arrow
(``ltr.features.redis_writer``) instead of Feast's per-row protobuf conversion. Pinned here:
the encoders against protobuf and Feast's key encoder; then, on real Redis, the same rows
materialized three ways (the project's engine; Feast's local engine with the project's
online store; Feast's plain local engine and ``redis`` store) give byte-identical hashes
(Feast's fields in all three, ``_created_ts:<view>`` in the project's two), Feast's
``get_online_features`` reads back the offline rows, and a re-run writes nothing. Redis
tests use ``$LTR_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/11``) and Feast projects
of their own whose keys are deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from support.redis import delete_project_keys, project_keys, redis_client, unique_project

from ltr.features import definitions as d
from ltr.features import redis_writer

REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
DAY = datetime(2025, 3, 4, tzinfo=UTC)
CREATED = datetime(2025, 3, 5, 6, 7, 8, tzinfo=UTC)
DOC_COLS = [3, 4]


@pytest.mark.parametrize("dim", [1, 2, 5, 31, 32, 46, 300])
@pytest.mark.parametrize("kind", ["list", "large_list", "fixed_size_list"])
def test_float_list_values_equal_protobuf(dim: int, kind: str) -> None:
    from feast.protos.feast.types.Value_pb2 import FloatList
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    rng = np.random.default_rng(dim)
    rows = rng.normal(size=(7, dim)).astype(np.float32) * 1e3
    rows[0, 0] = -0.0
    rows[-1, -1] = np.float32(np.inf)
    rows[1, 0] = np.float32(1e-40)  # subnormal
    value_type = {
        "list": pa.list_(pa.float32()),
        "large_list": pa.large_list(pa.float32()),
        "fixed_size_list": pa.list_(pa.float32(), dim),
    }[kind]
    column = pa.chunked_array(
        [pa.array(rows[:3].tolist(), value_type), pa.array(rows[3:].tolist(), value_type)]
    )
    expected = [
        ValueProto(float_list_val=FloatList(val=row.tolist())).SerializeToString() for row in rows
    ]
    assert redis_writer.float_list_values(column) == expected


def test_timestamps_and_keys_equal_feast() -> None:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from google.protobuf.timestamp_pb2 import Timestamp

    for when in (DAY, CREATED, datetime(1999, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)):
        ts = Timestamp()
        ts.FromDatetime(when)
        micros = redis_writer._micros(pa.chunked_array([pa.array([when], pa.timestamp("ns"))]))
        assert redis_writer._serialized(micros) == [ts.SerializeToString()]
    table = pa.table({"query_id": ["q1", "qé", ""], "doc_id": ["d9", "dß", "x"]})
    for join_keys in (["query_id", "doc_id"], ["doc_id"]):
        for version in (3,):
            ours = redis_writer.entity_keys(table, join_keys, "proj", version)
            theirs = [
                _redis_key(
                    "proj",
                    EntityKey(
                        join_keys=join_keys,
                        entity_values=[ValueProto(string_val=row[k]) for k in join_keys],
                    ),
                    entity_key_serialization_version=version,
                )
                for row in table.to_pylist()
            ]
            assert ours == theirs


# ---------------------------------------------------------------------------- real Redis
def _settings(root: Path, project: str) -> Any:
    from ltr.settings import Settings

    return Settings(home=root / project, redis_url=REDIS_URL, feast_project=project)


def _local_engine_store(settings: Any, *, plain_redis: bool) -> Any:
    """A FeatureStore on Feast's local engine (with Feast's own Redis store if asked)."""
    from feast import FeatureStore

    from ltr.features.store import redis_connection_string, repo_config

    config = repo_config(settings)
    config.batch_engine_config = "local"
    if plain_redis:
        config.online_config = {
            "type": "redis",
            "connection_string": redis_connection_string(REDIS_URL),
        }
    return FeatureStore(repo_path=str(config.repo_path), config=config)


@pytest.fixture
def three_projects(tmp_path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    from ltr.data.synth import generate_synthetic
    from ltr.features.ingest import ingest_letor
    from ltr.features.store import apply, offline_dir

    client = redis_client(REDIS_URL)
    names = {k: unique_project(f"fastmat_{k}") for k in ("fast", "local", "feast")}
    settings = {k: _settings(tmp_path, name) for k, name in names.items()}
    ds = generate_synthetic(n_queries=6, n_features=5, n_doc_only=2, mean_docs=8, seed=3)
    ingest_letor(
        ds,
        offline_dir(settings["fast"]),
        doc_feature_indices=DOC_COLS,
        event_timestamp=DAY,
        created_timestamp=CREATED,
    )
    for k in ("local", "feast"):
        shutil.copytree(offline_dir(settings["fast"]), offline_dir(settings[k]))
    try:
        for s in settings.values():
            apply(s)
        yield client, settings
    finally:
        for name in names.values():
            delete_project_keys(client, name)


def _offline_rows(settings: Any, view: str) -> dict[tuple[str, ...], list[float]]:
    import pyarrow.dataset as pads

    from ltr.features.store import offline_dir

    keys = d.VIEW_JOIN_KEYS[view]
    table = pads.dataset(offline_dir(settings) / d.OFFLINE_FILES[view], format="parquet")
    return {
        tuple(row[k] for k in keys): row[d.FEATURE_FIELD] for row in table.to_table().to_pylist()
    }


def test_fast_path_writes_feasts_bytes(
    three_projects: tuple[Any, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    from ltr.features.online_store import redis_created_field
    from ltr.features.store import get_feature_store, materialize

    client, settings = three_projects
    calls: list[str] = []
    write_newer = redis_writer.write_newer

    def spy(*args: Any, **kwargs: Any) -> int:
        calls.append(kwargs["view"])
        return write_newer(*args, **kwargs)

    monkeypatch.setattr(redis_writer, "write_newer", spy)
    start, end = DAY - timedelta(days=1), DAY + timedelta(days=1)
    views = [d.QUERY_DOC_VIEW, d.DOC_VIEW]
    result = materialize(start, end, settings["fast"], views=views)
    assert sorted(calls) == sorted(views)  # the fast path wrote both views
    assert result["written"] == result["rows"]
    assert all(n > 0 for n in result["rows"].values())
    for k in ("local", "feast"):
        store = _local_engine_store(settings[k], plain_redis=k == "feast")
        store.materialize(start_date=start, end_date=end, feature_views=views)
    assert sorted(calls) == sorted(views)  # Feast's engine did not use it

    fast = settings["fast"].feast_project
    keys = project_keys(client, fast)
    assert len(keys) == sum(result["rows"].values())
    created = Timestamp()
    created.FromDatetime(CREATED)
    created_fields = {redis_created_field(v) for v in views}
    for key in keys:
        ours = client.hgetall(key)
        base = key[: -len(fast)]
        local = client.hgetall(base + settings["local"].feast_project.encode())
        feast = client.hgetall(base + settings["feast"].feast_project.encode())
        assert ours == local  # byte-identical to the project's online store, created time too
        assert {f: v for f, v in ours.items() if f not in created_fields} == feast
        assert [ours[f] for f in created_fields & ours.keys()] == [created.SerializeToString()]

    # Feast reads back the offline rows
    store = get_feature_store(settings["fast"])
    for view in views:
        rows = _offline_rows(settings["fast"], view)
        join_keys = d.VIEW_JOIN_KEYS[view]
        entity_rows = [dict(zip(join_keys, key, strict=True)) for key in rows]
        out = store.get_online_features(
            features=[d.feature_ref(view)], entity_rows=entity_rows, full_feature_names=True
        ).to_dict()
        got = np.array(out[d.output_column(view)], np.float32)
        np.testing.assert_array_equal(got, np.array(list(rows.values()), np.float32))

    # an unchanged re-run writes nothing
    before = [client.hgetall(key) for key in keys]
    again = materialize(start, end, settings["fast"], views=views)
    assert again["written"] == dict.fromkeys(views, 0)
    assert [client.hgetall(key) for key in keys] == before
