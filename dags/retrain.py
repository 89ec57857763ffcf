"""The nightly retrain: point-in-time features -> candidates -> champion comparison ->
ONNX export with gates -> MLflow registry -> promotion request.

Thin on purpose: every task calls a function of ``ltr.pipelines.retrain`` (heavy imports
inside the task bodies), so each step can also be run from a shell.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from ltr.pipelines.feature_pipeline import FEATURES_ASSET_URI

if TYPE_CHECKING:
    from ltr.pipelines.config import PipelineConfig
    from ltr.settings import Settings

FEATURES = Asset(FEATURES_ASSET_URI)

DOC_MD = """
### Nightly retrain

Runs at 02:00 UTC and whenever the feature pipeline updates the Asset
`ltr://features/offline`. A run trains up to its **as-of** time: the data interval end
(a scheduled or manual run), or the time it was triggered (an asset-triggered run has no
interval). Everything it writes is keyed by the as-of time (the *run key*,
`20260102T020000Z`), so clearing and re-running a run is safe.

1. `build_training_data`: first checks what no retry can fix, before anything is trained:
   the pipeline config, the experiment configs it names, `gates.metric`, the offline
   store's layout against `doc_feature_indices` and the champion's feature count. A
   mismatch **fails the run at once** (no retry) with the fix in the message. Then: labels
   up to as-of (`labels.parquet/`), their point-in-time
   features from Feast (`ranker_v1`), queries split by a stable hash of the query id
   (`training.holdout`) into train/valid/test under
   `$LTR_HOME/pipelines/retrain/<run key>/data/`. No labels yet → **skips** the rest (the
   run succeeds).
2. `train_candidates`: every config of `training.configs` (with `training.overrides`),
   tracked in MLflow; a finished checkpoint of the same config and data is reused.
3. `evaluate_against_champion`: the production model of `routing.json` (its ONNX) and every
   candidate on the same held-out test queries; the best by `gates.metric` is the
   challenger.
4. `export_challenger`: ONNX into the run's **staging** store
   (`$LTR_HOME/pipelines/retrain/<run key>/export/`) with the parity gate
   (`gates.parity_tolerance`; a failed export writes nothing) and latency
   (`gates.latency_budget_ms`, p99 at 100 rows); the model reads its features online
   (Feast / Redis).
5. `register_and_request`: only when every gate passes (margin ≥ `gates.min_margin` over
   the champion, or no champion yet; parity; latency): the version is published into the
   model store with its verdict (`models/versions/<version>/gates.json`), an MLflow model
   version with alias `challenger` and lineage tags, and
   `$LTR_HOME/promotions/requests/<version>.json`. A failed gate ends the run **green**
   with `status: rejected` and the reason in the XCom and the log; nothing is registered
   and the challenger stays out of the model store (it cannot be picked for promotion).
   At most one request per run key.

Failures: a config, schema or data mismatch (`ValueError`, a missing file) fails its task
at once without retries; anything else (MLflow, Redis or Feast unreachable, a timeout) is
retried twice, 5 minutes apart. The DAG takes no `conf`: a run triggered with one is
refused at its first task.

Promote a requested version with the `ltr_promotion` DAG (or `ltr promote VERSION`).
Configuration comes from the environment: `LTR_HOME`, `LTR_PIPELINE_CONFIG` (default
`<LTR_HOME>/pipeline.yaml` when present, else `configs/pipeline.yaml`: `training`, `gates`,
`registry_name`, `doc_feature_indices`),
`LTR_MLFLOW_TRACKING_URI`, `LTR_FEAST_PROJECT`, `LTR_REDIS_URL`.
"""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(hours=3),
}


def _as_of() -> datetime:
    """The run's as-of time: data interval end, else logical date, else run_after."""
    from airflow.sdk import get_current_context

    from ltr.pipelines.retrain import as_of_from

    context = get_current_context()
    return as_of_from(
        context.get("data_interval_end"),
        context.get("logical_date"),
        context["dag_run"].run_after,
    )


def _setup() -> tuple[PipelineConfig, Settings]:
    from ltr.pipelines.config import load_pipeline_config
    from ltr.settings import get_settings

    return load_pipeline_config(), get_settings()


@dag(
    dag_id="ltr_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=[FEATURES]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=8),
    tags=["ltr", "training", "retrain", "nightly"],
    doc_md=DOC_MD,
)
def ltr_retrain() -> None:
    @task
    def build_training_data() -> dict[str, Any]:
        """Checks the config against the stores, then point-in-time training data up to the
        run's as-of time, split and saved. A mismatch fails here, before any training."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        from ltr.pipelines import retrain
        from ltr.pipelines.conf import refuse_unknown_conf
        from ltr.pipelines.failures import fail_fast
        from ltr.pipelines.preflight import check_retrain_inputs

        with fail_fast("build_training_data"):
            refuse_unknown_conf(get_current_context()["dag_run"].conf, (), "ltr_retrain")
            cfg, settings = _setup()
            check_retrain_inputs(cfg, settings)
            try:
                return retrain.build_training_data(_as_of(), cfg, settings)
            except retrain.NoTrainingData as exc:
                raise AirflowSkipException(str(exc)) from exc

    @task
    def train_candidates(data: dict[str, Any]) -> list[dict[str, Any]]:
        """Every experiment config of the training plan on the run's splits."""
        from ltr.pipelines import retrain
        from ltr.pipelines.failures import fail_fast

        with fail_fast("train_candidates"):
            cfg, settings = _setup()
            return retrain.train_candidates(data, cfg, settings)

    @task
    def evaluate_against_champion(
        data: dict[str, Any], candidates: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Champion and candidates on the same held-out queries; picks the challenger."""
        from ltr.pipelines import retrain
        from ltr.pipelines.failures import fail_fast

        with fail_fast("evaluate_against_champion"):
            cfg, settings = _setup()
            return retrain.evaluate_against_champion(data, candidates, cfg, settings)

    @task
    def export_challenger(evaluation: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """ONNX export into the run's staging store with the parity gate and latency figures
        (a failed gate is reported, not raised)."""
        from ltr.pipelines import retrain
        from ltr.pipelines.failures import fail_fast

        with fail_fast("export_challenger"):
            cfg, settings = _setup()
            return retrain.export_challenger(evaluation["best"], data, cfg, settings)

    @task
    def register_and_request(
        evaluation: dict[str, Any], export: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """When every gate passes: published into the model store, registered, requested;
        else the rejection reason (the challenger stays out of the model store)."""
        from ltr.pipelines import retrain
        from ltr.pipelines.failures import fail_fast

        with fail_fast("register_and_request"):
            cfg, settings = _setup()
            return retrain.register_and_request(evaluation, export, data, cfg, settings)

    # At parse time the tasks take and return XComArgs, not the annotated values.
    data: Any = build_training_data()
    candidates: Any = train_candidates(data)
    evaluation: Any = evaluate_against_champion(data, candidates)
    export: Any = export_challenger(evaluation, data)
    register_and_request(evaluation, export, data)


ltr_retrain()
