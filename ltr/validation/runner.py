"""Run the expectations with GX in one ephemeral context; write the reports atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.utils.io import write_json_atomic
from ltr.validation.expectations import build_expectations
from ltr.validation.frames import letor_frame, query_frame, read_raw
from ltr.validation.policy import DataValidationError, ValidationPolicy
from ltr.validation.report import MAX_EXAMPLES, ValidationReport, num_text, plain

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: GX logs hundreds of INFO lines of its own while it is imported and set up (209 of the
#: 232 lines of a feature-pipeline ``validate`` task: "Skipping registering function ...",
#: "Multiple declarations of metric ..."); they say nothing about the data.
GX_LOGGER = "great_expectations"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Columns GX quotes beside each unexpected value, per batch.
_INDEX_COLUMNS = {"documents": ["qid", "doc_id"], "queries": ["qid"]}


def validate_file(
    path: str | Path,
    policy: ValidationPolicy,
    *,
    query_file: str | Path | None = None,
    report_dir: Path | None = None,
    name: str | None = None,
) -> ValidationReport:
    """Validate a raw LETOR (or Parquet) file, missing values included (see :func:`read_raw`).

    A malformed file raises ``LetorFormatError`` (``file:line: reason``): it cannot be
    validated. ``name`` defaults to the file's stem.
    """
    ds = read_raw(path, query_file=query_file)
    name = report_name(path) if name is None else name
    return validate_dataset(ds, policy, report_dir=report_dir, name=name)


def report_name(path: str | Path) -> str:
    """The default report name of a file: its stem, reduced to ``[A-Za-z0-9._-]``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).stem).lstrip("._-") or "raw"


def validate_dataset(
    ds: LetorDataset,
    policy: ValidationPolicy,
    *,
    report_dir: Path | None = None,
    name: str = "raw",
) -> ValidationReport:
    """Run the policy's expectations on ``ds`` with GX; write the reports under ``report_dir``.

    Files: ``<report_dir>/<name>.validation.json`` (this report) and
    ``<report_dir>/<name>.gx.json`` (GX's result per batch), both written atomically.
    """
    if not _NAME.match(name):
        raise ValueError(f"name {name!r} must be letters, digits, '.', '_' or '-'")
    started = time.perf_counter()
    with quiet_gx():
        batches = build_expectations(ds, policy)
        frames = _frames(ds, batches)
        gx_results, gx_version = _run_gx(frames, batches)

    results: list[dict[str, Any]] = []
    for batch, res in gx_results.items():
        results += [_result_entry(batch, r) for r in res.results]
    success = all(r["success"] for r in results)
    stats = _statistics(ds, policy, frames["queries"], results)
    stats["gx_version"] = gx_version
    stats["duration_s"] = round(time.perf_counter() - started, 3)
    report = ValidationReport(success=success, results=results, statistics=stats, name=name)
    if report_dir is not None:
        report_dir = Path(report_dir)
        report.gx_result_path = report_dir / f"{name}.gx.json"
        report.report_path = report_dir / f"{name}.validation.json"
        write_json_atomic(
            report.gx_result_path, {b: r.to_json_dict() for b, r in gx_results.items()}
        )
        write_json_atomic(report.report_path, report.to_dict())
    failed = stats["unsuccessful_expectations"]
    logger.info("validation %s: %d of %d expectations failed", name, failed, len(results))
    return report


def check(ds: LetorDataset, policy: ValidationPolicy, **kw: Any) -> ValidationReport:
    """:func:`validate_dataset`, raising :class:`DataValidationError` when it fails."""
    report = validate_dataset(ds, policy, **kw)
    if not report.success:
        raise DataValidationError(report.summary(), report)
    return report


def check_file(path: str | Path, policy: ValidationPolicy, **kw: Any) -> ValidationReport:
    """:func:`validate_file`, raising :class:`DataValidationError` when it fails (for DAGs)."""
    report = validate_file(path, policy, **kw)
    if not report.success:
        raise DataValidationError(f"{path}: {report.summary()}", report)
    return report


@contextlib.contextmanager
def quiet_gx(level: int = logging.WARNING) -> Iterator[None]:
    """GX's own loggers at ``level`` (WARNING) while validating, unless configured already.

    Only a ``great_expectations`` logger left at NOTSET is raised, and it is put back
    afterwards: someone who set it to DEBUG on purpose still gets everything. Our own
    result lines (``ltr.validation``) are untouched.
    """
    gx_logger = logging.getLogger(GX_LOGGER)
    if gx_logger.level != logging.NOTSET:
        yield
        return
    gx_logger.setLevel(level)
    try:
        yield
    finally:
        gx_logger.setLevel(logging.NOTSET)


