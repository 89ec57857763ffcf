"""An isolated ``LTR_HOME``: the settings, the MLflow store and every default path under it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

#: Unset in an isolated home, so MLflow is the SQLite store under LTR_HOME.
MLFLOW_VARIABLES = ("LTR_MLFLOW_TRACKING_URI", "LTR_MLFLOW_EXPERIMENT", "MLFLOW_TRACKING_URI")


@contextlib.contextmanager
def isolated_home(
    home: Path,
    mp: pytest.MonkeyPatch | None = None,
    *,
    unset: Iterable[str] = (),
    **env: str,
) -> Iterator[pytest.MonkeyPatch]:
    """``LTR_HOME=home``, the MLflow variables and ``unset`` removed, ``env`` set, and the
    settings cache cleared on the way in and out.

    With ``mp`` (a test's ``monkeypatch``) the variables are restored when that test ends;
    without, by a ``MonkeyPatch`` of its own when the block ends (for module fixtures).
    """
    from ltr.settings import get_settings

    own = pytest.MonkeyPatch.context() if mp is None else contextlib.nullcontext(mp)
    try:
        with own as patch:
            patch.setenv("LTR_HOME", str(home))
            for name, value in env.items():
                patch.setenv(name, value)
            for name in (*MLFLOW_VARIABLES, *unset):
                patch.delenv(name, raising=False)
            get_settings.cache_clear()
            yield patch
    finally:
        get_settings.cache_clear()
