"""Which failures of a DAG task retrying can fix, and which fail the task at once.

A config, schema or data mismatch (``ValueError``, a missing file) gives the same answer on
every try: retrying only delays the red run (the retrain once spent 11 minutes retrying a
config error, blocking every other run of its DAG). :func:`fail_fast` turns such an error
into Airflow's ``AirflowFailException`` (failed for good, no retry), with the message that
says what to fix. Anything else (a service down, a timeout, a lock) propagates unchanged and
is retried by the task's ``retries``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["PERMANENT", "PipelineConfigError", "fail_fast"]


class PipelineConfigError(ValueError):
    """The pipeline config disagrees with the data, the feature store or the model store.

    The message names the setting, the file and the fix; retrying cannot help.
    """


#: Errors that retrying cannot fix (a ValueError is a config, schema or data mismatch in
#: this code base; a missing file is missing on the next try too).
PERMANENT: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


@contextlib.contextmanager
def fail_fast(what: str) -> Iterator[None]:
    """Inside a task body: a :data:`PERMANENT` error fails the task at once, not retried,
    as ``AirflowFailException("<what>: <message> ...")``; other errors are retried."""
    try:
        yield
    except PERMANENT as exc:
        from airflow.sdk.exceptions import AirflowFailException

        log.error("%s failed for good (retrying cannot fix this): %s", what, exc)
        raise AirflowFailException(
            f"{what}: {exc} (not retried: fix the cause, then clear the task)"
        ) from exc
