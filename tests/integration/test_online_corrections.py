"""A corrected day reaches the online store; an unchanged re-run writes nothing (real stores).

The feature pipeline's own task functions (``write_offline``, ``apply_features``,
``materialize_interval``) run as the DAG runs them, into Feast's SQLite online store and into
Redis; the online values are read back with Feast's ``get_online_features`` and with the
service's readers (``RedisFeatureReader``, ``SdkFeatureReader``). Redis tests use
``$LTR_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/5``) and a Feast project of their
own whose keys are deleted afterwards; they skip when Redis does not answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.redis import delete_project_keys, project_keys, redis_client, unique_project

from ltr.data.dataset import LetorDataset
from ltr.data.letor import write_letor
from ltr.features import definitions as d
from ltr.features.store import offline_dir
from ltr.pipelines import feature_pipeline as fp
from ltr.pipelines.config import PipelineConfig
from ltr.settings import Settings
from serving.features.redis_reader import FeatureViewSpec, RedisFeatureReader
from serving.features.sdk_reader import SdkFeatureReader

REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
DAY = datetime(2024, 9, 2, tzinfo=UTC)
LATER = DAY + timedelta(days=2)  # outside the window of a re-run of DAY
DOC_COLS = [3, 4]  # of 5 features, the last two depend on the document only
CONFIG = PipelineConfig.model_validate({"doc_feature_indices": DOC_COLS})
SPECS = [
    FeatureViewSpec(name=d.QUERY_DOC_VIEW, join_keys=("query_id", "doc_id"), dim=3),
    FeatureViewSpec(name=d.DOC_VIEW, join_keys=("doc_id",), dim=2),
]
ROWS = [("q1", "a"), ("q1", "b"), ("q1", "c"), ("q2", "a"), ("q2", "c"), ("q2", "d")]
DOCS = {"a": [0.5, 1.5], "b": [2.5, 3.5], "c": [4.5, 5.5], "d": [6.5, 7.5]}


def judged(
    doc_values: dict[str, list[float]] | None = None,
    pair_values: dict[tuple[str, str], list[float]] | None = None,
    rows: list[tuple[str, str]] = ROWS,
) -> LetorDataset:
    """Judgments of ``rows`` (two queries over four documents by default); ``doc_values`` and
    ``pair_values`` override the documents' and the pairs' features."""
    docs = {**DOCS, **(doc_values or {})}
    pairs = {row: [i + 0.25, -i - 0.25, 10.0 * i] for i, row in enumerate(ROWS)}
    pairs.update(pair_values or {})
    labels = dict(zip(ROWS, [2, 1, 0, 1, 0, 2], strict=True))
    return LetorDataset(
        features=np.array([[*pairs[row], *docs[row[1]]] for row in rows], dtype=np.float32),
        labels=np.array([labels[row] for row in rows], dtype=np.float32),
        qids=np.array([q for q, _ in rows], dtype=object),
        doc_ids=np.array([doc for _, doc in rows], dtype=object),
    )


@dataclass
class Store:
    settings: Settings
    redis: Any  # a client of the shared Redis, or None for SQLite

    def land(self, day: datetime, ds: LetorDataset) -> Path:
        """The day's raw file, as a producer lands it (a correction overwrites it)."""
        path = self.settings.home / "raw" / day.date().isoformat() / "judgments.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_letor(ds, path)
        return path

    def run_pipeline(self, day: datetime) -> dict[str, Any]:
        """The feature DAG's tasks for the day's interval (validation left out)."""
        end = day + timedelta(days=1)
        files = fp.raw_files(day, end, CONFIG, self.settings)
        written = fp.write_offline(files, day, CONFIG, self.settings)
        fp.apply_features(self.settings)
        return {
            "offline": written,
            "materialize": fp.materialize_interval(day, end, CONFIG, self.settings),
        }

    def feast_online(self, rows: list[tuple[str, str]]) -> np.ndarray:
        from ltr.features.store import get_feature_store

        store = get_feature_store(self.settings)
        out = store.get_online_features(
            features=store.get_feature_service(d.DEFAULT_FEATURE_SERVICE),
            entity_rows=[{"query_id": q, "doc_id": doc} for q, doc in rows],
            full_feature_names=True,
        ).to_dict()
        return np.hstack(
            [
                np.array(out[d.output_column(d.QUERY_DOC_VIEW)], np.float32),
                np.array(out[d.output_column(d.DOC_VIEW)], np.float32),
            ]
        )

    def service_online(self, rows: list[tuple[str, str]]) -> np.ndarray:
        """What the service reads: Redis directly, else the Feast SDK (SQLite)."""
        from ltr.features.store import get_feature_store

        if self.redis is not None:
            reader: Any = RedisFeatureReader(
                self.redis,
                self.settings.feast_project,
                key_version=d.ENTITY_KEY_SERIALIZATION_VERSION,
                views=SPECS,
                mode="pipeline",
            )
        else:
            reader = SdkFeatureReader(get_feature_store(self.settings), SPECS)
        out = []
        for query in dict.fromkeys(q for q, _ in rows):
            docs = [doc for q, doc in rows if q == query]
            result = reader.read(query, docs)
            assert result.missing == 0
            out.append(np.hstack([result.vectors[s.name] for s in SPECS]))
        return np.vstack(out)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    client = redis_client(REDIS_URL, socket_timeout=5) if request.param == "redis" else None
    settings = Settings(
        home=tmp_path / "home",
        feast_project=unique_project("ltrfix"),
        redis_url=REDIS_URL if client is not None else None,
    )
    try:
        yield Store(settings, client)
    finally:
        if client is not None:
            delete_project_keys(client, settings.feast_project)
            client.close()


