"""Checkpoints: a run folder with the weights, the resolved config, the feature schema and
a fingerprint of the training data.

```
<runs>/<run_name>/checkpoint.json   model type/params, loss, feature schema, fingerprint, metrics
<runs>/<run_name>/config.yaml       the resolved experiment config
<runs>/<run_name>/model.pt          (neural) state dict   | model.lgb.txt (LightGBM)
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltr.utils.io import atomic_open, write_json_atomic

CHECKPOINT_FORMAT = 1


def save_checkpoint(directory: Path, ranker: Any, meta: dict[str, Any], config_yaml: str) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ranker.save(directory)
    with atomic_open(directory / "config.yaml") as fh:
        fh.write(config_yaml)
    payload = {"format": CHECKPOINT_FORMAT, **meta}
    write_json_atomic(directory / "checkpoint.json", payload)
    return directory


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "checkpoint.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a checkpoint folder (no checkpoint.json): {directory}")
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: corrupt checkpoint metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupt checkpoint metadata: not a JSON object")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return meta


def load_checkpoint(directory: Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild the ranker saved in ``directory``; returns ``(ranker, meta)``."""
    meta = read_checkpoint_meta(directory)
    names = meta["feature_names"]
    if meta["model_type"] == "lightgbm":
        from ltr.models.gbdt import LightGBMRanker

        return LightGBMRanker.load(directory, names, meta.get("best_iteration", 0)), meta
    from ltr.models.rankers import NeuralRanker

    ranker = NeuralRanker.load(
        directory, meta["model_type"], meta.get("model_params", {}), meta["loss"], names
    )
    return ranker, meta
