"""Training frames and online materialization through Feast."""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from tally.catalog.errors import DataError, LookupFailedError, UsageError
from tally.catalog.pipeline import Gate, gate
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec, table_specs, tables_by_feature
from tally.catalog.store.runlog import Run, Stopwatch, append_run, now
from tally.feature_repo.entity_rows import TIMESTAMP, check_entity_frame
from tally.feature_repo.plain_output import PlainWhenPiped
from tally.feature_repo.readiness import registered_features, require_applied, require_computed
from tally.feature_repo.registry import open_store


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
    for reference in names:
        name = project.resolve(reference)
        if name is None:
            versions = project.versions.get(reference.partition("@")[0])
            listing = ", ".join(map(str, versions.numbers)) if versions else "none"
            raise LookupFailedError(f"feature {reference!r}: no such version (versions: "
                                    f"{listing})")
        table = serving.get(name)
        if table is None:
            raise LookupFailedError(f"unknown feature {reference!r}; `tally search {name}` "
                                    "lists what exists")
        refs.append(f"{table.name}:{name}")
    return list(dict.fromkeys(refs))


def _serving_tables(project: Project) -> dict[str, TableSpec]:
    """The table (FeatureView) serving each metric or score, and each column a score's
    view serves besides the score (its band, contributions) or a funnel's view besides
    the funnel (its step counts)."""
    from tally.catalog.scores.plans import served_columns

    out = tables_by_feature(table_specs(project))
    for spec in table_specs(project):
        if spec.kind == "score":
            for column, _ in served_columns(project.scores[spec.features[0]]):
                out.setdefault(column, spec)
        for column in spec.extra_columns:
            out.setdefault(column, spec)
    return out


def _views(project: Project, refs: list[str]) -> list[TableSpec]:
    """The tables the `view:feature` references read, once each."""
    by_name = {spec.name: spec for spec in table_specs(project)}
    return [by_name[v] for v in sorted({r.split(":", 1)[0] for r in refs}) if v in by_name]


def training_frame(entity_df: pd.DataFrame | str | Path, model: str | None = None,
                   features: list[str] | None = None, project: str | Path | Project = ".",
                   timestamp_column: str = TIMESTAMP) -> pd.DataFrame:
    """Point-in-time-correct features for each entity row, in the entity frame's order,
    with every input column (labels included) kept. `timestamp_column` names the column
    holding each row's time (ISO 8601 in any form; naive times are UTC)."""
    watch = Stopwatch()
    proj = project if isinstance(project, Project) else load_project(project)
    refs = feature_refs(proj, model, features)
    frame = read_entity_file(Path(entity_df)) if isinstance(entity_df, Path) else entity_df
    if isinstance(frame, pd.DataFrame):
        frame = check_entity_frame(proj, frame, _views(proj, refs), timestamp_column)
    by_name = {spec.name: spec for spec in table_specs(proj)}
    require_computed(proj, [(by_name[ref.split(":", 1)[0]], ref.split(":", 1)[1])
                            for ref in refs])
    store = open_store(proj)
    require_applied(store, refs)
    # both of Tally's offline stores return rows in entity order, duplicates kept
    job = store.get_historical_features(entity_df=frame, features=refs)
    result: pd.DataFrame = job.to_df()
    if isinstance(frame, pd.DataFrame):
        order = list(frame.columns) + [r.split(":", 1)[1] for r in refs]
        result = result[[c for c in order if c in result.columns]]
        result = result.rename(columns={TIMESTAMP: timestamp_column})
    append_run(proj.root, Run(now(), "training_frame", watch.wall, watch.cpu, model=model,
                              features=[r.split(":", 1)[1] for r in refs],
                              rows_served=len(result)))
    ordered: pd.DataFrame = result.reset_index(drop=True)
    return ordered


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


# Before any snapshot a table can hold: materializing from here loads every key's newest row.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def materialize(project: Project, start: datetime | None = None,
                end: datetime | None = None, run_gate: Gate | None = None) -> list[str]:
    """Load each key's newest values at or before `end` (default now), of rows at or after
    `start` (default: all of them, however old), into the online store, after the contract
    gate of every source (tally.catalog.pipeline.gate); returns the feature views loaded."""
    from tally.catalog.store.fsutil import project_lock

    gate(project, None, run_gate)
    store = open_store(project)
    served = registered_features(store, table_specs(project))
    require_computed(project, served)  # every view before any is loaded
    views = sorted({table.name for table, _ in served})
    if not views:
        raise LookupFailedError("no feature view of the definitions is in the Feast registry; "
                                "compute and apply the definitions first")
    end = end or datetime.now(UTC)
    watch = Stopwatch()
    with project_lock(project.root), contextlib.redirect_stdout(
            PlainWhenPiped(sys.stderr)):
        store.materialize(start_date=start or EARLIEST, end_date=end, feature_views=views)
        loaded = [f for t in table_specs(project) if t.name in views for f in t.features]
        append_run(project.root, Run(now(), "materialize", watch.wall, watch.cpu,
                                     features=loaded), lock_held=True)
    return views
