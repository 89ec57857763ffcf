"""Run keys and training data of the retrain pipeline (step 1 of :mod:`ltr.pipelines.retrain`).

A run works on one data interval named by its run key; :func:`build_training_data` saves
its splits as Parquet under ``<LTR_HOME>/pipelines/retrain/<run key>/data/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltr.pipelines.config import PipelineConfig
from ltr.pipelines.holdout import SPLITS, latest_labels, split_queries
from ltr.settings import Settings

if TYPE_CHECKING:
    from ltr.data.dataset import LetorDataset

log = logging.getLogger(__name__)


class NoTrainingData(ValueError):
    """Nothing to train on for this interval (no labels yet, or an empty split)."""


# ------------------------------------------------------------------------- run key
def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def as_of_from(*candidates: dt.datetime | None) -> dt.datetime:
    """The first given time, in UTC: the data interval end, else the logical date, else
    ``run_after`` (an asset-triggered Airflow run has no data interval)."""
    for ts in candidates:
        if ts is not None:
            return _utc(dt.datetime.fromisoformat(ts.isoformat()))
    raise ValueError("no time to train up to: give the data interval end or run_after")


def run_key(as_of: dt.datetime) -> str:
    """The name of a run's interval: its end in UTC, e.g. ``20260102T020000Z``."""
    return _utc(as_of).strftime("%Y%m%dT%H%M%SZ")


def _run_dir(settings: Settings, key: str) -> Path:
    return settings.home.resolve() / "pipelines" / "retrain" / key


def requests_dir(settings: Settings) -> Path:
    """``<LTR_HOME>/promotions/requests``: one JSON file per promotion request."""
    return settings.home.resolve() / "promotions" / "requests"


# ---------------------------------------------------------------------------- data
def _combined_fingerprint(fingerprints: dict[str, str]) -> str:
    blob = ";".join(f"{s}:{fingerprints[s]}" for s in SPLITS)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_training_data(
    as_of: dt.datetime, cfg: PipelineConfig, settings: Settings
) -> dict[str, Any]:
    """Labels up to ``as_of`` with their point-in-time features, split and saved as Parquet.

    Raises NoTrainingData when there are no labels yet or a split would be empty.
    """
    from ltr.data.parquet import to_parquet
    from ltr.features.training_data import load_training_dataset
    from ltr.pipelines.feature_pipeline import read_labels

    as_of = _utc(as_of)
    key = run_key(as_of)
    entity_df = latest_labels(read_labels(settings, as_of), as_of)
    if entity_df.empty:
        raise NoTrainingData(f"no labels up to {as_of.isoformat()}: nothing to train on")
    ds = load_training_dataset(entity_df, settings=settings, source=f"feast@{key}")
    parts = split_queries(ds, cfg.training.holdout)
    empty = [s for s, part in parts.items() if part.n_queries == 0]
    if empty:
        raise NoTrainingData(
            f"{ds.n_queries} labelled queries up to {as_of.isoformat()} leave the "
            f"{'/'.join(empty)} split(s) empty; wait for more data or change training.holdout"
        )
    folder = _run_dir(settings, key) / "data"
    paths, fingerprints = {}, {}
    for name, part in parts.items():
        paths[name] = str(folder / f"{name}.parquet")
        to_parquet(part, paths[name])
        fingerprints[name] = part.fingerprint()
    log.info("run %s: %d labelled rows, %d queries", key, ds.n_docs, ds.n_queries)
    return {
        "run_key": key,
        "as_of": as_of.isoformat(),
        "paths": paths,
        "fingerprints": fingerprints,
        "data_fingerprint": _combined_fingerprint(fingerprints),
        "queries": {s: parts[s].n_queries for s in SPLITS},
        "docs": {s: parts[s].n_docs for s in SPLITS},
        "n_features": ds.n_features,
    }


def _load_split(data: dict[str, Any], name: str) -> LetorDataset:
    """A split saved by :func:`build_training_data`, checked against its fingerprint."""
    from ltr.data.parquet import from_parquet

    ds = from_parquet(data["paths"][name])
    if ds.fingerprint() != data["fingerprints"][name]:
        raise ValueError(
            f"{data['paths'][name]} changed since it was built (fingerprint mismatch); "
            "re-run build_training_data for this interval"
        )
    return ds
