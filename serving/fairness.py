"""Fair shares of the request gate between clients, so one client cannot starve the others.

Two things a client can take from the others are bounded here:

- **places** (admitted requests, in the gate from the end of their body to the end of their
  background tasks): while other clients are in the gate, a client holding ``client_share``
  places is answered 429 with ``Retry-After`` (it is sending more than its share; by default
  half of the places, and at least twice the workers, which keeps the workers busy on its
  own) and the others are still admitted. A client alone may use every place; a full gate
  answers everyone 503. Behind a proxy, list it in ``LTR_TRUSTED_PROXIES``, or every caller
  counts as that one client.
- **worker slots** (:class:`FairLimiter`): when a slot frees, the waiting client with the
  fewest slots in use gets it (the longest waiter among equals), instead of the next request
  in arrival order; so a client with many requests queued delays another client by at most
  the steps already running. Requests with large bodies ("heavy": above
  ``LTR_HEAVY_BODY_BYTES``) use at most ``slots - 1`` slots at once, so a flood of expensive
  bodies always leaves one slot for the small requests that are the normal traffic.

A client is its address, or, when the peer is a trusted proxy (``LTR_TRUSTED_PROXIES``,
CIDRs), the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio
from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; a bad entry is a ``ValueError`` naming it."""
    networks = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {text!r}") from None
    return tuple(networks)


def _trusted(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


def client_key(scope: Scope, trusted: Sequence[Network] = ()) -> str:
    """Who sent the request: the peer address, or behind trusted proxies the right-most
    ``X-Forwarded-For`` hop that is not itself a trusted proxy."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    if not trusted or not _trusted(host, trusted):
        return host
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops.extend(h.strip() for h in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        if not hop:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return host  # a forged or broken header: fall back to the proxy itself
        if not _trusted(hop, trusted):
            return hop
    return host


def default_client_share(workers: int, queue: int) -> int:
    """Half the gate's places, at least twice the workers (LTR_REQUEST_CLIENT_SHARE unset)."""
    return max(2 * workers, (workers + queue) // 2)


@dataclass
class Ticket:
    """One admitted request: its client and whether its body is large."""

    client: str
    heavy: bool = False
    #: Set by a route whose work after the answer is bounded on its own (Redis writes
    #: awaited with a timeout, no worker-thread step): the request's place in the gate is
    #: given back once the answer is sent instead of after that work.
    leave_when_answered: bool = False


#: The ticket of the request being handled (set by :class:`serving.middleware.Admission`);
#: None for calls from outside a request (tests, background reloads).
current_ticket: ContextVar[Ticket | None] = ContextVar("ltr_ticket", default=None)

_ANONYMOUS = Ticket("")


@dataclass
class _Waiter:
    seq: int
    ticket: Ticket
    event: anyio.Event = field(default_factory=anyio.Event)
    granted: bool = False
    #: Work of requests already answered (their background tasks): served before new steps,
    #: so that under saturation the backlog of answered requests stays short.
    first: bool = False


class FairLimiter:
    """``slots`` concurrent steps, granted per client in turn (see the module docstring).

    Used from the event loop only (no locking needed); ``acquire`` and ``release`` pair up
    exactly, also when the waiting task is cancelled.
    """

    def __init__(self, slots: int, heavy_slots: int | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self.heavy_slots = max(1, slots - 1) if heavy_slots is None else heavy_slots
        self.busy = 0
        self.heavy_busy = 0
        self.running: collections.Counter[str] = collections.Counter()
        self.waiting: dict[str, collections.deque[_Waiter]] = {}
        self._seq = itertools.count()

    def _grantable(self, ticket: Ticket) -> bool:
        return self.busy < self.slots and (not ticket.heavy or self.heavy_busy < self.heavy_slots)

    def _take(self, ticket: Ticket) -> None:
        self.busy += 1
        self.heavy_busy += ticket.heavy
        self.running[ticket.client] += 1

    def waiting_count(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    async def acquire(self, ticket: Ticket | None = None, *, first: bool = False) -> Ticket:
        """A slot for ``ticket``'s client; ``first``: ahead of every waiter that is not."""
        ticket = ticket or _ANONYMOUS
        # a free slot with waiters left means every waiter is a heavy request that may not
        # run now (release hands slots on at once), so a grantable ticket goes first
        if self._grantable(ticket):
            self._take(ticket)
            return ticket
        waiter = _Waiter(next(self._seq), ticket, first=first)
        self.waiting.setdefault(ticket.client, collections.deque()).append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # granted while being cancelled: hand the slot on
                self.release(ticket)
            else:
                queue = self.waiting.get(ticket.client)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self.waiting[ticket.client]
            raise
        return ticket

    def release(self, ticket: Ticket) -> None:
        self.busy -= 1
        self.heavy_busy -= ticket.heavy
        self.running[ticket.client] -= 1
        if self.running[ticket.client] <= 0:
            del self.running[ticket.client]
        self._grant()

    def _rank(self, w: _Waiter) -> tuple[bool, int, int]:
        return (not w.first, self.running[w.ticket.client], w.seq)

    def _grant(self) -> None:
        """Hand free slots to waiters: answered requests' work first, then the client with
        the fewest slots in use, then the longest waiting."""
        while self.waiting and self.busy < self.slots:
            best: _Waiter | None = None
            for queue in self.waiting.values():
                fits = [
                    w for w in queue if not w.ticket.heavy or self.heavy_busy < self.heavy_slots
                ]
                if not fits:  # only heavy requests, and they may not run now
                    continue
                head = min(fits, key=lambda w: (not w.first, w.seq))
                if best is None or self._rank(head) < self._rank(best):
                    best = head
            if best is None:
                return
            queue = self.waiting[best.ticket.client]
            queue.remove(best)
            if not queue:
                del self.waiting[best.ticket.client]
            self._take(best.ticket)
            best.granted = True
            best.event.set()


class Places:
    """Admitted requests in the gate, per client (see the module docstring)."""

    def __init__(self, capacity: int, client_share: int) -> None:
        self.capacity = capacity
        self.client_share = max(1, client_share)
        self.in_flight = 0
        self.by_client: collections.Counter[str] = collections.Counter()

    def refuse(self, client: str) -> int | None:
        """None when ``client`` may enter, else the status to answer (429 or 503)."""
        if self.in_flight >= self.capacity:
            return 503
        held = self.by_client[client]
        others = len(self.by_client) - (1 if held else 0)
        if held >= self.client_share and others > 0:
            return 429
        return None

    def enter(self, client: str) -> None:
        self.in_flight += 1
        self.by_client[client] += 1

    def leave(self, client: str) -> None:
        self.in_flight -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]
