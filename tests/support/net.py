"""Loopback ports and waiting for a condition."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"

#: How long a test waits for a behaviour (a reload, a recovery) before it fails. A generous
#: bound for slow or loaded machines, never a speed requirement: speed is for bench/.
WAIT_S = 30.0


def free_port() -> int:
    """A loopback port nothing listened on when asked (for a server to come, or a dead URL)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` every ``step`` seconds until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