# ------------------------------------------------------------------------ internals


def _frames(ds: LetorDataset, batches: dict[str, list[Any]]) -> dict[str, pd.DataFrame]:
    import pandas as pd

    frames = {"documents": letor_frame(ds), "queries": query_frame(ds)}
    if "source" in batches:
        frames["source"] = pd.DataFrame(
            {"imputed_at_read": [ds.missing_report.total], "cells": [ds.n_docs * ds.n_features]}
        )
    return frames


def _run_gx(
    frames: dict[str, pd.DataFrame], batches: dict[str, list[Any]]
) -> tuple[dict[str, Any], str]:
    """Validate each frame with its expectations in one ephemeral GX context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory, without the temporary data-docs folder or progress bars GX adds by default.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    source = context.data_sources.add_pandas("ltr")
    out: dict[str, Any] = {}
    for batch, expectations in batches.items():
        asset = source.add_dataframe_asset(batch)
        suite = context.suites.add(gx.ExpectationSuite(name=batch, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=batch, data=asset.add_batch_definition_whole_dataframe(batch), suite=suite
            )
        )
        result_format: dict[str, Any] = {
            "result_format": "SUMMARY",
            "partial_unexpected_count": MAX_EXAMPLES,
        }
        if _INDEX_COLUMNS.get(batch):
            result_format["unexpected_index_column_names"] = _INDEX_COLUMNS[batch]
        out[batch] = definition.run(
            batch_parameters={"dataframe": frames[batch]}, result_format=result_format
        )
    return out, str(gx.__version__)


def _result_entry(batch: str, result: Any) -> dict[str, Any]:
    """One expectation's outcome as plain JSON: type, column(s), success, observations."""
    config = result.expectation_config
    kwargs = config.kwargs
    meta = config.meta or {}
    res = result.result or {}
    column = kwargs.get("column")
    if config.type == "expect_compound_columns_to_be_unique":
        columns = list(kwargs["column_list"])
    else:
        columns = [column] if column else []
    entry: dict[str, Any] = {
        "batch": batch,
        "expectation": config.type,
        "column": column,
        "columns": columns,
        "success": bool(result.success),
        "expected": meta.get("what"),
        "where": meta.get("where"),
    }
    if "observed_value" in res:
        entry["observed_value"] = plain(res["observed_value"])
    if "unexpected_count" in res:
        entry["element_count"] = int(res.get("element_count", 0))
        entry["unexpected_count"] = int(res["unexpected_count"])
        entry["unexpected_percent"] = plain(res.get("unexpected_percent"))
        # With index columns GX quotes each value beside them; otherwise the bare values.
        key = (
            "partial_unexpected_index_list"
            if batch in _INDEX_COLUMNS
            else "partial_unexpected_list"
        )
        entry["examples"] = [plain(x) for x in res.get(key) or []][:MAX_EXAMPLES]
    message = _exception_message(result.exception_info)
    if message:
        entry["exception"] = message
    return entry


def _exception_message(info: Any) -> str | None:
    """GX 1.x reports an error either as one dict or as one dict per metric that failed."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for sub in info.values():
        if isinstance(sub, dict) and sub.get("raised_exception"):
            return str(sub.get("exception_message"))
    return None


def _statistics(
    ds: LetorDataset, policy: ValidationPolicy, queries: pd.DataFrame, results: list[dict[str, Any]]
) -> dict[str, Any]:
    nan = np.isnan(ds.features)
    inf = np.isinf(ds.features)
    per_feature = (nan | inf).sum(axis=0)
    values, counts = np.unique(ds.labels[np.isfinite(ds.labels)], return_counts=True)
    failed = sum(not r["success"] for r in results)
    sizes = queries["n_docs"].to_numpy()
    return {
        "source": ds.source,
        "rows": ds.n_docs,
        "queries": int(queries["qid"].nunique()),
        "features": ds.n_features,
        "cells": ds.n_docs * ds.n_features,
        "missing_cells": int(nan.sum() + inf.sum()),
        "nan_cells": int(nan.sum()),
        "inf_cells": int(inf.sum()),
        "missing_by_feature": {
            f"f{i + 1}": int(c) for i, c in enumerate(per_feature.tolist()) if c
        },
        "missing_report": ds.missing_report.as_dict(),
        "labels": {num_text(float(v)): int(c) for v, c in zip(values, counts, strict=True)},
        "docs_per_query": {
            "min": int(sizes.min()) if sizes.size else 0,
            "max": int(sizes.max()) if sizes.size else 0,
        },
        "policy": dataclasses.asdict(policy),
        "evaluated_expectations": len(results),
        "successful_expectations": len(results) - failed,
        "unsuccessful_expectations": failed,
    }
