"""Ingest -> apply -> materialize into SQLite and Redis, read back with Feast (real services).

Redis tests use ``$LTR_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/5``) and a Feast
project of their own, so they only touch keys ending with that project name, and delete
them afterwards; they skip when Redis does not answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.redis import delete_project_keys, redis_client, unique_project
from typer.testing import CliRunner

from ltr.cli.main import app
from ltr.data.dataset import LetorDataset
from ltr.data.synth import generate_synthetic
from ltr.features import definitions as d
from ltr.features.ingest import ingest_letor
from ltr.features.online_store import redis_created_field
from ltr.settings import Settings, get_settings
from serving.features.feast_layout import decode_float_list

REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
T1 = datetime(2024, 5, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=3)
DOC_COLS = list(range(40, 46))  # MQ2008-like: 46 features, 41-46 document-only
N_SAMPLE = 300


def make_settings(home: Path, online: str) -> Settings:
    project = unique_project("ltrtest")
    return Settings(
        home=home, feast_project=project, redis_url=REDIS_URL if online == "redis" else None
    )


def big_dataset() -> LetorDataset:
    """About 19,000 query-document rows and 6,000 documents (~25,000 online rows)."""
    return generate_synthetic(n_queries=400, n_features=46, n_doc_only=6, mean_docs=50, seed=2)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)]
)
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The big dataset ingested at T1, applied and materialized once per online store."""
    from ltr.features.store import apply, materialize, offline_dir

    client = redis_client(REDIS_URL, socket_timeout=5) if request.param == "redis" else None
    settings = make_settings(tmp_path_factory.mktemp(request.param), request.param)
    ds = big_dataset()
    try:
        ingested = ingest_letor(
            ds, offline_dir(settings), doc_feature_indices=DOC_COLS, event_timestamp=T1
        )
        apply(settings)
        result = materialize(T1 - timedelta(days=1), T1 + timedelta(days=1), settings)
        print(  # the figure the DESIGN target is about (run with -s to see it)
            f"\nmaterialize into {result['online_store']}: {result['total_rows']} rows in "
            f"{result['seconds']} s = {result['rows_per_second']} rows/s"
        )
        yield {
            "settings": settings,
            "ds": ds,
            "result": result,
            "redis": client,
            "created": datetime.fromisoformat(ingested["created_timestamp"]),
        }
    finally:
        if client is not None:
            delete_project_keys(client, settings.feast_project)


def sample_rows(ds: LetorDataset, n: int = N_SAMPLE) -> np.ndarray:
    return np.random.default_rng(0).choice(ds.n_docs, size=n, replace=False)


def test_materialize_reports_one_row_per_entity(loaded: dict[str, Any]) -> None:
    ds, result = loaded["ds"], loaded["result"]
    assert result["rows"] == {
        d.QUERY_DOC_VIEW: ds.n_docs,
        d.DOC_VIEW: len(set(ds.doc_ids.tolist())),
    }
    assert result["total_rows"] > 20_000 and result["seconds"] > 0
    assert result["written"] == result["rows"]  # a first materialization writes every row


def test_online_features_equal_the_ingested_vectors(loaded: dict[str, Any]) -> None:
    from ltr.features.store import get_feature_store

    ds, settings = loaded["ds"], loaded["settings"]
    store = get_feature_store(settings)
    rows = sample_rows(ds)
    entity_rows = [{"query_id": ds.qids[i], "doc_id": ds.doc_ids[i]} for i in rows]
    entity_rows += [
        {"query_id": "no-such-query", "doc_id": ds.doc_ids[rows[0]]},  # known doc, unknown pair
        {"query_id": "no-such-query", "doc_id": "no-such-doc"},
    ]
    online = store.get_online_features(
        features=store.get_feature_service(d.DEFAULT_FEATURE_SERVICE),
        entity_rows=entity_rows,
        full_feature_names=d.FULL_FEATURE_NAMES,
    ).to_dict()
    qd = online[d.output_column(d.QUERY_DOC_VIEW)]
    doc = online[d.output_column(d.DOC_VIEW)]
    got_qd = np.array(qd[:N_SAMPLE], dtype=np.float32)
    got_doc = np.array(doc[:N_SAMPLE], dtype=np.float32)
    np.testing.assert_array_equal(got_qd, ds.features[rows, :40])
    np.testing.assert_array_equal(got_doc, ds.features[rows, 40:])
    assert qd[N_SAMPLE] is None and qd[N_SAMPLE + 1] is None
    np.testing.assert_array_equal(np.array(doc[N_SAMPLE], np.float32), ds.features[rows[0], 40:])
    assert doc[N_SAMPLE + 1] is None


