"""Pure ASGI middleware that bounds what one client can cost before any work is done.

- :class:`BodySizeLimit`: 413 for a body above the limit (from its Content-Length, or as
  soon as a streamed body passes it), 411 for a streamed body (no Content-Length) above the
  smaller limit for those, 408 for a body that does not arrive in time; each of these
  closes the connection instead of reading the rest.
- :class:`Admission` with a :class:`RequestGate`: at most ``workers + queue`` data-plane
  requests in the service once their bodies are in; the next one is answered 503 with
  ``Retry-After`` at once instead of waiting without bound. The gate's worker threads
  (``RequestGate.run``) do the blocking work of the admitted requests, ``workers`` at a
  time, off the event loop, so ``/health`` and ``/ready`` (which never wait at the gate)
  keep answering; only small, bounded steps run on the loop (bodies up to 8 KiB, and a
  small ranking whose Redis reads are awaited: ``RankService.rank_async``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.fairness import (
    FairLimiter,
    Network,
    Places,
    Ticket,
    client_key,
    current_ticket,
    default_client_share,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


#: A body refused before it was read in full is not read further: the connection is closed
#: after the answer (otherwise the server reads and discards the rest, megabytes of it, on
#: the event loop before the connection can serve another request).
CLOSE = ((b"connection", b"close"),)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed (chunked) body passes the limit.

    It is an ``HTTPException`` on purpose: FastAPI's body parsing re-raises those and turns
    any other exception into a 400 "error parsing the body", so this one is answered 413.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _too_large(None, max_bytes), headers={"Connection": "close"})


class LengthRequired(HTTPException):
    """Raised from ``receive`` when a body without ``Content-Length`` passes the limit for
    streamed bodies (411): a client must declare a large body, so that one that is too large
    is refused from its headers instead of being read up to the body limit."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            411,
            f"a body over {max_bytes} bytes needs a Content-Length header "
            "(LTR_MAX_STREAMED_BODY_BYTES)",
            headers={"Connection": "close"},
        )


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when the body has not arrived within the time allowed (408)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"request body not received within {seconds:g} s (LTR_BODY_READ_TIMEOUT_S)",
            headers={"Connection": "close"},
        )


def _too_large(declared: int | None, max_bytes: int) -> str:
    """The 413 detail; ``declared`` is the Content-Length, None for a streamed body."""
    size = f"{declared} bytes >" if declared is not None else "more than"
    return f"request body too large: {size} {max_bytes} bytes (LTR_MAX_BODY_BYTES)"


async def send_json(
    send: Send, status: int, payload: object, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a small JSON document straight from the middleware."""
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 above ``max_bytes``; 408 when the body takes longer than ``timeout_s`` to arrive
    (counted from the moment the request reached the app)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float = 10.0,
        max_streamed_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        #: a body without Content-Length (chunked) may not pass this (411)
        self.max_streamed_bytes = max_streamed_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    detail = _too_large(declared, self.max_bytes)
                    await send_json(send, 413, {"detail": detail}, CLOSE)
                    return
        streamed_limit = self.max_streamed_bytes if declared is None else None
        received = 0
        complete = False
        started = False
        deadline = anyio.current_time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in; later calls wait for a disconnect, unbounded
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if streamed_limit is not None and received > streamed_limit:
                    raise LengthRequired(streamed_limit)
                complete = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, LengthRequired, BodyTimeout) as exc:
            if not started:
                await send_json(send, exc.status_code, {"detail": exc.detail}, CLOSE)


class RequestGate:
    """Admission and worker threads of the data-plane requests.

    ``workers`` steps of blocking work run at once (each through :meth:`run`, in a worker
    thread), granted fairly between clients (:class:`serving.fairness.FairLimiter`);
    ``queue`` more requests may wait. ``in_flight`` counts the admitted requests, from their
    arrival to the end of their background tasks; one client's share of those places is
    bounded (:class:`serving.fairness.Places`).
    """

    def __init__(
        self,
        workers: int,
        queue: int,
        retry_after_s: int,
        client_share: int | None = None,
        heavy_body_bytes: int = 64 * 1024,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.threads = anyio.CapacityLimiter(workers)
        self.fair = FairLimiter(workers)
        self.capacity = workers + queue
        self.places = Places(self.capacity, client_share or default_client_share(workers, queue))
        self.retry_after_s = retry_after_s
        self.heavy_body_bytes = heavy_body_bytes
        self.trusted_proxies = tuple(trusted_proxies)
        self.rejected = 0
        self.refused_to_client = 0
        #: Called with the request path and status of each request turned away (metrics).
        self.on_reject: Callable[[str, int], None] | None = None

    @property
    def in_flight(self) -> int:
        return self.places.in_flight

    def ticket(self, scope: Scope) -> Ticket:
        return Ticket(client_key(scope, self.trusted_proxies))

    def try_enter(self, ticket: Ticket | None = None) -> int | None:
        """None when admitted (call :meth:`leave` later), else the status to answer."""
        client = (ticket or Ticket("")).client
        status = self.places.refuse(client)
        if status is None:
            self.places.enter(client)
        elif status == 503:
            self.rejected += 1
        else:
            self.refused_to_client += 1
        return status

    def leave(self, ticket: Ticket | None = None) -> None:
        self.places.leave((ticket or Ticket("")).client)

    @contextlib.asynccontextmanager
    async def slot(self, *, first: bool = False) -> AsyncIterator[None]:
        """A worker slot, granted fairly between the clients waiting (the request's ticket
        comes from its context); ``first``: ahead of new requests' steps. Used directly for
        work done elsewhere, such as the body-check process."""
        ticket = await self.fair.acquire(current_ticket.get(), first=first)
        try:
            yield
        finally:
            self.fair.release(ticket)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread, in a :meth:`slot`."""
        async with self.slot():
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    async def run_after(self, fn: Callable[..., T], *args: object) -> T:
        """Like :meth:`run`, for the background work of a request already answered: it goes
        ahead of new requests' steps, so that under saturation answered requests do not pile
        up in the gate (they hold their places until their background work is done)."""
        async with self.slot(first=True):
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)


