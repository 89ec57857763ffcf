"""Export of the retrain pipeline's challenger (step 4 of :mod:`ltr.pipelines.retrain`) into
the run's staging store, and its publication into the serving model store once accepted."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ltr.pipelines.config import PipelineConfig
from ltr.pipelines.gates import LATENCY_ROWS, check_latency, check_parity
from ltr.pipelines.retrain_data import _load_split, _run_dir
from ltr.settings import Settings

log = logging.getLogger(__name__)


def staging_dir(settings: Settings, key: str) -> Path:
    """``<LTR_HOME>/pipelines/retrain/<run key>/export``: a model store of the run's own,
    where the challenger is exported and judged before it may enter the serving store."""
    return _run_dir(settings, key) / "export"


def publish_challenger(export: dict[str, Any], verdict: dict[str, Any], settings: Settings) -> Path:
    """Copy an accepted challenger from the run's staging store into the serving model store
    with its gate verdict (``gates.json``, read by :mod:`ltr.promotion.eligibility`).

    Atomic: the folder appears complete or not at all. A version already published with
    the same sha256 only gets its verdict (re)written; another artifact under the same name
    is refused (ValueError: the serving store's versions are immutable).
    """
    from ltr.promotion.eligibility import write_gate_verdict

    if not verdict.get("accepted"):
        raise ValueError(f"{export['version']} did not pass the gates: it is not published")
    source = Path(export["path"])
    final = settings.models_dir / "versions" / str(export["version"])
    if source.resolve() == final.resolve():
        write_gate_verdict(final, verdict)
        return final
    if (final / "metadata.json").is_file():
        meta = json.loads((final / "metadata.json").read_text())
        if meta.get("sha256") != export["sha256"]:
            raise ValueError(
                f"{final} already holds another artifact (sha256 {str(meta.get('sha256'))[:12]}, "
                f"not {str(export['sha256'])[:12]}); the serving store's versions are immutable: "
                "remove it by hand if it never served"
            )
        write_gate_verdict(final, verdict)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        write_gate_verdict(tmp, verdict)
        if final.exists():  # a half-copied folder of a crashed try (no metadata.json)
            shutil.rmtree(final)
        os.rename(tmp, final)
        os.chmod(final, 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("published %s into the model store %s", export["version"], settings.models_dir)
    return final


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

    The export goes to the run's staging store (:func:`staging_dir`), not to the serving
    model store: only a challenger that passes every gate is published there
    (:func:`publish_challenger`, by ``register_and_request``), so a rejected one can never
    be picked for promotion. A failed gate is not an error: the result says which passed
    (``parity.ok``, ``latency.ok``) and why not. An export that fails parity writes nothing;
    an existing version folder of this candidate (an earlier try, staged or published) is
    reused.
    """
    from ltr.export.onnx_export import ExportParityError, export_ranker
    from ltr.training.checkpoint import load_checkpoint
    from ltr.utils.io import sha256_file

    version = str(best["run_name"])
    staging = staging_dir(settings, data["run_key"])
    folder = staging / "versions" / version
    published = settings.models_dir / "versions" / version
    if not (folder / "metadata.json").is_file() and (published / "metadata.json").is_file():
        folder = published  # published by an earlier try whose staging is gone
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
                staging,
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
