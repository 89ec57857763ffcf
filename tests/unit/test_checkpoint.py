"""Run folders written by run_experiment and the rankers rebuilt from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ltr.metrics import evaluate
from ltr.training.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    read_checkpoint_meta,
)
from ltr.training.config import ExperimentConfig, load_config
from ltr.training.runner import Splits, run_experiment
from ltr.training.trainer import fit

torch.set_num_threads(1)

MLP = {
    "name": "ckpt-mlp",
    "seed": 5,
    "model": {"type": "mlp", "params": {"hidden": [16, 8], "dropout": 0.0}},
    "loss": {"name": "listnet"},
    "optimizer": {"lr": 0.01},
    "training": {"epochs": 2, "batch_size": 16, "device": "cpu", "threads": 1},
    "evaluation": {"metrics": ["ndcg@5", "map"]},
    "tracking": {"enabled": False},
}
LGB = {
    "name": "ckpt-lgb",
    "model": {"type": "lightgbm", "params": {"n_estimators": 20, "num_leaves": 7}},
    "training": {"threads": 1},
    "tracking": {"enabled": False},
}


def run(cfg_dict, splits, name):
    cfg = ExperimentConfig.model_validate(cfg_dict)
    s = Splits(splits.train, splits.valid, splits.test)
    return cfg, run_experiment(cfg, splits=s, run_name=name, progress=False)


def test_run_experiment_writes_a_complete_run_folder(ltr_home, splits):
    cfg, summary = run(MLP, splits, "run-a")
    run_dir = Path(summary["run_dir"])
    assert run_dir == ltr_home / "runs" / "run-a"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.json",
        "config.yaml",
        "model.pt",
    ]
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    assert meta["format"] == CHECKPOINT_FORMAT
    assert meta["run_name"] == "run-a"
    assert meta["feature_names"] == [f"f{i}" for i in range(1, 11)]
    assert meta["n_features"] == 10
    assert meta["data_fingerprint"] == splits.train.fingerprint() == summary["data_fingerprint"]
    assert (meta["model_type"], meta["loss"]) == ("mlp", "listnet")
    assert meta["model_params"] == MLP["model"]["params"]
    assert meta["metrics"] == summary["metrics"]
    assert set(meta["metrics"]) == {"valid", "test"}
    assert set(meta["metrics"]["test"]) == {"ndcg@10", "ndcg@5", "map"}
    assert meta["metric_options"] == {"gain": "exp", "no_relevant": "skip", "ties": "pessimistic"}
    assert meta["mlflow_run_id"] is None
    assert meta["best_epoch"] == summary["best_epoch"] and meta["epochs_run"] == 2
    # the resolved config beside the weights reproduces the config
    assert load_config(run_dir / "config.yaml") == cfg
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["loss"]["name"] == "listnet"


def test_summary_metrics_equal_an_independent_evaluation_of_the_saved_model(ltr_home, splits):
    _, summary = run(MLP, splits, "run-b")
    ranker, _ = load_checkpoint(Path(summary["run_dir"]))
    test = splits.test
    scores = ranker.score(test).astype(np.float64)
    expected = evaluate(test.labels, scores, test.offsets, ["ndcg@10", "ndcg@5", "map"])
    assert summary["metrics"]["test"] == pytest.approx(expected, abs=1e-12)


def test_neural_checkpoint_reloads_to_identical_scores(ltr_home, splits):
    cfg, summary = run(MLP, splits, "run-c")
    original = fit(cfg, splits.train, splits.valid, progress=False).ranker  # same seed
    ranker, meta = load_checkpoint(Path(summary["run_dir"]))
    assert (ranker.model_type, ranker.loss) == ("mlp", "listnet")
    assert ranker.feature_names == meta["feature_names"]
    for ds in (splits.valid, splits.test):
        np.testing.assert_array_equal(ranker.score(ds), original.score(ds))
    saved = torch.load(Path(summary["run_dir"]) / "model.pt", weights_only=True)
    for k, v in original.module.state_dict().items():
        torch.testing.assert_close(saved[k], v, atol=0.0, rtol=0.0)


def test_lightgbm_checkpoint_reloads_to_identical_scores(ltr_home, splits):
    cfg, summary = run(LGB, splits, "run-lgb")
    original = fit(cfg, splits.train, splits.valid, progress=False).ranker
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "model.lgb.txt").is_file()
    ranker, meta = load_checkpoint(run_dir)
    assert meta["model_type"] == "lightgbm" and meta["loss"] == "lambdarank"
    assert ranker.best_iteration == meta["best_iteration"] == original.best_iteration
    assert ranker.booster.num_trees() == original.booster.num_trees()
    for ds in (splits.valid, splits.test):
        np.testing.assert_array_equal(ranker.score(ds), original.score(ds))


def test_missing_checkpoint_json_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.json"):
        read_checkpoint_meta(tmp_path / "absent")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"format": 1, "model_type": "mlp"', "corrupt checkpoint metadata"),
        ("[1, 2]", "corrupt checkpoint metadata"),
        ('{"format": 99}', "unsupported checkpoint format 99"),
        ('{"model_type": "mlp"}', "unsupported checkpoint format None"),
    ],
)
def test_corrupt_checkpoint_json_is_a_value_error_naming_the_file(tmp_path, text, needle):
    (tmp_path / "checkpoint.json").write_text(text)
    with pytest.raises(ValueError, match=needle) as exc:
        load_checkpoint(tmp_path)
    assert str(tmp_path / "checkpoint.json") in str(exc.value)
