"""The weekly online-metrics report: HTML, plain text, JSON and PNG charts in one folder.

:func:`render_report` writes ``report.html`` (charts referenced by relative file names, so
the saved file opens in a browser), ``report.txt``, ``report.json`` (the input data and the
charts drawn) and one PNG per chart with data, each file atomically. :func:`email_html`
renders the same HTML template with ``cid:<name>`` image sources for the e-mail
(:mod:`ltr.online.mail`), so the saved page and the mail differ only in those sources.

The input may be partial (see :mod:`ltr.online.report_view`): a section without data says
"no data" instead of failing. Everything that comes from outside (model versions, variant
names, reasons) is escaped in the HTML by Jinja's autoescaping.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ltr.online.report_charts import CHARTS, draw_charts
from ltr.online.report_view import build_view, subject, to_json_safe
from ltr.utils.io import atomic_open

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
TEXT_NAME = "report.txt"
JSON_NAME = "report.json"
#: Version of the ``report.json`` layout.
REPORT_FORMAT = 1


@dataclass(frozen=True)
class ReportArtifacts:
    """What :func:`render_report` wrote; ``images`` maps a chart name (a valid MIME
    Content-ID, also the PNG's file stem) to its file."""

    html_path: Path
    json_path: Path
    text_path: Path
    images: dict[str, Path]
    subject: str


# ------------------------------------------------------------------ formatting filters
def _na(fmt: str) -> Any:
    def fn(value: Any) -> str:
        return "n/a" if value is None else fmt.format(value)

    return fn


def _p_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _interval(value: tuple[float, float] | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"[{value[0]:+.{digits}f}, {value[1]:+.{digits}f}]"


def _humanize(value: str | None) -> str:
    return "n/a" if not value else value.replace("_", " ")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ltr.online", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"),
            disabled_extensions=("txt", "txt.j2"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=_na("{:.3f}"),
        num1=_na("{:,.1f}"),
        signed=_na("{:+.3f}"),
        pct=lambda v: "n/a" if v is None else f"{100 * v:.1f}%",
        pct2=lambda v: "n/a" if v is None else f"{100 * v:.2f}%",
        ms=_na("{:.1f} ms"),
        count=_na("{:,}"),
        text=lambda v: "n/a" if v is None or v == "" else v,
        pvalue=_p_value,
        interval=_interval,
        humanize=_humanize,
    )
    return env


def _render(template: str, view: Mapping[str, Any], image_src: Mapping[str, str]) -> str:
    charts = {name: title for name, (title, _) in CHARTS.items()}
    return (
        _environment()
        .get_template(template)
        .render(r=view, image_src=image_src, chart_titles=charts, subject=subject(view))
    )


def _html(view: Mapping[str, Any], image_src: Mapping[str, str]) -> str:
    return _render("weekly_report.html.j2", view, image_src)


# ------------------------------------------------------------------------------ public
def render_report(data: Mapping[str, Any], out_dir: Path) -> ReportArtifacts:
    """Render the week's report from ``data`` into ``out_dir`` (created if missing).

    Charts are written first and the HTML last, so a reader that sees ``report.html`` also
    sees every image it references. Rendering again into the same folder replaces the files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    safe_data = to_json_safe(data if isinstance(data, Mapping) else {})
    view = build_view(safe_data, rendered_at)

    images = draw_charts(view, out_dir)
    title = subject(view)
    text_path, json_path, html_path = out_dir / TEXT_NAME, out_dir / JSON_NAME, out_dir / HTML_NAME
    with atomic_open(text_path) as fh:
        fh.write(_render("weekly_report.txt.j2", view, {}))
    document = {
        "format": REPORT_FORMAT,
        "subject": title,
        "rendered_at": rendered_at,
        "charts": [
            {"name": name, "file": path.name, "title": CHARTS[name][0]}
            for name, path in images.items()
        ],
        "data": safe_data,
    }
    with atomic_open(json_path) as fh:
        json.dump(document, fh, indent=2, ensure_ascii=False, allow_nan=False)
        fh.write("\n")
    with atomic_open(html_path) as fh:
        fh.write(_html(view, {name: path.name for name, path in images.items()}))
    log.info("weekly report written to %s (%d charts)", out_dir, len(images))
    return ReportArtifacts(
        html_path=html_path,
        json_path=json_path,
        text_path=text_path,
        images=images,
        subject=title,
    )


def load_report_document(artifacts: ReportArtifacts) -> dict[str, Any]:
    """The ``report.json`` that :func:`render_report` wrote for ``artifacts``."""
    with open(artifacts.json_path, encoding="utf-8") as fh:
        document: dict[str, Any] = json.load(fh)
    return document


def email_html(artifacts: ReportArtifacts) -> str:
    """The report's HTML with ``cid:<name>`` image sources, for a ``multipart/related`` mail.

    Rendered from the saved ``report.json`` with the same template as ``report.html``.
    """
    document = load_report_document(artifacts)
    view = build_view(document.get("data") or {}, str(document.get("rendered_at") or ""))
    return _html(view, {name: f"cid:{name}" for name in artifacts.images})