@pytest.mark.parametrize(
    "loaded", [pytest.param("redis", marks=pytest.mark.integration)], indirect=True
)
def test_redis_layout_is_what_the_serving_side_encodes(loaded: dict[str, Any]) -> None:
    """Pins ltr.features.definitions' Redis key, field names and value decoding to Feast's."""
    client = loaded["redis"]
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    ds, project = loaded["ds"], loaded["settings"].feast_project
    for view in (d.QUERY_DOC_VIEW, d.DOC_VIEW):
        assert d.REDIS_FEATURE_FIELDS[view] == _mmh3(f"{view}:{d.FEATURE_FIELD}")
    for i in sample_rows(ds, 50):
        pair = {"query_id": str(ds.qids[i]), "doc_id": str(ds.doc_ids[i])}
        for view, entity, expected in (
            (d.QUERY_DOC_VIEW, pair, ds.features[i, :40]),
            (d.DOC_VIEW, {"doc_id": pair["doc_id"]}, ds.features[i, 40:]),
        ):
            proto = EntityKey(
                join_keys=list(entity), entity_values=[Value(string_val=v) for v in entity.values()]
            )
            key = d.redis_key(project, entity)
            assert key == _redis_key(project, proto, d.ENTITY_KEY_SERIALIZATION_VERSION)
            fields = client.hgetall(key)
            created_field = redis_created_field(view)
            assert set(fields) == {
                d.REDIS_FEATURE_FIELDS[view],
                d.REDIS_TIMESTAMP_FIELDS[view],
                created_field,
            }
            raw = fields[d.REDIS_FEATURE_FIELDS[view]]
            np.testing.assert_array_equal(decode_float_list(raw), expected)
            value = Value.FromString(raw)
            assert value.WhichOneof("val") == "float_list_val"
            ts = Timestamp.FromString(fields[d.REDIS_TIMESTAMP_FIELDS[view]])
            assert ts.ToDatetime(tzinfo=UTC) == T1
            created = Timestamp.FromString(fields[created_field]).ToDatetime(tzinfo=UTC)
            assert created == loaded["created"]


# ------------------------------------------------------------ windows and versions
@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def small_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    client = redis_client(REDIS_URL, socket_timeout=5) if request.param == "redis" else None
    settings = make_settings(tmp_path / "home", request.param)
    yield settings
    if client is not None:
        delete_project_keys(client, settings.feast_project)


def test_a_window_before_a_new_version_keeps_the_old_one_online(small_store: Settings) -> None:
    from ltr.features.store import apply, get_feature_store, materialize, offline_dir

    v1 = generate_synthetic(n_queries=4, n_features=5, n_doc_only=2, seed=5)
    v2 = LetorDataset(
        features=v1.features + 1.0, labels=v1.labels, qids=v1.qids, doc_ids=v1.doc_ids
    )
    for ds, when in ((v1, T1), (v2, T2)):
        ingest_letor(ds, offline_dir(small_store), doc_feature_indices=[3, 4], event_timestamp=when)
    apply(small_store)
    store = get_feature_store(small_store)
    rows = [{"query_id": q, "doc_id": doc} for q, doc in zip(v1.qids, v1.doc_ids, strict=True)]

    def online() -> np.ndarray:
        out = store.get_online_features(
            features=store.get_feature_service("ranker_v1"),
            entity_rows=rows,
            full_feature_names=True,
        ).to_dict()
        return np.hstack(
            [
                np.array(out[d.output_column(d.QUERY_DOC_VIEW)], np.float32),
                np.array(out[d.output_column(d.DOC_VIEW)], np.float32),
            ]
        )

    first = materialize(T1 - timedelta(days=1), T2 - timedelta(seconds=1), small_store)
    assert first["rows"][d.QUERY_DOC_VIEW] == v1.n_docs
    np.testing.assert_array_equal(online(), v1.features)
    materialize(T2 - timedelta(seconds=1), T2 + timedelta(days=1), small_store)
    np.testing.assert_array_equal(online(), v2.features)
    # Both stores keep the newer event time when an old window is materialized again.
    again = materialize(T1 - timedelta(days=1), T2 - timedelta(seconds=1), small_store)
    np.testing.assert_array_equal(online(), v2.features)
    assert again["written"] == {d.QUERY_DOC_VIEW: 0, d.DOC_VIEW: 0}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # from Dask's own shuffle code
