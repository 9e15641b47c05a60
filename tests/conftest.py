from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO

# the web catalog fixtures (web_project, web_server, static_site), created only when asked for
pytest_plugins = ["tests.web_support"]


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A copy of the bundled example project's definitions and Feast repo config."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "metrics", root / "metrics")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    return root
