"""``SqliteFeatureReader`` against real Feast writes in Feast's SQLite online store.

A temporary Feast repository with the platform's shape (entities ``query``/``document``,
views ``query_doc_features``, ``doc_features`` and a query-level ``query_features``, one
``Array(Float32)`` field ``features`` each) is applied with Feast's own SQLite store and with
the platform's ``LtrSqliteOnlineStore``; features are written with
``FeatureStore.write_to_online_store``; every read is compared with
``FeatureStore.get_online_features(...).to_dict()`` on the same keys. The rank service is run
over such a repository with the SQLite reader and with the SDK reader.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.features import FeatureStoreUnavailable
from serving.features.feast_layout import float_list_header, serialize_entity_key
from serving.features.redis_reader import FeatureReadResult, FeatureViewSpec
from serving.features.sqlite_reader import SqliteFeatureReader, sqlite_location

QD_DIM, DOC_DIM, QUERY_DIM = 12, 5, 3
VIEWS = (
    FeatureViewSpec("query_doc_features", ("query_id", "doc_id"), QD_DIM),
    FeatureViewSpec("doc_features", ("doc_id",), DOC_DIM),
)
QUERY_VIEW = FeatureViewSpec("query_features", ("query_id",), QUERY_DIM)
QUERY = "q-ü/1"
OTHER_QUERY = "q2"
UNKNOWN_QUERY = "nobody"
FEAST_SQLITE = "sqlite"
LTR_SQLITE = "ltr.features.online_store.LtrSqliteOnlineStore"
WHEN = datetime(2024, 6, 1, tzinfo=UTC)


def candidate_ids() -> list[str]:
    """40 candidates: plain, unicode, long and empty ids, with one duplicate."""
    ids = [f"d{i}" for i in range(35)]
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
    db: Path
    docs: list[str]


def vectors(rng: np.random.Generator, n: int, dim: int) -> list[list[float]]:
    out = rng.standard_normal((n, dim)).astype(np.float32)
    special = np.array([-0.0, 1e-45, 3.4e38, -1e-39], dtype=np.float32)
    out[0, : min(dim, 4)] = special[:dim]  # sign of zero, subnormals, near-max
    return [row.tolist() for row in out]


def frames_for(docs: list[str], seed: int, when: datetime) -> dict[str, Any]:
    import pandas as pd

    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(docs))
    qd_docs = [d for i, d in enumerate(unique) if qd_present(i)]
    doc_rows = [d for i, d in enumerate(unique) if doc_present(i)]
    return {
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
                "doc_id": doc_rows,
                "features": vectors(rng, len(doc_rows), DOC_DIM),
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


def write_repo(root: Path, store_type: str, docs: list[str], *, db: str = "data/online.db"):
    """Create, apply and fill a Feast repository (online store path relative to it)."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32

    project = f"ltrtest_{uuid.uuid4().hex[:10]}"
    root.mkdir(parents=True)
    (root / "feature_store.yaml").write_text(
        f"project: {project}\n"
        f"registry: {root / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n  type: {store_type}\n  path: {db}\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    frames = frames_for(docs, seed=42, when=WHEN)
    query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.STRING)
    document = Entity(name="document", join_keys=["doc_id"], value_type=ValueType.STRING)
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
    return FeastEnv(store=store, project=project, repo=root, db=root / db, docs=docs)


@pytest.fixture(scope="module", params=[FEAST_SQLITE, LTR_SQLITE], ids=["feast", "ltr"])
def feast_sqlite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("feast_sqlite") / "repo"
    return write_repo(root, request.param, candidate_ids())


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
    assert set(result.vectors) == set(expected)
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


def reader(env: FeastEnv, views=VIEWS, **kwargs: Any) -> SqliteFeatureReader:
    return SqliteFeatureReader.from_repo(env.repo, views, **kwargs)


# --- values equal Feast's ----------------------------------------------------------------------


