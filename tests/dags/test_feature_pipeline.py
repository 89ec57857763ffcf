"""``ltr_feature_pipeline`` end to end: real Airflow metadata DB, Great Expectations, Feast, Redis.

MQ2008 S1 (its first 60 queries) lands as ``<LTR_HOME>/raw/2026-01-01/s1.txt``; the DAG runs
for the interval [2026-01-01, 2026-01-02) with ``dag.test()``. Redis db 3 holds the online
store under a Feast project of this module's own, whose keys are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.datasets import mq2008_s1
from support.pipeline import MQ2008_VALIDATION, land_raw, pipeline_home, write_pipeline_config
from support.redis import project_keys

from ltr.data.dataset import LetorDataset
from ltr.settings import get_settings

pytestmark = [pytest.mark.dags, pytest.mark.integration]

DAG_ID = "ltr_feature_pipeline"
REDIS_URL = os.environ.get("LTR_TEST_REDIS_URL_DAGS", "redis://127.0.0.1:6379/3")
N_QUERIES = 60
DAY = "2026-01-01"
LOGICAL_DATE = datetime(2026, 1, 2, tzinfo=UTC)  # data interval [2026-01-01, 2026-01-02)
EMPTY_LOGICAL_DATE = datetime(2026, 1, 6, tzinfo=UTC)
TASKS = ["find_raw", "validate", "write_offline", "apply", "materialize", "publish"]


def first_queries(path: Path, n: int) -> LetorDataset:
    from ltr.data.letor import read_letor

    ds = read_letor(path)
    end = int(ds.offsets[n])
    return LetorDataset(
        features=ds.features[:end],
        labels=ds.labels[:end],
        qids=ds.qids[:end],
        doc_ids=ds.doc_ids[:end],
    )


@pytest.fixture(scope="module")
def s1() -> LetorDataset:
    return first_queries(mq2008_s1(), N_QUERIES)


@dataclass
class Env:
    home: Path
    project: str
    client: Any

    @property
    def offline(self) -> Path:
        return self.home / "feast" / "data"

    def land(self, name: str, ds: LetorDataset, day: str = DAY) -> Path:
        return land_raw(self.home, ds, day, name)


@contextlib.contextmanager
def make_env(tmp: Path, mp: pytest.MonkeyPatch) -> Iterator[Env]:
    """LTR_HOME and a pipeline config in ``tmp``, the online store a Feast project of its own
    in Redis db 3 (its keys deleted afterwards)."""
    config = write_pipeline_config(
        tmp / "pipeline.yaml",
        validation=MQ2008_VALIDATION,
        doc_feature_indices=[],
        materialize_overlap_hours=24,
    )
    with pipeline_home(
        tmp / "home", redis_url=REDIS_URL, prefix="ltrdag", mp=mp, LTR_PIPELINE_CONFIG=str(config)
    ) as ph:
        yield Env(home=ph.home, project=ph.project, client=ph.client)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with make_env(tmp_path, monkeypatch) as e:
        yield e


def run_dag(dagbag: Any, logical_date: datetime) -> tuple[Any, dict[str, str]]:
    get_settings.cache_clear()
    run = dagbag.dags[DAG_ID].test(logical_date=logical_date)
    return run, {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def online_vectors(env: Env, ds: LetorDataset, queries: list[str]) -> dict[str, np.ndarray]:
    from ltr.features.definitions import ENTITY_KEY_SERIALIZATION_VERSION, QUERY_DOC_VIEW
    from serving.features.redis_reader import FeatureViewSpec, RedisFeatureReader

    reader = RedisFeatureReader(
        env.client,
        env.project,
        key_version=ENTITY_KEY_SERIALIZATION_VERSION,
        views=[FeatureViewSpec(QUERY_DOC_VIEW, ("query_id", "doc_id"), ds.n_features)],
        mode="pipeline",
    )
    out = {}
    for q in queries:
        docs = [str(d) for d in ds.doc_ids[ds.qids == q]]
        result = reader.read(q, docs)
        assert result.missing == 0, f"query {q}: {result.missing} documents not online"
        out[q] = result.vectors[QUERY_DOC_VIEW]
    return out


# --------------------------------------------------------------------------- declaration
def test_the_dag_follows_the_platform_conventions(dagbag: Any) -> None:
    from datetime import timedelta

    from airflow.serialization.encoders import coerce_to_core_timetable

    from ltr.pipelines.feature_pipeline import FEATURES_ASSET_URI

    assert not [f for f in dagbag.import_errors if "feature_pipeline" in f]
    dag = dagbag.dags[DAG_ID]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and {"ltr", "features"} <= set(dag.tags)
    timetable = coerce_to_core_timetable(dag.timetable)  # what the scheduler uses
    assert timetable.summary == "0 0 * * *"  # @daily
    assert timetable.infer_manual_data_interval(run_after=LOGICAL_DATE) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        LOGICAL_DATE,
    )
    for t in dag.tasks:
        assert t.retries >= 2 and t.retry_delay >= timedelta(minutes=1)
    assert [t.task_id for t in dag.topological_sort()] == TASKS
    assert [a.uri for a in dag.get_task("publish").outlets] == [FEATURES_ASSET_URI]


# ------------------------------------------------------------------- a landed day, twice
@pytest.fixture(scope="module")
def landed(
    tmp_path_factory: pytest.TempPathFactory, s1: LetorDataset, dagbag: Any
) -> Iterator[dict[str, Any]]:
    """S1's first queries landed for 2026-01-01 and the DAG run once for that day."""
    with pytest.MonkeyPatch.context() as mp, make_env(tmp_path_factory.mktemp("landed"), mp) as e:
        e.land("s1.txt", s1)
        run, states = run_dag(dagbag, LOGICAL_DATE)
        xcoms = {t: run.get_task_instance(t).xcom_pull(task_ids=t) for t in TASKS}
        yield {"env": e, "run": run, "states": states, "xcoms": xcoms}


