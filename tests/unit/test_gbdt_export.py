"""LightGBM -> ONNX: the exported graph branches and sums exactly as the booster does.

The boosters here are tiny and built on crafted values (adjacent float32 numbers, the zero
band, NaN, inf), so each hazard is exercised on purpose rather than by luck of the data.
"""

from __future__ import annotations

import operator

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ltr.export.lightgbm_onnx import ZERO_BAND, float32_threshold, lightgbm_split, make_exact
from ltr.models.gbdt import LightGBMRanker

F32 = np.float32
COMPARE = {
    "BRANCH_LEQ": operator.le,
    "BRANCH_LT": operator.lt,
    "BRANCH_GTE": operator.ge,
    "BRANCH_GT": operator.gt,
}


def neighbours(value: float) -> np.ndarray:
    """The float32 nearest ``value`` and the two float32 numbers on each side of it."""
    with np.errstate(over="ignore"):
        near = F32(value)
    out = [near]
    for direction in (F32(-np.inf), F32(np.inf)):
        x = near
        for _ in range(2):
            x = np.nextafter(x, direction)
            out.append(x)
    return np.array(out, dtype=F32)


def booster(x: np.ndarray, y: np.ndarray, rounds: int, **params: object) -> lgb.Booster:
    """A lambdarank booster on queries of 20 rows."""
    base = {"objective": "lambdarank", "verbosity": -1, "seed": 1, "num_threads": 1}
    base.update({"deterministic": True, "force_row_wise": True, "min_data_in_leaf": 1})
    data = lgb.Dataset(x.astype(F32), y, group=[20] * (len(y) // 20))
    return lgb.train({**base, **params}, data, rounds)


def onnx_scores(ranker: LightGBMRanker, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(
        ranker.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (scores,) = sess.run(["scores"], {"features": np.ascontiguousarray(x, dtype=F32)})
    assert scores.dtype == F32
    return scores


def splits_of(bst: lgb.Booster) -> list[dict]:
    out, stack = [], [t["tree_structure"] for t in bst.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            out.append(node)
            stack += [node["left_child"], node["right_child"]]
    return out


# --------------------------------------------------------------------- threshold rounding
THRESHOLDS = [
    0.3000000268220902,  # LightGBM's threshold between float32 0.3 and the next float32
    float(F32(0.3)),  # already a float32
    (float(F32(0.3)) + float(np.nextafter(F32(0.3), F32(1)))) / 2,  # an exact midpoint
    -1.4999999999999998,
    -2.5e-7,
    float(ZERO_BAND),
    1e300,  # LightGBM writes an infinite threshold as 1e300
    -1e300,
]


@pytest.mark.parametrize("mode", list(COMPARE))
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_float32_threshold_gives_the_double_comparison_for_every_float32(threshold, mode):
    t32 = float32_threshold(threshold, mode)
    assert t32.dtype == F32
    compare = COMPARE[mode]
    inputs = np.concatenate([neighbours(threshold), [F32(np.inf), F32(-np.inf), F32(0.0)]])
    for x in inputs:
        assert compare(float(x), threshold) == compare(x, t32), (x, threshold, t32)


def test_nearest_rounding_alone_would_put_a_float32_on_the_wrong_side():
    """The failure this module exists for: float32(t) rounds up onto a feature value."""
    t = THRESHOLDS[0]
    above = np.nextafter(F32(0.3), F32(1))
    assert F32(t) == above and not float(above) <= t  # nearest: `above <= t32` would be true
    assert float32_threshold(t, "BRANCH_LEQ") == F32(0.3)
    assert float32_threshold(t, "BRANCH_LT") == above  # `<` rounds the other way


def test_equality_modes_accept_only_thresholds_that_are_float32():
    assert float32_threshold(2.0, "BRANCH_EQ") == F32(2.0)
    with pytest.raises(ValueError, match="not a float32"):
        float32_threshold(0.1, "BRANCH_NEQ")
    with pytest.raises(ValueError, match="unknown tree node mode 'LEAF'"):
        float32_threshold(0.1, "LEAF")


def test_lightgbm_zero_band_and_nan_follow_the_way_zero_goes():
    below = np.nextafter(-ZERO_BAND, F32(-1))
    # |x| <= 1e-35 is read as 0 by LightGBM, so a split at -1e-35 sends -1e-35 right
    assert lightgbm_split(-float(ZERO_BAND), "None", True) == (below, False)
    assert lightgbm_split(float(ZERO_BAND), "None", True) == (ZERO_BAND, True)
    assert lightgbm_split(0.5, "None", False) == (F32(0.5), True)  # NaN -> 0 -> left
    assert lightgbm_split(0.5, "NaN", False) == (F32(0.5), False)  # NaN has its own way
    assert lightgbm_split(-0.5, "NaN", True) == (F32(-0.5), True)


def test_zero_as_missing_split_one_comparison_cannot_express_is_refused():
    assert lightgbm_split(1.0, "Zero", True) == (F32(1.0), True)
    with pytest.raises(ValueError, match="train without zero_as_missing"):
        lightgbm_split(1.0, "Zero", False)


# -------------------------------------------------------------------- exported boosters
def test_adjacent_float32_values_stay_on_their_own_sides_of_a_split():
    """Values 0.3f and the next float32 are split by LightGBM at a double that rounds to the
    upper one; the graph must still score the upper value as the booster does."""
    low = F32(0.3)
    high = np.nextafter(low, F32(1))
    x = np.tile([low, high], 100).reshape(-1, 1)
    bst = booster(x, np.tile([0, 2], 100), rounds=3, num_leaves=4)
    assert {F32(s["threshold"]) for s in splits_of(bst)} == {high}  # the hazard is present
    ranker = LightGBMRanker(bst, ["f1"], 3)
    got = onnx_scores(ranker, np.array([[low], [high]]))
    want = bst.predict(np.array([[low], [high]], dtype=F32))
    assert want[1] > want[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_nan_inf_and_the_zero_band_branch_as_in_the_booster():
    rng = np.random.default_rng(0)
    f1 = rng.choice([-2.0, -1.0, 0.0, 1.0, 2.0], 600)  # zeros and both signs: missing "None"
    f2 = rng.normal(size=600)
    f2[rng.random(600) < 0.3] = np.nan  # learned NaN directions: missing "NaN"
    y = (f1 >= 0).astype(int) + (f1 > 0.5) + (np.nan_to_num(f2, nan=3.0) > 1.0)
    bst = booster(np.c_[f1, f2], y, rounds=5, num_leaves=8, min_data_in_leaf=2)
    splits = splits_of(bst)
    assert any(s["threshold"] == -float(ZERO_BAND) for s in splits)
    assert {(s["missing_type"], s["default_left"]) for s in splits} >= {
        ("None", True),
        ("NaN", True),
        ("NaN", False),
    }
    edges = [np.nan, np.inf, -np.inf, 0.0, -1e-36, 1e-36]
    edges += [*neighbours(float(ZERO_BAND)), *neighbours(-float(ZERO_BAND))]
    for s in splits:
        edges += list(neighbours(s["threshold"]))
    values = np.array(edges, dtype=F32)
    x = np.array([[a, b] for a in values for b in values], dtype=F32)
    got = onnx_scores(LightGBMRanker(bst, ["f1", "f2"], 5), x)
    np.testing.assert_allclose(got, bst.predict(x), rtol=0, atol=1e-6)


def test_leaf_values_are_summed_in_double_so_each_score_is_the_boosters_rounded_to_float32():
    """Over 800 trees a float32 sum drifts by several float32 ulps; the graph must not."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    bst = booster(x, rng.integers(0, 4, 400), rounds=800, num_leaves=4, learning_rate=0.3)
    got = onnx_scores(LightGBMRanker(bst, list("abcd"), 800), x)
    want = bst.predict(x.astype(F32)).astype(F32)
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want))
    assert float(ulps.max()) <= 1.0


def test_graph_keeps_the_serving_signature_and_stores_double_thresholds():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    bst = booster(x, rng.integers(0, 3, 200), rounds=4, num_leaves=4)
    model = LightGBMRanker(bst, ["a", "b", "c"], 4).to_onnx()
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["scores"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    (trees,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
    names = {a.name for a in trees.attribute}
    assert {"nodes_values_as_tensor", "target_weights_as_tensor"} <= names
    assert not {"nodes_values", "target_weights"} & names
    leaf_values = sorted(
        n["leaf_value"] for t in bst.dump_model()["tree_info"] for n in _leaves(t["tree_structure"])
    )
    weights = next(a for a in trees.attribute if a.name == "target_weights_as_tensor")
    assert sorted(onnx.numpy_helper.to_array(weights.t).tolist()) == leaf_values  # exact


def _leaves(node: dict) -> list[dict]:
    if "split_feature" not in node:
        return [node]
    return _leaves(node["left_child"]) + _leaves(node["right_child"])


def test_a_graph_that_does_not_match_the_booster_is_refused():
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    one = booster(x, rng.integers(0, 3, 200), rounds=3, num_leaves=4)
    other = booster(x, rng.integers(0, 3, 200), rounds=3, num_leaves=4)
    model = onnxmltools.convert_lightgbm(
        one, initial_types=[("features", FloatTensorType([None, 3]))], target_opset=15
    )
    with pytest.raises(ValueError, match="does not match"):
        make_exact(model, other.dump_model())
