"""Checks of the retrain's inputs before anything is trained (step 0 of the retrain).

Everything a retrain reads besides the labels themselves is known before training starts:
the pipeline config, the experiment configs it names, the gate metric, the offline store's
feature layout and the champion's artifact. A mismatch among them would otherwise surface
only after training (the export reads the layout, the evaluation scores the champion), and
no retry can fix it. :func:`check_retrain_inputs` finds every such problem at once and
raises :class:`~ltr.pipelines.failures.PipelineConfigError` naming each with its fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ltr.pipelines.config import PipelineConfig, pipeline_config_path
from ltr.pipelines.failures import PipelineConfigError
from ltr.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["check_retrain_inputs"]


def _experiment_problems(cfg: PipelineConfig) -> list[str]:
    from ltr.training.config import load_config

    if not cfg.training.configs:
        return ["training.configs is empty: name at least one experiment config"]
    problems = []
    for path in cfg.training.configs:
        try:
            load_config(cfg.resolve(path), dict(cfg.training.overrides) or None)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(f"training.configs entry {str(path)!r}: {exc}")
    return problems


def _metric_problems(cfg: PipelineConfig) -> list[str]:
    from ltr.metrics import parse_metric

    try:
        parse_metric(cfg.gates.metric)
    except ValueError as exc:
        return [f"gates.metric: {exc}"]
    return []


def _champion_problems(settings: Settings, layout: dict[str, Any] | None) -> list[str]:
    """The production version of routing.json must exist and read the store's features."""
    from ltr.model_store import read_routing

    models = settings.models_dir
    try:
        routing = read_routing(models)
    except (OSError, ValueError) as exc:
        return [f"{models / 'routing.json'} cannot be read: {exc}"]
    champion = (routing or {}).get("production")
    if not champion:
        return []
    meta_path = models / "versions" / str(champion) / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return [
            f"routing.json names the champion {champion}, but {meta_path} is missing or "
            "unreadable: restore the version folder or roll back to one that exists "
            "(`ltr rollback --to VERSION`)"
        ]
    if layout is not None and meta.get("n_features") not in (None, layout["n_features"]):
        return [
            f"the champion {champion} takes {meta['n_features']} features, the offline store "
            f"holds {layout['n_features']}: the two cannot be compared on the same test "
            "queries; serve a model of this feature set, or use another LTR_HOME for the new "
            "layout"
        ]
    return []


def check_retrain_inputs(cfg: PipelineConfig, settings: Settings) -> dict[str, Any]:
    """Every problem that would fail the retrain whatever the data, or raise nothing.

    Raises PipelineConfigError listing each problem with what to change. Returns what was
    checked (for the task's log and XCom).
    """
    from ltr.features.ingest import read_layout
    from ltr.features.store import offline_dir
    from ltr.pipelines.feature_pipeline import layout_problems

    store = offline_dir(settings)
    layout = read_layout(store)
    problems = [
        *_experiment_problems(cfg),
        *_metric_problems(cfg),
        *layout_problems(cfg, layout, store),
        *_champion_problems(settings, layout),
    ]
    source = pipeline_config_path()
    if problems:
        fix = (
            f"fix {source} (LTR_PIPELINE_CONFIG; default <LTR_HOME>/pipeline.yaml when it "
            "exists, else configs/pipeline.yaml), then clear the task"
        )
        raise PipelineConfigError(
            f"the retrain cannot succeed with the pipeline config {source}: "
            + "; ".join(problems)
            + f". To fix: {fix}."
        )
    log.info("retrain inputs checked against %s: no mismatch", source)
    return {
        "pipeline_config": str(Path(source).resolve()),
        "configs": [str(p) for p in cfg.training.configs],
        "layout": None if layout is None else {"n_features": layout["n_features"]},
    }
