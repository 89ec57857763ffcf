"""Make the ONNX graph that onnxmltools converts from a LightGBM booster score exactly as the
booster does.

LightGBM compares ``double(x)`` of a float32 feature with a double threshold and sums its leaf
values in double. The ``TreeEnsembleRegressor`` onnxmltools writes differs twice:

* it stores each threshold rounded to the *nearest* float32 and compares in float32, so a
  threshold rounded up past a feature value sends that document down the other branch and
  moves its score by a whole leaf (9.3e-2 and 8.6e-3 on two MQ2008 folds, where the parity
  gate refused the export);
* it sums the leaves in float32: 8.3e-6 off at 500 trees on MQ2008 and 2.0e-5 at 1000,
  over the 1e-5 parity tolerance.

:func:`make_exact` rewrites the converted graph: thresholds that give the booster's branch for
every float32 input (NaN, inf and LightGBM's zero band included) and exact double leaf values
in a double-precision ensemble (``ai.onnx.ml`` 3), fed by a cast of the float32 features.
What is left is the rounding of each score to float32 (half a float32 ulp: 2.4e-7 at 4.0).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["float32_threshold", "lightgbm_split", "make_exact"]

# LightGBM's kZeroThreshold: its predictor reads any |x| <= 1e-35f as 0 before the trees see it.
ZERO_BAND = np.float32(1e-35)
_BELOW_BAND = np.nextafter(-ZERO_BAND, np.float32(-np.inf))  # largest float32 < -1e-35f
_ABOVE_BAND = np.nextafter(ZERO_BAND, np.float32(np.inf))  # smallest float32 > 1e-35f
_ROUND_DOWN = ("BRANCH_LEQ", "BRANCH_GT")
_ROUND_UP = ("BRANCH_LT", "BRANCH_GTE")
_EXACT = ("BRANCH_EQ", "BRANCH_NEQ")
ML_OPSET = 3  # the first ai.onnx.ml with double thresholds and leaf values (*_as_tensor)


def float32_threshold(threshold: float, mode: str) -> np.float32:
    """The float32 ``T`` for which ``x <mode> T`` equals ``double(x) <mode> threshold`` for
    every float32 ``x``.

    ``BRANCH_LEQ`` / ``BRANCH_GT`` take the largest float32 <= ``threshold``, ``BRANCH_LT`` /
    ``BRANCH_GTE`` the smallest float32 >= it; ``BRANCH_EQ`` / ``BRANCH_NEQ`` need a threshold
    that already is a float32 (ValueError otherwise). Thresholds beyond the float32 range
    become the largest finite float32 of the right sign, or an infinity.
    """
    t = float(threshold)
    with np.errstate(over="ignore"):
        near = np.float32(t)
    if mode in _ROUND_DOWN:
        return np.nextafter(near, np.float32(-np.inf)) if float(near) > t else near
    if mode in _ROUND_UP:
        return np.nextafter(near, np.float32(np.inf)) if float(near) < t else near
    if mode in _EXACT:
        if float(near) != t:
            raise ValueError(f"{mode} threshold {t!r} is not a float32: no float32 input equals it")
        return near
    raise ValueError(f"unknown tree node mode {mode!r}; valid: {_ROUND_DOWN + _ROUND_UP + _EXACT}")


def lightgbm_split(
    threshold: float, missing_type: str, default_left: bool
) -> tuple[np.float32, bool]:
    """``(T, nan_left)``: ``x <= T``, with NaN sent left iff ``nan_left``, takes the branch that
    LightGBM's ``<=`` split takes for every float32 ``x``, NaN and inf included.

    LightGBM (4.x, ``Tree::NumericalDecision``) reads |x| <= 1e-35f as 0; it sends that zero
    band the way 0 goes ("None", "NaN") or the default way ("Zero", from ``zero_as_missing``),
    and NaN the way 0 goes unless the split learned a NaN direction ("NaN"). A "Zero" split
    that no single comparison reproduces raises ValueError (the project never trains one).
    """
    t = float(threshold)
    zero_left = bool(default_left) if missing_type == "Zero" else t >= 0.0
    if zero_left:
        if t < float(_BELOW_BAND):
            raise ValueError(_zero_as_missing(t, "left"))
        t = max(t, float(ZERO_BAND))  # the whole band goes left, and nothing above t
    else:
        if t >= float(_ABOVE_BAND):
            raise ValueError(_zero_as_missing(t, "right"))
        t = min(t, float(_BELOW_BAND))  # the whole band goes right, and nothing below t
    nan_left = bool(default_left) if missing_type == "NaN" else zero_left
    return float32_threshold(t, "BRANCH_LEQ"), nan_left


def _zero_as_missing(t: float, side: str) -> str:
    return (
        f"a zero_as_missing split at {t!r} sends 0 {side}, unlike the values between 0 and "
        "it: one ONNX comparison cannot express it; train without zero_as_missing"
    )


def _same_float32(a: float, b: float) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.float32(a) == np.float32(b))


def make_exact(model: Any, booster_dump: dict[str, Any]) -> int:
    """Rewrite in place the ``TreeEnsembleRegressor`` that onnxmltools converted from the
    booster whose ``Booster.dump_model()`` is ``booster_dump`` so that it scores as the
    booster does (why: see the module docstring); returns how many thresholds changed.

    The graph's trees are walked beside the dump (true branch = left child) and every node is
    checked against it (feature, mode, float32 of the threshold or leaf value): a graph that
    does not match node for node raises ValueError instead of being half rewritten.
    """
    from onnx import TensorProto, helper, numpy_helper

    ensembles = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
    if len(ensembles) != 1 or "nodes_values" not in {a.name for a in ensembles[0].attribute}:
        raise ValueError("expected one TreeEnsembleRegressor with float nodes_values")
    node = ensembles[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    keys = list(zip(attrs["nodes_treeids"], attrs["nodes_nodeids"], strict=True))
    index = {key: i for i, key in enumerate(keys)}
    modes = [m.decode() for m in attrs["nodes_modes"]]
    features = list(attrs["nodes_featureids"])
    values = [float(v) for v in attrs["nodes_values"]]
    true_ids, false_ids = attrs["nodes_truenodeids"], attrs["nodes_falsenodeids"]
    nan_true = list(attrs.get("nodes_missing_value_tracks_true", [0] * len(keys)))
    leaves: dict[tuple[int, int], float] = {}

    seen = changed = 0
    for tree_id, tree in enumerate(booster_dump["tree_info"]):
        stack = [(tree["tree_structure"], 0)]
        while stack:
            split, node_id = stack.pop()
            i = index.get((tree_id, node_id), -1)
            where = f"tree {tree_id} node {node_id}"
            if i < 0:
                raise ValueError(f"{where} of the booster is not in the graph")
            seen += 1
            if "split_feature" not in split:
                if modes[i] != "LEAF":
                    raise ValueError(f"{where} is a leaf in the booster only")
                leaves[(tree_id, node_id)] = float(split["leaf_value"])
                continue
            if not (
                split["decision_type"] == "<="
                and modes[i] == "BRANCH_LEQ"
                and features[i] == split["split_feature"]
                and _same_float32(values[i], split["threshold"])
            ):
                raise ValueError(
                    f"{where}: graph ({modes[i]} f{features[i]} {values[i]!r}) does not match "
                    f"the booster ({split['decision_type']} f{split['split_feature']} "
                    f"{split['threshold']!r}); only numerical '<=' splits are supported"
                )
            exact, nan_left = lightgbm_split(
                split["threshold"], split["missing_type"], split["default_left"]
            )
            changed += float(exact) != values[i]
            values[i], nan_true[i] = float(exact), int(nan_left)
            stack += [(split["left_child"], true_ids[i]), (split["right_child"], false_ids[i])]
    targets = list(zip(attrs["target_treeids"], attrs["target_nodeids"], strict=True))
    if seen != len(keys) or sorted(targets) != sorted(leaves):
        raise ValueError(f"the graph's {len(keys)} tree nodes do not match the booster's trees")
    weights = [leaves[key] for key in targets]
    if not all(map(_same_float32, attrs["target_weights"], weights)):
        raise ValueError("the graph's leaf values do not match the booster's")

    rewritten = {
        "nodes_values_as_tensor": numpy_helper.from_array(np.asarray(values, dtype=np.float64)),
        "target_weights_as_tensor": numpy_helper.from_array(np.asarray(weights, dtype=np.float64)),
        "nodes_missing_value_tracks_true": nan_true,
    }
    drop = {"nodes_values", "target_weights", *rewritten}
    kept = [a for a in node.attribute if a.name not in drop]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.extend(helper.make_attribute(k, v) for k, v in rewritten.items())

    as_double = f"{node.input[0]}_float64"
    cast = helper.make_node("Cast", [node.input[0]], [as_double], to=TensorProto.DOUBLE)
    cast.name = "features_to_float64"
    node.input[0] = as_double
    model.graph.node.insert(list(model.graph.node).index(node), cast)
    for opset in model.opset_import:
        if opset.domain == "ai.onnx.ml":
            opset.version = max(opset.version, ML_OPSET)
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(model.opset_import))
    log.debug("%d of %d thresholds rounded to exact float32 values", changed, len(keys))
    return changed
