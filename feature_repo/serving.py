"""Training frames and online materialization through Feast."""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tally.catalog.errors import DataError, LookupFailedError, UsageError
from tally.catalog.pipeline import Gate, gate
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec, table_specs, tables_by_feature
from tally.feature_repo.offline_store_sql import (
    ROW as SPARK_ROW,  # the row number the offline store keeps
)
from tally.feature_repo.registry import open_store

TIMESTAMP = "event_timestamp"


def feature_refs(project: Project, model: str | None, features: list[str] | None
                 ) -> list[str]:
    """`view:feature` references for a model or an explicit list of features."""
    if (model is None) == (not features):
        raise UsageError("give either a model or a list of features, not both or neither")
    if model is not None:
        if model not in project.models:
            raise LookupFailedError(f"unknown model {model!r}; models: "
                                    f"{', '.join(sorted(project.models)) or 'none'}")
        names = list(project.models[model].features)
    else:
        names = list(features or [])
    refs = []
    serving = _serving_tables(project)
    for name in names:
        table = serving.get(name)
        if table is None:
            raise LookupFailedError(f"unknown feature {name!r}; `tally search {name}` lists "
                                    "what exists")
        refs.append(f"{table.name}:{name}")
    return refs


def _serving_tables(project: Project) -> dict[str, TableSpec]:
    """The table (FeatureView) serving each metric or score."""
    return tables_by_feature(table_specs(project))


def _views(project: Project, refs: list[str]) -> list[TableSpec]:
    """The tables the `view:feature` references read, once each."""
    by_name = {spec.name: spec for spec in table_specs(project)}
    return [by_name[v] for v in sorted({r.split(":", 1)[0] for r in refs}) if v in by_name]


def _check_entity_frame(project: Project, frame: pd.DataFrame, refs: list[str]) -> pd.DataFrame:
    keys = {project.entities[table.entity].join_key for table in _views(project, refs)}
    missing = [c for c in [*sorted(keys), TIMESTAMP] if c not in frame.columns]
    if missing:
        raise DataError(f"the entity frame lacks column(s) {', '.join(missing)}; it needs the "
                        f"join key(s) and an {TIMESTAMP} column (has: {', '.join(frame.columns)})")
    frame = frame.copy()
    try:
        stamps = pd.to_datetime(frame[TIMESTAMP], utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"entity frame column {TIMESTAMP} is not a timestamp: {exc}") from None
    if stamps.isna().any():
        raise DataError(f"entity frame column {TIMESTAMP} has {int(stamps.isna().sum())} empty "
                        "values; every row needs a time")
    frame[TIMESTAMP] = stamps  # timestamps without a time zone are read as UTC, as Feast does
    for key in keys:
        if frame[key].isna().any():
            raise DataError(f"entity frame column {key} has empty values")
    return frame


def training_frame(entity_df: pd.DataFrame | str | Path, model: str | None = None,
                   features: list[str] | None = None, project: str | Path | Project = ".",
                   ) -> pd.DataFrame:
    """Point-in-time-correct features for each entity row, in the entity frame's order,
    with every input column (labels included) kept."""
    proj = project if isinstance(project, Project) else load_project(project)
    refs = feature_refs(proj, model, features)
    frame = read_entity_file(Path(entity_df)) if isinstance(entity_df, Path) else entity_df
    if isinstance(frame, pd.DataFrame):
        frame = _check_entity_frame(proj, frame, refs)
    _require_computed(proj, refs)
    store = open_store(proj)
    _require_registered(store, refs)
    spark = store.config.offline_store.type == "spark"
    # Feast's Spark store neither keeps row order nor duplicate entity rows apart
    if spark and isinstance(frame, pd.DataFrame):
        frame = frame.assign(**{SPARK_ROW: range(len(frame))})
    job = store.get_historical_features(entity_df=frame, features=refs)
    result: pd.DataFrame = job.to_df()
    if spark and isinstance(frame, pd.DataFrame):
        result = result.drop_duplicates(SPARK_ROW).sort_values(SPARK_ROW).drop(
            columns=SPARK_ROW)
        frame = frame.drop(columns=SPARK_ROW)
    if isinstance(frame, pd.DataFrame):
        order = list(frame.columns) + [r.split(":", 1)[1] for r in refs]
        result = result[[c for c in order if c in result.columns]]
    ordered: pd.DataFrame = result.reset_index(drop=True)
    return ordered


def _require_computed(project: Project, refs: list[str]) -> None:
    for table in _views(project, refs):
        if not table.path(project).exists():
            name = next(r.split(":", 1)[1] for r in sorted(refs)
                        if r.split(":", 1)[0] == table.name)
            raise DataError(f"{name} is served from {table.path(project)}, which does not exist "
                            "yet; run `tally compute` first")


def _require_registered(store: Any, refs: list[str]) -> None:
    registered = {v.name for v in store.list_feature_views()}
    missing = sorted({r.split(":", 1)[0] for r in refs} - registered)
    if missing:
        raise LookupFailedError(f"feature view(s) {', '.join(missing)} are not in the Feast "
                                "registry; run `tally compute` and `tally apply` first")


def read_entity_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"entity file {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many error types for bad files
        raise DataError(f"cannot read entity file {path}: {str(exc).splitlines()[0]}") from None
    raise UsageError(f"entity file {path}: use .parquet or .csv")


def check_frame_path(out: Path) -> None:
    """A training frame is written as .parquet or .csv."""
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"{out}: use .parquet or .csv", option="out")


def write_frame(frame: pd.DataFrame, out: Path) -> None:
    from tally.catalog.store.fsutil import temp_path_beside

    check_frame_path(out)
    tmp = temp_path_beside(out, out.suffix)
    try:
        if out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def materialize(project: Project, start: datetime | None = None,
                end: datetime | None = None, run_gate: Gate | None = None) -> list[str]:
    """Load the latest values into the online store, after the contract gate of every
    source (tally.catalog.pipeline.gate); returns the feature views loaded."""
    from tally.catalog.store.fsutil import project_lock

    gate(project, None, run_gate)
    store = open_store(project)
    computed = {t.name for t in table_specs(project) if t.path(project).exists()}
    views = [v.name for v in store.list_feature_views() if v.name in computed]
    if not views:
        raise LookupFailedError("no computed feature view is in the Feast registry; run "
                                "`tally compute` and `tally apply` first")
    end = end or datetime.now(UTC)
    with project_lock(project.root), contextlib.redirect_stdout(sys.stderr):
        if start is None:
            store.materialize_incremental(end_date=end, feature_views=views)
        else:
            store.materialize(start_date=start, end_date=end, feature_views=views)
    return views
