"""Large request bodies are parsed and validated in a helper process of lower priority.

A multi-megabyte body costs tens of milliseconds of JSON parsing and validation, and
orjson and pydantic hold the GIL for all of it: done in a thread of the service, that time
is taken from the event loop (``/health``) and from every other request, and a client that
sends invalid bodies on purpose pays nothing for it. Bodies above ``LTR_HEAVY_BODY_BYTES``
therefore go to a process of their own (started on the first such body, with the
``SCHED_IDLE`` policy where Linux has it, else ``nice`` +10, so the kernel prefers the
service when both want a core; under saturation a large body waits for idle CPU time, the
small requests do not). It answers with the validated model
(pickled) or with the 413 / 422 verdict; a rejected body costs the service only handing its
bytes to the helper.

When the process dies (killed, out of memory) the body is parsed in the service as before,
the pool is started again for the next body, and ``ltr_body_check_failures_total`` counts
it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from serving.schemas import BodyLimits, BodyRejected, InvalidBody

log = logging.getLogger(__name__)

Parser = Callable[[bytes, BodyLimits], BaseModel]
#: What the helper process returns: ("ok", model) | ("413", detail)
#: | ("422", errors, omitted, complete).
Verdict = tuple[Any, ...]

NICE_INCREMENT = 10


def _lower_priority() -> None:
    """``nice`` +10, and on Linux the ``SCHED_IDLE`` policy: the helper runs only on CPU
    time the service's own threads (and other normal processes of its cgroup) leave idle,
    and a waking request preempts it at once. Measured in ``bench.adversarial`` on 2
    cores: the legitimate p99 rose 2.3-2.6x under attack with ``SCHED_IDLE``, 3.0-3.2x
    with nice +19 alone, 3.4-3.7x with nice +10 alone."""
    with contextlib.suppress(OSError):  # not permitted: still a process of its own
        os.nice(NICE_INCREMENT)
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, idle, os.sched_param(0))


def check_body(parser: Parser, raw: bytes, limits: BodyLimits) -> Verdict:
    """Run in the helper process: the parse's outcome as a picklable verdict."""
    try:
        return ("ok", parser(raw, limits))
    except BodyRejected as exc:
        return ("413", str(exc))
    except InvalidBody as exc:
        return ("422", exc.errors, exc.omitted, exc.complete)


def raise_verdict(verdict: Verdict) -> BaseModel:
    """The model of an "ok" verdict; the exception the in-process parse would have raised
    otherwise."""
    kind = verdict[0]
    if kind == "ok":
        model: BaseModel = verdict[1]
        return model
    if kind == "413":
        raise BodyRejected(verdict[1])
    if kind == "422":
        raise InvalidBody(list(verdict[1]), int(verdict[2]), bool(verdict[3]))
    raise RuntimeError(f"unknown body-check verdict {kind!r}")


class BodyChecker:
    """A pool of ``processes`` helper processes (spawned, so no thread state is copied)."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.checked = 0
        self.failures = 0
        #: Called once per body the helper failed to check (metrics).
        self.on_failure: Callable[[], None] | None = None

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
            )
        return self._pool

    async def parse(self, parser: Parser, raw: bytes, limits: BodyLimits) -> BaseModel | None:
        """The validated model (or :class:`BodyRejected` / :class:`InvalidBody`), checked in
        the helper process; None when the helper failed and the caller should parse here."""
        loop = asyncio.get_running_loop()
        try:
            pool = self._ensure_pool()
            verdict = await loop.run_in_executor(pool, check_body, parser, raw, limits)
        except (concurrent.futures.process.BrokenProcessPool, OSError, RuntimeError) as exc:
            self.failures += 1
            log.warning("body check process failed (%r); parsing in the service", exc)
            self._discard()
            if self.on_failure is not None:
                self.on_failure()
            return None
        self.checked += 1
        return raise_verdict(verdict)

    def pids(self) -> list[int]:
        """Process ids of the running helpers (tests, diagnostics)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]

    def _discard(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._discard()
