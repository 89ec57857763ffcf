"""serving.fairness: client keys, per-client places and the fair worker slots."""

from __future__ import annotations

import anyio
import pytest

from serving.fairness import FairLimiter, Places, Ticket, client_key, parse_networks


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 5555), "headers": headers}


def test_client_key_is_the_peer_unless_the_peer_is_a_trusted_proxy():
    proxies = parse_networks(["10.0.0.0/8", " 192.168.1.1 "])
    assert client_key(scope("203.0.113.5", "1.2.3.4"), proxies) == "203.0.113.5"  # not trusted
    assert client_key(scope("10.1.2.3", "1.2.3.4"), proxies) == "1.2.3.4"
    # the right-most hop that is not a proxy: a client cannot hide behind a forged left part
    assert client_key(scope("10.1.2.3", "6.6.6.6, 1.2.3.4, 192.168.1.1"), proxies) == "1.2.3.4"
    assert client_key(scope("10.1.2.3", "not-an-ip"), proxies) == "10.1.2.3"
    assert client_key(scope("10.1.2.3"), proxies) == "10.1.2.3"
    assert client_key(scope("10.1.2.3", "1.2.3.4"), ()) == "10.1.2.3"  # nothing trusted
    assert client_key({"type": "http", "headers": []}, proxies) == "unknown"


def test_a_bad_trusted_proxy_entry_is_named():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_places_refuse_a_client_over_its_share_and_everyone_when_full():
    places = Places(capacity=5, client_share=2)
    for client in ("a", "a", "b", "b"):
        assert places.refuse(client) is None
        places.enter(client)
    assert places.refuse("a") == 429 and places.refuse("b") == 429
    assert places.refuse("c") is None
    places.enter("c")
    assert places.refuse("d") == 503  # full
    places.leave("a")
    assert places.refuse("a") is None and places.by_client == {"a": 1, "b": 2, "c": 1}


def test_a_client_alone_may_use_every_place():
    places = Places(capacity=4, client_share=2)
    for _ in range(4):
        assert places.refuse("a") is None
        places.enter("a")
    assert places.refuse("a") == 503  # full, not over its share: nobody else was there
    places.leave("a")
    places.leave("a")
    places.enter("b")  # another client arrives: a (2 places) is at its share now
    assert places.refuse("a") == 429 and places.refuse("b") is None


def run_limiter(limiter: FairLimiter, plan: list[Ticket], hold: int) -> list[str]:
    """Start every ticket's acquire in order; the first ``hold`` get slots at once and are
    released one by one; the order in which the others are granted is returned."""
    order: list[str] = []

    async def main() -> None:
        held = [await limiter.acquire(t) for t in plan[:hold]]
        done = anyio.Event()

        async def wait(t: Ticket, name: str) -> None:
            got = await limiter.acquire(t)
            order.append(name)
            held.append(got)
            if len(order) == len(plan) - hold:
                done.set()

        async with anyio.create_task_group() as tg:
            for i, t in enumerate(plan[hold:]):
                tg.start_soon(wait, t, f"{t.client}{i}")
                await anyio.sleep(0)  # in arrival order
            while not done.is_set():
                limiter.release(held.pop(0))
                await anyio.sleep(0)
        for t in held:
            limiter.release(t)

    anyio.run(main)
    assert limiter.busy == 0 and not limiter.waiting and not limiter.running
    return order


def test_a_freed_slot_goes_to_the_waiting_client_with_fewest_slots_in_use():
    a, b = Ticket("a"), Ticket("b")
    # a holds both slots and queues three more; b arrives last
    order = run_limiter(FairLimiter(2), [a, a, a, a, a, b], hold=2)
    assert order[0] == "b3"  # first grant: a has 1 running, b none
    assert order[1:] == ["a0", "a1", "a2"]


def test_heavy_requests_leave_one_slot_to_light_ones():
    limiter = FairLimiter(3)
    assert limiter.heavy_slots == 2

    async def main() -> list[str]:
        heavy = Ticket("x", heavy=True)
        await limiter.acquire(heavy)
        await limiter.acquire(heavy)
        granted: list[str] = []

        async def take(t: Ticket, name: str) -> None:
            await limiter.acquire(t)
            granted.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, Ticket("x", heavy=True), "heavy")
            await anyio.sleep(0.01)
            assert granted == [] and limiter.busy == 2  # a slot is free, but not for heavy
            tg.start_soon(take, Ticket("y"), "light")
            await anyio.sleep(0.01)
            assert granted == ["light"] and limiter.busy == 3
            limiter.release(heavy)  # a heavy one ends: the waiting heavy one may run
            await anyio.sleep(0.01)
        return granted

    assert anyio.run(main) == ["light", "heavy"]


def test_a_cancelled_waiter_leaves_the_queue_and_a_late_grant_is_handed_on():
    limiter = FairLimiter(1)

    async def main() -> None:
        first = await limiter.acquire(Ticket("a"))
        with anyio.move_on_after(0.01):
            await limiter.acquire(Ticket("b"))
        assert limiter.waiting_count() == 0 and limiter.busy == 1

        async with anyio.create_task_group() as tg:
            scope_holder: list[anyio.CancelScope] = []

            async def waiter() -> None:
                with anyio.CancelScope() as cs:
                    scope_holder.append(cs)
                    await limiter.acquire(Ticket("c"))
                    pytest.fail("the grant should have been cancelled")

            tg.start_soon(waiter)
            await anyio.sleep(0.01)
            scope_holder[0].cancel()  # c is cancelled, and before it runs again ...
            limiter.release(first)  # ... the slot is granted to it: c hands it back
        assert limiter.busy == 0 and not limiter.running

    anyio.run(main)


def test_work_of_answered_requests_goes_ahead_of_new_steps():
    limiter = FairLimiter(1)

    async def main() -> list[str]:
        held = await limiter.acquire(Ticket("a"))
        granted: list[str] = []

        async def take(t: Ticket, name: str, first: bool) -> None:
            got = await limiter.acquire(t, first=first)
            granted.append(name)
            limiter.release(got)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, Ticket("b"), "b: new step", False)  # b has none running
            await anyio.sleep(0)
            tg.start_soon(take, Ticket("a"), "a: background", True)
            await anyio.sleep(0)
            limiter.release(held)
        return granted

    assert anyio.run(main) == ["a: background", "b: new step"]
