"""LightGBM LambdaMART baseline behind the same fit / score / save / export interface."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.metrics import MetricOptions, evaluate, parse_metric

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 500,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "bagging_freq": 0,
    "lambda_l2": 0.0,
    "early_stopping_rounds": 50,
}


class LightGBMRanker:
    """A trained LambdaMART booster. ``score`` returns one float per document row."""

    model_type = "lightgbm"
    loss = "lambdarank"

    def __init__(self, booster: Any, feature_names: list[str], best_iteration: int) -> None:
        self.booster = booster
        self.feature_names = list(feature_names)
        self.best_iteration = int(best_iteration)

    # ----------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        train: LetorDataset,
        valid: LetorDataset,
        params: dict[str, Any] | None = None,
        *,
        seed: int = 42,
        metric: str = "ndcg@10",
        options: MetricOptions | None = None,
        threads: int | None = None,
        on_iteration: Any = None,
    ) -> tuple[LightGBMRanker, list[dict[str, float]]]:
        """Train with early stopping on ``metric`` of the validation set, computed with the
        project's own metric conventions (LightGBM's built-in NDCG scores queries without a
        relevant document as 1, which would not match the rest of the platform)."""
        import lightgbm as lgb

        unknown = set(params or {}) - set(DEFAULT_PARAMS)
        if unknown:
            raise ValueError(
                f"unknown LightGBM parameter(s) {sorted(unknown)}; valid: {sorted(DEFAULT_PARAMS)}"
            )
        p = {**DEFAULT_PARAMS, **(params or {})}
        parse_metric(metric)
        opts = options or MetricOptions()
        rounds = int(p.pop("n_estimators"))
        patience = int(p.pop("early_stopping_rounds"))
        lgb_params = {
            "objective": "lambdarank",
            "metric": "None",
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            "num_threads": threads or 0,
            **p,
        }
        dtrain = lgb.Dataset(
            train.features, label=train.labels, group=train.group_sizes, free_raw_data=False
        )
        dvalid = lgb.Dataset(
            valid.features, label=valid.labels, group=valid.group_sizes, reference=dtrain
        )
        history: list[dict[str, float]] = []
        key = metric.lower()

        def feval(preds: np.ndarray, _data: Any) -> tuple[str, float, bool]:
            value = evaluate(valid.labels, preds, valid.offsets, [key], opts)[key]
            history.append({key: value})
            if on_iteration is not None:
                on_iteration(len(history), value)
            return key, value, True

        booster = lgb.train(
            lgb_params,
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            valid_names=["valid"],
            feval=feval,
            callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)],
        )
        best = booster.best_iteration or booster.current_iteration()
        log.info("LightGBM stopped at iteration %d (best %d)", booster.current_iteration(), best)
        # Keep only the trees up to the best iteration so score() and the ONNX graph agree.
        model_str = booster.model_to_string(num_iteration=best)
        trimmed = lgb.Booster(model_str=model_str)
        return cls(trimmed, train.feature_names, best), history

    # --------------------------------------------------------------- score
    def score_features(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features), dtype=np.float64)

    def score(self, ds: LetorDataset) -> np.ndarray:
        return self.score_features(ds.features)

    # ---------------------------------------------------------- save/load
    def save(self, directory: Path) -> Path:
        from ltr.utils.io import atomic_open

        path = Path(directory) / "model.lgb.txt"
        with atomic_open(path) as fh:
            fh.write(self.booster.model_to_string())
        return path

    @classmethod
    def load(cls, directory: Path, feature_names: list[str], best_iteration: int) -> LightGBMRanker:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(Path(directory) / "model.lgb.txt"))
        return cls(booster, feature_names, best_iteration)

    # -------------------------------------------------------------- export
    def to_onnx(self, opset: int = 15) -> Any:
        """ONNX graph ``features float32 [n_docs, n_features] -> scores float32 [n_docs]``.

        The converted ensemble is rewritten to branch and sum exactly as the booster does
        (:mod:`ltr.export.lightgbm_onnx`).
        """
        import onnx
        import onnxmltools
        from onnx import TensorProto, helper
        from onnxmltools.convert.common.data_types import FloatTensorType

        from ltr.export.lightgbm_onnx import make_exact

        n = len(self.feature_names)
        model = onnxmltools.convert_lightgbm(
            self.booster,
            initial_types=[("features", FloatTensorType([None, n]))],
            target_opset=min(opset, 15),
            zipmap=False,
        )
        make_exact(model, self.booster.dump_model())
        graph = model.graph
        old_out = graph.output[0]
        shape_name = "ltr_scores_shape"
        graph.initializer.append(helper.make_tensor(shape_name, TensorProto.INT64, [1], [-1]))
        graph.node.append(
            helper.make_node("Reshape", [old_out.name, shape_name], ["scores"], name="to_scores")
        )
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n_docs"]))
        onnx.checker.check_model(model)
        return model
