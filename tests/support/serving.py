"""The rank-service tests' helpers: tiny real models with known weights, a model store on
disk, the app's settings, requests and the scores they must get.

Each model is a linear scorer (``MLPScorer`` without hidden layers, identity normaliser)
whose weights are set by hand, exported with the real ``export_ranker`` (ONNX + parity +
metadata). Expected scores are therefore ``x @ w + b``, and tests also recompute them with
ONNX Runtime straight from the artifact. The fixtures are in ``tests/serving/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ltr.model_store import write_routing
from ltr.utils.io import write_json_atomic
from serving.main import create_app
from serving.settings import ServingSettings
from support.models import FEATURES, validation_set

# What else the serving tests use, so that they import from here alone.
from support.net import free_port as free_port
from support.net import wait_until as wait_until
from support.redis import PrivateRedis as PrivateRedis
from support.service import LiveServer as LiveServer

with warnings.catch_warnings():  # starlette's notice about httpx2 is not ours to act on
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

#: Defaults of the request-sourced features (f3's default is not zero, so it shows).
DEFAULTS = {"f0": 0.0, "f1": 0.0, "f2": 0.0, "f3": 1.5}
WEIGHTS = {
    "v1": (np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32), 0.25),
    "v2": (np.array([-1.0, 2.0, -0.5, 1.0], dtype=np.float32), -0.1),
    "vfv": (np.array([0.5, 1.0, -1.0, 2.0], dtype=np.float32), 0.0),
}
#: vfv reads f1 and f2 from the ``doc_features`` view (indices 0 and 1).
FV_VIEW = "doc_features"

REDIS_URL = "redis://127.0.0.1:6379/8"
TEST_DB = 8


def request_schema() -> list[dict[str, Any]]:
    return [{"name": n, "source": "request", "default": DEFAULTS[n]} for n in FEATURES]


def view_schema() -> list[dict[str, Any]]:
    return [
        {"name": "f0", "source": "request", "default": 0.0},
        {"name": "f1", "source": FV_VIEW, "index": 0, "default": 0.0},
        {"name": "f2", "source": FV_VIEW, "index": 1, "default": 0.0},
        {"name": "f3", "source": "request", "default": DEFAULTS["f3"]},
    ]


def _linear_ranker(w: np.ndarray, b: float) -> Any:
    import torch

    from ltr.models.neural import MLPScorer
    from ltr.models.rankers import NeuralRanker

    module = MLPScorer(len(FEATURES), hidden=(), dropout=0.0)
    with torch.no_grad():
        module.net[0].weight.copy_(torch.as_tensor(w).reshape(1, -1))
        module.net[0].bias.fill_(b)
    return NeuralRanker(module, "mlp", {"hidden": [], "dropout": 0.0}, "ranknet", FEATURES)


def export_templates(root: Path) -> None:
    """Export v1, v2 (request features) and vfv (feature view) into the model store ``root``."""
    import torch

    from ltr.export.onnx_export import export_ranker

    torch.set_num_threads(1)
    valid = validation_set(FEATURES, seed=0)
    for version, (w, b) in WEIGHTS.items():
        schema = view_schema() if version == "vfv" else request_schema()
        with warnings.catch_warnings():  # the project exports with TorchScript on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            export_ranker(
                _linear_ranker(w, b),
                {"model_type": "mlp", "loss": "ranknet"},
                valid,
                root,
                version=version,
                latency=False,
                feature_sources=schema,
            )


def install(store: Path, template_root: Path, version: str, as_version: str | None = None) -> Path:
    """Copy a template version into ``store`` atomically (staging folder + rename)."""
    target = as_version or version
    versions = store / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target}.", dir=versions))
    shutil.rmtree(staging)
    shutil.copytree(template_root / "versions" / version, staging)
    os.rename(staging, versions / target)
    return versions / target


@dataclass
class Store:
    """A model store on disk plus helpers to change it while an app serves it."""

    root: Path
    templates: Path

    def install(self, *versions: str) -> None:
        for v in versions:
            if not (self.root / "versions" / v).exists():
                install(self.root, self.templates, v)

    def route(self, **routing: Any) -> dict[str, Any]:
        """Write routing.json atomically (validated, version bumped) by the ltr side."""
        return write_routing(self.root, routing)

    def serve(self, version: str) -> dict[str, Any]:
        return self.route(strategy="single", production=version)

    def clone(self, source: str, version: str, *, sha256: str | None = None) -> Path:
        """Publish template ``source`` as ``version`` (metadata rewritten), optionally with a
        wrong sha256 to make a broken artifact."""
        folder = install(self.root, self.templates, source, as_version=version)
        meta_path = folder / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["version"] = version
        if sha256 is not None:
            meta["sha256"] = sha256
        write_json_atomic(meta_path, meta)
        return folder

    def metadata(self, version: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.root / "versions" / version / "metadata.json").read_text()
        )
        return data


def make_settings(store: Store | Path, **overrides: Any) -> ServingSettings:
    root = store.root if isinstance(store, Store) else store
    values: dict[str, Any] = {
        "model_store": root,
        "redis_url": None,
        "reload_interval_s": 0.2,
        # a folder that does not exist: never fall back to the Feast SDK (13 s import)
        "feast_repo": root / "no-feature-repo",
        "max_candidates": 50,
        "max_batch": 40,
        "max_body_bytes": 64 * 1024,
        "max_features_per_candidate": 8,
    }
    values.update(overrides)
    return ServingSettings(_env_file=None, **values)


@contextlib.contextmanager
def serve(settings: ServingSettings) -> Iterator[TestClient]:
    """The app with its lifespan running (model load, reload loop)."""
    with TestClient(create_app(settings)) as client:
        yield client


# ----------------------------------------------------------------- scoring helpers
def feature_matrix(
    candidates: Sequence[Mapping[str, Any]], defaults: Mapping[str, float] = DEFAULTS
) -> np.ndarray:
    """What the model must see: request values by name, the schema default otherwise."""
    x = np.empty((len(candidates), len(FEATURES)), dtype=np.float32)
    for r, c in enumerate(candidates):
        feats = c.get("features") or {}
        for j, name in enumerate(FEATURES):
            x[r, j] = feats.get(name, defaults[name])
    return x


def onnx_scores(store: Store, version: str, x: np.ndarray) -> np.ndarray:
    """Scores of ``x`` by ONNX Runtime run directly on the artifact."""
    path = store.root / "versions" / version / "model.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"features": x})[0], dtype=np.float32).reshape(-1)


def linear_scores(version: str, x: np.ndarray) -> np.ndarray:
    w, b = WEIGHTS[version]
    return (x.astype(np.float64) @ w.astype(np.float64) + b).astype(np.float32)


def make_candidates(n: int, seed: int = 0, prefix: str = "d") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, len(FEATURES)))
    return [
        {"doc_id": f"{prefix}{i}", "features": {f: float(x[i, j]) for j, f in enumerate(FEATURES)}}
        for i in range(n)
    ]


def expected_order(version: str, candidates: Sequence[Mapping[str, Any]]) -> list[str]:
    scores = linear_scores(version, feature_matrix(candidates))
    order = np.argsort(-scores, kind="stable")
    return [candidates[i]["doc_id"] for i in order]


def rank_body(n: int = 8, seed: int = 0, **extra: Any) -> dict[str, Any]:
    return {"query_id": "q1", "candidates": make_candidates(n, seed), **extra}


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of one sample in a Prometheus text page (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return 0.0
