"""The model store: versions under ``<root>/versions/<v>/`` and ``<root>/routing.json``.

Each served version is verified (sha256 of model.onnx against metadata.json, feature schema
against the ONNX input) and gets an ONNX Runtime session with one intra-op thread and no
spinning. ``poll()`` reloads on change: new sessions are built completely first and then
swapped in with one assignment, so in-flight requests keep the objects they started with.
A broken artifact or routing file is refused and the previous state keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from serving.errors import RoutingConfigError
from serving.features.schema import CompiledSchema, compile_schema
from serving.routing import Router, RoutingConfig, RoutingWatcher

#: How a request handled by a version ended: answered, refused for the request's own fault
#: (4xx), or failed on the server's side (5xx).
Outcome = Literal["ok", "client_error", "server_error"]

log = logging.getLogger(__name__)


class ArtifactError(RuntimeError):
    """A model version on disk is missing, corrupt or inconsistent."""

    def __init__(self, message: str, version: str | None = None) -> None:
        super().__init__(message)
        self.version = version


#: The last routing the service served completely, next to routing.json: new processes
#: start from it when routing.json names a version that cannot be loaded.
LAST_GOOD_FILE = "routing.last_good.json"


class ModelNotAvailable(LookupError):
    """A version that routing names is not loaded."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@dataclass
class LoadedModel:
    version: str
    metadata: dict[str, Any]
    session: ort.InferenceSession
    schema: CompiledSchema
    stamp: tuple[float, int, float]
    requests: int = 0
    errors: int = 0  # server-side failures (5xx)
    client_errors: int = 0  # 4xx answers: the request, not the model, was at fault
    latency_sum_s: float = 0.0
    #: ONNX Runtime seconds per scored row, measured at load (:func:`_row_cost`).
    seconds_per_row: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_features(self) -> int:
        return self.schema.n_features

    def score(self, features: np.ndarray) -> np.ndarray:
        """features: float32 [n_docs, n_features] -> float32 [n_docs]."""
        out = self.session.run(None, {"features": features})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def record(self, seconds: float, outcome: Outcome = "ok") -> None:
        with self._lock:
            self.requests += 1
            self.latency_sum_s += seconds
            if outcome == "server_error":
                self.errors += 1
            elif outcome == "client_error":
                self.client_errors += 1


def load_version(root: Path, version: str, threads: int = 1) -> LoadedModel:
    """Load and verify one version folder; raises ArtifactError with the reason."""
    try:
        return _load_version(root, version, threads)
    except ArtifactError as exc:
        exc.version = version
        raise


