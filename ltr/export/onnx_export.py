"""Write the serving artifact of DESIGN.md from a checkpoint:

```
<models>/versions/<version>/model.onnx      features f32 [n_docs, n_features] -> scores f32 [n_docs]
<models>/versions/<version>/metadata.json   schema, metrics, sha256, fingerprint, parity, latency
```
The version folder is assembled in a temporary folder and renamed into place, so a reader
never sees half an artifact; an export that fails the parity gate leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.utils.io import sha256_file, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-5
ARTIFACT_FORMAT = 1
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ExportParityError(RuntimeError):
    """The exported graph does not reproduce the source model's scores."""

    def __init__(self, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(
            f"ONNX parity check failed: max abs score difference {max_abs_diff:.3e} "
            f"exceeds the tolerance {tolerance:.1e}; nothing was written"
        )
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance


def write_onnx(ranker: Any, path: Path, opset: int = DEFAULT_OPSET) -> int:
    """Serialise ``ranker`` to ONNX at ``path``; returns the opset used."""
    import onnx

    if getattr(ranker, "model_type", None) == "lightgbm":
        model = ranker.to_onnx(opset=min(opset, 15))
        onnx.save(model, str(path))
        return int(min(opset, 15))
    import copy

    import torch

    # Trace a CPU copy: the ranker may live on a GPU, and the graph must not depend on it.
    module = copy.deepcopy(ranker.export_module()).cpu().eval()
    sample = torch.zeros(3, len(ranker.feature_names), dtype=torch.float32)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            input_names=["features"],
            output_names=["scores"],
            dynamic_axes={"features": {0: "n_docs"}, "scores": {0: "n_docs"}},
            opset_version=opset,
            dynamo=False,
        )
    module.eval()
    onnx.checker.check_model(onnx.load(str(path)))
    return opset


def parity(ranker: Any, onnx_path: Path, ds: LetorDataset) -> float:
    """Max abs difference between the source model and ONNX Runtime, list by list."""
    from ltr.export.latency import make_session

    sess = make_session(str(onnx_path))
    ref = np.asarray(ranker.score(ds), dtype=np.float64)
    worst = 0.0
    for _, rows in ds.iter_queries():
        got = sess.run(None, {"features": ds.features[rows]})[0]
        if got.shape != (rows.stop - rows.start,):
            raise ValueError(f"ONNX output has shape {got.shape}, expected one score per document")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref[rows]))))
    return worst


def feature_schema(names: list[str], default: float = 0.0) -> list[dict[str, Any]]:
    return [{"name": n, "source": "request", "default": default} for n in names]


def export_ranker(
    ranker: Any,
    meta: dict[str, Any],
    validation: LetorDataset,
    models_dir: Path,
    *,
    version: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    latency: bool = True,
    feature_sources: list[dict[str, Any]] | None = None,
    feature_views: dict[str, dict[str, Any]] | None = None,
    feature_service: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export, check parity on ``validation``, time it, and publish the version folder."""
    version = version or meta.get("run_name") or dt.datetime.now(dt.UTC).strftime("v%Y%m%d%H%M%S")
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid model version {version!r}: use letters, digits, '.', '_', '-'")
    if validation.n_features != len(ranker.feature_names):
        raise ValueError(
            f"validation data has {validation.n_features} features; the model expects "
            f"{len(ranker.feature_names)}"
        )
    versions = Path(models_dir) / "versions"
    final = versions / version
    if final.exists() and not overwrite:
        raise FileExistsError(f"model version already exists: {final}")
    versions.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=versions))
    try:
        onnx_path = staging / "model.onnx"
        used_opset = write_onnx(ranker, onnx_path, opset)
        max_diff = parity(ranker, onnx_path, validation)
        log.info("parity max abs diff %.3e (tolerance %.1e)", max_diff, tolerance)
        if not max_diff <= tolerance:
            raise ExportParityError(max_diff, tolerance)
        lat: list[dict[str, float]] = []
        if latency:
            from ltr.export.latency import measure_latency

            lat = measure_latency(
                ranker.score_features,
                str(onnx_path),
                validation.n_features,
                repeats=50,
                warmup=5,
                sample=validation.features,
            )
        metadata = {
            "format": ARTIFACT_FORMAT,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "model_type": meta.get("model_type"),
            "loss": meta.get("loss"),
            "n_features": len(ranker.feature_names),
            "feature_schema": feature_sources or feature_schema(ranker.feature_names),
            "feature_views": feature_views or {},
            # the versioned Feast FeatureService the model was trained on and serves from
            "feature_service": feature_service if feature_views else None,
            "input": {"name": "features", "dtype": "float32", "shape": ["n_docs", "n_features"]},
            "output": {"name": "scores", "dtype": "float32", "shape": ["n_docs"]},
            "metrics": meta.get("metrics", {}),
            "metric_options": meta.get("metric_options", {}),
            "opset": used_opset,
            "sha256": sha256_file(onnx_path),
            "data_fingerprint": meta.get("data_fingerprint"),
            "code_version": meta.get("code_version"),
            "mlflow_run_id": meta.get("mlflow_run_id"),
            "mlflow_model_version": meta.get("mlflow_model_version"),
            "parity": {
                "max_abs_diff": max_diff,
                "tolerance": tolerance,
                "n_docs": validation.n_docs,
                "n_queries": validation.n_queries,
            },
            "latency_ms": lat,
            "source_run": meta.get("run_name"),
        }
        write_json_atomic(staging / "metadata.json", metadata)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        os.chmod(final, 0o755)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "version": version,
        "path": str(final),
        **{k: metadata[k] for k in ("sha256", "parity")},
    }


def export_checkpoint(
    checkpoint_dir: Path,
    models_dir: Path,
    *,
    validation: LetorDataset | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load a checkpoint, rebuild its validation split from the saved config if not given,
    and export it."""
    from ltr.training.checkpoint import load_checkpoint
    from ltr.training.config import load_config
    from ltr.training.runner import load_splits

    ranker, meta = load_checkpoint(Path(checkpoint_dir))
    if validation is None:
        data = meta.get("data", {})
        if data.get("origin") != "config":
            raise ValueError(
                f"{checkpoint_dir} was trained on data passed in memory; give the validation "
                "file for the parity check (--valid FILE)"
            )
        cfg = load_config(Path(checkpoint_dir) / "config.yaml")
        validation = load_splits(cfg).valid
        expected = data.get("valid_fingerprint")
        if expected and validation.fingerprint() != expected:
            raise ValueError(
                f"the validation data of {checkpoint_dir} changed since training "
                "(fingerprint mismatch); give it explicitly with --valid FILE"
            )
    return export_ranker(ranker, meta, validation, Path(models_dir), **kwargs)
