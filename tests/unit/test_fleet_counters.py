"""ScrapeFleet: each replica's counters become increases since the window began (a drop is
a restart of that replica), then they are summed over the replicas."""

from __future__ import annotations

import json

from ltr.promotion import ScrapeFleet


class Replicas:
    """GET /api/v1/models of two replicas whose counters the test sets; no /metrics."""

    def __init__(self) -> None:
        self.counts = {"http://a": {"v2": (0, 0, 0)}, "http://b": {"v2": (0, 0, 0)}}

    def __call__(self, url: str) -> str:
        base, found, _ = url.partition("/api/v1/models")
        if not found:
            raise ConnectionError("no /metrics here")
        rows = [
            {"version": v, "requests": n, "errors": e, "client_errors": c}
            for v, (n, e, c) in self.counts[base].items()
        ]
        return json.dumps({"routing_version": 3, "production": "v1", "versions": rows})


def test_counts_are_summed_over_replicas_and_a_restart_is_not_a_negative_increase() -> None:
    reps = Replicas()
    reps.counts["http://a"]["v2"] = (100, 5, 1)  # before the window: the baseline
    reps.counts["http://b"]["v2"] = (40, 0, 0)
    fleet = ScrapeFleet(["http://a", "http://b"], fetch=reps)
    fleet.start()
    reps.counts["http://a"]["v2"] = (130, 6, 3)  # +30 requests, +1 error, +2 client errors
    reps.counts["http://b"]["v2"] = (10, 1, 0)  # restarted: 10 requests since
    first = fleet.read()
    assert first is not None
    t = first.versions["v2"]
    assert (t.requests, t.errors, t.client_errors) == (40, 2, 2)
    reps.counts["http://b"]["v2"] = (25, 1, 0)  # +15 after the restart
    second = fleet.read()
    assert second is not None
    assert second.versions["v2"].requests == 55
    assert second.routing == {"http://a": 3, "http://b": 3}


def test_a_replica_that_stops_answering_keeps_what_it_counted() -> None:
    reps = Replicas()
    fleet = ScrapeFleet(["http://a", "http://b"], fetch=reps)
    fleet.start()
    reps.counts["http://a"]["v2"] = (10, 0, 0)
    reps.counts["http://b"]["v2"] = (20, 0, 0)
    assert fleet.read() is not None
    del reps.counts["http://b"]
    reading = fleet.read()
    assert reading is not None
    assert reading.versions["v2"].requests == 30
    assert reading.routing == {"http://a": 3, "http://b": None}
    assert fleet.failures >= 1