def _load_version(root: Path, version: str, threads: int) -> LoadedModel:
    folder = root / "versions" / version
    model_path, meta_path = folder / "model.onnx", folder / "metadata.json"
    if not model_path.is_file() or not meta_path.is_file():
        raise ArtifactError(
            f"{folder}: no exported model there (model.onnx or metadata.json is missing)"
        )
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{meta_path}: unreadable metadata: {exc}") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{meta_path}: metadata must be a JSON object")
    if metadata.get("version") not in (None, version):
        raise ArtifactError(
            f"{meta_path}: metadata says version {metadata.get('version')!r}, folder is {version!r}"
        )
    digest = _sha256(model_path)
    if digest != metadata.get("sha256"):
        raise ArtifactError(
            f"{model_path}: sha256 {digest[:12]}… does not match metadata "
            f"{str(metadata.get('sha256'))[:12]}…"
        )
    try:
        schema = compile_schema(metadata.get("feature_schema") or [])
    except ValueError as exc:
        raise ArtifactError(f"{meta_path}: bad feature schema: {exc}") from None
    try:
        session = _session(model_path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ArtifactError(f"{model_path}: ONNX Runtime cannot load it: {exc}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != "features":
        raise ArtifactError(f"{model_path}: expected one input named 'features'")
    if outputs[0].name != "scores":
        raise ArtifactError(f"{model_path}: expected an output named 'scores'")
    dim = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
    if isinstance(dim, int) and dim != schema.n_features:
        raise ArtifactError(
            f"{model_path}: ONNX input has {dim} features, metadata schema has {schema.n_features}"
        )
    probe = np.zeros((2, schema.n_features), dtype=np.float32)
    try:
        got = session.run(None, {"features": probe})[0]
    except Exception as exc:
        raise ArtifactError(f"{model_path}: probe inference failed: {exc}") from None
    if np.asarray(got).reshape(-1).shape != (2,):
        raise ArtifactError(f"{model_path}: output is not one score per document")
    stamp = _stamp(folder)
    if stamp is None:
        raise ArtifactError(f"{folder}: files disappeared while loading")
    return LoadedModel(
        version, metadata, session, schema, stamp, seconds_per_row=_row_cost(session, schema)
    )


#: Rows of the matrix timed at load to estimate a model's inference cost per candidate.
COST_PROBE_ROWS = 64


def _row_cost(session: ort.InferenceSession, schema: CompiledSchema) -> float:
    """Seconds of ONNX Runtime per scored row: the fastest of three runs on a fixed random
    matrix of COST_PROBE_ROWS rows (its fixed cost included, so an overestimate for larger
    requests). Tells the service which requests are cheap enough to score on the loop."""
    x = np.random.default_rng(0).standard_normal((COST_PROBE_ROWS, schema.n_features))
    x = x.astype(np.float32)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        session.run(None, {"features": x})
        best = min(best, time.perf_counter() - t)
    return best / COST_PROBE_ROWS


def _stamp(folder: Path) -> tuple[float, int, float] | None:
    """What identifies the files of a version on disk (a change triggers a reload)."""
    try:
        model, meta = (folder / "model.onnx").stat(), (folder / "metadata.json").stat()
    except OSError:
        return None
    return (model.st_mtime, model.st_size, meta.st_mtime)


@dataclass(frozen=True)
class Snapshot:
    """What one request sees: a routing config, its router and the loaded versions."""

    config: RoutingConfig
    router: Router
    models: dict[str, LoadedModel]

    def get(self, version: str) -> LoadedModel:
        try:
            return self.models[version]
        except KeyError:
            raise ModelNotAvailable(f"model version {version!r} is not loaded") from None


class ModelStore:
    """Served versions plus the routing they follow; swap-on-ready reloads."""

    def __init__(
        self,
        root: Path,
        *,
        threads: int = 1,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.threads = threads
        #: Called with (version, reason) each time a version is refused.
        self.on_refused = on_refused
        #: Why the service serves less than routing.json asks for (None: all of it).
        self.degraded: str | None = None
        self._watcher = RoutingWatcher(self.root / "routing.json")
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            raise ModelNotAvailable("no model is loaded")
        return snap

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None

    def _build(
        self, config: RoutingConfig, current: dict[str, LoadedModel]
    ) -> dict[str, LoadedModel]:
        new: dict[str, LoadedModel] = {}
        for v in sorted(config.referenced_versions()):
            old = current.get(v)
            stamp = _stamp(self.root / "versions" / v)
            if old is not None and stamp == old.stamp:
                new[v] = old
            else:
                new[v] = load_version(self.root, v, self.threads)
        return new

    @property
    def routing_rejected(self) -> int:
        """How many versions of routing.json were refused (invalid, or naming nothing)."""
        return self._watcher.rejected

    def load(self) -> None:
        """Initial load. When a version routing.json names cannot be loaded, a new process
        does not crash-loop: it serves the production version alone if that one loads, else
        the last routing served completely (:data:`LAST_GOOD_FILE`); each refused version
        is reported (``on_refused``) and :attr:`degraded` says why. Raises only when neither
        gives a servable model (or routing.json itself is invalid)."""
        with self._lock:
            self._watcher.poll()
            config, router = self._watcher.current()
            try:
                models = self._build(config, {})
            except ArtifactError as exc:
                self._report(exc)
                config, router, models = self._fallback(config, exc)
            else:
                self.degraded = None
                self._remember(config)
            self._snapshot = Snapshot(config, router, models)

    def _report(self, exc: ArtifactError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        log.error("refused model version %s: %s", exc.version, exc)
        if self.on_refused is not None and exc.version is not None:
            self.on_refused(exc.version, str(exc))

    def _fallback(
        self, config: RoutingConfig, first: ArtifactError
    ) -> tuple[RoutingConfig, Router, dict[str, LoadedModel]]:
        single = RoutingConfig(  # the rollout stays visible (its deadline alert too)
            version=config.version,
            strategy="single",
            production=config.production,
            rollout=config.rollout,
        )
        if first.version != config.production:
            try:
                models = self._build(single, {})
            except ArtifactError as exc:
                self._report(exc)
            else:
                self.degraded = (
                    f"routing.json v{config.version} names {first.version}, which cannot be "
                    f"loaded: serving {config.production} alone"
                )
                log.error("%s", self.degraded)
                return single, Router(single), models
        path = self.root / LAST_GOOD_FILE
        try:
            last = RoutingConfig.load(path)
            models = self._build(last, {})
        except (RoutingConfigError, ArtifactError) as exc:
            if isinstance(exc, ArtifactError):
                self._report(exc)
            raise ArtifactError(
                f"{first} (and no usable last good routing in {path}: {exc})", first.version
            ) from None
        self.degraded = (
            f"routing.json v{config.version} cannot be served ({first.version} is broken): "
            f"serving the last good routing v{last.version} ({last.production})"
        )
        log.error("%s", self.degraded)
        return last, Router(last), models

    def _remember(self, config: RoutingConfig) -> None:
        """Keep the routing just served completely (best effort: the store may be read-only)."""
        path = self.root / LAST_GOOD_FILE
        body = config.model_dump_json(exclude_none=True)
        try:
            if path.is_file() and path.read_text() == body:
                return
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(body)
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot keep the last good routing in %s: %s", path, exc)

    def poll(self) -> bool:
        """Reload when routing.json or a served artifact changed. Returns True on a swap.

        A routing file that fails validation, or one that names a broken artifact, is
        refused: the previous snapshot keeps serving and the refusal is counted. The new
        file is tried again on the next poll, so a fixed artifact is picked up.
        """
        with self._lock:
            try:
                self._watcher.poll()
                config, router = self._watcher.current()
            except Exception as exc:
                self._refuse(f"routing.json refused: {exc}")
                return False
            old = self._snapshot
            current = old.models if old is not None else {}
            try:
                models = self._build(config, current)
            except ArtifactError as exc:
                if old is None or config is not old.config or self.last_error != str(exc):
                    self._refuse(str(exc))
                    if self.on_refused is not None and exc.version is not None:
                        self.on_refused(exc.version, str(exc))
                return False
            if (
                old is not None
                and config is old.config
                and models.keys() == current.keys()
                and all(models[v] is current[v] for v in models)
            ):
                return False
            self._snapshot = Snapshot(config, router, models)
            self.last_error = None
            self.degraded = None
            self._remember(config)
            self.reloads += 1
            log.info("model store now serves %s", ", ".join(sorted(models)))
            return True

    def _refuse(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        serving = sorted(self._snapshot.models) if self._snapshot else []
        log.error("reload refused, still serving %s: %s", serving, reason)
