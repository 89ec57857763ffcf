"""The whole chain end to end: raw files -> promoted model -> the running service serves it.

Day 1: MQ2008 S1's first 30 queries land as ``<LTR_HOME>/raw/2026-01-01/s1.txt``;
``ltr_feature_pipeline`` validates them and loads them into the offline store and Redis,
``ltr_retrain`` trains a tiny MLP and a tiny LightGBM on point-in-time features, exports the
better one and opens a promotion request, and ``ltr_promotion`` promotes it directly (the
model store is empty). Then the real rank service (uvicorn in a thread, features from Redis)
starts on that model store, and ranks queries of the raw file by document id alone exactly
as ONNX Runtime scores the file's own feature rows.

Day 2: S1's next 90 queries land as ``raw/2026-01-02/``; the same three DAGs run again. With
four times the judgments the new challenger beats the champion on the same held-out queries
(measured: NDCG@10 0.600 against 0.535), passes every gate, goes out as a canary while a
thread sends traffic, is observed and promoted, with not one failed request from the
service the whole time.

Redis db 2 holds the online store under a Feast project of this module's own (its keys are
deleted afterwards); the service's result cache and event log are off, so every request
reads its features from Redis and nothing else is written there. MLflow and everything else
live in a temporary LTR_HOME; Airflow's metadata DB is the harness's
(``LTR_TEST_AIRFLOW_DB=sqlite|postgres``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.datasets import mq2008_s1
from support.net import WAIT_S, wait_until
from support.pipeline import (
    MQ2008_VALIDATION,
    land_raw,
    pipeline_home,
    run_without_retries,
    training_sections,
    write_pipeline_config,
)
from support.service import Body, LiveService, service_settings

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.datasets]

log = logging.getLogger(__name__)

REDIS_URL = "redis://127.0.0.1:6379/2"
REGISTRY = "ltr-ranker-chain-test"
DAY1, DAY2 = "2026-01-01", "2026-01-02"
# A small first batch, then four times as much: day 2's retrain has something to learn.
DAY1_QUERIES, DAY2_QUERIES = range(0, 30), range(30, 120)
# Feature pipeline: a logical date at midnight covers the day before.
FEATURES_DAY1 = datetime(2026, 1, 2, tzinfo=UTC)
FEATURES_DAY2 = datetime(2026, 1, 3, tzinfo=UTC)
# Retrain: the nightly run after each day landed.
RETRAIN_DAY1 = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
RETRAIN_DAY2 = datetime(2026, 1, 3, 2, 0, tzinfo=UTC)
FEATURE_TASKS = ("find_raw", "validate", "write_offline", "apply", "materialize", "publish")
RETRAIN_TASKS = (
    "build_training_data",
    "train_candidates",
    "evaluate_against_champion",
    "export_challenger",
    "register_and_request",
)

# The canary of day 2: a short window that still sees plenty of requests; lenient latency
# (two shared cores also train models in this process), but not one error allowed.
CANARY = {
    "strategy": "canary",
    "canary_percent": 50,
    "observe_minutes": 0.15,
    "min_requests": 10,
    "max_error_rate": 0.0,
    "max_p99_ms": 2000,
}


# ----------------------------------------------------------------- data and services
def queries_of(path: Path) -> list[tuple[str, list[str]]]:
    """(query id, its doc ids in file order) for every query of a LETOR file."""
    from ltr.data.letor import read_letor

    ds = read_letor(path)
    return [(q, [str(d) for d in ds.doc_ids[rows]]) for q, rows in ds.iter_queries()]


def expected_ranking(model_dir: Path, raw: Path, query_id: str) -> tuple[list[str], np.ndarray]:
    """The independent answer: the query's rows of the raw file scored by ONNX Runtime on
    the artifact's model.onnx, sorted by descending score (ties keep the file order)."""
    import onnxruntime as ort

    from ltr.data.letor import read_letor

    ds = read_letor(raw)
    rows = ds.qids == query_id
    docs = [str(d) for d in ds.doc_ids[rows]]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), so, providers=["CPUExecutionProvider"]
    )
    scores = session.run(["scores"], {"features": ds.features[rows].astype(np.float32)})[0]
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return [docs[i] for i in order], scores[order]


