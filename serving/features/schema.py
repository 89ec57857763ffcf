"""A model's feature schema, compiled for fast assembly of the feature matrix.

Schema entries (metadata.json ``feature_schema``), in input column order::

    {"name": "f1",  "source": "request",            "default": 0.0}
    {"name": "f7",  "source": "query_doc_features", "index": 6, "default": 0.0, "required": false}
    {"name": "f41", "source": "doc_features",       "index": 0, "default": 0.0}

``source`` is ``request`` (the caller supplies the value) or a Feast feature view whose
``features`` array holds the value at ``index``. A value that the request supplies by name
takes precedence over the online value. Missing values take ``default`` and are counted;
an entry with ``required: true`` turns a missing value into an error instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REQUEST = "request"


class MissingRequiredFeatures(ValueError):
    """A model requires features that neither the request nor the online store supplied."""


@dataclass(frozen=True)
class ViewColumns:
    view: str
    columns: np.ndarray  # int64 [k]: matrix columns filled from this view
    indices: np.ndarray  # int64 [k]: positions inside the view's vector
    required: bool
    min_dim: int


def _runs(columns: np.ndarray, indices: np.ndarray) -> tuple[slice, slice] | None:
    """(matrix columns, vector positions) as two slices when both are consecutive runs
    (the usual layout: a view fills a block of columns in order), else None."""
    if columns.size == 0:
        return None
    if not (np.all(np.diff(columns) == 1) and np.all(np.diff(indices) == 1)):
        return None
    c0, i0 = int(columns[0]), int(indices[0])
    return slice(c0, c0 + columns.size), slice(i0, i0 + indices.size)


@dataclass(frozen=True)
class CompiledSchema:
    names: tuple[str, ...]
    defaults: np.ndarray  # float32 [n_features]
    column_of: Mapping[str, int]
    views: tuple[ViewColumns, ...]
    request_columns: frozenset[int] = field(default=frozenset())
    request_required: tuple[int, ...] = field(default=())
    #: Per view, its columns and vector positions as slices when both are runs (else None).
    view_runs: Mapping[str, tuple[slice, slice] | None] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def view_names(self) -> list[str]:
        return [v.view for v in self.views]


def compile_schema(entries: Sequence[Mapping[str, Any]]) -> CompiledSchema:
    if not entries:
        raise ValueError("the feature schema is empty")
    names: list[str] = []
    defaults: list[float] = []
    by_view: dict[str, list[tuple[int, int, bool]]] = {}
    request_required: list[int] = []
    request_columns: set[int] = set()
    for col, e in enumerate(entries):
        name = e.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"entry {col} has no name")
        if name in names:
            raise ValueError(f"feature {name!r} appears twice")
        default = float(e.get("default", 0.0))
        if not math.isfinite(default):
            raise ValueError(f"feature {name!r} has a non-finite default")
        source = e.get("source", REQUEST)
        required = bool(e.get("required", False))
        if source == REQUEST:
            request_columns.add(col)
            if required:
                request_required.append(col)
        else:
            idx = e.get("index")
            if not isinstance(idx, int) or idx < 0:
                raise ValueError(f"feature {name!r} from {source!r} needs a non-negative index")
            by_view.setdefault(str(source), []).append((col, idx, required))
        names.append(name)
        defaults.append(default)
    views = tuple(
        ViewColumns(
            view=v,
            columns=np.array([c for c, _, _ in cols], dtype=np.int64),
            indices=np.array([i for _, i, _ in cols], dtype=np.int64),
            required=any(r for _, _, r in cols),
            min_dim=max(i for _, i, _ in cols) + 1,
        )
        for v, cols in by_view.items()
    )
    return CompiledSchema(
        names=tuple(names),
        defaults=np.asarray(defaults, dtype=np.float32),
        column_of={n: i for i, n in enumerate(names)},
        views=views,
        request_columns=frozenset(request_columns),
        request_required=tuple(request_required),
        view_runs={v.view: _runs(v.columns, v.indices) for v in views},
    )


@dataclass
class AssembleStats:
    missing_online: dict[str, int] = field(default_factory=dict)  # view -> rows missing
    missing_request: int = 0  # request-sourced values not supplied
    unknown_request: int = 0  # supplied names that the schema does not have


def assemble(
    schema: CompiledSchema,
    doc_ids: Sequence[str],
    request_features: Sequence[Mapping[str, float] | None],
    view_vectors: Mapping[str, np.ndarray],
    view_found: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, AssembleStats]:
    """The float32 [n_docs, n_features] input matrix, plus counts of what was missing.

    view_vectors[view]: float32 [n_docs, dim]; view_found[view]: bool [n_docs].
    """
    n = len(doc_ids)
    x = np.empty((n, schema.n_features), dtype=np.float32)
    x[:] = schema.defaults
    stats = AssembleStats()
    need_supplied = bool(schema.request_required) or any(v.required for v in schema.views)
    supplied = np.zeros((n, schema.n_features), dtype=bool) if need_supplied else None
    runs_of = schema.view_runs
    for vc in schema.views:
        vec = view_vectors.get(vc.view)
        found = view_found.get(vc.view)
        if vec is None or found is None:
            missing_rows = np.ones(n, dtype=bool)
        else:
            if vec.shape[1] < vc.min_dim:
                raise ValueError(
                    f"feature view {vc.view!r} vectors have {vec.shape[1]} values, "
                    f"the model reads index {vc.min_dim - 1}"
                )
            ok = found
            runs = runs_of.get(vc.view)
            if ok.all():
                if runs is not None:  # plain slices: no fancy-index gather
                    x[:, runs[0]] = vec[:, runs[1]]
                else:
                    x[:, vc.columns] = vec[:, vc.indices]
            elif ok.any():
                rows = np.flatnonzero(ok)
                if runs is not None:
                    x[rows, runs[0]] = vec[rows, runs[1]]
                else:
                    x[np.ix_(rows, vc.columns)] = vec[np.ix_(rows, vc.indices)]
            missing_rows = ~ok
        n_missing = int(missing_rows.sum())
        if n_missing:
            stats.missing_online[vc.view] = n_missing
    col_of = schema.column_of
    req_cols = schema.request_columns
    given_request = 0
    for r, feats in enumerate(request_features):
        if not feats:
            continue
        for name, value in feats.items():
            c = col_of.get(name)
            if c is None:
                stats.unknown_request += 1
                continue
            x[r, c] = value
            if c in req_cols:
                given_request += 1
            if supplied is not None:
                supplied[r, c] = True
    stats.missing_request = n * len(req_cols) - given_request
    # Required values: a missing online row is fine when the request supplied its columns.
    problems: list[str] = []
    for vc in schema.views:
        if not vc.required or vc.view not in stats.missing_online:
            continue
        found = view_found.get(vc.view)
        missing_rows = np.ones(n, dtype=bool) if found is None else ~found
        bad = [doc_ids[int(i)] for i in np.flatnonzero(missing_rows)]
        if supplied is not None:
            covered = supplied[:, vc.columns].all(axis=1)
            bad = [doc_ids[int(i)] for i in np.flatnonzero(missing_rows & ~covered)]
        if bad:
            shown = ", ".join(bad[:5]) + (" …" if len(bad) > 5 else "")
            problems.append(f"{vc.view} for {len(bad)} document(s) ({shown})")
    if schema.request_required and supplied is not None:
        lacking = ~supplied[:, list(schema.request_required)]
        if lacking.any():
            r, c = (int(v) for v in np.argwhere(lacking)[0])
            name = schema.names[schema.request_required[c]]
            problems.append(f"request feature {name!r} for document {doc_ids[r]!r}")
    if problems:
        raise MissingRequiredFeatures(
            "the model requires features that are missing: " + "; ".join(problems)
        )
    return x, stats
