"""A request keeps its place in the gate through its background work, unless its route
marks that work as bounded on its own (``Ticket.leave_when_answered``): then the place is
free once the answer has been sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serving.fairness import current_ticket
from serving.middleware import Admission, RequestGate

SCOPE: dict[str, Any] = {"type": "http", "path": "/x", "headers": [], "client": ("10.0.0.1", 1)}


async def two_requests(leave_when_answered: bool) -> tuple[int, int]:
    """Capacity 1; the first request answers and then waits in its background work; the
    status the second request gets meanwhile, and the places in use while it waits."""
    gate = RequestGate(1, 0, 1)
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        ticket = current_ticket.get()
        assert ticket is not None
        ticket.leave_when_answered = leave_when_answered
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await release.wait()  # the work after the answer

    admission = Admission(app, gate, paths=["/x"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    answers: list[list[dict[str, Any]]] = [[], []]

    def sender(i: int) -> Any:
        async def send(message: dict[str, Any]) -> None:
            answers[i].append(message)

        return send

    first = asyncio.create_task(admission(dict(SCOPE), receive, sender(0)))
    while len(answers[0]) < 2:  # answered, now in its background work
        await asyncio.sleep(0)
    in_use = gate.in_flight
    second = asyncio.create_task(admission(dict(SCOPE), receive, sender(1)))
    while not answers[1]:
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, second)
    assert gate.in_flight == 0  # every place given back exactly once
    return int(answers[1][0]["status"]), in_use


@pytest.mark.parametrize(("leave", "status", "in_use"), [(True, 200, 0), (False, 503, 1)])
def test_the_place_is_given_back_at_the_answer_only_when_the_route_says_so(leave, status, in_use):
    assert asyncio.run(two_requests(leave)) == (status, in_use)
