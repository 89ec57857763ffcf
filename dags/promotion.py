"""
# ltr_promotion: roll a model out to the rank service, or roll it back automatically

Trigger it by hand (**Trigger** → fill in the form). It runs the same code as
`ltr promote` (`ltr.promotion`) one step per task:

1. **deploy**: the version's `model.onnx` is checked against the sha256 in its
   `metadata.json`, the version must be **promotable** (the retrain accepted it: its
   `gates.json`; or it is registered in MLflow), and the current production (the champion)
   is read from `routing.json`. A version that already serves all traffic and is the
   registry champion stops here: nothing changes (re-running a finished promotion is safe).
   An ungated version is refused at once, unless the form's **override** is ticked with a
   reason: the override is logged, recorded in `promotions.jsonl` and the version is
   registered, so the `champion` alias still names what serves.
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

Every step is recorded in `<LTR_HOME>/models/promotions.jsonl`. The **Model version**
dropdown lists the model store's versions (newest first) with their status (serving,
promotion requested, gates passed or rejected), as of the last parse of this file (about
every 30 s). Defaults of the other fields come from the `promotion` section of the pipeline
config (`LTR_PIPELINE_CONFIG`, default `<LTR_HOME>/pipeline.yaml` when present, else
`configs/pipeline.yaml`); the service URL from `$LTR_SERVICE_URL` first. A `conf` key the
form does not have is refused at the first task. From a shell:
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

from ltr.pipelines.forms import promotion_defaults, service_url_default, version_choices

STEPS = ("deploy", "shift_traffic", "observe", "decide", "promote", "rollback")
# Parse time reads small files only (YAML, folder names, JSON) and never fails.
_defaults = promotion_defaults()
_versions = version_choices()

# A bad Param value, a rejected artifact or an ungated version fails at once; others retry.
_NO_RETRY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "builtins.ValueError",
                "ltr.promotion.ArtifactRejected",
                "ltr.promotion.eligibility.UngatedVersion",
            ],
            action=RetryAction.FAIL,
            reason="invalid request, artifact or version: retrying cannot help",
        )
    ]
)

THRESHOLDS = "Thresholds (roll back when exceeded)"
OVERRIDE = "Override (versions the retrain did not accept)"
_VERSION_HELP = (
    "The model-store version to roll out. Only a version the retrain accepted (promotion "
    "requested) or one registered in MLflow can be promoted without the override below."
)


def _version_param() -> Param:
    """A dropdown of the store's versions; a typed name when the store was empty at parse."""
    if _versions:
        return Param(
            type="string",
            enum=list(_versions),
            values_display=_versions,
            title="Model version",
            description=_VERSION_HELP,
        )
    return Param(
        type="string",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        title="Model version",
        description=_VERSION_HELP + " The model store was empty when this form was built: "
        "export a version (the ltr_retrain DAG or `ltr export`), then reload the page "
        "after about 30 s.",
    )


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
        "model_version": _version_param(),
        "strategy": Param(
            _defaults.strategy,
            type="string",
            enum=["canary", "blue_green"],
            values_display={
                "canary": "canary: a share of users first",
                "blue_green": "blue_green: switch all users at once",
            },
            title="Strategy",
            description="canary: the canary share of users gets the new version while it is "
            "observed; blue_green: the new version is loaded as the idle colour, then every "
            "user is switched and observed.",
        ),
        "canary_percent": Param(
            _defaults.canary_percent,
            type="number",
            minimum=1,
            maximum=99.99,
            title="Canary share (%)",
            description="Share of users (1 to 99.99 %, by a stable hash of user_id) on the "
            "new version while observing; canary only.",
        ),
        "observe_minutes": Param(
            _defaults.observe_minutes,
            type="number",
            minimum=0,
            title="Observe (minutes)",
            description="How long to watch the live service before deciding (0: decide on "
            "what the service reports at once).",
        ),
        "max_error_rate": Param(
            _defaults.max_error_rate,
            type="number",
            minimum=0,
            maximum=1,
            title="Max error rate",
            description="Fraction of the new version's requests that may fail, 0 to 1 "
            "(0.01 = 1 %); above it the promotion rolls back.",
            section=THRESHOLDS,
        ),
        "max_p99_ms": Param(
            _defaults.max_p99_ms,
            type="number",
            exclusiveMinimum=0,
            title="Max p99 latency (ms)",
            description="The new version's p99 latency over the window (from the service's "
            "histogram) may not exceed this; above it the promotion rolls back.",
            section=THRESHOLDS,
        ),
        "min_requests": Param(
            _defaults.min_requests,
            type="integer",
            minimum=1,
            title="Min requests",
            description="Requests the new version must get in the window to be judged; "
            "fewer rolls back (insufficient_traffic).",
            section=THRESHOLDS,
        ),
        "service_url": Param(
            service_url_default(_defaults),
            type=["null", "string"],
            title="Rank service URL",
            description="Base URL of the rank service to watch (its /api/v1/models and "
            "/metrics), e.g. http://127.0.0.1:8000 for `ltr serve`. Needed whenever a version "
            "is already in production. Empty: $LTR_SERVICE_URL of the Airflow workers, else "
            "promotion.service_url of the pipeline config.",
        ),
        "allow_ungated": Param(
            False,
            type="boolean",
            title="Allow an ungated version",
            description="Promote a version that neither passed the retrain's gates nor is "
            "registered in MLflow. Needs a reason below; logged, recorded in "
            "promotions.jsonl and as an MLflow tag.",
            section=OVERRIDE,
        ),
        "override_reason": Param(
            None,  # a string-only Param is required in the UI: the Trigger button stays off
            type=["null", "string"],
            title="Override reason",
            description="Why the gates are overridden (required with the override; kept in "
            "the promotion history). Ignored without the override.",
            section=OVERRIDE,
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
