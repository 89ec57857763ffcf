"""MLflow tracking of run_experiment, read back with MlflowClient from the same store."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from support.device import cpu_only
from support.env import isolated_home

from ltr.settings import get_settings
from ltr.tracking import flatten, metric_key
from ltr.training.config import ExperimentConfig
from ltr.training.runner import Splits, run_experiment

torch.set_num_threads(1)

CFG = {
    "name": "tracked",
    "seed": 3,
    "model": {"type": "mlp", "params": {"hidden": [16], "dropout": 0.0}},
    "loss": {"name": "lambdarank"},
    "optimizer": {"lr": 0.02},
    "training": {"epochs": 4, "batch_size": 16, "device": "cpu", "threads": 1},
    "tracking": {"enabled": True, "experiment": "unit-tracking"},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One LTR_HOME (and so one MLflow database) for the whole module."""
    home = tmp_path_factory.mktemp("tracking_home")
    with isolated_home(home):
        yield home


@pytest.fixture(scope="module")
def tracked(home, splits):
    rows: list[tuple[int, dict[str, float]]] = []
    cfg = ExperimentConfig.model_validate(CFG)
    summary = run_experiment(
        cfg,
        splits=Splits(splits.train, splits.valid, splits.test),
        run_name="tracked-run",
        progress=False,
        on_epoch=lambda epoch, row: rows.append((epoch, dict(row))),
    )
    return cfg, summary, rows


@pytest.fixture(scope="module")
def client(tracked):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=get_settings().tracking_uri)


def test_the_store_is_the_sqlite_database_under_ltr_home(home, tracked):
    assert get_settings().tracking_uri == f"sqlite:///{(home / 'mlflow.db').resolve()}"
    assert (home / "mlflow.db").is_file()


def test_the_run_is_finished_under_its_name_and_experiment(client, tracked):
    _, summary, _ = tracked
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked-run"
    assert client.get_experiment(run.info.experiment_id).name == "unit-tracking"


def test_params_hold_the_flattened_config_and_dataset_sizes(client, tracked, splits):
    cfg, summary, _ = tracked
    params = client.get_run(summary["mlflow_run_id"]).data.params
    assert params["optimizer.lr"] == "0.02"
    assert params["model.params.hidden"] == "[16]"
    assert params["loss.name"] == "lambdarank"
    assert params["training.epochs"] == "4"
    assert params["dataset.n_train_queries"] == str(splits.train.n_queries)
    assert params["dataset.n_train_docs"] == str(splits.train.n_docs)
    assert params["dataset.n_features"] == "10"
    expected_keys = set(flatten(cfg.model_dump(mode="json")))
    assert expected_keys <= set(params)


def test_per_epoch_history_has_one_value_per_epoch_run(client, tracked):
    _, summary, rows = tracked
    run_id = summary["mlflow_run_id"]
    assert len(rows) == summary["epochs_run"] == 4
    for name in ("valid_ndcg@10", "train_loss", "valid_map"):
        history = sorted(client.get_metric_history(run_id, metric_key(name)), key=lambda m: m.step)
        assert [m.step for m in history] == [epoch for epoch, _ in rows], name
        assert [m.value for m in history] == pytest.approx(
            [row[name] for _, row in rows], rel=1e-12
        )


def test_final_metrics_equal_the_summary(client, tracked):
    _, summary, _ = tracked
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert metric_key("final_valid_ndcg@10") == "final_valid_ndcg_at_10"
    for split in ("valid", "test"):
        for name, value in summary["metrics"][split].items():
            assert metrics[metric_key(f"final_{split}_{name}")] == pytest.approx(value, rel=1e-12)
    assert metrics["best_epoch"] == summary["best_epoch"]
    assert math.isclose(metrics["fit_seconds"], summary["fit_seconds"], abs_tol=1e-3)


def test_tags_identify_data_model_and_code(client, tracked, splits):
    _, summary, _ = tracked
    tags = client.get_run(summary["mlflow_run_id"]).data.tags
    assert tags["ltr.data_fingerprint"] == splits.train.fingerprint()
    assert tags["ltr.model_type"] == "mlp"
    assert tags["ltr.loss"] == "lambdarank"
    assert tags["ltr.code_version"]


def test_checkpoint_files_are_logged_as_artifacts(client, tracked, tmp_path):
    _, summary, _ = tracked
    run_id = summary["mlflow_run_id"]
    names = sorted(a.path for a in client.list_artifacts(run_id, "checkpoint"))
    assert names == [
        "checkpoint/checkpoint.json",
        "checkpoint/config.yaml",
        "checkpoint/model.pt",
    ]
    local = Path(client.download_artifacts(run_id, "checkpoint", str(tmp_path)))
    run_dir = Path(summary["run_dir"])
    for name in ("checkpoint.json", "config.yaml", "model.pt"):
        assert (local / name).read_bytes() == (run_dir / name).read_bytes(), name


def test_checkpoint_records_the_mlflow_run(tracked):
    import json

    _, summary, _ = tracked
    meta = json.loads((Path(summary["run_dir"]) / "checkpoint.json").read_text())
    assert meta["mlflow_run_id"] == summary["mlflow_run_id"]
    assert meta["mlflow_experiment_id"]


@cpu_only
def test_a_run_that_raises_is_marked_failed(home, client, tracked, splits):
    cfg = ExperimentConfig.model_validate(CFG).with_overrides({"training.device": "cuda"})
    with pytest.raises(RuntimeError, match="CUDA"):
        run_experiment(
            cfg,
            splits=Splits(splits.train, splits.valid, None),
            run_name="fails",
            progress=False,
        )
    runs = client.search_runs(
        [client.get_experiment_by_name("unit-tracking").experiment_id],
        filter_string="attributes.run_name = 'fails'",
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (home / "runs" / "fails").exists()


def test_tracking_disabled_creates_no_database(ltr_home, splits):
    cfg = ExperimentConfig.model_validate(CFG).with_overrides({"tracking.enabled": False})
    summary = run_experiment(
        cfg,
        splits=Splits(splits.train, splits.valid, None),
        run_name="untracked",
        progress=False,
    )
    assert summary["mlflow_run_id"] is None
    assert Path(summary["run_dir"]).is_dir()
    assert not (ltr_home / "mlflow.db").exists()
    assert not (ltr_home / "mlartifacts").exists()


def test_metric_keys_are_mlflow_safe():
    assert metric_key("ndcg@10") == "ndcg_at_10"
    assert metric_key("valid_p@5") == "valid_p_at_5"
    assert metric_key("a:b(c)") == "a_b_c_"