def test_reader_returns_exactly_what_feast_get_online_features_returns(feast_sqlite):
    expected = feast_expected(feast_sqlite, QUERY, feast_sqlite.docs)
    result = reader(feast_sqlite).read(QUERY, feast_sqlite.docs)
    assert_same_as_feast(result, expected)
    # the fixture really has both found and missing rows in both views
    for name, (_, found) in expected.items():
        assert 0 < found.sum() < len(found), name


def test_query_doc_rows_belong_to_their_query(feast_sqlite):
    r = reader(feast_sqlite)
    for query_id in [OTHER_QUERY, UNKNOWN_QUERY]:
        result = r.read(query_id, feast_sqlite.docs)
        assert_same_as_feast(result, feast_expected(feast_sqlite, query_id, feast_sqlite.docs))
    assert r.read(OTHER_QUERY, feast_sqlite.docs).found["query_doc_features"].all()
    assert not r.read(UNKNOWN_QUERY, feast_sqlite.docs).found["query_doc_features"].any()


def test_missing_entities_are_not_found_nan_rows_and_counted(feast_sqlite):
    docs = ["never-written-1", feast_sqlite.docs[0], "never-written-2"]
    result = reader(feast_sqlite).read(QUERY, docs)
    assert result.found["doc_features"].tolist() == [False, True, False]
    assert np.isnan(result.vectors["doc_features"][[0, 2]]).all()
    assert not np.isnan(result.vectors["doc_features"][1]).any()
    assert result.missing == 2 + 2  # two unknown documents in each view
    assert_same_as_feast(result, feast_expected(feast_sqlite, QUERY, docs))


def test_a_query_level_view_is_broadcast_to_every_candidate(feast_sqlite):
    views = (*VIEWS, QUERY_VIEW)
    r = reader(feast_sqlite, views)
    for query_id in [QUERY, UNKNOWN_QUERY]:
        expected = feast_expected(feast_sqlite, query_id, feast_sqlite.docs, views)
        assert_same_as_feast(r.read(query_id, feast_sqlite.docs), expected)


def test_no_candidates_read_nothing(tmp_path):
    # no database at all: nothing is opened for an empty request
    result = SqliteFeatureReader(tmp_path / "none.db", "p", key_version=3, views=VIEWS).read(
        QUERY, []
    )
    assert result.vectors["query_doc_features"].shape == (0, QD_DIM)
    assert result.found["doc_features"].shape == (0,)
    assert result.missing == 0


def test_the_reader_equals_the_sdk_reader(feast_sqlite):
    from serving.features.sdk_reader import SdkFeatureReader

    sdk = SdkFeatureReader(feast_sqlite.store, VIEWS)
    fast = reader(feast_sqlite)
    for query_id in [QUERY, OTHER_QUERY, UNKNOWN_QUERY]:
        got, want = fast.read(query_id, feast_sqlite.docs), sdk.read(query_id, feast_sqlite.docs)
        for name in want.vectors:
            assert np.array_equal(got.vectors[name], want.vectors[name], equal_nan=True)
            assert np.array_equal(got.found[name], want.found[name])
        assert (got.missing, got.invalid) == (want.missing, want.invalid)


def test_reads_from_many_threads_at_once_return_the_same_values(feast_sqlite):
    r = reader(feast_sqlite)
    expected = feast_expected(feast_sqlite, QUERY, feast_sqlite.docs)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert_same_as_feast(r.read(QUERY, feast_sqlite.docs), expected)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    r.close()
    assert_same_as_feast(r.read(QUERY, feast_sqlite.docs), expected)  # reopens after close


