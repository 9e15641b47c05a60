"""Before serving: is every table a request reads computed with every feature it must serve,
and is every feature in the Feast registry? Checked for all tables before any is read, so a
stale table fails the whole request (nothing half loaded) with the names to compute or apply.

The library names what is missing; the CLI adds the command that fixes it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tally.catalog.errors import DataError, LookupFailedError
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec


class NotComputedError(DataError):
    """Features whose table is missing or predates them; `features` lists them."""

    def __init__(self, message: str, features: list[str]):
        super().__init__(message)
        self.features = features


class NotAppliedError(LookupFailedError):
    """Features computed but not yet in the Feast registry; `features` lists them."""

    def __init__(self, message: str, features: list[str]):
        super().__init__(message)
        self.features = features


def table_columns(path: Path) -> set[str] | None:
    """The column names of a computed table (None when it does not exist or is
    unreadable)."""
    from tally.catalog.sql.parts import table_schema

    try:
        return set(table_schema(path).names)
    except (OSError, ValueError):
        return None


def require_computed(project: Project, wanted: Iterable[tuple[TableSpec, str]]) -> None:
    """Every (table, feature) pair is a column of a table on disk; else one error for all."""
    missing: dict[str, list[str]] = {}
    columns: dict[str, set[str] | None] = {}
    for table, feature in wanted:
        if table.kind == "column":  # served straight from the source file, renamed
            continue
        if table.name not in columns:
            columns[table.name] = table_columns(table.path(project))
        present = columns[table.name]
        if present is None or feature not in present:
            missing.setdefault(table.name, []).append(feature)
    if missing:
        features = sorted(f for names in missing.values() for f in names)
        detail = "; ".join(
            f"{', '.join(sorted(names))} (table {name}: "
            f"{'not computed' if columns[name] is None else 'computed before it was defined'})"
            for name, names in sorted(missing.items()))
        raise NotComputedError(f"not computed yet: {detail}; compute them first (nothing was "
                               "read or loaded)", features)


def require_applied(store: Any, refs: list[str]) -> None:
    """Every `view:feature` reference is a feature of a registered Feast FeatureView."""
    registered = {view.name: {f.name for f in view.features}
                  for view in store.list_feature_views()}
    missing = sorted(ref.split(":", 1)[1] for ref in refs
                     if ref.split(":", 1)[1] not in registered.get(ref.split(":", 1)[0], set()))
    if missing:
        raise NotAppliedError(f"{', '.join(missing)} computed but not in the Feast registry "
                              "yet; apply the definitions first", missing)


def registered_features(store: Any, specs: list[TableSpec]) -> list[tuple[TableSpec, str]]:
    """(table, feature) for every feature of every registered view that a table serves."""
    by_name = {spec.name: spec for spec in specs}
    return [(by_name[view.name], field.name) for view in store.list_feature_views()
            if view.name in by_name for field in view.features]
