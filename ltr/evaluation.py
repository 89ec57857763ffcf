"""Score a LETOR dataset with a checkpoint or an exported ONNX artifact, and evaluate it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ltr.data.dataset import LetorDataset


@dataclass
class Scorer:
    kind: str  # "checkpoint" | "onnx"
    description: str
    n_features: int
    score: Callable[[LetorDataset], np.ndarray]


def _onnx_scorer(model_path: Path, metadata: dict[str, Any] | None) -> Scorer:
    from ltr.export.latency import make_session

    if metadata is not None:
        from ltr.utils.io import sha256_file

        expected = metadata.get("sha256")
        if expected and sha256_file(model_path) != expected:
            raise ValueError(f"{model_path}: sha256 does not match metadata.json; refusing it")
    sess = make_session(str(model_path))
    shape = sess.get_inputs()[0].shape
    n_features = int(shape[1]) if isinstance(shape[1], int) else int((metadata or {})["n_features"])

    def score(ds: LetorDataset) -> np.ndarray:
        out = np.empty(ds.n_docs, dtype=np.float64)
        for _, rows in ds.iter_queries():
            out[rows] = sess.run(None, {"features": ds.features[rows]})[0]
        return out

    desc = f"onnx {model_path}" + (f" (version {metadata.get('version')})" if metadata else "")
    return Scorer("onnx", desc, n_features, score)


def load_scorer(path: str | Path) -> Scorer:
    """A checkpoint folder (checkpoint.json), a model version folder (model.onnx +
    metadata.json) or a bare ``.onnx`` file."""
    p = Path(path)
    if p.is_dir() and (p / "checkpoint.json").is_file():
        from ltr.training.checkpoint import load_checkpoint

        ranker, meta = load_checkpoint(p)
        return Scorer(
            "checkpoint",
            f"checkpoint {p} ({meta['model_type']}/{meta['loss']})",
            int(meta["n_features"]),
            lambda ds: np.asarray(ranker.score(ds), dtype=np.float64),
        )
    if p.is_dir() and (p / "model.onnx").is_file():
        meta_path = p / "metadata.json"
        metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        return _onnx_scorer(p / "model.onnx", metadata)
    if p.is_file() and p.suffix == ".onnx":
        return _onnx_scorer(p, None)
    raise FileNotFoundError(
        f"{p}: not a checkpoint folder, a model version folder or an .onnx file"
    )