def test_arrow_reads_for_materialization_equal_feasts_dask_reads(tmp_path: Path) -> None:
    from feast.infra.offline_stores.dask import DaskOfflineStore

    from ltr.features.offline_store import ArrowFileOfflineStore
    from ltr.features.store import load_repo_contents, offline_dir, repo_config

    settings = make_settings(tmp_path / "home", "sqlite")
    v1 = generate_synthetic(n_queries=6, n_features=5, n_doc_only=2, seed=7)
    v2 = LetorDataset(
        features=v1.features * 2.0, labels=v1.labels, qids=v1.qids, doc_ids=v1.doc_ids
    )
    for ds, when in ((v1, T1), (v2, T2)):
        ingest_letor(ds, offline_dir(settings), doc_feature_indices=[3, 4], event_timestamp=when)
    config = repo_config(settings)
    views = {v.name: v for v in load_repo_contents(settings).feature_views}

    def rows(store: Any, method: str, view: str, start: datetime, end: datetime) -> list[Any]:
        job = getattr(store, method)(
            config=config,
            data_source=views[view].batch_source,
            join_key_columns=list(d.VIEW_JOIN_KEYS[view]),
            feature_name_columns=[d.FEATURE_FIELD],
            timestamp_field=d.EVENT_TIMESTAMP,
            created_timestamp_column=d.CREATED_TIMESTAMP,
            start_date=start,
            end_date=end,
        )
        frame = job.to_arrow().to_pandas()
        keys = [*d.VIEW_JOIN_KEYS[view], d.EVENT_TIMESTAMP]
        frame = frame.sort_values(keys).reset_index(drop=True)
        return [
            (*(row[k] for k in keys), [float(x) for x in row[d.FEATURE_FIELD]])
            for _, row in frame.iterrows()
        ]

    windows = [(T1, T2), (T1 - timedelta(days=1), T1 + timedelta(hours=1)), (T2, T2)]
    for method in ("pull_all_from_table_or_query", "pull_latest_from_table_or_query"):
        for view in (d.QUERY_DOC_VIEW, d.DOC_VIEW):
            for start, end in windows:
                arrow = rows(ArrowFileOfflineStore, method, view, start, end)
                dask = rows(DaskOfflineStore, method, view, start, end)
                assert arrow == dask, (method, view, start, end)
                assert arrow  # every window holds rows


def test_cli_materialize_prints_rows_and_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltr.features.store import apply, offline_dir

    monkeypatch.setenv("LTR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LTR_REDIS_URL", raising=False)
    monkeypatch.delenv("LTR_FEAST_PROJECT", raising=False)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        ds = generate_synthetic(n_queries=3, n_features=4, n_doc_only=1, seed=9)
        ingest_letor(ds, offline_dir(settings), doc_feature_indices=[3], event_timestamp=T1)
        apply(settings)
        args = ["features", "materialize", "--start", "2024-04-30", "--end", "2024-05-02"]
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["rows"][d.QUERY_DOC_VIEW] == ds.n_docs
        assert out["online_store"] == "sqlite" and out["rows_per_second"] > 0
        bad = CliRunner().invoke(app, ["features", "materialize", "--start", "x", "--days", "1"])
        assert bad.exit_code == 2 and bad.stderr.startswith("error: ")
    finally:
        get_settings.cache_clear()
