"""The ltr_promotion DAG end to end: Airflow runs every task against the real rank service.

One model store (v1 in production and registry champion; v2 healthy; v3 requires a request
feature the traffic never sends, so each of its requests is a 422 held against it (the
champion refuses none); v4 exported by hand, neither gated nor registered), the service
under uvicorn in a thread, a thread sending it traffic, and the MLflow registry in a
temporary LTR_HOME. Each test starts from v1 serving alone. The DAG is parsed inside that
LTR_HOME, as the DAG processor would parse it beside this model store: its form offers the
store's versions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.env import isolated_home
from support.models import (
    FEATURES,
    export_promotion_versions,
    export_tiny_mlp,
    register_versions,
)
from support.service import LiveService, random_features, service_settings

pytestmark = [pytest.mark.dags, pytest.mark.integration]

DAG_ID = "ltr_promotion"


# ----------------------------------------------------------------- fixtures
@dataclass
class Env:
    models: Path
    live: LiveService
    registry_name: str
    registered: dict[str, str]  # store version -> MLflow model version
    dag: Any  # ltr_promotion, parsed beside this model store


def parse_promotion_dag() -> Any:
    """dags/promotion.py parsed now, in this environment (what the DAG processor does)."""
    from airflow.dag_processing.dagbag import DagBag

    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    bag = DagBag(dag_folder=str(folder / "promotion.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, airflow_db: str) -> Iterator[Env]:
    from ltr.model_store import serve_single
    from ltr.pipelines.config import load_pipeline_config

    home = tmp_path_factory.mktemp("promotion_dag_home")
    with isolated_home(home, unset=("LTR_PIPELINE_CONFIG", "LTR_SERVICE_URL")):
        models = home / "models"
        export_promotion_versions(models)
        export_tiny_mlp(models, "v4", seed=4)  # by hand: no gate verdict, not registered
        name = load_pipeline_config().registry_name
        registered = register_versions(models, ["v1", "v2", "v3"], name=name)
        serve_single(models, "v1")
        settings = service_settings(models)
        with LiveService(settings, random_features(FEATURES)) as live:
            yield Env(models, live, name, registered, parse_promotion_dag())


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
    dr = env.dag.test(run_conf=params)
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
    # every request v3 got was refused 422 (a feature it requires), the champion refused none
    assert run.result["reason"].startswith("rollback: 4xx rate 100.00%"), run.result
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


def test_the_form_offers_the_model_stores_versions_with_their_status_and_explains_each_field(
    store: Env,
) -> None:
    params = store.dag.params
    version = params.get_param("model_version")
    assert version.schema["enum"] == ["v4", "v3", "v2", "v1"]  # newest first
    display = version.schema["values_display"]
    assert display["v1"] == "v1 - serving production; gates passed (run fixture)"
    assert display["v4"].startswith("v4 - no gate verdict")
    for name in params:
        assert (params.get_param(name).description or "").strip(), f"{name}: no description"
    assert params["service_url"] is None  # no guessed port: LTR_SERVICE_URL is unset
    assert (params["allow_ungated"], params["override_reason"]) == (
        False,
        None,
    )  # optional: null, or the UI form cannot be sent


def test_a_version_that_is_not_in_the_store_is_refused_before_a_run_is_created(
    dagbag: Any, store: Env
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    routing = (store.models / "routing.json").read_bytes()

    with pytest.raises(ParamValidationError, match="model_version"):
        trigger(dagbag, store, "v9")

    assert (store.models / "routing.json").read_bytes() == routing
    assert steps(store.models) == []


def test_an_ungated_version_fails_at_once_and_changes_nothing(dagbag: Any, store: Env) -> None:
    routing = (store.models / "routing.json").read_bytes()

    run = trigger(dagbag, store, "v4")

    assert run.state == "failed"
    assert (run.tasks["deploy"], run.tries["deploy"]) == ("failed", 1)  # not retried
    assert run.result["status"] == "failed" and run.result["failed_steps"] == ["deploy"]
    assert run.tasks["rollback"] == "skipped"
    assert (store.models / "routing.json").read_bytes() == routing
    assert steps(store.models) == []
    assert champion(store) == "v1"


def test_an_override_promotes_an_ungated_version_and_the_champion_alias_follows_it(
    dagbag: Any, store: Env
) -> None:
    from ltr import registry
    from ltr.model_store import read_routing
    from ltr.promotion import history

    run = trigger(dagbag, store, "v4", allow_ungated=True, override_reason="hotfix INC-7")

    assert run.state == "success", run
    assert run.result["status"] == "promoted", run.result
    routing = read_routing(store.models)
    assert routing is not None and (routing["strategy"], routing["production"]) == ("single", "v4")
    assert champion(store) == "v4"  # the alias names what serves
    rv = registry.find_store_version("v4", store.registry_name)
    assert rv is not None and rv.tags["ltr.promotion.override"] == "hotfix INC-7"
    recs = history(store.models)
    assert [r["step"] for r in recs] == ["override", "deploy", "shift", "observe", "promote"]
    assert recs[0]["reason"] == "hotfix INC-7"
    assert {r["promotion_id"] for r in recs} == {run.result["promotion_id"]}
    store.live.wait_for_production("v4")


def test_a_conf_key_the_form_does_not_have_fails_at_once_and_changes_nothing(
    dagbag: Any, store: Env
) -> None:
    routing = (store.models / "routing.json").read_bytes()

    run = trigger(dagbag, store, "v2", observe_minute=5)  # a typo of observe_minutes

    assert run.state == "failed"
    assert (run.tasks["deploy"], run.tries["deploy"]) == ("failed", 1)
    assert (store.models / "routing.json").read_bytes() == routing
    assert steps(store.models) == []


def test_refusing_unknown_conf_keys_names_them_with_a_suggestion() -> None:
    from ltr.pipelines.conf import refuse_unknown_conf

    refuse_unknown_conf({"observe_minutes": 1}, ["observe_minutes", "model_version"], "d")
    refuse_unknown_conf(None, ["model_version"], "d")
    with pytest.raises(ValueError) as err:
        refuse_unknown_conf({"observe_minute": 1, "zzz": 2}, ["observe_minutes"], "ltr_promotion")
    message = str(err.value)
    assert "'observe_minute' (did you mean 'observe_minutes'?)" in message
    assert "'zzz'" in message and message.startswith("ltr_promotion does not take")


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
