"""Which versions may be promoted (ltr.promotion.eligibility), what the promotion form offers
(ltr.pipelines.forms), the retrain's checks before training (ltr.pipelines.preflight) and
which task failures are not retried (ltr.pipelines.failures). No Airflow database, no
MLflow: small files in a temporary folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltr.pipelines.conf import refuse_unknown_conf
from ltr.pipelines.failures import PipelineConfigError, fail_fast
from ltr.pipelines.forms import service_url_default, version_choices
from ltr.promotion import PromotionPlan, history
from ltr.promotion.eligibility import (
    UngatedVersion,
    check_promotable,
    read_gate_verdict,
    write_gate_verdict,
)


def artifact(models: Path, version: str, **meta: object) -> Path:
    """A version folder that looks like an export (the checks here read only its files)."""
    folder = models / "versions" / version
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "metadata.json").write_text(json.dumps({"version": version, **meta}))
    return folder


ACCEPTED = {"accepted": True, "reason": "all gates passed", "run_key": "20260102T020000Z"}
REJECTED = {"accepted": False, "reason": "margin gate failed: ndcg@10 below the minimum"}


# ----------------------------------------------------------------- eligibility
def test_a_version_the_retrain_accepted_may_be_promoted(tmp_path: Path) -> None:
    write_gate_verdict(artifact(tmp_path, "v2"), ACCEPTED)

    out = check_promotable(PromotionPlan("v2"), tmp_path, registry_name=None)

    assert out["eligible_by"] == "gates" and "20260102T020000Z" in out["detail"]
    assert history(tmp_path) == []  # nothing to record


def test_an_ungated_unregistered_version_is_refused_with_a_sentence_and_nothing_recorded(
    tmp_path: Path,
) -> None:
    artifact(tmp_path, "by-hand")

    with pytest.raises(UngatedVersion) as err:
        check_promotable(PromotionPlan("by-hand"), tmp_path, registry_name=None)

    message = str(err.value)
    assert message.startswith("by-hand has no passing gate verdict (gates.json)")
    assert "--allow-ungated --override-reason" in message
    assert message.endswith("Nothing was changed.")
    assert history(tmp_path) == []


def test_a_rejected_verdict_is_refused_and_names_the_failed_gate(tmp_path: Path) -> None:
    write_gate_verdict(artifact(tmp_path, "loser"), REJECTED)

    with pytest.raises(UngatedVersion, match=r"loser was rejected by the retrain's gates \(margin"):
        check_promotable(PromotionPlan("loser"), tmp_path, registry_name=None)


def test_the_override_needs_a_reason(tmp_path: Path) -> None:
    artifact(tmp_path, "by-hand")
    plan = PromotionPlan("by-hand", allow_ungated=True, override_reason="  ")

    with pytest.raises(UngatedVersion, match="allow_ungated needs a reason"):
        check_promotable(plan, tmp_path, registry_name=None)
    assert history(tmp_path) == []


def test_an_override_with_a_reason_is_recorded_in_the_promotion_history(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    artifact(tmp_path, "by-hand")
    plan = PromotionPlan("by-hand", allow_ungated=True, override_reason="hotfix INC-42")

    out = check_promotable(plan, tmp_path, registry_name=None, promotion_id="p1")

    assert out["eligible_by"] == "override"
    (rec,) = history(tmp_path)
    assert (rec["step"], rec["promotion_id"], rec["version"]) == ("override", "p1", "by-hand")
    assert rec["reason"] == "hotfix INC-42"
    assert "no passing gate verdict" in rec["numbers"]["ungated"]
    assert any("WITHOUT gates" in r.getMessage() for r in caplog.records)


def test_an_unreadable_verdict_counts_as_none(tmp_path: Path) -> None:
    folder = artifact(tmp_path, "v1")
    (folder / "gates.json").write_text("{not json")
    assert read_gate_verdict(folder) is None
    with pytest.raises(UngatedVersion):
        check_promotable(PromotionPlan("v1"), tmp_path, registry_name=None)


# ----------------------------------------------------------------- the form's choices
def test_the_form_offers_nothing_for_a_missing_or_empty_store(tmp_path: Path) -> None:
    assert version_choices(tmp_path / "nowhere", tmp_path / "requests") == {}
    (tmp_path / "models" / "versions").mkdir(parents=True)
    assert version_choices(tmp_path / "models", tmp_path / "requests") == {}


def test_the_form_lists_versions_newest_first_with_their_promotion_status(tmp_path: Path) -> None:
    models, requests = tmp_path / "models", tmp_path / "requests"
    artifact(models, "old")
    write_gate_verdict(artifact(models, "gated"), ACCEPTED)
    write_gate_verdict(artifact(models, "requested"), ACCEPTED)
    write_gate_verdict(artifact(models, "rejected"), REJECTED)
    (models / "versions" / ".tmp.partial").mkdir()  # an export in progress: not offered
    for age, v in enumerate(["requested", "gated", "rejected", "old"]):
        t = 1_700_000_000 - 100 * age
        os.utime(models / "versions" / v / "metadata.json", (t, t))
    (models / "routing.json").write_text(json.dumps({"strategy": "single", "production": "old"}))
    requests.mkdir()
    (requests / "requested.json").write_text(
        json.dumps(
            {
                "created_at": "2026-01-02T02:10:00+00:00",
                "metric": "ndcg@10",
                "metrics": {"holdout": {"ndcg@10": 0.61234}},
                "mlflow": {"version": "3"},
            }
        )
    )

    choices = version_choices(models, requests)

    assert list(choices) == ["requested", "gated", "rejected", "old"]
    assert choices["requested"] == (
        "requested - promotion requested 2026-01-02 (gates passed, MLflow v3, ndcg@10 0.6123)"
    )
    assert choices["gated"] == "gated - gates passed (run 20260102T020000Z)"
    assert choices["rejected"] == "rejected - REJECTED by the gates: needs the override"
    assert choices["old"] == "old - serving production"


def test_the_service_url_default_is_the_environment_then_the_config_never_a_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ltr.pipelines.config import PromotionDefaults

    monkeypatch.delenv("LTR_SERVICE_URL", raising=False)
    assert PromotionDefaults().service_url is None
    assert service_url_default(PromotionDefaults()) is None
    configured = PromotionDefaults(service_url="http://rank:8000")
    assert service_url_default(configured) == "http://rank:8000"
    monkeypatch.setenv("LTR_SERVICE_URL", "http://10.0.0.5:8000")
    assert service_url_default(configured) == "http://10.0.0.5:8000"


# ----------------------------------------------------------------- conf and failures
def test_a_dag_without_settings_refuses_any_conf_key() -> None:
    refuse_unknown_conf({}, (), "ltr_retrain")
    with pytest.raises(ValueError) as err:
        refuse_unknown_conf({"since": "2026-01-01"}, (), "ltr_retrain")
    assert str(err.value) == (
        "ltr_retrain does not take 'since': it takes no settings. Nothing was changed."
    )


def test_a_mismatch_fails_the_task_for_good_and_an_outage_is_left_to_retry() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as err, fail_fast("export_challenger"):
        raise PipelineConfigError("doc_feature_indices [] but the store has [15]: set them")
    assert str(err.value).startswith("export_challenger: doc_feature_indices [] but the store")
    assert "not retried" in str(err.value)
    with pytest.raises(AirflowFailException), fail_fast("t"):
        raise FileNotFoundError("configs/mlp.yaml")
    with pytest.raises(ConnectionError), fail_fast("t"):
        raise ConnectionError("MLflow unreachable")  # transient: the task's retries apply


def test_a_version_missing_from_the_store_is_named_as_missing_not_as_ungated(
    tmp_path: Path,
) -> None:
    from ltr.promotion import ArtifactRejected

    with pytest.raises(ArtifactRejected, match="v9 is not in the model store"):
        check_promotable(PromotionPlan("v9"), tmp_path, registry_name=None)
