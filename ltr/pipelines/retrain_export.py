"""Export of the retrain pipeline's challenger (step 4 of :mod:`ltr.pipelines.retrain`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ltr.pipelines.config import PipelineConfig
from ltr.pipelines.gates import LATENCY_ROWS, check_latency, check_parity
from ltr.pipelines.retrain_data import _load_split
from ltr.settings import Settings

log = logging.getLogger(__name__)


def _p99_at(latency: list[dict[str, float]], rows: int = LATENCY_ROWS) -> float | None:
    for row in latency:
        if int(row["rows"]) == rows:
            return float(row["onnx_p99_ms"])
    return None


def _online_features(cfg: PipelineConfig, names: list[str], settings: Settings) -> dict[str, Any]:
    """Schema and views of a model that reads every feature online; checked against the
    offline store's layout, so the served model reads the columns it was trained on."""
    from ltr.features.definitions import DEFAULT_FEATURE_SERVICE, DOC_VIEW, online_schema
    from ltr.features.ingest import read_layout
    from ltr.features.store import offline_dir

    doc = sorted(cfg.doc_feature_indices)
    layout = read_layout(offline_dir(settings))
    if layout is not None and (layout["n_features"] != len(names) or layout[DOC_VIEW] != doc):
        raise ValueError(
            f"the offline store holds {layout['n_features']} features, document-only "
            f"{layout[DOC_VIEW]}; the model takes {len(names)} and the pipeline config's "
            f"doc_feature_indices are {doc}: the served model would read the wrong columns"
        )
    schema, views = online_schema(names, doc)
    return {
        "feature_sources": schema,
        "feature_views": views,
        "feature_service": DEFAULT_FEATURE_SERVICE,
    }


def export_challenger(
    best: dict[str, Any], data: dict[str, Any], cfg: PipelineConfig, settings: Settings
) -> dict[str, Any]:
    """Export the best candidate into the model store with the parity gate and latency.

    A failed gate is not an error: the result says which passed (``parity.ok``,
    ``latency.ok``) and why not. An export that fails parity writes nothing; an existing
    version folder of this candidate (an earlier try) is reused.
    """
    from ltr.export.onnx_export import ExportParityError, export_ranker
    from ltr.training.checkpoint import load_checkpoint
    from ltr.utils.io import sha256_file

    version = str(best["run_name"])
    folder = settings.models_dir / "versions" / version
    reused = (folder / "metadata.json").is_file()
    if reused:
        meta = json.loads((folder / "metadata.json").read_text())
        if sha256_file(folder / "model.onnx") != meta.get("sha256"):
            raise ValueError(f"{folder}: model.onnx does not match its metadata; remove it")
        parity, latency = meta["parity"], meta.get("latency_ms", [])
    else:
        ranker, meta = load_checkpoint(Path(best["run_dir"]))
        try:
            result = export_ranker(
                ranker,
                meta,
                _load_split(data, "valid"),
                settings.models_dir,
                version=version,
                tolerance=cfg.gates.parity_tolerance,
                latency=True,
                **_online_features(cfg, list(meta["feature_names"]), settings),
            )
        except ExportParityError as exc:
            parity = {"max_abs_diff": exc.max_abs_diff, "tolerance": exc.tolerance}
            check = check_parity(cfg.gates, exc.max_abs_diff)
            log.warning("%s: %s", version, check.detail)
            return {
                "version": version,
                "path": None,
                "sha256": None,
                "ok": False,
                "reason": f"parity gate failed: {check.detail}; nothing was written",
                "parity": {"ok": False, **parity},
                "latency": {"ok": None, "p99_ms": None, "budget_ms": cfg.gates.latency_budget_ms},
                "reused": False,
            }
        meta = json.loads((Path(result["path"]) / "metadata.json").read_text())
        parity, latency = meta["parity"], meta["latency_ms"]
    p99 = _p99_at(latency)
    checks = [check_parity(cfg.gates, parity["max_abs_diff"]), check_latency(cfg.gates, p99)]
    failed = [f"{c.gate} gate failed: {c.detail}" for c in checks if not c.passed]
    return {
        "version": version,
        "path": str(folder),
        "sha256": meta["sha256"],
        "ok": not failed,
        "reason": "; ".join(failed) or None,
        "parity": {
            "ok": checks[0].passed,
            "max_abs_diff": float(parity["max_abs_diff"]),
            "tolerance": cfg.gates.parity_tolerance,
        },
        "latency": {
            "ok": checks[1].passed,
            "p99_ms": p99,
            "budget_ms": cfg.gates.latency_budget_ms,
        },
        "feature_views": meta.get("feature_views", {}),
        "reused": reused,
    }