def test_a_rematerialization_with_changed_values_is_read_by_an_open_reader(tmp_path):
    env = write_repo(tmp_path / "repo", LTR_SQLITE, candidate_ids())
    r = reader(env, (*VIEWS, QUERY_VIEW))
    before = r.read(QUERY, env.docs)
    assert_same_as_feast(before, feast_expected(env, QUERY, env.docs, (*VIEWS, QUERY_VIEW)))
    # a later day with other values, and rows for documents that had none
    later = frames_for([*env.docs, "new-doc"], seed=7, when=WHEN + timedelta(days=1))
    for name, frame in later.items():
        frame["features"] = frame["features"].map(lambda v: [x + 1.0 for x in v])
        env.store.write_to_online_store(name, frame)
    docs = [*env.docs, "new-doc"]
    views = (*VIEWS, QUERY_VIEW)
    after = r.read(QUERY, docs)  # the same reader, its connection opened before the write
    assert_same_as_feast(after, feast_expected(env, QUERY, docs, views))
    n = len(env.docs)
    for name in before.vectors:
        old, new = before.vectors[name], after.vectors[name][:n]
        both = before.found[name] & after.found[name][:n]
        assert both.any() and not np.array_equal(old[both], new[both]), name
    assert after.found["query_doc_features"][-1] and after.found["doc_features"][-1]


def test_a_value_of_the_wrong_dimension_is_counted_invalid_not_raised(tmp_path):
    env = write_repo(tmp_path / "repo", FEAST_SQLITE, ["a", "b"])
    key = serialize_entity_key(["doc_id"], ["bad-doc"], 3)
    wrong = float_list_header(DOC_DIM + 1) + np.zeros(DOC_DIM + 1, np.float32).tobytes()
    with sqlite3.connect(env.db) as conn:
        conn.execute(
            f'INSERT INTO "{env.project}_doc_features" (entity_key, feature_name, value) '
            "VALUES (?, 'features', ?)",
            (key, wrong),
        )
    conn.close()
    result = reader(env).read(QUERY, ["bad-doc", "a"])
    assert result.found["doc_features"].tolist() == [False, True]
    assert result.invalid == 1
    assert result.missing == 2  # bad-doc in both views


# --- failures ------------------------------------------------------------------------------------


def test_a_missing_database_raises_feature_store_unavailable_naming_it(tmp_path):
    path = tmp_path / "no-such" / "online.db"
    r = SqliteFeatureReader(path, "ltr", key_version=3, views=VIEWS)
    for _ in range(2):  # also on the calls after the first failure
        with pytest.raises(FeatureStoreUnavailable, match="does not exist") as info:
            r.read(QUERY, ["d1"])
        assert str(path) in str(info.value)
    assert not path.parent.exists()  # read-only: nothing was created


def test_a_database_created_later_is_read_without_restarting(tmp_path):
    db = tmp_path / "online.db"
    r = SqliteFeatureReader(db, "p", key_version=3, views=VIEWS[1:])
    with pytest.raises(FeatureStoreUnavailable):
        r.read(QUERY, ["a"])
    key = serialize_entity_key(["doc_id"], ["a"], 3)
    value = float_list_header(DOC_DIM) + np.arange(DOC_DIM, dtype=np.float32).tobytes()
    with sqlite3.connect(db) as conn:
        conn.execute(
            'CREATE TABLE "p_doc_features" (entity_key BLOB, feature_name TEXT, '
            "value BLOB, PRIMARY KEY (entity_key, feature_name))"
        )
        conn.execute('INSERT INTO "p_doc_features" VALUES (?, ?, ?)', (key, "features", value))
    conn.close()
    result = r.read(QUERY, ["a", "b"])
    assert result.found["doc_features"].tolist() == [True, False]
    assert result.vectors["doc_features"][0].tolist() == list(range(DOC_DIM))


def test_a_replaced_database_file_is_reopened(tmp_path):
    env = write_repo(tmp_path / "repo", FEAST_SQLITE, ["a", "b"])
    r = reader(env, VIEWS[1:])
    assert r.read(QUERY, ["a"]).found["doc_features"].all()
    copy = env.db.with_suffix(".new")
    with sqlite3.connect(env.db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
        dst.execute(f'DELETE FROM "{env.project}_doc_features"')
    src.close()
    dst.close()
    copy.replace(env.db)  # an atomic swap of the whole file
    assert not r.read(QUERY, ["a"]).found["doc_features"].any()


def test_a_missing_table_raises_feature_store_unavailable(feast_sqlite):
    views = (FeatureViewSpec("never_applied", ("doc_id",), 2),)
    with pytest.raises(FeatureStoreUnavailable, match="never_applied") as info:
        reader(feast_sqlite, views).read(QUERY, ["d1"])
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)


