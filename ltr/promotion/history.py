"""The promotion history (``<models>/promotions.jsonl``) and the model-store lock.

Every promotion step appends one record, rewritten atomically; :func:`ltr.promotion.rollback`
reads it back to find the previous production. See :mod:`ltr.promotion`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ltr.promotion.errors import PromotionInProgress
from ltr.utils.io import atomic_open

log = logging.getLogger(__name__)

HISTORY_FILE = "promotions.jsonl"
LOCK_FILE = ".promotion.lock"
HISTORY_LOCK_FILE = ".promotions.jsonl.lock"


def history(models_dir: Path) -> list[dict[str, Any]]:
    """The promotion records, oldest first (an unreadable line is skipped with a warning)."""
    path = Path(models_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON; skipped", path, n)
    return out


def record_step(models_dir: Path, step: str, **fields: Any) -> dict[str, Any]:
    """Append one record: the file is read and rewritten whole via temp file + rename."""
    path = Path(models_dir) / HISTORY_FILE
    rec = {"ts": dt.datetime.now(dt.UTC).isoformat(), "step": step, **fields}
    with _history_lock(Path(models_dir)):  # a rollback may write while a promotion does
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        with atomic_open(path, "w") as fh:
            fh.write(old + json.dumps(rec, default=str, sort_keys=False) + "\n")
    log.info("promotion %s: %s", step, {k: v for k, v in fields.items() if k != "numbers"})
    return rec


@contextlib.contextmanager
def _history_lock(models_dir: Path) -> Iterator[None]:
    """Held for one read-append-rename of the history (a blocking flock)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(models_dir / HISTORY_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def promotion_lock(models_dir: Path) -> Iterator[None]:
    """One promotion at a time per model store (an flock, released on exit, also when the
    process dies). A rollback does not take it: it pre-empts the promotion instead (it
    writes routing.json by compare-and-swap, and the promotion stops at its next look)."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(models_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PromotionInProgress(
                f"another promotion is running on {models_dir} ({LOCK_FILE})"
            ) from None
        yield
    finally:
        os.close(fd)
