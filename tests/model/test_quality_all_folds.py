"""The quality gate of DESIGN.md on every MQ2008 fold (marked ``slow``: several minutes).

Five-fold cross-validation (train S1-S3 / vali S4 / test S5 and its rotations) of the
LightGBM LambdaMART baseline and the MLP with every neural loss, with the configs of
``bench.quality``: the best neural model is at least as good as LightGBM in NDCG@10 and every
neural loss reaches 0.68, as means over the five test folds. ``make test-all`` runs it;
``make bench-quality`` prints the same figures with fit times and memory.
"""

from __future__ import annotations

import pytest
from support.datasets import need

pytestmark = [pytest.mark.slow, pytest.mark.datasets]

NEURAL = ("mlp-ranknet", "mlp-lambdarank", "mlp-listnet", "mlp-listmle", "mlp-approxndcg")


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    from bench import quality

    root = need("mq2008")
    # one training thread: the figures are the bench's, but a test must not depend on having
    # both cores to itself (two torch threads on one free core stall each other)
    one_thread = {
        name: {**spec, "training": {**spec["training"], "threads": 1}}
        if "training" in spec
        else spec
        for name, spec in quality.MODELS.items()
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quality, "MODELS", one_thread)
        return {
            name: quality.run_one(name, root, [1, 2, 3, 4, 5]) for name in ("lightgbm", *NEURAL)
        }


def test_every_model_is_evaluated_on_all_five_test_folds(results):
    for name, res in results.items():
        assert [f["fold"] for f in res["folds"]] == [1, 2, 3, 4, 5], name
        assert all(0.0 < f["ndcg@10"] <= 1.0 for f in res["folds"]), name


def test_the_best_neural_model_is_at_least_as_good_as_lightgbm(results):
    best = max(NEURAL, key=lambda n: results[n]["mean"]["ndcg@10"])
    assert results[best]["mean"]["ndcg@10"] >= results["lightgbm"]["mean"]["ndcg@10"], {
        n: round(r["mean"]["ndcg@10"], 4) for n, r in results.items()
    }


@pytest.mark.parametrize("name", NEURAL)
def test_every_neural_loss_reaches_ndcg10_of_0_68_over_five_folds(results, name):
    assert results[name]["mean"]["ndcg@10"] >= 0.68, results[name]["mean"]