def test_a_locked_database_raises_feature_store_unavailable_after_the_busy_timeout(tmp_path):
    env = write_repo(tmp_path / "repo", FEAST_SQLITE, ["a", "b"])
    r = reader(env, busy_timeout_s=0.02)
    writer = sqlite3.connect(env.db, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        with pytest.raises(FeatureStoreUnavailable, match="locked"):
            r.read(QUERY, ["a"])
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert r.read(QUERY, ["a"]).found["doc_features"].all()  # fine once the lock is gone


# --- configuration ------------------------------------------------------------------------------


def test_the_database_path_comes_from_feature_store_yaml(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    yaml_file = repo / "feature_store.yaml"
    monkeypatch.setenv("LTR_TEST_DB_DIR", str(tmp_path / "abs"))
    yaml_file.write_text(
        "project: p1\nregistry: r.db\nonline_store:\n  type: sqlite\n  path: ../var/online.db\n"
    )
    loc = sqlite_location(repo)
    assert loc is not None
    assert (loc.path, loc.project, loc.key_version) == (repo / "../var/online.db", "p1", 3)
    yaml_file.write_text(
        f"project: p2\nregistry: r.db\nonline_store:\n  type: {LTR_SQLITE}\n"
        "  path: ${LTR_TEST_DB_DIR}/o.db\nentity_key_serialization_version: 2\n"
    )
    loc = sqlite_location(repo)
    assert loc is not None
    assert (loc.path, loc.project, loc.key_version) == (tmp_path / "abs" / "o.db", "p2", 2)
    yaml_file.write_text("project: p3\nregistry: r.db\n")  # Feast's default online store
    assert sqlite_location(repo).path == repo / "data" / "online.db"  # type: ignore[union-attr]
    yaml_file.write_text(
        'project: p\nregistry: r.db\nonline_store:\n  type: redis\n  connection_string: "x:1"\n'
    )
    assert sqlite_location(repo) is None
    with pytest.raises(ValueError, match="not SQLite"):
        SqliteFeatureReader.from_repo(repo, VIEWS)
    assert sqlite_location(tmp_path / "nowhere") is None


def test_view_specs_are_validated(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        SqliteFeatureReader(tmp_path / "o.db", "p", key_version=3, views=[])
    with pytest.raises(ValueError, match="duplicate"):
        SqliteFeatureReader(tmp_path / "o.db", "p", key_version=3, views=[VIEWS[0], VIEWS[0]])
    with pytest.raises(ValueError, match="entity_key_serialization_version"):
        SqliteFeatureReader(tmp_path / "o.db", "p", key_version=9, views=VIEWS)


def test_the_sqlite_path_imports_neither_feast_nor_torch_nor_protobuf():
    code = (
        "import sys, serving.features.sqlite_reader as m; "
        "m.sqlite_location('feature_repo'); "
        "heavy = [n for n in ('feast', 'torch', 'google.protobuf') if n in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- the rank service ----------------------------------------------------------------------------

SERVICE_SCHEMA = [
    {"name": "f0", "source": "query_doc_features", "index": 0, "default": 0.0},
    {"name": "f1", "source": "query_doc_features", "index": 7, "default": 0.0},
    {"name": "f2", "source": "doc_features", "index": 2, "default": -1.0},
    {"name": "f3", "source": "request", "default": 1.5},
]
SERVICE_WEIGHTS = (np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32), 0.25)


def export_view_model(models_dir: Path, version: str) -> None:
    """A linear model reading f0, f1 from query_doc_features and f2 from doc_features."""
    import torch
    from support.models import FEATURES, validation_set

    from ltr.export.onnx_export import export_ranker
    from ltr.models.neural import MLPScorer
    from ltr.models.rankers import NeuralRanker

    torch.set_num_threads(1)
    w, b = SERVICE_WEIGHTS
    module = MLPScorer(len(FEATURES), hidden=(), dropout=0.0)
    with torch.no_grad():
        module.net[0].weight.copy_(torch.as_tensor(w).reshape(1, -1))
        module.net[0].bias.fill_(b)
    ranker = NeuralRanker(module, "mlp", {"hidden": [], "dropout": 0.0}, "ranknet", FEATURES)
    with warnings.catch_warnings():  # the project exports with TorchScript on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        export_ranker(
            ranker,
            {"model_type": "mlp", "loss": "ranknet"},
            validation_set(FEATURES, seed=0),
            models_dir,
            version=version,
            latency=False,
            feature_sources=SERVICE_SCHEMA,
            feature_views={
                "query_doc_features": {"join_keys": ["query_id", "doc_id"], "dim": QD_DIM},
                "doc_features": {"join_keys": ["doc_id"], "dim": DOC_DIM},
            },
        )


def rank(settings: Any, body: dict[str, Any]) -> tuple[dict[str, Any], type]:
    """The service's answer to ``body``, and the type of the feature reader it used."""
    from support.serving import serve

    with serve(settings) as client:
        resp = client.post("/api/v1/rank", json=body)
        assert resp.status_code == 200, resp.text
        readers = [r for r in client.app.state.ltr.readers.values() if r is not None]  # type: ignore[attr-defined]
        assert len(readers) == 1
        return resp.json(), type(readers[0])


def test_the_service_ranks_the_same_through_the_sqlite_reader_as_through_the_sdk(
    feast_sqlite, tmp_path, monkeypatch
):
    from support.serving import make_settings

    import serving.features.sqlite_reader as sqlite_reader
    from ltr.model_store import write_routing
    from serving.features.sdk_reader import SdkFeatureReader

    for name in [n for n in os.environ if n.startswith("LTR_")]:
        monkeypatch.delenv(name)
    models = tmp_path / "models"
    export_view_model(models, "vsql")
    write_routing(models, {"strategy": "single", "production": "vsql"})
    docs = [*list(dict.fromkeys(feast_sqlite.docs))[:30], "unknown-doc"]
    body = {
        "query_id": QUERY,
        "candidates": [
            {"doc_id": d, **({"features": {"f3": 0.1 * i}} if i % 3 else {})}
            for i, d in enumerate(docs)
        ],
    }
    settings = make_settings(
        models, feast_repo=feast_sqlite.repo, cache_enabled=False, events_enabled=False
    )
    fast, fast_type = rank(settings, body)
    assert fast_type is SqliteFeatureReader
    monkeypatch.setattr(sqlite_reader, "sqlite_location", lambda _repo: None)
    slow, slow_type = rank(settings, body)
    assert slow_type is SdkFeatureReader

    assert [d["doc_id"] for d in fast["ranked"]] == [d["doc_id"] for d in slow["ranked"]]
    assert [d["score"] for d in fast["ranked"]] == [d["score"] for d in slow["ranked"]]
    # and both are the model's scores of Feast's values (defaults where Feast has none)
    expected = feast_expected(feast_sqlite, QUERY, docs)
    x = np.empty((len(docs), 4), dtype=np.float32)
    for col, entry in enumerate(SERVICE_SCHEMA[:3]):
        values, found = expected[str(entry["source"])]
        x[:, col] = np.where(found, values[:, int(entry["index"])], float(entry["default"]))
    x[:, 3] = [0.1 * i if i % 3 else 1.5 for i in range(len(docs))]
    assert (~expected["query_doc_features"][1]).any() and (~expected["doc_features"][1]).any()
    w, b = SERVICE_WEIGHTS
    scores = x.astype(np.float64) @ w.astype(np.float64) + b
    got = {d["doc_id"]: d["score"] for d in fast["ranked"]}
    np.testing.assert_allclose([got[d] for d in docs], scores, rtol=1e-5, atol=1e-5)
    order = [docs[i] for i in np.argsort(-scores, kind="stable")]
    assert [d["doc_id"] for d in fast["ranked"]] == order
