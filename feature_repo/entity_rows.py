"""The entity rows of a training frame, checked before Feast sees them: the join keys and
a timestamp column exist, every time is ISO 8601 (any of its forms), every key has the
type the feature tables store. Each error names the column, the row and what was expected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tally.catalog.errors import DataError
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec

TIMESTAMP = "event_timestamp"


def check_entity_frame(project: Project, frame: pd.DataFrame, tables: list[TableSpec],
                       timestamp_column: str = TIMESTAMP) -> pd.DataFrame:
    """A copy of `frame` with its timestamps in UTC (under `event_timestamp`) and its keys
    converted to the feature tables' key type."""
    keys = {project.entities[table.entity].join_key: table for table in tables}
    missing = [c for c in [*sorted(keys), timestamp_column] if c not in frame.columns]
    if missing:
        raise DataError(f"the entity frame lacks column(s) {', '.join(missing)}; it needs the "
                        f"join key(s) and a {timestamp_column} column (has: "
                        f"{', '.join(map(str, frame.columns))})")
    if timestamp_column != TIMESTAMP and TIMESTAMP in frame.columns:
        raise DataError(f"the entity frame has both {timestamp_column} and {TIMESTAMP}; "
                        f"rename or drop {TIMESTAMP}")
    frame = frame.rename(columns={timestamp_column: TIMESTAMP})
    frame[TIMESTAMP] = _timestamps(frame[TIMESTAMP], timestamp_column)
    for key, table in sorted(keys.items()):
        frame[key] = _keys(frame[key], key, _key_is_integer(project, table, key))
    return frame


def _timestamps(column: pd.Series, name: str) -> pd.Series:
    """ISO 8601 in any form (dates, times, `T` or space, offsets); naive times are UTC."""
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    else:
        parsed = pd.to_datetime(column.astype("string"), utc=True, format="ISO8601",
                                errors="coerce")
        bad = parsed.isna() & column.notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(f"entity frame column {name}, row {row + 1}: {column.iloc[row]!r} "
                            "is not an ISO 8601 timestamp (e.g. 2025-12-15, "
                            f"2025-12-15 08:30:00 or 2025-12-15T08:30:00Z); {int(bad.sum())} "
                            "such row(s)")
    if parsed.isna().any():
        row = int(parsed.isna().to_numpy().nonzero()[0][0])
        raise DataError(f"entity frame column {name} has {int(parsed.isna().sum())} empty "
                        f"values (first at row {row + 1}); every row needs a time")
    return parsed


def _keys(column: pd.Series, name: str, integer: bool) -> pd.Series:
    if column.isna().any():
        row = int(column.isna().to_numpy().nonzero()[0][0])
        raise DataError(f"entity frame column {name}, row {row + 1}: empty key; every row "
                        "needs one")
    if not integer or pd.api.types.is_integer_dtype(column):
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round())
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"entity frame column {name}, row {row + 1}: {column.iloc[row]!r} is "
                        f"not an integer; the feature tables key {name} by integers "
                        f"({int(bad.sum())} such row(s))")
    return numbers.astype("int64")


def _key_is_integer(project: Project, table: TableSpec, key: str) -> bool:
    """Whether the table (or, before it is computed, its source) stores `key` as integers."""
    import pyarrow as pa
    from tally.catalog.sql.parts import table_schema

    paths: list[Path] = [table.path(project)]
    if table.source:
        paths.append(project.root / project.sources[table.source].path)
    for path in paths:
        if path.suffix == ".parquet":
            try:
                schema = table_schema(path)  # a computed table, or a source file
            except (OSError, ValueError):
                continue
            if key in schema.names:
                return bool(pa.types.is_integer(schema.field(key).type))
    return False
