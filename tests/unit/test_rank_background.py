"""The background tasks of one rank answer run in one worker step, each one regardless of
the others' failures."""

from __future__ import annotations

import logging

from serving.api.routes.rank import _run_each


def test_a_failing_background_task_is_logged_and_the_next_still_runs(caplog):
    ran: list[str] = []

    def fail() -> None:
        ran.append("fail")
        raise ConnectionError("cache down")

    tasks = [lambda: ran.append("cache"), fail, lambda: ran.append("impression")]
    with caplog.at_level(logging.ERROR, logger="serving.api.routes.rank"):
        _run_each(tasks)
    assert ran == ["cache", "fail", "impression"]
    (record,) = caplog.records
    assert "background task" in record.getMessage() and record.exc_info[0] is ConnectionError
