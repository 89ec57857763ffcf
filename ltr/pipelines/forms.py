"""What the DAGs' trigger forms offer, computed when a DAG file is parsed.

Parse time must stay cheap and must never fail (a DAG that does not parse has no form at
all): everything here reads a few small files (the pipeline config, the model store's
folder names, ``routing.json``, the gate verdicts and promotion requests), imports nothing
heavy (no MLflow), and falls back to defaults with a warning when something is missing or
broken; the run's first task then reports the real problem as a sentence.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ltr.pipelines.config import PromotionDefaults, ReportConfig, load_pipeline_config

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CHOICES",
    "SERVICE_URL_ENV",
    "promotion_defaults",
    "report_defaults",
    "service_url_default",
    "version_choices",
]

#: The environment variable naming the rank service the promotion watches by default.
SERVICE_URL_ENV = "LTR_SERVICE_URL"
#: At most this many versions (newest first) are offered in the promotion form.
MAX_CHOICES = 100


def promotion_defaults() -> PromotionDefaults:
    """The ``promotion:`` section of the pipeline config; built-in defaults if unreadable."""
    try:
        return load_pipeline_config().promotion
    except Exception as exc:  # parse must not fail: the deploy task reports the error
        log.warning("promotion form: pipeline config unreadable (%s); built-in defaults", exc)
        return PromotionDefaults()


def report_defaults() -> ReportConfig:
    """The ``report:`` section of the pipeline config; built-in defaults if unreadable."""
    try:
        return load_pipeline_config().report
    except Exception as exc:  # parse must not fail: the collect task reports the error
        log.warning("report form: pipeline config unreadable (%s); built-in defaults", exc)
        return ReportConfig()


def service_url_default(defaults: PromotionDefaults | None = None) -> str | None:
    """``$LTR_SERVICE_URL``, else ``promotion.service_url`` of the pipeline config, else None
    (no guess: a made-up port would point the observation at nothing)."""
    env = os.environ.get(SERVICE_URL_ENV, "").strip()
    if env:
        return env
    d = defaults if defaults is not None else promotion_defaults()
    return (d.service_url or "").strip() or None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _label(version: str, roles: list[str], verdict: dict[str, Any] | None, request: Any) -> str:
    """One line for the form: the version, whether it serves, and its promotion status."""
    parts = []
    if roles:
        parts.append("serving " + "/".join(roles))
    if isinstance(request, dict):
        when = str(request.get("created_at") or "")[:10]
        mlflow = (request.get("mlflow") or {}).get("version")
        metric, value = request.get("metric"), (request.get("metrics") or {}).get("holdout", {})
        score = value.get(metric) if isinstance(value, dict) and metric else None
        text = f"promotion requested {when}".rstrip() + " (gates passed"
        text += f", MLflow v{mlflow}" if mlflow else ""
        text += f", {metric} {score:.4f}" if isinstance(score, int | float) else ""
        parts.append(text + ")")
    elif verdict is not None and verdict.get("accepted"):
        parts.append(f"gates passed (run {verdict.get('run_key', '?')})")
    elif verdict is not None:
        parts.append("REJECTED by the gates: needs the override")
    elif not roles:
        parts.append("no gate verdict: promotable only if registered in MLflow, else override")
    return f"{version} - {'; '.join(parts)}" if parts else version


def version_choices(
    models_dir: Path | None = None, requests_dir: Path | None = None, limit: int = MAX_CHOICES
) -> dict[str, str]:
    """The model store's versions, newest first, each with a label saying whether it serves
    and its promotion status (request / gate verdict); ``{}`` for an empty or missing store.
    Never raises."""
    try:
        if models_dir is None or requests_dir is None:
            from ltr.settings import get_settings

            home = get_settings().home
            models_dir = models_dir or home / "models"
            requests_dir = requests_dir or home / "promotions" / "requests"
        versions = Path(models_dir) / "versions"
        if not versions.is_dir():
            return {}
        found = []
        for folder in versions.iterdir():
            meta = folder / "metadata.json"
            if folder.name.startswith(".") or not meta.is_file():
                continue  # a temp folder of an export in progress, or not an artifact
            found.append((meta.stat().st_mtime, folder))
        found.sort(key=lambda item: (-item[0], item[1].name))
        routing = _read_json(Path(models_dir) / "routing.json") or {}
        roles: dict[str, list[str]] = {}
        if routing.get("production"):
            roles.setdefault(str(routing["production"]), []).append("production")
        for variant in routing.get("variants") or []:
            if isinstance(variant, dict) and variant.get("version") != routing.get("production"):
                roles.setdefault(str(variant.get("version")), []).append(
                    str(variant.get("name") or "variant")
                )
        out = {}
        for _, folder in found[:limit]:
            v = folder.name
            verdict = _read_json(folder / "gates.json")
            request = _read_json(Path(requests_dir) / f"{v}.json")
            out[v] = _label(v, roles.get(v, []), verdict, request)
        return out
    except Exception as exc:  # parse must not fail: the form then takes a typed version
        log.warning("promotion form: the model store could not be listed (%s)", exc)
        return {}
