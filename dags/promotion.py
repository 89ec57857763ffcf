"""
# ltr_promotion: roll a model out to the rank service, or roll it back automatically

Trigger it by hand (**Trigger** → fill in the form). It runs the same code as
`ltr promote` (`ltr.promotion`) one step per task:

1. **deploy**: the version's `model.onnx` is checked against the sha256 in its
   `metadata.json` and the current production (the champion) is read from `routing.json`.
   A version that already serves all traffic and is the registry champion stops here:
   nothing changes (re-running a finished promotion is safe).
2. **shift_traffic**: `routing.json` sends `canary_percent` % of users (a stable hash of
   `user_id`) to the new version, or, blue-green, loads it as the idle colour and switches.
3. **observe**: for `observe_minutes`, the live service's per-version counters
   (`GET /api/v1/models`) and latency histogram (`GET /metrics`): requests, errors and
   p99 of the new version over the window.
4. **decide**: `promote` when it got at least `min_requests` requests, an error rate of at
   most `max_error_rate` and a p99 of at most `max_p99_ms`; otherwise `rollback` (too
   little traffic rolls back too: a canary is never left on unwatched).
5. **promote**: all traffic to the new version, MLflow alias `champion` moved to it
   (skipped unless the decision is `promote`).
6. **rollback**: the champion serves alone again, recorded with the reason. It runs
   whatever happened upstream: on a `rollback` decision, and also when any earlier step
   (promote included) failed for good, so a failure never leaves a canary half on. It is
   skipped when the version is not being rolled out.
7. **report**: the run's result (what happened and why, also in its XCom). A rolled-back
   or failed promotion fails this task, so the run shows red with the reason.

Every step is recorded in `<LTR_HOME>/models/promotions.jsonl`. Defaults of the form come
from the `promotion` section of the pipeline config (`LTR_PIPELINE_CONFIG`, default
`<LTR_HOME>/pipeline.yaml` when present, else `configs/pipeline.yaml`). From a shell:
`ltr promote VERSION --service-url URL`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    TriggerRule,
    dag,
    get_current_context,
    task,
)

from ltr.pipelines.config import load_pipeline_config

STEPS = ("deploy", "shift_traffic", "observe", "decide", "promote", "rollback")
_defaults = load_pipeline_config().promotion  # YAML + pydantic only: cheap at parse time

# A bad Param value or a rejected artifact fails at once; other errors retry.
_NO_RETRY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=["builtins.ValueError", "ltr.promotion.ArtifactRejected"],
            action=RetryAction.FAIL,
            reason="invalid request or artifact: retrying cannot help",
        )
    ]
)

THRESHOLDS = "Thresholds (roll back when exceeded)"


def _params() -> dict[str, Any]:
    return dict(get_current_context()["params"])


def _failed_steps() -> list[str]:
    """Steps of this run that failed for good (read through the Task SDK, not the DB)."""
    ti = get_current_context()["ti"]
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    except Exception:  # best effort: the reason then names no step
        return []
    mine = states.get(ti.run_id, {})
    return [s for s in STEPS if mine.get(s) == "failed"]


@dag(
    dag_id="ltr_promotion",
    dag_display_name="Promote a ranker (canary / blue-green)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ltr", "promotion", "serving"],
    doc_md=__doc__,
    default_args={
        "owner": "ltr",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_policy": _NO_RETRY,
    },
    params={
        "model_version": Param(
            type="string",
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
            title="Model version",
            description="Folder under models/versions/ (as `ltr export` named it).",
        ),
        "strategy": Param(
            _defaults.strategy,
            type="string",
            enum=["canary", "blue_green"],
            values_display={
                "canary": "canary: a share of users first",
                "blue_green": "blue_green: switch all users at once",
            },
            title="Strategy",
        ),
        "canary_percent": Param(
            _defaults.canary_percent,
            type="number",
            minimum=1,
            maximum=99.99,
            title="Canary share (%)",
            description="Share of users on the new version while observing (canary only).",
        ),
        "observe_minutes": Param(
            _defaults.observe_minutes,
            type="number",
            minimum=0,
            title="Observe (minutes)",
            description="How long to watch the live service before deciding.",
        ),
        "max_error_rate": Param(
            _defaults.max_error_rate,
            type="number",
            minimum=0,
            maximum=1,
            title="Max error rate",
            description="Fraction of the new version's requests that may fail (0.01 = 1 %).",
            section=THRESHOLDS,
        ),
        "max_p99_ms": Param(
            _defaults.max_p99_ms,
            type="number",
            exclusiveMinimum=0,
            title="Max p99 latency (ms)",
            section=THRESHOLDS,
        ),
        "min_requests": Param(
            _defaults.min_requests,
            type="integer",
            minimum=1,
            title="Min requests",
            description="Requests the new version must get in the window to be judged.",
            section=THRESHOLDS,
        ),
        "service_url": Param(
            _defaults.service_url,
            type=["null", "string"],
            title="Rank service URL",
            description="Base URL of the rank service to watch, e.g. http://127.0.0.1:8000.",
        ),
    },
)
def ltr_promotion() -> Any:
    @task
    def deploy() -> dict[str, Any]:
        from ltr.pipelines.conf import refuse_unknown_conf
        from ltr.pipelines.promotion import deploy_step

        ctx = get_current_context()
        refuse_unknown_conf(ctx["dag_run"].conf, ctx["dag"].params.keys(), "ltr_promotion")
        return deploy_step(_params())

    @task
    def shift_traffic(deployed: dict[str, Any]) -> dict[str, Any]:
        from ltr.pipelines.promotion import shift_step

        return shift_step(_params(), deployed)

    @task
    def observe(deployed: dict[str, Any], shifted: dict[str, Any]) -> dict[str, Any] | None:
        from ltr.pipelines.promotion import observe_step

        return observe_step(_params(), deployed, shifted)

    @task
    def decide(deployed: dict[str, Any], observation: dict[str, Any] | None) -> str:
        """promote | rollback | nothing_to_do: a verdict is a result, never retried."""
        from ltr.pipelines.promotion import decide as decision

        return decision(deployed, observation)

    @task
    def promote(
        decision: str, deployed: dict[str, Any], observation: dict[str, Any] | None
    ) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from ltr.pipelines.promotion import promote_step

        if decision != "promote":
            raise AirflowSkipException(f"decision: {decision}")
        return promote_step(_params(), deployed, observation)

    # Runs whatever happened upstream (a rollback verdict, or a step that failed for good,
    # promote included); skipped when the version is not being rolled out.
    @task(trigger_rule=TriggerRule.ALL_DONE)
    def rollback(
        deployed: dict[str, Any] | None, observation: dict[str, Any] | None
    ) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from ltr.pipelines.promotion import rollback_step

        result = rollback_step(_params(), deployed, observation, _failed_steps())
        if not result["changed"]:
            raise AirflowSkipException(result["why"])
        return result

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report(
        deployed: dict[str, Any] | None,
        observation: dict[str, Any] | None,
        promoted: dict[str, Any] | None,
        rolled_back: dict[str, Any] | None,
    ) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from ltr.pipelines.promotion import outcome

        result = outcome(_params(), deployed, observation, promoted, rolled_back, _failed_steps())
        if result["status"] in ("promoted", "already_promoted"):
            return result
        get_current_context()["ti"].xcom_push("return_value", result)  # the run's result
        raise AirflowFailException(f"{result['status']}: {result['reason']}")

    # XComArgs at parse time, the values at run time: typed Any for the type checker.
    deployed: Any = deploy()
    shifted: Any = shift_traffic(deployed)
    observation: Any = observe(deployed, shifted)
    decision: Any = decide(deployed, observation)
    promoted: Any = promote(decision, deployed, observation)
    rolled_back: Any = rollback(deployed, observation)
    promoted >> rolled_back
    return report(deployed, observation, promoted, rolled_back)  # the run's result


ltr_promotion()
