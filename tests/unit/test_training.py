"""The training loop: seeding, early stopping with the best epoch restored, every loss,
the LightGBM baseline and device selection."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from support.device import cpu_only, needs_cuda

from ltr.metrics import MetricOptions, evaluate
from ltr.models.losses import LOSSES
from ltr.training.config import ExperimentConfig
from ltr.training.trainer import fit

torch.set_num_threads(1)

METRIC = "ndcg@10"


def config(overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """A small, fast MLP / lambdarank config on the CPU with one thread, no tracking."""
    base = ExperimentConfig.model_validate(
        {
            "name": "unit",
            "seed": 11,
            "model": {"type": "mlp", "params": {"hidden": [32, 16], "dropout": 0.1}},
            "loss": {"name": "lambdarank"},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {
                "epochs": 3,
                "batch_size": 16,
                "patience": 50,
                "device": "cpu",
                "threads": 1,
            },
            "tracking": {"enabled": False},
        }
    )
    return base.with_overrides(overrides or {})


def valid_metric(ranker, ds, key: str = METRIC) -> float:
    """The validation metric recomputed from the ranker's scores with the metric library."""
    scores = np.asarray(ranker.score(ds), dtype=np.float64)
    return evaluate(ds.labels, scores, ds.offsets, [key], MetricOptions())[key]


def weights(ranker) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in ranker.module.state_dict().items()}


def test_same_seed_gives_identical_metrics_and_weights(splits):
    cfg = config({"training.epochs": 3})
    a = fit(cfg, splits.train, splits.valid, progress=False)
    b = fit(cfg, splits.train, splits.valid, progress=False)
    assert a.history == b.history
    wa, wb = weights(a.ranker), weights(b.ranker)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    np.testing.assert_array_equal(a.ranker.score(splits.test), b.ranker.score(splits.test))


def test_a_different_seed_gives_different_weights_and_history(splits):
    a = fit(config({"seed": 11}), splits.train, splits.valid, progress=False)
    b = fit(config({"seed": 12}), splits.train, splits.valid, progress=False)
    first = "net.0.weight"
    assert not np.array_equal(weights(a.ranker)[first], weights(b.ranker)[first])
    assert [r["train_loss"] for r in a.history] != [r["train_loss"] for r in b.history]


def test_early_stopping_restores_the_best_epoch(splits):
    patience = 2
    cfg = config(
        {
            "optimizer.lr": 0.05,
            "model.params.dropout": 0.3,
            "training.epochs": 40,
            "training.patience": patience,
            "training.batch_size": 8,
        }
    )
    out = fit(cfg, splits.train, splits.valid, progress=False)
    values = [row[f"valid_{METRIC}"] for row in out.history]
    assert len(out.history) == out.epochs_run
    assert [row["epoch"] for row in out.history] == list(range(1, out.epochs_run + 1))
    # stopped early: exactly `patience` epochs without a gain after the best one
    assert out.epochs_run < 40, "did not stop early; pick a noisier setup"
    assert out.epochs_run == out.best_epoch + patience
    # the best epoch is the first epoch with the highest value
    assert out.best_epoch == int(np.argmax(values)) + 1
    assert out.best_value == values[out.best_epoch - 1]
    # the restored model reproduces the best epoch's validation metric, not the last one's
    recomputed = valid_metric(out.ranker, splits.valid)
    assert recomputed == pytest.approx(values[out.best_epoch - 1], abs=1e-12)
    assert values[-1] < values[out.best_epoch - 1]


def test_history_rows_hold_the_loss_and_every_evaluation_metric(splits):
    cfg = config({"evaluation.metrics": ["ndcg@5", "map"]})
    out = fit(cfg, splits.train, splits.valid, progress=False)
    assert set(out.history[0]) == {
        "epoch",
        "train_loss",
        "valid_ndcg@10",
        "valid_ndcg@5",
        "valid_map",
    }
    best = out.history[out.best_epoch - 1]
    scores = out.ranker.score(splits.valid).astype(np.float64)
    v = splits.valid
    assert best["valid_map"] == pytest.approx(
        evaluate(v.labels, scores, v.offsets, ["map"])["map"], abs=1e-12
    )


def test_on_epoch_callback_receives_every_history_row(splits):
    seen = []
    out = fit(
        config(),
        splits.train,
        splits.valid,
        progress=False,
        on_epoch=lambda epoch, row: seen.append((epoch, dict(row))),
    )
    assert seen == [(i + 1, row) for i, row in enumerate(out.history)]


def test_trained_model_clearly_beats_a_random_scorer(splits):
    out = fit(config({"training.epochs": 8}), splits.train, splits.valid, progress=False)
    test = splits.test
    trained = valid_metric(out.ranker, test)
    rng = np.random.default_rng(0)
    randoms = [
        evaluate(test.labels, rng.random(test.n_docs), test.offsets, [METRIC])[METRIC]
        for _ in range(5)
    ]
    assert trained > max(randoms) + 0.2, (trained, randoms)
    assert trained > 0.8


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_and_yields_finite_metrics(splits, loss):
    cfg = config({"loss.name": loss, "training.epochs": 2})
    out = fit(cfg, splits.train, splits.valid, progress=False)
    assert out.epochs_run == 2
    for row in out.history:
        assert all(math.isfinite(v) for v in row.values()), row
        assert 0.0 <= row[f"valid_{METRIC}"] <= 1.0
    assert out.ranker.loss == loss
    assert np.isfinite(out.ranker.score(splits.test)).all()


