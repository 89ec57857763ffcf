"""Neural scorers: padding invariance, the fitted normaliser, the registry, the export view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltr.models.neural import (
    MODELS,
    AttentionScorer,
    FeatureNormalizer,
    MLPScorer,
    SingleListWrapper,
    build_model,
)

torch.set_num_threads(1)

N_FEATURES = 6
SMALL = {
    "mlp": {"hidden": [16, 8], "dropout": 0.2},
    "attention": {
        "d_model": 16,
        "n_heads": 4,
        "n_layers": 2,
        "dim_feedforward": 32,
        "dropout": 0.2,
    },
}


def fitted_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A scorer with random weights and a normaliser fitted on non-trivial statistics."""
    torch.manual_seed(seed)
    model = build_model(name, N_FEATURES, SMALL[name])
    rng = np.random.default_rng(seed)
    model.normalizer.fit(rng.normal(3.0, 2.0, size=(200, N_FEATURES)))
    return model.eval()


def random_lists(sizes: list[int], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, N_FEATURES, generator=g) * 2.0 + 3.0 for n in sizes]


@pytest.mark.parametrize("name", ["mlp", "attention"])
@pytest.mark.parametrize("garbage", [0.0, 1e3, -1e6, 1e20, float("nan"), float("inf")])
def test_scores_of_real_documents_do_not_change_when_the_list_is_padded(name, garbage):
    model = fitted_model(name)
    lists = random_lists([5, 2, 7])
    width = 10
    g = torch.Generator().manual_seed(7)
    feats = garbage * torch.randn(len(lists), width, N_FEATURES, generator=g)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    for i, x in enumerate(lists):
        feats[i, : len(x)] = x
        mask[i, : len(x)] = True
    with torch.no_grad():
        padded = model(feats, mask)
        for i, x in enumerate(lists):
            alone = model(x[None], torch.ones(1, len(x), dtype=torch.bool))[0]
            torch.testing.assert_close(padded[i, : len(x)], alone, atol=1e-5, rtol=1e-5)


def test_attention_ignores_padded_slots_in_the_middle_of_a_list():
    model = fitted_model("attention")
    (x,) = random_lists([4])
    junk = torch.full((3, N_FEATURES), 50.0)
    mixed = torch.cat([x[:2], junk, x[2:]])[None]
    mask = torch.tensor([[True, True, False, False, False, True, True]])
    with torch.no_grad():
        alone = model(x[None], torch.ones(1, 4, dtype=torch.bool))[0]
        got = model(mixed, mask)[0][mask[0]]
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)


def test_attention_scores_depend_on_the_other_documents_of_the_list():
    """Listwise: adding a real document changes the others' scores (unlike the MLP)."""
    lists = random_lists([4, 1])
    longer = torch.cat([lists[0], lists[1]])[None]
    for name, should_change in (("attention", True), ("mlp", False)):
        model = fitted_model(name)
        with torch.no_grad():
            short = model(lists[0][None], torch.ones(1, 4, dtype=torch.bool))[0]
            long = model(longer, torch.ones(1, 5, dtype=torch.bool))[0, :4]
        changed = float((short - long).abs().max()) > 1e-4
        assert changed is should_change, name


def test_normalizer_fitted_mean_and_std_equal_numpys():
    rng = np.random.default_rng(3)
    x = rng.normal([1.0, -5.0, 100.0], [0.5, 3.0, 20.0], size=(300, 3)).astype(np.float32)
    norm = FeatureNormalizer(3).fit(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(norm.mean.numpy(), x64.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(1.0 / norm.inv_std.numpy(), x64.std(axis=0), rtol=1e-6)
    out = norm(torch.from_numpy(x)).numpy()
    expected = (x64 - x64.mean(axis=0)) / x64.std(axis=0)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_constant_columns_are_centred_without_inf_or_nan():
    rng = np.random.default_rng(4)
    x = np.column_stack([np.full(50, 7.5), rng.normal(size=50), np.zeros(50)]).astype(np.float32)
    norm = FeatureNormalizer(3).fit(x)
    assert norm.inv_std[0].item() == 1.0 and norm.inv_std[2].item() == 1.0
    out = norm(torch.from_numpy(x)).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], np.zeros(50, dtype=np.float32))
    np.testing.assert_array_equal(out[:, 2], np.zeros(50, dtype=np.float32))
    for name in ("mlp", "attention"):
        torch.manual_seed(0)
        model = build_model(name, 3, {"d_model": 8, "n_heads": 2} if name == "attention" else {})
        model.normalizer.fit(x)
        with torch.no_grad():
            scores = model.eval()(torch.from_numpy(x)[None], torch.ones(1, 50, dtype=torch.bool))
        assert torch.isfinite(scores).all(), name


def test_normalizer_statistics_are_saved_in_the_state_dict():
    x = np.random.default_rng(5).normal(2.0, 3.0, size=(40, N_FEATURES))
    model = build_model("mlp", N_FEATURES, {"hidden": [4]})
    model.normalizer.fit(x)
    state = model.state_dict()
    np.testing.assert_allclose(state["normalizer.mean"].numpy(), x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(state["normalizer.inv_std"].numpy(), 1 / x.std(axis=0), rtol=1e-6)


def test_build_model_unknown_name_raises_value_error_listing_valid_names():
    with pytest.raises(ValueError, match="unknown neural model 'gbdt'") as exc:
        build_model("gbdt", 4)
    for valid in MODELS:
        assert valid in str(exc.value)


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("mlp", {"hiden": [8]}, "hiden"),
        ("attention", {"heads": 2}, "heads"),
        ("attention", {"d_model": 10, "n_heads": 4}, "divisible"),
        ("mlp", {"activation": "swish"}, "gelu"),
    ],
)
def test_build_model_bad_params_raise_value_error_naming_the_problem(name, params, needle):
    with pytest.raises(ValueError, match=needle):
        build_model(name, 4, params)


def test_build_model_mlp_has_the_requested_layer_shapes():
    model = build_model("mlp", 7, {"hidden": [5, 3], "dropout": 0.0})
    assert isinstance(model, MLPScorer)
    shapes = [(m.in_features, m.out_features) for m in model.net if isinstance(m, torch.nn.Linear)]
    assert shapes == [(7, 5), (5, 3), (3, 1)]
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.net)
    assert isinstance(build_model("attention", 7), AttentionScorer)


def test_mlp_scores_each_document_with_its_layers():
    """An MLP with hand-set weights computes the expected function of the features."""
    model = build_model("mlp", 2, {"hidden": [2], "dropout": 0.0, "activation": "relu"}).eval()
    first, last = model.net[0], model.net[-1]
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        first.bias.copy_(torch.tensor([0.0, -1.0]))
        last.weight.copy_(torch.tensor([[2.0, -3.0]]))
        last.bias.copy_(torch.tensor([0.25]))
    x = np.array([[1.0, 3.0], [2.0, 0.5], [-1.0, 1.0]])
    h = np.maximum(x @ np.array([[1.0, -1.0], [0.5, 2.0]]).T + [0.0, -1.0], 0.0)
    expected = h @ np.array([2.0, -3.0]) + 0.25
    with torch.no_grad():
        got = model(torch.tensor(x, dtype=torch.float32)[None]).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "attention"])
def test_single_list_wrapper_equals_the_scorer_on_a_batch_of_one(name):
    model = fitted_model(name)
    (x,) = random_lists([9])
    with torch.no_grad():
        wrapped = SingleListWrapper(model)(x)
        direct = model(x[None])[0]
    assert wrapped.shape == (9,)
    torch.testing.assert_close(wrapped, direct, atol=0.0, rtol=0.0)
