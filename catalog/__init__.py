"""Tally's catalog: definitions, validation, contracts, plans, search and lineage.

Never imports Feast, so search, show and validate start fast.
"""

from __future__ import annotations

from typing import Any

from .errors import TallyError

__all__ = ["TallyError", "load"]


def load(path: str = ".") -> Any:
    """The project at `path`, loaded and validated (raises DefinitionError when invalid)."""
    from .project import load_project

    return load_project(path)