class AtCapacity(HTTPException):
    """Raised from ``receive`` when a body is complete but the gate is full (503), or when
    its client already holds its share of the places (429)."""

    def __init__(self, gate: RequestGate, status: int = 503) -> None:
        if status == 429:
            detail = (
                f"too many requests in progress from this client ({gate.places.client_share}: "
                f"LTR_REQUEST_CLIENT_SHARE); retry after {gate.retry_after_s} s"
            )
        else:
            detail = (
                f"the service is at capacity ({gate.capacity} requests in progress or "
                f"waiting: LTR_REQUEST_WORKERS + LTR_REQUEST_QUEUE); retry after "
                f"{gate.retry_after_s} s"
            )
        super().__init__(status, detail, headers={"Retry-After": str(gate.retry_after_s)})


def _content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class Admission:
    """Requests to ``paths`` pass :class:`RequestGate` once their body has arrived; beyond
    its capacity they are answered 503 with ``Retry-After`` before any work is done, beyond
    their client's share 429 (:mod:`serving.fairness`).

    Admission waits for the end of the body on purpose: a client that sends its body slowly
    holds a connection (until LTR_BODY_READ_TIMEOUT_S), never a place in the gate. An
    admitted request keeps its place until its background tasks are done, unless its ticket
    says that work is bounded on its own (``Ticket.leave_when_answered``): then until its
    answer is sent. The request's
    :class:`~serving.fairness.Ticket` (client, heavy body or not) is in
    :data:`serving.fairness.current_ticket` for the gate's worker slots.
    """

    def __init__(self, app: ASGIApp, gate: RequestGate, paths: Iterable[str]) -> None:
        self.app = app
        self.gate = gate
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        ticket = gate.ticket(scope)
        ticket.heavy = _content_length(scope) > gate.heavy_body_bytes
        token = current_ticket.set(ticket)
        admitted = False
        left = False
        started = False
        received = 0

        async def admitting_receive() -> Message:
            nonlocal admitted, received
            message = await receive()
            if not admitted and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > gate.heavy_body_bytes:
                    ticket.heavy = True  # a streamed body without Content-Length
                if not message.get("more_body", False):
                    status = gate.try_enter(ticket)
                    if status is not None:
                        if gate.on_reject is not None:
                            gate.on_reject(scope["path"], status)
                        raise AtCapacity(gate, status)
                    admitted = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started, left
            if message["type"] == "http.response.start":
                started = True
            await send(message)
            if (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and ticket.leave_when_answered
                and admitted
                and not left
            ):
                left = True
                gate.leave(ticket)

        try:
            await self.app(scope, admitting_receive, tracking_send)
        except AtCapacity as exc:  # only when no exception handler answered it
            if not started:
                headers = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
                await send_json(send, exc.status_code, {"detail": exc.detail}, headers)
        finally:
            if admitted and not left:
                gate.leave(ticket)
            current_ticket.reset(token)
