"""The real benchmark datasets: beside the project (``../shared/datasets``) or in
``$LTR_DATASETS_DIR``; never copied into it. A test that needs an absent one skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def datasets_dir() -> Path:
    env = os.environ.get("LTR_DATASETS_DIR")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "datasets").resolve()


def need(relative: str) -> Path:
    """The dataset file or folder ``relative`` to the datasets folder, or a skip."""
    path = datasets_dir() / relative
    if not path.exists():
        pytest.skip(f"dataset not available: {path} (set LTR_DATASETS_DIR to its folder)")
    return path


def mq2008_s1() -> Path:
    """MQ2008 fold file S1.txt (46 features, labels 0-2), or a skip."""
    return need("mq2008/S1.txt")
