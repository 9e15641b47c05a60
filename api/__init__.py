"""Tally: business metrics declared once, computed once, served through Feast.

The notebook API: `tally.load(path)` gives the project's typed `Catalog` (search, show,
impact, reuse, lineage) and `tally.training_frame(entity_df, model=... | features=[...],
project=...)` a point-in-time-correct pandas DataFrame. Importing `tally` is cheap: Feast
loads only when a training frame is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tally.catalog.errors import TallyError

if TYPE_CHECKING:
    from pathlib import Path

    from tally.catalog.facade import Catalog

__all__ = ["Catalog", "TallyError", "load", "training_frame"]


def load(path: str | Path = ".") -> Catalog:
    """The project at `path`, loaded and validated (raises DefinitionError when invalid)."""
    from tally.catalog.facade import load

    return load(path)


def training_frame(entity_df: Any, model: str | None = None, features: list[str] | None = None,
                   project: str | Path = ".") -> Any:
    """A point-in-time-correct training frame as a pandas DataFrame (see docs/serving.md)."""
    from tally.feature_repo import training_frame as _training_frame

    return _training_frame(entity_df, model=model, features=features, project=project)


def __getattr__(name: str) -> Any:
    if name == "Catalog":
        from tally.catalog.facade import Catalog

        return Catalog
    raise AttributeError(f"module 'tally' has no attribute {name!r}")