def test_a_landed_day_runs_every_task_to_success(landed: dict[str, Any]) -> None:
    assert landed["run"].state == "success"
    assert landed["states"] == dict.fromkeys(TASKS, "success")


def test_the_offline_store_holds_the_features_and_the_labels(
    landed: dict[str, Any], s1: LetorDataset
) -> None:
    from ltr.pipelines.feature_pipeline import read_labels

    env: Env = landed["env"]
    written = landed["xcoms"]["write_offline"]
    assert written["query_doc_rows"] == s1.n_docs == written["label_rows"]
    partition = written["files"][0]["partition"]
    assert partition.startswith("20260101T000000.000000Z--s1")
    for table in ("query_doc_features.parquet", "doc_features.parquet", "labels.parquet"):
        assert (env.offline / table / partition).is_file()
    labels = read_labels(get_settings())
    assert len(labels) == s1.n_docs
    assert labels["query_id"].tolist() == [str(q) for q in s1.qids]
    assert labels["doc_id"].tolist() == [str(d) for d in s1.doc_ids]
    np.testing.assert_array_equal(labels["label"].to_numpy(), s1.labels)
    assert set(labels["event_timestamp"]) == {datetime(2026, 1, 1, tzinfo=UTC)}


def test_redis_holds_the_features_of_the_source_file(
    landed: dict[str, Any], s1: LetorDataset
) -> None:
    env: Env = landed["env"]
    assert landed["xcoms"]["materialize"]["online_store"] == "redis"
    assert landed["xcoms"]["materialize"]["rows"]["query_doc_features"] == s1.n_docs
    queries = [str(q) for q in dict.fromkeys(s1.qids.tolist())]
    picked = [queries[0], queries[len(queries) // 2], queries[-1]]
    for q, got in online_vectors(env, s1, picked).items():
        np.testing.assert_array_equal(got, s1.features[s1.qids == q])


def test_the_validation_report_is_kept(landed: dict[str, Any]) -> None:
    import json

    env: Env = landed["env"]
    report = env.home / "reports" / "validation" / DAY / "s1.validation.json"
    assert json.loads(report.read_text())["success"] is True
    assert landed["xcoms"]["validate"]["results"][0]["report"] == str(report.resolve())


def test_publish_records_an_asset_event_for_the_retrain_dag(landed: dict[str, Any]) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from ltr.pipelines.feature_pipeline import FEATURES_ASSET_URI

    run = landed["run"]
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == FEATURES_ASSET_URI, AssetEvent.source_run_id == run.run_id)
        ).all()
        extras = [e.extra for e in events]
    assert len(extras) == 1
    assert extras[0]["data_interval_start"].startswith("2026-01-01T00:00:00")
    assert extras[0]["label_rows"] == landed["xcoms"]["write_offline"]["label_rows"]


def test_rerunning_the_same_interval_changes_nothing(
    landed: dict[str, Any], s1: LetorDataset, dagbag: Any
) -> None:
    from ltr.pipelines.feature_pipeline import read_labels

    env: Env = landed["env"]
    queries = [str(q) for q in dict.fromkeys(s1.qids.tolist())][:5]
    offline_before = digests(env.offline)
    online_before = online_vectors(env, s1, queries)
    keys_before = sorted(project_keys(env.client, env.project))
    raw_before = {k: env.client.hgetall(k) for k in keys_before[:50]}

    run, states = run_dag(dagbag, LOGICAL_DATE)  # the module's environment is still set

    assert run.state == "success" and states == dict.fromkeys(TASKS, "success")
    assert digests(env.offline) == offline_before
    assert sorted(project_keys(env.client, env.project)) == keys_before
    assert {k: env.client.hgetall(k) for k in keys_before[:50]} == raw_before
    for q, vectors in online_vectors(env, s1, queries).items():
        np.testing.assert_array_equal(vectors, online_before[q])
    labels = read_labels(get_settings())
    assert len(labels) == s1.n_docs
    assert not labels.duplicated(["query_id", "doc_id", "event_timestamp"]).any()


# ----------------------------------------------------------------- bad data, no data
def test_a_bad_label_fails_the_run_at_validation_and_writes_nothing(
    env: Env, s1: LetorDataset, dagbag: Any
) -> None:
    bad = first_queries(mq2008_s1(), 5)
    bad.labels[3] = 7.0
    env.land("s1.txt", bad)

    run, states = run_dag(dagbag, LOGICAL_DATE)

    assert run.state == "failed"
    assert states["find_raw"] == "success"
    assert states["validate"] == "failed"
    assert run.get_task_instance("validate").try_number == 1  # bad data is not retried
    assert {states[t] for t in TASKS[2:]} == {"upstream_failed"}
    assert not env.offline.exists()
    assert not (env.home / "feast").exists()
    assert project_keys(env.client, env.project) == []
    report = env.home / "reports" / "validation" / DAY / "s1.validation.json"
    assert '"success": false' in report.read_text()
    assert (report.parent / "s1.gx.json").is_file()


def test_an_interval_without_raw_files_skips_downstream_and_does_not_fail(
    env: Env, s1: LetorDataset, dagbag: Any
) -> None:
    env.land("s1.txt", first_queries(mq2008_s1(), 2))  # another day: not this run's

    run, states = run_dag(dagbag, EMPTY_LOGICAL_DATE)

    assert run.state == "success"
    assert states == dict.fromkeys(TASKS, "skipped")
    assert not (env.home / "feast").exists()
    assert not (env.home / "reports").exists()