def by_doc_id(queries: list[tuple[str, list[str]]]) -> Body:
    """Rank requests by document id alone, for each query of ``queries`` in turn."""

    def body(i: int) -> dict[str, Any]:
        qid, docs = queries[i % len(queries)]
        return {
            "query_id": qid,
            "user_id": f"user-{i}",
            "candidates": [{"doc_id": d} for d in docs],
        }

    return body


def rank(service: LiveService, query_id: str, docs: list[str]) -> dict[str, Any]:
    import httpx

    body = {"query_id": query_id, "candidates": [{"doc_id": d} for d in docs]}
    resp = httpx.post(f"{service.url}/api/v1/rank", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


# ----------------------------------------------------------------- the platform
@dataclass
class Chain:
    home: Path
    project: str
    dagbag: Any
    service: LiveService
    results: dict[str, Any] = field(default_factory=dict)  # what each step returned

    @property
    def models(self) -> Path:
        return self.home / "models"

    def raw(self, day: str) -> Path:
        return self.home / "raw" / day / "s1.txt"

    def run(self, dag_id: str, **kwargs: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
        """``dag.test()`` with retries off (a broken task fails at once, not after the
        retry delays); the run, its task states and every task's XCom. The promotion DAG is
        parsed again first, as the DAG processor does: its form lists the store's versions,
        which the retrain has just added to."""
        from airflow.dag_processing.dagbag import DagBag

        from ltr.settings import get_settings

        get_settings.cache_clear()
        dag = self.dagbag.dags[dag_id]
        if dag_id == "ltr_promotion":
            dag = DagBag(dag_folder=dag.fileloc).dags[dag_id]
        run = run_without_retries(dag, **kwargs)
        tis = {ti.task_id: ti for ti in run.get_task_instances()}
        states = {t: str(ti.state) for t, ti in tis.items()}
        values = {t: ti.xcom_pull(task_ids=t) for t, ti in tis.items()}
        return run, states, values

    def promote(self, version: str, **conf: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
        return self.run(
            "ltr_promotion",
            run_conf={"model_version": version, "service_url": self.service.url, **conf},
        )

    def registered(self, alias: str = "champion") -> Any:
        """The MLflow model version under ``alias`` (None when there is none)."""
        from ltr import registry
        from ltr.settings import get_settings

        return registry.get_alias(REGISTRY, alias, tracking_uri=get_settings().tracking_uri)

    def champion(self) -> str | None:
        rv = self.registered()
        return rv.store_version if rv else None

    def routing(self) -> dict[str, Any]:
        from ltr.model_store import read_routing

        routing = read_routing(self.models)
        assert routing is not None, "routing.json is missing"
        return routing

    def history(self) -> list[dict[str, Any]]:
        from ltr.promotion import history

        return history(self.models)

    def assert_serves(self, version: str, raw: Path, queries: list[str]) -> None:
        """The service ranks each query by doc id alone as ONNX Runtime ranks the file's rows."""
        docs_of = dict(queries_of(raw))
        artifact = self.models / "versions" / version
        for qid in queries:
            answer = rank(self.service, qid, docs_of[qid])
            assert answer["model_version"] == version, answer
            assert answer["cached"] is False
            want_docs, want_scores = expected_ranking(artifact, raw, qid)
            got_docs = [r["doc_id"] for r in answer["ranked"]]
            assert got_docs == want_docs, f"query {qid}: the service ranked differently"
            assert [r["rank"] for r in answer["ranked"]] == list(range(1, len(got_docs) + 1))
            np.testing.assert_allclose(
                [r["score"] for r in answer["ranked"]], want_scores, rtol=1e-6, atol=1e-6
            )


def pipeline_config(home: Path, service_url: str) -> Path:
    return write_pipeline_config(
        home / "pipeline.yaml",
        **training_sections(
            home / "configs", salt="chain-test", min_margin=0.0, parity_tolerance=1e-5
        ),
        validation=MQ2008_VALIDATION,
        materialize_overlap_hours=24,
        registry_name=REGISTRY,
        promotion={**CANARY, "service_url": service_url},
    )


def land(home: Path, day: str, queries: range) -> Path:
    from ltr.data.letor import read_letor

    return land_raw(home, read_letor(mq2008_s1()).subset_queries(list(queries)), day)


@pytest.fixture(scope="module")
def chain(dagbag: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """Day 1 run through the three DAGs, then the service started on the model store."""
    mq2008_s1()
    home = tmp_path_factory.mktemp("chain") / "home"
    with pipeline_home(home, redis_url=REDIS_URL, prefix="ltrchain") as ph:
        # The service cannot start on a store without routing.json: it is built (its port
        # bound) here, but started only once the first promotion has written one.
        queries: list[tuple[str, list[str]]] = []
        settings = service_settings(
            home / "models",
            redis_url=REDIS_URL,
            feast_project=ph.project,
            # two shared cores train models in this same process: no spurious timeouts
            redis_timeout_ms=2000,
        )
        service = LiveService(
            settings,
            by_doc_id(queries),
            pause=0.02,
            start_timeout=30,
            stop_timeout=30,
            http_timeout=30,
            wait_timeout=15,
        )
        try:
            ph.mp.setenv("LTR_PIPELINE_CONFIG", str(pipeline_config(home, service.url)))
            raw = land(home, DAY1, DAY1_QUERIES)
            c = Chain(home, ph.project, dagbag, service)
            c.results["features"] = c.run("ltr_feature_pipeline", logical_date=FEATURES_DAY1)
            c.results["retrain"] = c.run("ltr_retrain", logical_date=RETRAIN_DAY1)
            request = c.results["retrain"][2]["register_and_request"].get("request")
            if request:  # the version to promote, as an operator reads it from the request
                version = c.results["version"] = json.loads(Path(request).read_text())["version"]
                c.results["promotion"] = c.promote(version)
            if (c.models / "routing.json").is_file():
                queries.extend(queries_of(raw))
                service.start()
            yield c
        finally:
            service.close()


# ----------------------------------------------------------------- the tests
def test_raw_files_become_a_promoted_model_that_the_running_service_serves(
    chain: Chain,
) -> None:
    from ltr import registry

    run, states, out = chain.results["features"]
    assert run.state == "success", states
    assert states == dict.fromkeys(FEATURE_TASKS, "success")
    assert out["materialize"]["online_store"] == "redis"
    n_docs = out["write_offline"]["label_rows"]
    assert out["materialize"]["rows"]["query_doc_features"] == n_docs > 0

    run, states, out = chain.results["retrain"]
    assert run.state == "success", states
    assert states == dict.fromkeys(RETRAIN_TASKS, "success")
    assert sum(out["build_training_data"]["queries"].values()) == len(DAY1_QUERIES)
    assert out["evaluate_against_champion"]["champion"] is None  # the store was empty
    result = out["register_and_request"]
    assert result["status"] == "requested", result
    request = json.loads(Path(result["request"]).read_text())
    version = request["version"]
    assert version == chain.results["version"] == result["version"]
    assert (
        version
        == out["export_challenger"]["version"]
        == out["evaluate_against_champion"]["best"]["run_name"]
    )
    assert request["gates"]["accepted"] is True
    assert (
        request["metrics"]["holdout"]["ndcg@10"]
        == out["evaluate_against_champion"]["challenger_value"]
    )
    assert request["mlflow"]["aliases"] == [registry.CHALLENGER]

    # the first version of an empty store is promoted directly: nothing to observe
    run, states, out = chain.results["promotion"]
    assert run.state == "success", states
    assert out["report"]["status"] == "promoted", out["report"]
    assert out["observe"] is None and states["rollback"] == "skipped"
    routing = chain.routing()
    assert (routing["strategy"], routing["production"]) == ("single", version)
    champion = chain.registered()
    assert champion is not None and champion.store_version == version
    assert champion.version == request["mlflow"]["version"] == result["mlflow_model_version"]
    assert champion.aliases == (registry.CHAMPION,)  # the challenger alias moved with it
    recs = chain.history()
    assert [r["step"] for r in recs] == ["deploy", "promote"]
    assert {r["to"] for r in recs} == {version}
    assert {r["promotion_id"] for r in recs} == {out["report"]["promotion_id"]}

    # the running service serves it, with the features of the raw file read from Redis
    doc = chain.service.wait_for_production(version)
    assert [(v["version"], v["roles"]) for v in doc["versions"]] == [(version, ["production"])]
    assert doc["versions"][0]["feature_views"] == ["query_doc_features"]
    day1 = [q for q, _ in queries_of(chain.raw(DAY1))]
    chain.assert_serves(version, chain.raw(DAY1), [day1[0], day1[len(day1) // 2], day1[-1]])


def test_a_second_day_is_retrained_canaried_observed_and_promoted_without_one_failed_request(
    chain: Chain,
) -> None:
    champion = chain.results.get("version")
    if champion is None or chain.champion() != champion or not chain.service.server.started:
        pytest.fail(f"day 1 did not promote {champion} and start the service (see above)")
    raw2 = land(chain.home, DAY2, DAY2_QUERIES)

    run, states, out = chain.run("ltr_feature_pipeline", logical_date=FEATURES_DAY2)
    assert run.state == "success", states
    assert out["write_offline"]["files"][0]["partition"].startswith("20260102T000000")

    run, states, out = chain.run("ltr_retrain", logical_date=RETRAIN_DAY2)
    assert run.state == "success", states
    assert states == dict.fromkeys(RETRAIN_TASKS, "success")
    data = out["build_training_data"]
    assert sum(data["queries"].values()) == len(DAY1_QUERIES) + len(DAY2_QUERIES)
    evaluation = out["evaluate_against_champion"]
    assert evaluation["champion"]["version"] == champion
    assert evaluation["margin"] == pytest.approx(
        evaluation["challenger_value"] - evaluation["champion_value"]
    )
    # the challenger learned from day 2: better than the champion on the same queries
    assert evaluation["margin"] > 0.02, evaluation
    result = out["register_and_request"]
    challenger = result["version"]
    assert challenger != champion
    assert result["status"] == "requested", result
    assert result["gates"]["accepted"] is True, result
    assert json.loads(Path(result["request"]).read_text())["margin"] == evaluation["margin"]

    # canary -> observe -> promote, under live traffic
    before = dict(chain.service.versions)
    run, states, out = chain.promote(challenger, **CANARY)
    report, obs = out["report"], out["observe"]
    assert obs is not None and obs["version"] == challenger, states
    served = {v: n - before.get(v, 0) for v, n in chain.service.versions.items()}
    assert served.get(challenger, 0) > 0  # the canary really took traffic
    assert served.get(champion, 0) > 0  # ... beside the champion
    recs = chain.history()[2:]  # this promotion's records
    assert {r["promotion_id"] for r in recs} == {report["promotion_id"]}
    assert report["status"] == "promoted", report
    assert run.state == "success", states
    assert states["rollback"] == "skipped", states
    assert obs["verdict"] == "promote" and obs["errors"] == 0, obs
    assert obs["requests"] >= CANARY["min_requests"]
    assert [r["step"] for r in recs] == ["deploy", "shift", "observe", "promote"]
    production = challenger
    chain.results["outcome"] = {
        "champion": champion,
        "challenger": challenger,
        "margin": evaluation["margin"],
        "observation": obs,
    }

    # the outcome is what serves: routing, registry, and the running service
    routing = chain.routing()
    assert (routing["strategy"], routing["production"]) == ("single", production)
    assert chain.champion() == production
    doc = chain.service.wait_for_production(production)
    assert [(v["version"], v["roles"]) for v in doc["versions"]] == [(production, ["production"])]
    day2 = [q for q, _ in queries_of(raw2)]
    chain.assert_serves(production, raw2, [day2[0], day2[-1]])  # day 2's features are online
    chain.assert_serves(
        production, chain.raw(DAY1), [q for q, _ in queries_of(chain.raw(DAY1))][:1]
    )

    # a little more traffic after the last routing change, all of it answered
    seen = sum(chain.service.statuses.values())
    assert wait_until(lambda: sum(chain.service.statuses.values()) >= seen + 20, timeout=WAIT_S)
    statuses = dict(chain.service.statuses)
    assert statuses.get(200, 0) > 0
    assert set(statuses) == {200}, (statuses, chain.service.failures[:5])
    log.info(
        "chain outcome: %s; traffic %s by version %s",
        chain.results["outcome"],
        statuses,
        chain.service.versions,
    )
