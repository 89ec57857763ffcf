"""The nightly retrain DAG end to end on real services: Feast offline store (MQ2008 S1, first
80 queries), MLflow (SQLite in a temporary LTR_HOME), Redis as the online store, the
Airflow metadata database of the harness (``LTR_TEST_AIRFLOW_DB=sqlite|postgres``).

One module-wide setup; the runs use different data intervals (run keys) so each scenario
starts clean: a first run that registers, its re-run, a parity failure, a margin failure and
a run without a data interval (as an asset-triggered run is).
Tiny models (MLP [16] for 3 epochs, LightGBM 30 trees) keep it fast.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.datasets import mq2008_s1
from support.pipeline import (
    pipeline_home,
    run_without_retries,
    training_sections,
    write_pipeline_config,
)

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.datasets]

REDIS_URL = "redis://127.0.0.1:6379/4"
REGISTRY = "ltr-ranker-retrain-test"
T0 = datetime(2026, 1, 1, tzinfo=UTC)  # features and labels of the offline store
FIRST = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)  # logical dates of the runs (one per scenario)
PARITY = datetime(2026, 1, 3, 2, 0, tzinfo=UTC)
MARGIN = datetime(2026, 1, 4, 2, 0, tzinfo=UTC)
TASKS = (
    "build_training_data",
    "train_candidates",
    "evaluate_against_champion",
    "export_challenger",
    "register_and_request",
)


class Env:
    """The temporary platform: settings, config files, and helpers to run the DAG."""

    def __init__(self, home: Path, monkeypatch: pytest.MonkeyPatch, dagbag: Any) -> None:
        self.home = home
        self.monkeypatch = monkeypatch
        self.dagbag = dagbag
        self.configs = home / "configs"

    @property
    def settings(self) -> Any:
        from ltr.settings import get_settings

        return get_settings()

    def use_gates(self, **gates: float) -> None:
        """Point LTR_PIPELINE_CONFIG at a pipeline config with these gates."""
        path = write_pipeline_config(
            self.home / f"pipeline-{uuid.uuid4().hex[:6]}.yaml",
            **training_sections(self.configs, salt="dag-test", **gates),
            registry_name=REGISTRY,
        )
        self.monkeypatch.setenv("LTR_PIPELINE_CONFIG", str(path))

    def run(
        self, logical_date: datetime | None, run_after: datetime | None = None
    ) -> tuple[Any, dict[str, Any]]:
        # a broken task fails the test at once instead of after the retry delays
        run = run_without_retries(
            self.dagbag.dags["ltr_retrain"], logical_date=logical_date, run_after=run_after
        )
        tis = {ti.task_id: ti for ti in run.get_task_instances()}
        states = {t: tis[t].state for t in TASKS}
        values = {t: tis[t].xcom_pull(task_ids=t) for t in TASKS}
        return run, {"states": states, **values}

    def versions(self) -> list[Any]:
        from ltr.registry import describe

        return describe(REGISTRY, tracking_uri=self.settings.tracking_uri)

    def requests(self) -> list[Path]:
        folder = self.home / "promotions" / "requests"
        return sorted(folder.glob("*.json")) if folder.is_dir() else []


def test_the_dag_runs_nightly_and_when_the_feature_pipeline_publishes(dagbag: Any) -> None:
    from airflow.sdk import AssetAll, AssetOrTimeSchedule, CronTriggerTimetable

    dag = dagbag.dags["ltr_retrain"]
    assert not dagbag.import_errors
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert isinstance(dag.timetable.timetable, CronTriggerTimetable)
    assert dag.timetable.timetable.expression == "0 2 * * *"
    published = dagbag.dags["ltr_feature_pipeline"].get_task("publish").outlets
    assert dag.timetable.asset_condition == AssetAll(*published)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"ltr", "retrain"} <= set(dag.tags) and dag.doc_md
    assert [t.task_id for t in dag.topological_sort()] == list(TASKS)
    for t in dag.tasks:
        assert t.retries >= 2 and t.retry_delay.total_seconds() > 0, t.task_id


@pytest.fixture(scope="module")
def env(dagbag: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """MQ2008 S1 (first 80 queries) and its labels in a fresh offline store, applied to Feast."""
    from ltr.data.letor import read_letor
    from ltr.features.ingest import ingest_letor
    from ltr.features.store import apply, offline_dir
    from ltr.pipelines.feature_pipeline import write_labels

    path = mq2008_s1()
    home = tmp_path_factory.mktemp("retrain") / "home"
    with pipeline_home(home, redis_url=REDIS_URL, prefix="ltrretrain", socket_timeout=5) as ph:
        ds = read_letor(path).subset_queries(list(range(80)))
        store = offline_dir()
        result = ingest_letor(ds, store, doc_feature_indices=[], event_timestamp=T0, name="S1")
        write_labels(ds, store, partition=result["partition"], event_timestamp=T0)
        apply()
        yield Env(home, ph.mp, dagbag)


@pytest.fixture(scope="module")
def first_run(env: Env) -> dict[str, Any]:
    env.use_gates(min_margin=0.0, parity_tolerance=1e-5)
    run, out = env.run(FIRST)
    return {"run": run, **out}


def test_a_nightly_run_registers_a_challenger_and_opens_a_promotion_request(
    env: Env, first_run: dict[str, Any]
) -> None:
    from ltr.registry import get_alias

    assert first_run["run"].state == "success"
    assert set(first_run["states"].values()) == {"success"}
    data = first_run["build_training_data"]
    assert data["run_key"] == "20260102T020000Z"
    assert sum(data["queries"].values()) == 80 and min(data["queries"].values()) > 0
    assert all(Path(p).is_file() for p in data["paths"].values())
    assert [c["run_name"].split("-20260102")[0] for c in first_run["train_candidates"]] == [
        "mlp-tiny",
        "lgbm-tiny",
    ]

    evaluation = first_run["evaluate_against_champion"]
    assert evaluation["champion"] is None and evaluation["margin"] is None
    assert evaluation["challenger_value"] == max(c["value"] for c in evaluation["candidates"])

    result = first_run["register_and_request"]
    assert result["status"] == "requested", result
    version = result["version"]
    assert version == evaluation["best"]["run_name"] == first_run["export_challenger"]["version"]

    # MLflow: alias challenger, lineage tags
    challenger = get_alias(REGISTRY, "challenger", tracking_uri=env.settings.tracking_uri)
    assert challenger is not None and challenger.store_version == version
    assert challenger.version == result["mlflow_model_version"]
    tags = challenger.tags
    assert tags["ltr.retrain.run_key"] == data["run_key"]
    assert tags["ltr.retrain.data_fingerprint"] == data["data_fingerprint"]
    assert tags["ltr.data_fingerprint"] == data["fingerprints"]["train"]
    assert tags["ltr.retrain.config"].endswith(".yaml")
    assert tags["ltr.code_version"] and tags["ltr.config_hash"] and tags["ltr.sha256"]

    # the promotion request
    request_path = env.home / "promotions" / "requests" / f"{version}.json"
    assert env.requests() == [request_path]
    request = json.loads(request_path.read_text())
    assert request["version"] == version and request["run_key"] == data["run_key"]
    assert request["champion"] is None
    assert request["mlflow"]["version"] == challenger.version
    assert request["metrics"]["holdout"]["ndcg@10"] == evaluation["challenger_value"]
    assert request["gates"]["accepted"] is True
    assert request["created_at"]

    # published into the serving store with its verdict, once every gate passed
    published = env.home / "models" / "versions" / version
    assert result["path"] == str(published) == request["artifact"]["path"]
    verdict = json.loads((published / "gates.json").read_text())
    assert verdict["accepted"] is True and verdict["run_key"] == data["run_key"]

    # the artifact reads its features online and passed parity
    metadata = json.loads((published / "metadata.json").read_text())
    assert metadata["feature_views"] == {
        "query_doc_features": {"join_keys": ["query_id", "doc_id"], "dim": 46}
    }
    assert {f["source"] for f in metadata["feature_schema"]} == {"query_doc_features"}
    assert metadata["parity"]["max_abs_diff"] <= metadata["parity"]["tolerance"] == 1e-5
    assert any(row["rows"] == 100 for row in metadata["latency_ms"])


def test_rerunning_the_same_interval_registers_nothing_new(
    env: Env, first_run: dict[str, Any]
) -> None:
    before_versions = [v.version for v in env.versions()]
    before_requests = {p: p.read_bytes() for p in env.requests()}
    run, out = env.run(FIRST)
    assert run.state == "success"
    assert all(c["reused"] for c in out["train_candidates"])  # checkpoints reused, not retrained
    assert out["export_challenger"]["reused"] is True
    assert out["register_and_request"]["status"] == "already_requested"
    assert out["register_and_request"]["version"] == first_run["register_and_request"]["version"]
    assert [v.version for v in env.versions()] == before_versions
    assert {p: p.read_bytes() for p in env.requests()} == before_requests


def test_a_challenger_that_fails_parity_is_neither_registered_nor_requested(
    env: Env, first_run: dict[str, Any]
) -> None:
    before_versions = [v.version for v in env.versions()]
    before_requests = env.requests()
    env.use_gates(min_margin=0.0, parity_tolerance=1e-12)
    run, out = env.run(PARITY)
    assert run.state == "success"  # a failed gate ends the run, it does not fail it
    export = out["export_challenger"]
    assert export["parity"]["ok"] is False and export["path"] is None
    assert not (env.home / "models" / "versions" / export["version"]).exists()
    result = out["register_and_request"]
    assert result["status"] == "rejected"
    assert "parity gate failed" in result["reason"]
    assert [v.version for v in env.versions()] == before_versions
    assert env.requests() == before_requests


def test_a_challenger_no_better_than_the_champion_is_rejected(
    env: Env, first_run: dict[str, Any]
) -> None:
    from ltr.model_store import ROUTING_FILE, serve_single

    champion = first_run["register_and_request"]["version"]
    models = env.home / "models"
    serve_single(models, champion)
    try:
        before_versions = [v.version for v in env.versions()]
        before_requests = env.requests()
        env.use_gates(min_margin=0.5, parity_tolerance=1e-5)
        run, out = env.run(MARGIN)
        assert run.state == "success"
        evaluation = out["evaluate_against_champion"]
        assert evaluation["champion"]["version"] == champion
        # same data and configs: the champion scores what it scored as the first challenger
        assert evaluation["champion_value"] == pytest.approx(
            first_run["evaluate_against_champion"]["challenger_value"], abs=1e-6
        )
        result = out["register_and_request"]
        assert result["status"] == "rejected"
        assert result["reason"].startswith("margin gate failed")
        assert result["gates"]["checks"]["margin"]["passed"] is False
        assert [v.version for v in env.versions()] == before_versions
        assert env.requests() == before_requests
        # exported and judged in the run's staging store, never in the serving store
        rejected = out["export_challenger"]["version"]
        assert not (models / "versions" / rejected).exists()
        staged = Path(out["export_challenger"]["path"])
        assert staged.parent.parent == env.home / "pipelines/retrain/20260104T020000Z/export"
        assert (staged / "model.onnx").is_file()
    finally:
        (models / ROUTING_FILE).unlink(missing_ok=True)


def test_a_run_without_a_data_interval_trains_up_to_when_it_was_triggered(
    env: Env, first_run: dict[str, Any]
) -> None:
    """An asset-triggered run has no logical date nor data interval: its as-of is run_after."""
    env.use_gates(min_margin=0.0, parity_tolerance=1e-5)
    triggered = datetime(2026, 1, 5, 6, 30, tzinfo=UTC)
    run, out = env.run(None, run_after=triggered)
    assert run.state == "success"
    assert out["build_training_data"]["run_key"] == "20260105T063000Z"
    assert (
        out["build_training_data"]["data_fingerprint"]
        == (
            first_run["build_training_data"]["data_fingerprint"]  # same labels, same splits
        )
    )
    assert out["register_and_request"]["status"] == "requested"


# ----------------------------------------------------------------- failures and retries
CONFIG_ERROR = datetime(2026, 1, 6, 2, 0, tzinfo=UTC)
TRANSIENT = datetime(2026, 1, 7, 2, 0, tzinfo=UTC)
CONF_TYPO = datetime(2026, 1, 8, 2, 0, tzinfo=UTC)


def run_with_retries(dag: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``dag.test(**kwargs)`` with the DAG's own retries (2) and a 1 s retry delay, so a
    retried task is retried within the test; the run and its task instances by id."""
    delays = {t.task_id: t.retry_delay for t in dag.tasks}
    try:
        for t in dag.tasks:
            t.retry_delay = timedelta(seconds=1)
        run = dag.test(**kwargs)
    finally:
        for t in dag.tasks:
            t.retry_delay = delays[t.task_id]
    return run, {ti.task_id: ti for ti in run.get_task_instances()}


