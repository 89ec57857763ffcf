"""Request ids the service can recognise: feedback is accepted only for answers it issued.

A request id is ``<issued-at, base 36 seconds>-<16 random hex>-<signature>``: the signature
is the first 16 bytes (32 hex) of HMAC-SHA256 over the first two parts with the service's
secret (``LTR_REQUEST_ID_SECRET``; every replica of a fleet needs the same one). A client can
neither forge an id nor reuse one after ``max_age_s``. In development without a configured
secret each process draws a random one (feedback for another process' answers is refused).
"""

from __future__ import annotations

import hmac
import secrets
import time
from hashlib import sha256

_SIG_HEX = 32
_MAX_ID = 128


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


class RequestIdSigner:
    """Issues and verifies signed request ids; see the module docstring."""

    def __init__(self, secret: bytes | None = None, *, max_age_s: float = 86_400.0) -> None:
        if secret is not None and len(secret) < 16:
            raise ValueError("the request id secret must be at least 16 bytes")
        self._key = secret if secret is not None else secrets.token_bytes(32)
        self.max_age_s = max_age_s

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode("ascii"), sha256).hexdigest()[:_SIG_HEX]

    def issue(self, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        body = f"{_b36(issued)}-{secrets.token_hex(8)}"
        return f"{body}-{self._sign(body)}"

    def check(self, request_id: str, now: float | None = None) -> str | None:
        """None when ``request_id`` is one of ours and fresh, else why not (a sentence)."""
        if len(request_id) > _MAX_ID or not request_id.isascii():
            return "request_id was not issued by this service"
        parts = request_id.split("-")
        if len(parts) != 3 or len(parts[2]) != _SIG_HEX:
            return "request_id was not issued by this service"
        body = f"{parts[0]}-{parts[1]}"
        if not hmac.compare_digest(self._sign(body), parts[2]):
            return "request_id was not issued by this service"
        try:
            issued = int(parts[0], 36)
        except ValueError:
            return "request_id was not issued by this service"
        age = (time.time() if now is None else now) - issued
        if age > self.max_age_s:
            return (
                f"request_id is older than {self.max_age_s:.0f} s: feedback is no longer accepted"
            )
        if age < -300:  # a clock far ahead of ours: not an id we issued
            return "request_id was not issued by this service"
        return None


class RateLimiter:
    """A token bucket per client (``rate`` per second, ``burst`` at most), in this process;
    at most ``max_clients`` buckets are kept (the oldest are dropped)."""

    def __init__(self, rate: float, burst: float, *, max_clients: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float | None = None) -> float:
        """0.0 when the call may proceed, else the seconds to wait for the next token."""
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, t)  # re-inserted: most recent last
        if len(self._buckets) > self.max_clients:
            self._buckets.pop(next(iter(self._buckets)))
        return wait