def test_attention_model_trains_with_the_same_loop(splits):
    cfg = config(
        {
            "model.type": "attention",
            "model.params": {"d_model": 16, "n_heads": 2, "n_layers": 1, "dim_feedforward": 32},
            "loss.name": "listnet",
            "training.epochs": 2,
        }
    )
    out = fit(cfg, splits.train, splits.valid, progress=False)
    assert out.ranker.model_type == "attention"
    assert valid_metric(out.ranker, splits.valid) == pytest.approx(out.best_value, abs=1e-12)


def test_mismatched_feature_counts_are_rejected(splits):
    from ltr.data.dataset import LetorDataset

    v = splits.valid
    narrow = LetorDataset(v.features[:, :5], v.labels, v.qids, v.doc_ids)
    with pytest.raises(ValueError, match="10 features but valid has 5"):
        fit(config(), splits.train, narrow, progress=False)


def test_lightgbm_best_iteration_value_equals_the_trimmed_boosters_metric(splits):
    cfg = config(
        {
            "model.type": "lightgbm",
            "model.params": {
                "n_estimators": 60,
                "early_stopping_rounds": 5,
                "num_leaves": 7,
                "learning_rate": 0.3,
            },
        }
    )
    seen = []
    out = fit(
        cfg, splits.train, splits.valid, progress=False, on_epoch=lambda it, row: seen.append(row)
    )
    ranker = out.ranker
    values = [row[f"valid_{METRIC}"] for row in out.history]
    assert seen == out.history
    assert out.best_epoch == ranker.best_iteration == int(np.argmax(values)) + 1
    assert ranker.booster.num_trees() == ranker.best_iteration
    assert out.epochs_run <= ranker.best_iteration + 5
    assert out.best_value == values[ranker.best_iteration - 1]
    assert valid_metric(ranker, splits.valid) == pytest.approx(out.best_value, abs=1e-12)
    assert valid_metric(ranker, splits.test) > 0.8


def test_lightgbm_unknown_parameter_is_a_value_error_listing_valid_ones(splits):
    cfg = config({"model.type": "lightgbm", "model.params": {"n_trees": 5}})
    with pytest.raises(ValueError, match=r"n_trees.*n_estimators"):
        fit(cfg, splits.train, splits.valid, progress=False)


@cpu_only
def test_device_cuda_without_cuda_raises_a_clear_runtime_error(splits):
    with pytest.raises(RuntimeError, match=r"--device cuda.*no CUDA device is available"):
        fit(config({"training.device": "cuda"}), splits.train, splits.valid, progress=False)


# ---------------------------------------------------------------- on a GPU (skipped without one)


@needs_cuda
def test_device_cuda_trains_on_the_gpu_and_the_metric_matches_its_scores(splits):
    out = fit(
        config({"training.device": "cuda", "training.epochs": 4}),
        splits.train,
        splits.valid,
        progress=False,
    )
    assert all(p.device.type == "cuda" for p in out.ranker.module.parameters())
    assert all(math.isfinite(v) for row in out.history for v in row.values())
    assert valid_metric(out.ranker, splits.valid) == pytest.approx(out.best_value, abs=1e-12)
    assert valid_metric(out.ranker, splits.test) > 0.8


@needs_cuda
def test_a_gpu_trained_model_scores_the_same_on_the_cpu_after_save_and_load(splits, tmp_path):
    from ltr.models.rankers import NeuralRanker

    out = fit(config({"training.device": "cuda"}), splits.train, splits.valid, progress=False)
    gpu = out.ranker
    gpu.save(tmp_path)
    cpu = NeuralRanker.load(tmp_path, gpu.model_type, gpu.model_params, gpu.loss, gpu.feature_names)
    assert next(cpu.module.parameters()).device.type == "cpu"
    np.testing.assert_allclose(cpu.score(splits.test), gpu.score(splits.test), atol=1e-5)
    x = splits.test.features[:13]
    np.testing.assert_allclose(cpu.score_features(x), gpu.score_features(x), atol=1e-5)


@needs_cuda
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore:The feature will be removed")
def test_a_gpu_trained_ranker_exports_to_onnx_with_parity(splits, tmp_path):
    from ltr.export.onnx_export import export_ranker

    out = fit(config({"training.device": "cuda"}), splits.train, splits.valid, progress=False)
    meta = {"run_name": "gpu", "model_type": "mlp", "loss": "lambdarank"}
    result = export_ranker(out.ranker, meta, splits.valid, tmp_path, latency=False)
    assert result["parity"]["max_abs_diff"] <= 1e-5