def test_a_config_that_disagrees_with_the_offline_store_fails_before_training_without_retries(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """The demo's case: the store was built with document-only columns, the config read by
    the retrain has others. Found at the first task, not after training; not retried."""
    sections = training_sections(env.configs, salt="dag-test", min_margin=0.0)
    path = write_pipeline_config(
        env.home / "mismatched.yaml",
        **{**sections, "doc_feature_indices": [3, 4]},
        registry_name=REGISTRY,
    )
    env.monkeypatch.setenv("LTR_PIPELINE_CONFIG", str(path))
    dag = env.dagbag.dags["ltr_retrain"]
    assert dag.get_task("build_training_data").retries == 2

    run, tis = run_with_retries(dag, logical_date=CONFIG_ERROR)

    assert run.state == "failed"
    first = tis["build_training_data"]
    assert (first.state, first.try_number) == ("failed", 1)  # failed for good at once
    assert {tis[t].state for t in TASKS[1:]} == {"upstream_failed"}
    assert not (env.home / "pipelines" / "retrain" / "20260106T020000Z").exists()
    refusal = [r.getMessage() for r in caplog.records if "failed for good" in r.getMessage()]
    assert refusal, "the refusal is logged with its reason"
    assert f"the pipeline config {path}" in refusal[0]
    assert (
        "document-only columns [], the pipeline config has doc_feature_indices [3, 4]"
        in (refusal[0])
    )
    assert "set doc_feature_indices: [] in the pipeline config" in refusal[0]


def test_a_transient_error_is_retried_and_the_task_then_succeeds(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltr.features import training_data

    env.use_gates(min_margin=0.0, parity_tolerance=1e-5)
    real = training_data.load_training_dataset
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("online store connection reset (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(training_data, "load_training_dataset", flaky)
    rest = "|".join(TASKS[1:])  # only the first task runs; the others are marked done

    run, tis = run_with_retries(
        env.dagbag.dags["ltr_retrain"], logical_date=TRANSIENT, mark_success_pattern=rest
    )

    first = tis["build_training_data"]
    assert (first.state, first.try_number) == ("success", 2)  # failed once, retried
    assert len(calls) == 2
    assert run.state == "success"


def test_a_conf_key_is_refused_at_the_first_task_without_retries(env: Env) -> None:
    env.use_gates(min_margin=0.0, parity_tolerance=1e-5)

    run, tis = run_with_retries(
        env.dagbag.dags["ltr_retrain"], logical_date=CONF_TYPO, run_conf={"min_margin": 0.1}
    )

    assert run.state == "failed"
    first = tis["build_training_data"]
    assert (first.state, first.try_number) == ("failed", 1)
    assert not (env.home / "pipelines" / "retrain" / "20260108T020000Z").exists()
