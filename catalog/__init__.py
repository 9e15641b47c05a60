"""Tally's catalog: definitions, validation, contracts, plans, search and lineage.

Never imports Feast, so search, show and validate start fast.
"""

from __future__ import annotations

from typing import Any

from .errors import TallyError

__all__ = ["TallyError", "load"]


def load(path: str = ".") -> Any:
    """The project at `path`, loaded and validated (raises DefinitionError when invalid).

    The project answers catalog questions: `.search(query, owner=[..], tag=[..], kind=[..],
    status=[..], contract=[..], limit=20)`, `.show(name)`, `.impact(name)`, `.reuse()`;
    each returns dataclasses, with `.to_frame()` where a table fits."""
    from .project import load_project

    return load_project(path)
