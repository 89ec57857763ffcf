"""Task functions of the daily feature pipeline (``dags/feature_pipeline.py``).

One run covers one data interval ``[start, end)``:

1. :func:`raw_files`: the LETOR files landed under ``<raw_dir>/<YYYY-MM-DD>/*.txt`` for the
   interval's UTC days (an empty list when nothing landed);
2. :func:`validate_raw`: Great Expectations on every file (policy from the pipeline config)
   plus the offline store's layout; the reports are written under
   ``<LTR_HOME>/reports/validation/<YYYY-MM-DD>/`` and any failure raises
   :class:`~ltr.validation.DataValidationError` before anything else is written;
3. :func:`write_offline`: each file into the offline store (:func:`ingest_letor`, event time
   = the file's day at 00:00 UTC, name = the file's stem) and its judgments into the labels
   table ``<offline_dir>/labels.parquet/`` (one file per ingestion, same partition name);
4. :func:`apply_features` and :func:`materialize_interval` (window
   ``[start - materialize_overlap_hours, end]``) into the online store.

Every step is idempotent for its interval: the same files give the same partition names and
leave the Parquet files as they are (a changed file replaces them atomically; its changed
rows get a later created time, so a corrected day reaches the online store when it is
materialized again, and unchanged rows are not written online again). The same functions
run from a shell (``ltr data ingest``, ``ltr features apply|materialize`` call the same
library code), so an operator can redo any step by hand.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ltr.data.errors import LetorFormatError
from ltr.features.definitions import DOC_JOIN_KEY, DOC_VIEW, EVENT_TIMESTAMP, QUERY_JOIN_KEY
from ltr.features.ingest import (
    check_batch_documents,
    ingest_letor,
    partition_name,
    read_layout,
)
from ltr.features.store import offline_dir
from ltr.pipelines.config import PipelineConfig
from ltr.settings import Settings, get_settings
from ltr.utils.io import atomic_path, write_json_atomic
from ltr.validation import DataValidationError, ValidationPolicy, report_name, validate_file

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from ltr.data.dataset import LetorDataset

__all__ = [
    "FEATURES_ASSET_URI",
    "LABELS_TABLE",
    "apply_features",
    "file_event_time",
    "interval_days",
    "layout_problems",
    "materialize_interval",
    "raw_dir",
    "raw_files",
    "read_labels",
    "validate_raw",
    "validation_policy",
    "validation_report_dir",
    "write_labels",
    "write_offline",
]

logger = logging.getLogger(__name__)

#: The Airflow Asset the feature pipeline updates after a successful run; the retrain DAG
#: is scheduled on it.
FEATURES_ASSET_URI = "ltr://features/offline"

#: The labels table, a folder of Parquet files under the offline store (not read by Feast):
#: ``query_id``, ``doc_id``, ``label`` (float32), ``event_timestamp`` (UTC).
LABELS_TABLE = "labels.parquet"
LABEL_COLUMN = "label"
RAW_SUFFIX = ".txt"


# ------------------------------------------------------------------------------ paths
def raw_dir(cfg: PipelineConfig, settings: Settings | None = None) -> Path:
    """The landing folder: ``cfg.raw_dir`` (relative = repository root), else ``<LTR_HOME>/raw``."""
    settings = settings or get_settings()
    if cfg.raw_dir is not None:
        return cfg.resolve(cfg.raw_dir).resolve()
    return (settings.home / "raw").resolve()


def validation_report_dir(settings: Settings | None = None) -> Path:
    """``<LTR_HOME>/reports/validation``: one sub-folder per day of raw data."""
    settings = settings or get_settings()
    return (settings.home / "reports" / "validation").resolve()


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def interval_days(start: datetime, end: datetime) -> list[date]:
    """The UTC calendar days that overlap ``[start, end)`` (naive times are UTC).

    Raises ValueError for an empty interval: a run without a data interval (a cron
    *trigger* timetable gives ``start == end``) cannot say which days it covers.
    """
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise ValueError(
            f"empty data interval [{start.isoformat()}, {end.isoformat()}): the feature "
            "pipeline needs a schedule with data intervals (e.g. CronDataIntervalTimetable)"
        )
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def raw_files(
    interval_start: datetime,
    interval_end: datetime,
    cfg: PipelineConfig,
    settings: Settings | None = None,
) -> list[Path]:
    """The raw files of the interval: ``<raw_dir>/<YYYY-MM-DD>/*.txt``, day by day, by name.

    Hidden files (``.name.txt``, e.g. a copy still being written) are left out. An empty
    list means nothing landed for the interval.
    """
    root = raw_dir(cfg, settings)
    found: list[Path] = []
    for day in interval_days(interval_start, interval_end):
        folder = root / day.isoformat()
        if not folder.is_dir():
            continue
        found += sorted(
            p
            for p in folder.iterdir()
            if p.suffix == RAW_SUFFIX and not p.name.startswith(".") and p.is_file()
        )
    logger.info("%d raw file(s) under %s for %s", len(found), root, interval_start.isoformat())
    return found


def file_event_time(path: Path, fallback: datetime | None = None) -> datetime:
    """The event time of a raw file: its folder's day (``YYYY-MM-DD``) at 00:00 UTC.

    A file outside a day folder takes ``fallback`` (the interval start), else ValueError.
    """
    try:
        return datetime.combine(date.fromisoformat(path.parent.name), time(0), tzinfo=UTC)
    except ValueError:
        if fallback is None:
            raise ValueError(
                f"{path}: not in a <YYYY-MM-DD> folder, so its event time is unknown"
            ) from None
        return _utc(fallback)


def _day_label(path: Path) -> str:
    try:
        return file_event_time(path).date().isoformat()
    except ValueError:
        return "undated"


# -------------------------------------------------------------------------- validate
def validation_policy(cfg: PipelineConfig, n_features: int | None = None) -> ValidationPolicy:
    """The GX policy of ``cfg.validation``; ``n_features`` overrides the expected count."""
    v = cfg.validation
    return ValidationPolicy(
        label_set=v.label_set,
        min_docs_per_query=v.min_docs_per_query,
        max_docs_per_query=v.max_docs_per_query,
        feature_min=v.feature_min,
        feature_max=v.feature_max,
        allow_duplicate_docs=v.allow_duplicate_docs,
        n_features=n_features if n_features is not None else v.n_features,
        max_missing_fraction=v.max_missing_fraction,
    )


def layout_problems(cfg: PipelineConfig, layout: dict[str, Any] | None, where: Path) -> list[str]:
    """Where the pipeline config disagrees with the offline store's recorded layout."""
    if layout is None:
        return []
    problems = []
    stored = int(layout["n_features"])
    wanted = cfg.validation.n_features
    if wanted is not None and wanted != stored:
        problems.append(
            f"offline store {where}: holds {stored} features, the pipeline config expects "
            f"{wanted} (validation.n_features); use another LTR_HOME for another layout"
        )
    doc_cols = sorted(int(i) for i in layout.get(DOC_VIEW, []))
    if sorted(cfg.doc_feature_indices) != doc_cols:
        problems.append(
            f"offline store {where}: document-only columns {doc_cols}, the pipeline config "
            f"has doc_feature_indices {sorted(cfg.doc_feature_indices)} (0-based); set "
            f"doc_feature_indices: {doc_cols} in the pipeline config, or use another "
            "LTR_HOME for another layout"
        )
    return problems


def validate_raw(
    files: list[Path],
    cfg: PipelineConfig,
    report_dir: Path,
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Validate every raw file with Great Expectations; write nothing but the reports.

    Each file's reports go to ``<report_dir>/<its day>/<stem>.validation.json`` (and
    ``<stem>.gx.json``), kept whatever the outcome. The expected feature count is
    ``validation.n_features``, or the offline store's (``layout.json``) once it has data,
    so a file that could not join the store fails here rather than half-way through
    ingestion; the files of one interval must also agree among themselves. Raises
    :class:`DataValidationError` (one line per failure) after all files were checked.
    """
    store = offline_dir(settings)
    layout = read_layout(store)
    problems = layout_problems(cfg, layout, store)
    expected = int(layout["n_features"]) if layout is not None else cfg.validation.n_features
    policy = validation_policy(cfg, expected)

    results: list[dict[str, Any]] = []
    for path in files:
        path = Path(path)
        day_dir = Path(report_dir) / _day_label(path)
        name = report_name(path)
        try:
            report = validate_file(path, policy, report_dir=day_dir, name=name)
        except LetorFormatError as exc:  # file:line: reason; the file cannot be validated
            report_path = day_dir / f"{name}.validation.json"
            write_json_atomic(
                report_path,
                {"name": name, "success": False, "source": str(path), "error": str(exc)},
            )
            problems.append(f"{path}: {exc}")
            results.append({"file": str(path), "success": False, "report": str(report_path)})
            continue
        stats = report.statistics
        if not report.success:
            problems += [f"{path}: {line}" for line in report.summary().splitlines()]
        results.append(
            {
                "file": str(path),
                "success": report.success,
                "rows": stats["rows"],
                "queries": stats["queries"],
                "features": stats["features"],
                "labels": stats["labels"],
                "report": str(report.report_path),
            }
        )
    counts = sorted({r["features"] for r in results if "features" in r})
    if expected is None and len(counts) > 1:
        problems.append(
            f"the files of this interval have different feature counts {counts}: the "
            "offline store keeps one layout (set validation.n_features)"
        )
    summary = {
        "success": not problems,
        "files": len(results),
        "rows": sum(r.get("rows", 0) for r in results),
        "expected_features": expected,
        "report_dir": str(report_dir),
        "results": results,
    }
    if problems:
        logger.error("raw data failed validation:\n%s", "\n".join(problems))
        raise DataValidationError("\n".join(problems))
    logger.info("%d raw file(s), %d rows passed validation", len(results), summary["rows"])
    return summary


# ------------------------------------------------------------------------ offline store
def _labels_table(ds: LetorDataset, event_ts: datetime) -> pa.Table:
    import pyarrow as pa

    n = ds.n_docs
    table = pa.table(
        {
            QUERY_JOIN_KEY: pa.array([str(q) for q in ds.qids.tolist()], pa.string()),
            DOC_JOIN_KEY: pa.array([str(d) for d in ds.doc_ids.tolist()], pa.string()),
            LABEL_COLUMN: pa.array(ds.labels, pa.float32()),
            EVENT_TIMESTAMP: pa.array([event_ts] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    return table.replace_schema_metadata({b"ltr.source": ds.source.encode()})


def write_labels(
    ds: LetorDataset, store: Path, *, partition: str, event_timestamp: datetime
) -> Path:
    """Write ``ds``'s judgments to ``<store>/labels.parquet/<partition>``, atomically.

    The same partition name replaces the earlier file, so a re-run never duplicates rows;
    a file that already holds the same judgments is left as it is.
    """
    import pyarrow.parquet as pq

    path = Path(store) / LABELS_TABLE / partition
    table = _labels_table(ds, _utc(event_timestamp))
    if path.is_file() and pq.read_table(path).equals(table, check_metadata=True):
        return path
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def write_offline(
    files: list[Path],
    interval_start: datetime,
    cfg: PipelineConfig,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Ingest each (validated) file into the offline store, and its labels beside it.

    Event time: the file's day at 00:00 UTC (``interval_start`` for a file outside a day
    folder); ingestion name: the file's stem. All files are parsed before the first write.
    Per file, features are written before labels, so a label row always has its features.
    """
    from ltr.data.letor import read_letor

    store = offline_dir(settings)
    layout = read_layout(store)
    n_features = cfg.validation.n_features or (int(layout["n_features"]) if layout else None)
    # Validation allowed some missing cells: ingest them imputed (the store takes no NaN).
    missing: Literal["reject", "impute"] = (
        "impute" if cfg.validation.max_missing_fraction > 0 else "reject"
    )
    datasets = [(Path(p), read_letor(p, n_features=n_features, missing=missing)) for p in files]
    # Files of one day are checked against each other, not against their own earlier
    # ingestions, so a correction that spans several files of a day can be re-ingested.
    doc_cols = list(cfg.doc_feature_indices)
    days: dict[datetime, list[tuple[Path, LetorDataset]]] = {}
    for path, ds in datasets:
        days.setdefault(file_event_time(path, interval_start), []).append((path, ds))
    for day_files in days.values():
        if len(day_files) > 1:
            check_batch_documents([ds for _, ds in day_files], doc_cols)
    written: list[dict[str, Any]] = []
    for path, ds in datasets:
        event_ts = file_event_time(path, interval_start)
        result = ingest_letor(
            ds,
            store,
            doc_feature_indices=doc_cols,
            event_timestamp=event_ts,
            name=path.stem,
            replacing={partition_name(event_ts, "", p.stem) for p, _ in days[event_ts]},
        )
        labels = write_labels(ds, store, partition=result["partition"], event_timestamp=event_ts)
        written.append(
            {
                "file": str(path),
                "event_timestamp": result["event_timestamp"],
                "partition": result["partition"],
                "replaced": result["replaced"],
                "unchanged": result["unchanged"],
                "changed_rows": result["changed_rows"],
                "queries": result["queries"],
                "query_doc_rows": result["query_doc_rows"],
                "doc_rows": result["doc_rows"],
                "label_rows": ds.n_docs,
                "labels_path": str(labels),
            }
        )
    return {
        "offline_dir": str(store),
        "interval_start": _utc(interval_start).isoformat(),
        "files": written,
        "query_doc_rows": sum(w["query_doc_rows"] for w in written),
        "label_rows": sum(w["label_rows"] for w in written),
    }


def read_labels(settings: Settings | None = None, until: datetime | None = None) -> pd.DataFrame:
    """The labels table: ``query_id, doc_id, label, event_timestamp`` (UTC), oldest first.

    ``until`` keeps the rows with ``event_timestamp <= until`` (naive = UTC): the entity
    rows of a point-in-time training set as of that time. Empty frame when there are none.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = offline_dir(settings) / LABELS_TABLE
    paths = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    tables = [pq.read_table(p) for p in paths if not p.name.startswith(".")]
    if not tables:
        return pd.DataFrame(
            {
                QUERY_JOIN_KEY: pd.Series([], dtype=object),
                DOC_JOIN_KEY: pd.Series([], dtype=object),
                LABEL_COLUMN: pd.Series([], dtype="float32"),
                EVENT_TIMESTAMP: pd.Series([], dtype="datetime64[us, UTC]"),
            }
        )
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    if until is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.less_equal(table[EVENT_TIMESTAMP], pa.scalar(_utc(until))))
    frame = table.to_pandas()
    # partition names start with the event time, so file order is time order; keep it stable
    return frame.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------ Feast
def apply_features(settings: Settings | None = None) -> dict[str, Any]:
    """Register the feature repository (``ltr features apply``)."""
    from ltr.features.store import apply

    return apply(settings)


def materialize_interval(
    interval_start: datetime,
    interval_end: datetime,
    cfg: PipelineConfig,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Materialize ``[start - materialize_overlap_hours, end]`` into the online store.

    The overlap reloads recent days, so data that landed late for them goes online too.
    """
    from ltr.features.store import materialize

    start = _utc(interval_start) - timedelta(hours=cfg.materialize_overlap_hours)
    return materialize(start, _utc(interval_end), settings)
