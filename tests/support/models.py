"""Tiny real models: a 4-feature MLP exported with the project's ``export_ranker`` (ONNX,
parity checked, metadata) into a model store, and registered in the MLflow registry."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltr.data.dataset import LetorDataset

FEATURES = ["f0", "f1", "f2", "f3"]
#: What the promotion tests export with (a validation metric for the promotion record).
PROMOTION_META: dict[str, Any] = {
    "model_type": "mlp",
    "loss": "ranknet",
    "metrics": {"valid": {"ndcg@10": 0.5}},
}


def validation_set(names: Sequence[str], seed: int) -> LetorDataset:
    """Two queries of six documents with random features and labels 0..2 (for parity)."""
    rng = np.random.default_rng(seed)
    return LetorDataset(
        features=rng.standard_normal((12, len(names))).astype(np.float32),
        labels=rng.integers(0, 3, 12).astype(np.float32),
        qids=np.array(["q0"] * 6 + ["q1"] * 6, dtype=object),
        doc_ids=np.array([f"d{i}" for i in range(12)], dtype=object),
        feature_names=list(names),
    )


def export_tiny_mlp(
    models_dir: Path,
    version: str,
    seed: int,
    meta: Mapping[str, Any] = PROMOTION_META,
    *,
    extra_required: str | None = None,
) -> Path:
    """Export an MLP (one hidden layer of 4, weights from ``seed``) over ``FEATURES`` as
    ``models_dir/versions/<version>``; its path.

    ``extra_required`` adds a request feature the model requires: requests that do not
    send it are answered 422 by this version.
    """
    import torch

    from ltr.export.onnx_export import export_ranker, feature_schema
    from ltr.models.neural import build_model
    from ltr.models.rankers import NeuralRanker

    names = [*FEATURES, *([extra_required] if extra_required else [])]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    ranker = NeuralRanker(
        build_model("mlp", len(names), {"hidden": [4]}), "mlp", {"hidden": [4]}, "ranknet", names
    )
    schema = feature_schema(names)
    for entry in schema:
        entry["required"] = entry["name"] == extra_required
    with warnings.catch_warnings():  # the project exports with TorchScript on purpose
        warnings.simplefilter("ignore")
        out = export_ranker(
            ranker,
            dict(meta),
            validation_set(names, seed),
            models_dir,
            version=version,
            latency=False,
            feature_sources=schema,
        )
    return Path(out["path"])


def export_promotion_versions(models_dir: Path) -> None:
    """v1 and v2 (healthy) and v3, which requires the request feature ``f_extra`` that no
    traffic sends: each request routed to v3 is a 422 (a client error that the champion does
    not have, so held against v3)."""
    export_tiny_mlp(models_dir, "v1", seed=1)
    export_tiny_mlp(models_dir, "v2", seed=2)
    export_tiny_mlp(models_dir, "v3", seed=3, extra_required="f_extra")
    for version in ("v1", "v2", "v3"):  # promotable as the retrain's accepted ones are
        mark_gated(models_dir, version)


def mark_gated(models_dir: Path, version: str) -> None:
    """Record a passing gate verdict for ``version``, as the retrain does when it publishes
    (``ltr.promotion.eligibility``: such a version may be promoted without registration)."""
    from ltr.promotion.eligibility import write_gate_verdict

    write_gate_verdict(
        models_dir / "versions" / version,
        {"accepted": True, "reason": "accepted by the test fixture", "run_key": "fixture"},
    )


def register_versions(
    models_dir: Path,
    versions: Iterable[str],
    *,
    name: str | None = None,
    champion: str | None = None,
) -> dict[str, str]:
    """Register exported versions in order (each becomes the challenger) under ``name``
    (the registry's default name when None), making ``champion`` the champion as soon as it
    is registered; store version -> MLflow model version."""
    from ltr import registry

    model_name = name or registry.DEFAULT_NAME
    registered: dict[str, str] = {}
    for version in versions:
        rv = registry.register_model(models_dir / "versions" / version, name=model_name)
        registered[version] = rv.version
        if version == champion:
            registry.set_champion(model_name, rv.version)
    return registered
