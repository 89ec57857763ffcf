"""Domain exceptions of the serving package.

Domain code raises these; only the HTTP routes translate them into status codes.
Keep this module a flat list of exception classes without imports from the rest of
``serving`` so that every module can import it.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class of every domain error raised by ``serving``."""


class RoutingConfigError(ServingError, ValueError):
    """``routing.json`` is missing, not JSON or breaks a rule; the message names file and field."""


class EventLogUnavailable(ServingError):
    """Reading the event streams failed (raised by the drain helpers, never on the request path)."""
