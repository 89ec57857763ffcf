"""Checks on a DAG run's ``conf``: a key the DAG does not declare is refused with a sentence
(a typo such as ``observe_minute`` would otherwise leave the default in force unnoticed)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def refuse_unknown_conf(conf: Mapping[str, Any] | None, known: Iterable[str], dag_id: str) -> None:
    """Raise ValueError naming every key of ``conf`` that is not in ``known`` (a DAG without
    Params takes no conf at all)."""
    names = sorted(known)
    unknown = sorted(set(conf or {}) - set(names))
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    takes = f"its settings are {', '.join(names)}" if names else "it takes no settings"
    raise ValueError(f"{dag_id} does not take {', '.join(parts)}: {takes}. Nothing was changed.")
