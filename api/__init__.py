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
    from datetime import date, datetime
    from pathlib import Path

    from tally.catalog.facade import Catalog
    from tally.catalog.pipeline import ComputeRun

__all__ = ["Catalog", "Gate", "TallyError", "compute", "load", "training_frame"]


def load(path: str | Path = ".") -> Catalog:
    """The project at `path`, loaded and validated (raises DefinitionError when invalid)."""
    from tally.catalog.facade import load

    return load(path)


def training_frame(entity_df: Any, model: str | None = None, features: list[str] | None = None,
                   project: str | Path = ".", timestamp_column: str = "event_timestamp") -> Any:
    """A point-in-time-correct training frame as a pandas DataFrame (see docs/serving.md)."""
    from tally.feature_repo import training_frame as _training_frame

    return _training_frame(entity_df, model=model, features=features, project=project,
                           timestamp_column=timestamp_column)


def compute(project: str | Path = ".", metrics: list[str] | None = None, *,
            start: date | None = None, end: date | None = None, full: bool = False,
            as_of: str | datetime | None = None, allow_violations: bool = False) -> ComputeRun:
    """Compute the project's tables (only those of `metrics` when given) through the
    contract gate of the sources they read, as `tally compute` does: a failing contract
    raises ContractViolationError unless `allow_violations`. `.tables` lists what was
    written, `.contracts` the contract report."""
    from tally.catalog.pipeline import ComputeOptions, Gate
    from tally.catalog.pipeline import compute as gated_compute
    from tally.catalog.spec.loading import load_project

    options = ComputeOptions(metrics=list(metrics or []), start=start, end=end, full=full)
    run_gate = Gate(as_of=as_of, allow_violations=allow_violations)
    return gated_compute(load_project(project), options, run_gate=run_gate)


def __getattr__(name: str) -> Any:
    if name == "Catalog":
        from tally.catalog.facade import Catalog

        return Catalog
    if name == "Gate":
        from tally.catalog.pipeline import Gate

        return Gate
    raise AttributeError(f"module 'tally' has no attribute {name!r}")
