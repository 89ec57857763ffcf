"""Fixtures shared by the promotion tests: exported model versions and a model store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.models import export_promotion_versions

from ltr.model_store import serve_single


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1 and v2 (healthy) and v3 (requires a request feature nobody sends), exported once."""
    root = tmp_path_factory.mktemp("promotion_templates")
    export_promotion_versions(root)
    return root


@pytest.fixture
def models(tmp_path: Path, templates: Path) -> Path:
    """A model store with v1, v2, v3 installed and v1 in production."""
    root = tmp_path / "models"
    shutil.copytree(templates / "versions", root / "versions")
    serve_single(root, "v1")
    return root