def test_a_corrected_day_reaches_the_online_store_when_the_pipeline_reruns_it(
    store: Store,
) -> None:
    from ltr.features.training_data import entity_rows, load_training_dataset

    original = judged()
    store.land(DAY, original)
    store.run_pipeline(DAY)
    np.testing.assert_array_equal(store.feast_online(ROWS), original.features)

    # Two days later, query q2 is judged again: document c and the pair (q2, d) changed.
    later_rows = [("q2", "c"), ("q2", "d")]
    later = judged({"c": [40.0, 50.0]}, {("q2", "d"): [7.0, 8.0, 9.0]}, rows=later_rows)
    store.land(LATER, later)
    store.run_pipeline(LATER)

    # DAY's judgments are corrected: document a and the pair (q1, b), which nothing later
    # changed, and document c and the pair (q2, d), which the later day supersedes.
    corrected = judged(
        {"a": [-1.0, -2.0], "c": [-3.0, -4.0]},
        {("q1", "b"): [-5.0, -6.0, -7.0], ("q2", "d"): [-8.0, -9.0, -10.0]},
    )
    store.land(DAY, corrected)
    rerun = store.run_pipeline(DAY)
    assert rerun["offline"]["files"][0]["replaced"] is True

    # Online: the correction where nothing newer exists, the later day where it does.
    expected = corrected.features.copy()
    for i, (q, doc) in enumerate(ROWS):
        if doc == "c":
            expected[i, 3:] = later.features[0, 3:]
        if (q, doc) in later_rows:
            expected[i, :3] = later.features[later_rows.index((q, doc)), :3]
    assert not np.array_equal(expected, corrected.features)
    np.testing.assert_array_equal(store.feast_online(ROWS), expected)
    np.testing.assert_array_equal(store.service_online(ROWS), expected)
    # only what the correction changed and nothing newer supersedes was written
    assert rerun["materialize"]["written"] == {d.QUERY_DOC_VIEW: 1, d.DOC_VIEW: 1}

    # Point in time: training rows of DAY get the corrected day, later rows the later day.
    for when, features in ((DAY + timedelta(hours=12), corrected.features), (LATER, expected)):
        got = load_training_dataset(entity_rows(original, when), settings=store.settings)
        np.testing.assert_array_equal(got.features, features, err_msg=str(when))


def test_rerunning_an_unchanged_day_writes_nothing_offline_or_online(store: Store) -> None:
    ds = judged()
    store.land(DAY, ds)
    store.run_pipeline(DAY)
    offline = offline_dir(store.settings)
    tables = [*d.OFFLINE_FILES.values(), fp.LABELS_TABLE]
    partitions = [p for name in tables for p in (offline / name).iterdir()]
    assert len(partitions) == 3
    files_before = file_states(partitions)
    online_before = online_state(store)
    sqlite_log = log_sqlite_writes(store) if store.redis is None else None

    again = store.run_pipeline(DAY)

    assert file_states(partitions) == files_before  # not rewritten: same bytes, same mtime
    assert online_state(store) == online_before
    if sqlite_log is not None:
        assert sqlite_log() == []  # no row of the online tables was inserted or updated
    np.testing.assert_array_equal(store.service_online(ROWS), ds.features)
    assert again["offline"]["files"][0]["unchanged"] is True
    assert again["materialize"]["rows"] == {d.QUERY_DOC_VIEW: 6, d.DOC_VIEW: 4}
    assert again["materialize"]["written"] == {d.QUERY_DOC_VIEW: 0, d.DOC_VIEW: 0}


# ---------------------------------------------------------------------------- helpers
def file_states(paths: list[Path]) -> dict[str, tuple[str, int]]:
    return {
        str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths
    }


def sqlite_path(store: Store) -> Path:
    return store.settings.home / d.SQLITE_FILE


def online_state(store: Store) -> dict[Any, Any]:
    """Every stored byte of the project's online rows (Redis hashes or SQLite rows)."""
    if store.redis is not None:
        keys = project_keys(store.redis, store.settings.feast_project)
        return {key: store.redis.hgetall(key) for key in keys}
    with contextlib.closing(sqlite3.connect(sqlite_path(store))) as conn:
        return {
            view: sorted(conn.execute(f'SELECT * FROM "{store.settings.feast_project}_{view}"'))
            for view in d.OFFLINE_FILES
        }


def log_sqlite_writes(store: Store) -> Any:
    """Triggers that record every insert or update of the online tables; returns a reader."""
    path = sqlite_path(store)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE test_writes (view TEXT, entity_key BLOB)")
        for view in d.OFFLINE_FILES:
            table = f'"{store.settings.feast_project}_{view}"'
            for event in ("INSERT", "UPDATE"):
                conn.execute(
                    f"CREATE TRIGGER test_{event.lower()}_{view} AFTER {event} ON {table} "
                    f"BEGIN INSERT INTO test_writes VALUES ('{view}', new.entity_key); END"
                )

    def writes() -> list[tuple[str, bytes]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return list(conn.execute("SELECT view, entity_key FROM test_writes"))

    return writes
