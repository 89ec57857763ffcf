"""The neural training loop: seeded, masked batches of whole queries, early stopping on a
validation metric with the best epoch restored."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ltr.data.dataset import LetorDataset
from ltr.metrics import MetricOptions, evaluate
from ltr.models.losses import get_loss
from ltr.models.neural import FeatureNormalizer, build_model
from ltr.models.rankers import NeuralRanker
from ltr.training.batching import QueryBatcher, score_dataset
from ltr.training.config import ExperimentConfig

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainOutcome:
    ranker: Any
    best_epoch: int
    best_value: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    fit_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def metric_options(cfg: ExperimentConfig) -> MetricOptions:
    e = cfg.evaluation
    return MetricOptions(gain=e.gain, no_relevant=e.no_relevant, ties=e.ties)


def _optimizer(cfg: ExperimentConfig, params: Any) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=0.9)


def train_neural(
    cfg: ExperimentConfig,
    train: LetorDataset,
    valid: LetorDataset,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Train ``cfg.model`` with ``cfg.loss``; returns the ranker at its best validation epoch."""
    if train.n_features != valid.n_features:
        raise ValueError(f"train has {train.n_features} features but valid has {valid.n_features}")
    t0 = time.perf_counter()
    tc = cfg.training
    if tc.threads:
        torch.set_num_threads(tc.threads)
    seed_everything(cfg.seed)
    device = resolve_device(tc.device)
    model = build_model(cfg.model.type, train.n_features, cfg.model.params)
    normalizer = model.normalizer
    if not isinstance(normalizer, FeatureNormalizer):
        raise TypeError(f"{cfg.model.type} has no feature normaliser")
    normalizer.fit(train.features)
    model.to(device)
    loss_fn = get_loss(cfg.loss.name, **cfg.loss.params)
    opt = _optimizer(cfg, model.parameters())
    batcher = QueryBatcher(train, device)
    rng = np.random.default_rng(cfg.seed)
    opts = metric_options(cfg)
    key = tc.metric.lower()
    metrics = list(dict.fromkeys([key, *cfg.evaluation.metrics]))

    best_value, best_epoch, bad_epochs = -math.inf, -1, 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    epochs = range(1, tc.epochs + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc=f"{cfg.model.type}/{cfg.loss.name}", unit="epoch", leave=False)
        epochs = bar
    for epoch in epochs:
        model.train()
        total, n_batches = 0.0, 0
        for b in batcher.iter_batches(tc.batch_size, shuffle=True, rng=rng):
            scores = model(b.features, b.mask)
            loss = loss_fn(scores, b.labels, b.mask)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became non-finite at epoch {epoch} (lr={cfg.optimizer.lr}); "
                    "lower the learning rate or check the features"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            total += float(loss.detach())
            n_batches += 1
        val_scores = score_dataset(model, valid, device)
        values = evaluate(valid.labels, val_scores, valid.offsets, metrics, opts)
        row = {"epoch": float(epoch), "train_loss": total / max(n_batches, 1)}
        row.update({f"valid_{k}": v for k, v in values.items()})
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        value = values[key]
        if value > best_value + 1e-9:
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", **{key: f"{value:.4f}"})
        if bad_epochs >= tc.patience:
            log.info(
                "early stop at epoch %d; best %s=%.4f at %d", epoch, key, best_value, best_epoch
            )
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    ranker = NeuralRanker(
        model, cfg.model.type, cfg.model.params, cfg.loss.name, train.feature_names
    )
    return TrainOutcome(
        ranker=ranker,
        best_epoch=best_epoch,
        best_value=best_value,
        epochs_run=len(history),
        history=history,
        fit_seconds=time.perf_counter() - t0,
    )


def train_lightgbm(
    cfg: ExperimentConfig,
    train: LetorDataset,
    valid: LetorDataset,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Fit the LambdaMART baseline; 'epochs' are boosting rounds in the history."""
    from ltr.models.gbdt import LightGBMRanker

    t0 = time.perf_counter()
    key = cfg.training.metric.lower()

    def cb(it: int, value: float) -> None:
        if on_epoch is not None:
            on_epoch(it, {"epoch": float(it), f"valid_{key}": value})

    ranker, hist = LightGBMRanker.fit(
        train,
        valid,
        cfg.model.params,
        seed=cfg.seed,
        metric=key,
        options=metric_options(cfg),
        threads=cfg.training.threads,
        on_iteration=cb,
    )
    best_value = hist[ranker.best_iteration - 1][key] if hist else float("nan")
    return TrainOutcome(
        ranker=ranker,
        best_epoch=ranker.best_iteration,
        best_value=best_value,
        epochs_run=len(hist),
        history=[{"epoch": float(i + 1), f"valid_{key}": h[key]} for i, h in enumerate(hist)],
        fit_seconds=time.perf_counter() - t0,
    )


def fit(
    cfg: ExperimentConfig,
    train: LetorDataset,
    valid: LetorDataset,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
) -> TrainOutcome:
    fn = train_neural if cfg.model.is_neural else train_lightgbm
    return fn(cfg, train, valid, on_epoch=on_epoch, progress=progress)
