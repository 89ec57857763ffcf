"""The ltr_promotion DAG end to end: Airflow runs every task against the real rank service.

One model store (v1 in production and registry champion; v2 healthy; v3 requires a request
feature the traffic never sends, so each of its requests is a 422 counted as its error), the
service under uvicorn in a thread, a thread sending it traffic, and the MLflow registry in
a temporary LTR_HOME. Each test starts from v1 serving alone.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.dags, pytest.mark.integration]

FEATURES = ["f0", "f1", "f2", "f3"]
DAG_ID = "ltr_promotion"


# ----------------------------------------------------------------- artifacts
def _export(root: Path, version: str, seed: int, extra_required: str | None = None) -> None:
    """A tiny MLP exported for real; ``extra_required`` is a request feature it requires."""
    import torch

    from ltr.data.dataset import LetorDataset
    from ltr.export.onnx_export import export_ranker, feature_schema
    from ltr.models.neural import build_model
    from ltr.models.rankers import NeuralRanker

    names = [*FEATURES, *([extra_required] if extra_required else [])]
    torch.manual_seed(seed)
    ranker = NeuralRanker(
        build_model("mlp", len(names), {"hidden": [4]}), "mlp", {"hidden": [4]}, "ranknet", names
    )
    rng = np.random.default_rng(seed)
    valid = LetorDataset(
        features=rng.standard_normal((12, len(names))).astype(np.float32),
        labels=rng.integers(0, 3, 12).astype(np.float32),
        qids=np.array(["q0"] * 6 + ["q1"] * 6, dtype=object),
        doc_ids=np.array([f"d{i}" for i in range(12)], dtype=object),
        feature_names=names,
    )
    schema = feature_schema(names)
    for entry in schema:
        entry["required"] = entry["name"] == extra_required
    with warnings.catch_warnings():  # the project exports with TorchScript on purpose
        warnings.simplefilter("ignore")
        export_ranker(
            ranker,
            {"model_type": "mlp", "loss": "ranknet", "metrics": {"valid": {"ndcg@10": 0.5}}},
            valid,
            root,
            version=version,
            latency=False,
            feature_sources=schema,
        )


# ----------------------------------------------------------------- the live service
class LiveService:
    """The rank service under uvicorn in a thread, and a thread sending it traffic."""

    def __init__(self, models_dir: Path) -> None:
        import uvicorn

        from serving.main import create_app
        from serving.settings import ServingSettings

        settings = ServingSettings(
            _env_file=None,
            model_store=models_dir,
            redis_url=None,
            reload_interval_s=0.2,
            cache_enabled=False,
            events_enabled=False,
            feast_repo=models_dir / "no-feature-repo",
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
            )
        )
        self.stop = threading.Event()
        self.statuses: dict[int, int] = {}
        self.threads = [
            threading.Thread(target=self.server.run, daemon=True),
            threading.Thread(target=self._traffic, daemon=True),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _traffic(self) -> None:
        import httpx

        rng = np.random.default_rng(0)
        with httpx.Client(base_url=self.url, timeout=5) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {
                    "query_id": f"q{i % 7}",
                    "user_id": f"user-{i}",
                    "candidates": [
                        {
                            "doc_id": f"d{j}",
                            "features": dict(zip(FEATURES, rng.random(4), strict=True)),
                        }
                        for j in range(5)
                    ],
                }
                try:
                    status = client.post("/api/v1/rank", json=body).status_code
                except httpx.HTTPError:
                    status = -1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                time.sleep(0.005)

    def wait_for_production(self, version: str) -> None:
        import httpx

        deadline = time.monotonic() + 10
        while True:
            doc = httpx.get(f"{self.url}/api/v1/models", timeout=5).json()
            if (doc["strategy"], doc["production"]) == ("single", version):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the service still serves {doc}")
            time.sleep(0.1)

    def __enter__(self) -> LiveService:
        self.threads[0].start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        self.threads[1].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.threads[1].join(timeout=10)
        self.server.should_exit = True
        self.threads[0].join(timeout=10)


# ----------------------------------------------------------------- fixtures
@dataclass
class Env:
    models: Path
    live: LiveService
    registry_name: str
    registered: dict[str, str]  # store version -> MLflow model version


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, airflow_db: str) -> Iterator[Env]:
    from ltr import registry
    from ltr.model_store import serve_single
    from ltr.pipelines.config import load_pipeline_config
    from ltr.settings import get_settings

    home = tmp_path_factory.mktemp("promotion_dag_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTR_HOME", str(home))
        for var in ("LTR_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "LTR_PIPELINE_CONFIG"):
            mp.delenv(var, raising=False)
        get_settings.cache_clear()
        models = home / "models"
        _export(models, "v1", seed=1)
        _export(models, "v2", seed=2)
        _export(models, "v3", seed=3, extra_required="f_extra")
        name = load_pipeline_config().registry_name
        registered = {
            v: registry.register_model(models / "versions" / v, name=name).version
            for v in ("v1", "v2", "v3")
        }
        serve_single(models, "v1")
        with LiveService(models) as live:
            yield Env(models, live, name, registered)
    get_settings.cache_clear()


@pytest.fixture
def store(env: Env) -> Env:
    """v1 serves alone and is the champion; no promotion history."""
    from ltr import registry
    from ltr.model_store import serve_single

    serve_single(env.models, "v1")
    (env.models / "promotions.jsonl").unlink(missing_ok=True)
    registry.set_champion(env.registry_name, env.registered["v1"])
    env.live.wait_for_production("v1")
    return env


@dataclass
class Run:
    state: str
    tasks: dict[str, str]  # task id -> final state
    tries: dict[str, int]
    result: dict[str, Any]  # what the report task returned (the run's result)


def trigger(dagbag: Any, env: Env, version: str, **conf: Any) -> Run:
    """Run the DAG as a manual trigger with this form (a short window, lenient latency)."""
    params = {
        "model_version": version,
        "canary_percent": 50,
        "observe_minutes": 0.1,
        "min_requests": 20,
        "max_error_rate": 0.05,
        "max_p99_ms": 1000,  # loaded 2-core CI: these tests are about the mechanism
        "service_url": env.live.url,
        **conf,
    }
    dr = dagbag.dags[DAG_ID].test(run_conf=params)
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    return Run(
        state=str(dr.state),
        tasks={t: str(ti.state) for t, ti in tis.items()},
        tries={t: int(ti.try_number) for t, ti in tis.items()},
        result=tis["report"].xcom_pull(task_ids="report") or {},
    )


def steps(models: Path) -> list[str]:
    from ltr.promotion import history

    return [r["step"] for r in history(models)]


def champion(env: Env) -> str | None:
    from ltr import registry

    rv = registry.get_alias(env.registry_name, registry.CHAMPION)
    return rv.store_version if rv else None


# ----------------------------------------------------------------- the tests
def test_a_healthy_canary_is_promoted_to_all_traffic_and_made_champion(
    dagbag: Any, store: Env
) -> None:
    from ltr.model_store import read_routing
    from ltr.promotion import history

    run = trigger(dagbag, store, "v2")

    assert run.state == "success", run
    assert run.result["status"] == "promoted", run.result
    assert run.tasks["promote"] == "success" and run.tasks["rollback"] == "skipped"
    obs = run.result["observation"]
    assert obs["verdict"] == "promote" and obs["requests"] >= 20 and obs["errors"] == 0
    routing = read_routing(store.models)
    assert routing is not None
    assert (routing["strategy"], routing["production"]) == ("single", "v2")
    assert champion(store) == "v2"
    recs = history(store.models)
    assert [r["step"] for r in recs] == ["deploy", "shift", "observe", "promote"]
    assert {r["promotion_id"] for r in recs} == {run.result["promotion_id"]}
    assert all((r["from"], r["to"]) == ("v1", "v2") for r in recs)
    store.live.wait_for_production("v2")


def test_a_canary_whose_requests_fail_is_rolled_back_automatically_with_the_reason(
    dagbag: Any, store: Env
) -> None:
    from ltr.model_store import read_routing
    from ltr.promotion import history

    run = trigger(dagbag, store, "v3")

    assert run.state == "failed"  # a rolled-back promotion shows red, with the reason
    assert run.result["status"] == "rolled_back", run.result
    assert run.result["reason"].startswith("rollback: error rate 100.00%"), run.result
    assert run.tasks["rollback"] == "success" and run.tasks["promote"] == "skipped"
    assert (run.tasks["decide"], run.result["observation"]["verdict"]) == ("success", "rollback")
    assert run.tasks["report"] == "failed"
    assert run.tries["observe"] == run.tries["report"] == 1  # a verdict is never retried
    assert store.live.statuses.get(422, 0) > 0
    routing = read_routing(store.models)
    assert routing is not None
    assert (routing["strategy"], routing["production"]) == ("single", "v1")
    assert champion(store) == "v1"
    recs = history(store.models)
    assert [r["step"] for r in recs] == ["deploy", "shift", "observe", "rollback"]
    assert recs[-1]["reason"] == run.result["reason"]
    store.live.wait_for_production("v1")


def test_re_running_the_dag_for_the_promoted_version_changes_nothing(
    dagbag: Any, store: Env
) -> None:
    first = trigger(dagbag, store, "v2", strategy="blue_green")
    assert first.result["status"] == "promoted", first.result
    before = {f: (store.models / f).read_bytes() for f in ("routing.json", "promotions.jsonl")}

    again = trigger(dagbag, store, "v2", strategy="blue_green")

    assert again.state == "success"
    assert again.result["status"] == "already_promoted", again.result
    assert again.tasks["promote"] == again.tasks["rollback"] == "skipped"
    assert {f: (store.models / f).read_bytes() for f in before} == before
    assert champion(store) == "v2"


def test_an_unknown_version_fails_at_once_without_retries_and_changes_nothing(
    dagbag: Any, store: Env
) -> None:
    routing = (store.models / "routing.json").read_bytes()

    run = trigger(dagbag, store, "v9")

    assert run.state == "failed"
    assert (run.tasks["deploy"], run.tries["deploy"]) == ("failed", 1)
    assert run.result["status"] == "failed" and run.result["failed_steps"] == ["deploy"]
    assert run.tasks["rollback"] == "skipped"  # ran, found nothing of v9 to roll back
    assert (store.models / "routing.json").read_bytes() == routing
    assert steps(store.models) == []


def test_a_promote_step_that_fails_for_good_is_answered_by_the_rollback_step(
    store: Env,
) -> None:
    """The DAG's safety net, step by step: the canary is on, the promote step then fails
    (the artifact changed on disk after the observation), and the rollback step, which
    the DAG runs whatever happened upstream, puts the champion back."""
    from ltr.model_store import read_routing
    from ltr.pipelines import promotion as steps_
    from ltr.promotion import ArtifactRejected

    params = {"model_version": "v2", "canary_percent": 50, "service_url": store.live.url}
    deployed = steps_.deploy_step(params)
    shifted = steps_.shift_step(params, deployed)
    assert shifted["shifted"] and shifted["weights"] == {"v1": 50.0, "v2": 50.0}
    model = store.models / "versions" / "v2" / "model.onnx"
    original = model.read_bytes()
    try:
        model.write_bytes(original + b"\0")
        with pytest.raises(ArtifactRejected):
            steps_.promote_step(params, deployed, None)
        back = steps_.rollback_step(params, deployed, None, failed_steps=["promote"])
    finally:
        model.write_bytes(original)
    assert (back["status"], back["to"]) == ("rolled_back", "v1")
    assert back["reason"] == "promote failed; rolled back for safety (see the task log)"
    routing = read_routing(store.models)
    assert routing is not None and (routing["strategy"], routing["production"]) == ("single", "v1")
    result = steps_.outcome(params, deployed, None, None, back, ["promote"])
    assert result["status"] == "failed"
    assert result["reason"] == "promote failed (see the task log); rolled back to v1"
    assert steps(store.models) == ["deploy", "shift", "rollback"]
    store.live.wait_for_production("v1")
