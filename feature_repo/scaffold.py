"""`tally init` on the Feast side: the catalog's scaffold plus the Feast repo's
definitions.py, whose one copy is this package's own `definitions.py`."""

from __future__ import annotations

from pathlib import Path

from tally.catalog.spec.authoring import Scaffold
from tally.catalog.spec.authoring import init_project as init_catalog_project
from tally.catalog.store.paths import DEFINITIONS_PY

DEFINITIONS_TEMPLATE = Path(__file__).resolve().parent / "definitions.py"


def init_project(target: Path, *, name: str | None = None) -> Scaffold:
    """Scaffold a project (metrics/, feature_repo/, a sample data file) that validates,
    checks, computes and applies; never overwrite a user's file."""
    definitions = DEFINITIONS_TEMPLATE.read_text("utf-8")
    return init_catalog_project(target, name=name, extra_files={DEFINITIONS_PY: definitions})
