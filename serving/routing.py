"""Traffic routing: which model version answers a user, from ``models/routing.json``.

Users are bucketed by a stable hash (:func:`stable_bucket`, SHA-256, never Python's
``hash()``), so a user sees the same variant on every replica and after restarts; changing
``salt`` reshuffles everybody (start a new experiment). Anonymous requests (no ``user_id``)
are bucketed by their ``request_id``: they are spread over the variants in the configured
proportions but are not sticky. The file is re-read without a restart by
:class:`RoutingWatcher`; the app swaps in the new :class:`Router`.

Strategies (``strategy``): ``single`` serves ``production``; ``ab`` and ``canary`` split users
by ``variants`` weights (percentages summing to 100, multiples of 0.01); ``blue_green``
serves the live colour; ``interleave`` team-draft interleaves ``interleave.a`` and
``interleave.b`` for ``interleave.percent`` of users and serves ``production`` to the rest
(the interleaving itself is in :mod:`serving.interleaving`, re-exported here).
``shadow`` (any strategy) scores a sample of users with a challenger that never answers.

Growing a variant only moves users into it when the variant order stays fixed and the
growing variant is the first or the last one (its bucket range only extends).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    ValidationError,
    model_validator,
)

from serving.errors import RoutingConfigError
from serving.interleaving import InterleaveCredit, interleave_credit, team_draft_interleave

logger = logging.getLogger(__name__)

BUCKETS = 10_000  # 0.01 % resolution for weights and sample rates
_EPS = 1e-6


def _check_version(value: str) -> str:
    if not value or value in (".", "..") or any(c.isspace() or c in "/\\" for c in value):
        raise ValueError(
            f"a model version must be non-empty, without spaces or path separators: {value!r}"
        )
    return value


#: A model version (a folder name in the model store).
Version = Annotated[str, AfterValidator(_check_version)]
#: Strict: a JSON number, not a string or a boolean (integers are fine).
Percent = Annotated[float, Strict(), Field(ge=0, le=100, allow_inf_nan=False)]
Strategy = Literal["single", "ab", "canary", "blue_green", "interleave"]


def stable_bucket(user_id: str, salt: str = "", buckets: int = BUCKETS) -> int:
    """Bucket in ``[0, buckets)``: first 8 bytes of SHA-256 of ``f"{salt}:{user_id}"`` (UTF-8),
    read big-endian, modulo ``buckets``. Identical in every process, language and restart."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def _check_hundredths(value: float, what: str) -> None:
    if abs(value * 100 - round(value * 100)) > _EPS:
        raise ValueError(f"{what} must be a multiple of 0.01, got {value}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Variant(_Frozen):
    name: Annotated[str, Field(min_length=1)]
    version: Version
    weight: Percent


class BlueGreen(_Frozen):
    blue: Version
    green: Version
    live: Literal["blue", "green"]

    @property
    def live_version(self) -> str:
        return self.blue if self.live == "blue" else self.green


class Shadow(_Frozen):
    version: Version
    sample_percent: Percent = 100.0


class Interleave(_Frozen):
    a: Version
    b: Version
    percent: Percent = 100.0


class Rollout(_Frozen):
    """The promotion that wrote a canary or blue-green routing (``ltr.promotion``): which
    version it rolls out, when it started (Unix time) and how long its observation window
    is; ``started_at + window_s`` is when a decision was due (an alert fires after it)."""

    promotion_id: Annotated[str, Field(min_length=1)]
    version: Version
    started_at: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    window_s: Annotated[float, Field(ge=0, allow_inf_nan=False)]

    @property
    def deadline(self) -> float:
        return self.started_at + self.window_s


class RoutingConfig(_Frozen):
    """The validated content of ``routing.json`` (immutable)."""

    version: Annotated[StrictInt, Field(ge=1)]
    strategy: Strategy
    production: Version
    variants: tuple[Variant, ...] = ()
    blue_green: BlueGreen | None = None
    shadow: Shadow | None = None
    interleave: Interleave | None = None
    salt: str = ""
    rollout: Rollout | None = None

    @model_validator(mode="after")
    def _check_strategy(self) -> Self:
        s = self.strategy
        if s in ("ab", "canary"):
            if len(self.variants) < 2:
                raise ValueError(f"variants: strategy {s!r} needs at least 2 variants")
            names = [v.name for v in self.variants]
            if len(set(names)) != len(names):
                raise ValueError(f"variants: names must be unique, got {names}")
            for v in self.variants:
                _check_hundredths(v.weight, f"variants: weight of {v.name!r}")
            total = sum(v.weight for v in self.variants)
            if abs(total - 100) > _EPS:
                raise ValueError(f"variants: weights must sum to 100, they sum to {total:g}")
        elif self.variants:
            raise ValueError(f"variants: only used by strategy 'ab' or 'canary', not {s!r}")
        if s == "blue_green":
            if self.blue_green is None:
                raise ValueError("blue_green: required by strategy 'blue_green'")
            if self.production != self.blue_green.live_version:
                raise ValueError(
                    f"production: must be the live colour's version "
                    f"{self.blue_green.live_version!r}, got {self.production!r}"
                )
        elif self.blue_green is not None:
            raise ValueError(f"blue_green: only used by strategy 'blue_green', not {s!r}")
        if s == "interleave":
            if self.interleave is None:
                raise ValueError("interleave: required by strategy 'interleave'")
            _check_hundredths(self.interleave.percent, "interleave: percent")
        elif self.interleave is not None:
            raise ValueError(f"interleave: only used by strategy 'interleave', not {s!r}")
        if self.shadow is not None:
            _check_hundredths(self.shadow.sample_percent, "shadow: sample_percent")
        return self

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RoutingConfig:
        """Read and validate a routing file; :class:`RoutingConfigError` names file and field."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RoutingConfigError(f"{path}: cannot read routing config: {exc}") from exc
        try:
            json.loads(text)  # for a message with line and column
        except json.JSONDecodeError as exc:
            raise RoutingConfigError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "")
                + err["msg"].removeprefix("Value error, ")
                for err in exc.errors()
            )
            raise RoutingConfigError(f"{path}: invalid routing config: {problems}") from exc

    def referenced_versions(self) -> set[str]:
        """Every model version this config can serve or score (preload these)."""
        found = {self.production}
        found.update(v.version for v in self.variants)
        if self.blue_green is not None:
            found.update((self.blue_green.blue, self.blue_green.green))
        if self.shadow is not None:
            found.add(self.shadow.version)
        if self.interleave is not None:
            found.update((self.interleave.a, self.interleave.b))
        return found


@dataclass(frozen=True)
class Decision:
    """Where one request goes; ``interleave`` holds versions (a, b) if this user is interleaved."""

    variant: str
    version: str
    shadow_version: str | None
    interleave: tuple[str, str] | None


def _threshold(percent: float) -> int:
    return round(percent * BUCKETS / 100)


class Router:
    """Decides per request from a :class:`RoutingConfig` (cheap to build, immutable)."""

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._salt = config.salt
        self._shadow_salt = f"{config.salt}:shadow"
        # ab/canary: (exclusive upper bucket, variant, version), cumulative in file order.
        self._ranges: list[tuple[int, str, str]] = []
        cumulative = 0.0
        for v in config.variants:
            cumulative += v.weight
            self._ranges.append((_threshold(cumulative), v.name, v.version))
        self._shadow_threshold = (
            _threshold(config.shadow.sample_percent) if config.shadow is not None else 0
        )
        self._interleave_threshold = (
            _threshold(config.interleave.percent) if config.interleave is not None else 0
        )

    def decide(self, user_id: str | None, request_id: str) -> Decision:
        """Route one request; anonymous users (None or "") are bucketed by ``request_id``."""
        key = user_id if user_id else request_id
        bucket = stable_bucket(key, self._salt)
        cfg = self.config
        interleave: tuple[str, str] | None = None
        if cfg.strategy in ("ab", "canary"):
            variant, version = self._ranges[-1][1], self._ranges[-1][2]
            for upper, name, ver in self._ranges:
                if bucket < upper:
                    variant, version = name, ver
                    break
        elif cfg.strategy == "blue_green" and cfg.blue_green is not None:
            variant, version = cfg.blue_green.live, cfg.blue_green.live_version
        elif (
            cfg.strategy == "interleave"
            and cfg.interleave is not None
            and bucket < self._interleave_threshold
        ):
            variant, version = "interleave", cfg.production
            interleave = (cfg.interleave.a, cfg.interleave.b)
        else:
            variant, version = "production", cfg.production
        shadow_version: str | None = None
        if (
            cfg.shadow is not None
            and cfg.shadow.version != version
            and stable_bucket(key, self._shadow_salt) < self._shadow_threshold
        ):
            shadow_version = cfg.shadow.version
        return Decision(variant, version, shadow_version, interleave)


class RoutingWatcher:
    """Holds the current config and router; :meth:`poll` reloads the file when it changed.

    No threads: the app calls :meth:`poll` from its own reload loop. A file that fails to
    load (or that ``accept`` refuses, e.g. because a version is not in the model store) is
    logged and counted in ``rejected`` and the previous config stays in force. Write the
    file atomically (temp file + ``os.replace``); a half-written file is refused and picked
    up again once its size or mtime changes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        accept: Callable[[RoutingConfig], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._accept = accept
        self.reloads = 0
        self.rejected = 0
        self.last_error: str | None = None
        signature = self._signature()
        config = RoutingConfig.load(self.path)
        self._check(config)
        self._signature_seen = signature
        self._state: tuple[RoutingConfig, Router] = (config, Router(config))

    def current(self) -> tuple[RoutingConfig, Router]:
        """The config in force and its router (one consistent pair)."""
        return self._state

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _check(self, config: RoutingConfig) -> None:
        if self._accept is None:
            return
        try:
            self._accept(config)
        except Exception as exc:
            raise RoutingConfigError(f"{self.path}: refused: {exc}") from exc

    def poll(self) -> bool:
        """Reload if the file's mtime, size or inode changed; True when a new config is in force."""
        signature = self._signature()
        if signature == self._signature_seen:
            return False
        self._signature_seen = signature
        old = self._state[0]
        try:
            if signature is None:
                raise RoutingConfigError(f"{self.path}: routing config disappeared")
            config = RoutingConfig.load(self.path)
            self._check(config)
        except RoutingConfigError as exc:
            self.rejected += 1
            self.last_error = str(exc)
            logger.error("keeping routing config version %d: %s", old.version, exc)
            return False
        if config == old:
            return False
        if config.version <= old.version:
            logger.warning(
                "routing config changed but its version went from %d to %d (bump it)",
                old.version,
                config.version,
            )
        self._state = (config, Router(config))
        self.reloads += 1
        self.last_error = None
        logger.info(
            "routing config version %d in force: strategy %s, versions %s",
            config.version,
            config.strategy,
            sorted(config.referenced_versions()),
        )
        return True


__all__ = [
    "BUCKETS",
    "Decision",
    "InterleaveCredit",
    "Router",
    "RoutingConfig",
    "RoutingWatcher",
    "interleave_credit",
    "stable_bucket",
    "team_draft_interleave",
]
