"""Tests that depend on the accelerator: the only tests allowed to skip under CI.

``needs_cuda`` runs a test only where a CUDA device is present; ``cpu_only`` runs it only
where none is (it checks the error a CUDA request gives without one). Both carry the
``device`` marker, which tests/conftest.py exempts from "a skip under CI is a failure".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., object])


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def needs_cuda(fn: F) -> F:
    skip = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device")
    return pytest.mark.device(skip(fn))  # type: ignore[no-any-return]


def cpu_only(fn: F) -> F:
    skip = pytest.mark.skipif(_cuda_available(), reason="CUDA is available here")
    return pytest.mark.device(skip(fn))  # type: ignore[no-any-return]
