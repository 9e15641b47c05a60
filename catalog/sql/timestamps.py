"""A source's time column must hold timestamps before any metric reads it: a CSV column
with one unparsable time is read as text, and every metric plan would fail on it. This
names the source, the column and example rows instead."""

from __future__ import annotations

from typing import Any

from sqlglot import exp
from tally.catalog.errors import DataError
from tally.catalog.spec.models import Source

EXAMPLES = 5
# DuckDB's names for a time at any precision, with or without a time zone, and dates
TIME_TYPES = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_NS",
              "TIMESTAMP_US", "TIMESTAMP_MS", "TIMESTAMP_S", "TIMESTAMPTZ_NS", "TIMESTAMPTZ_US",
              "TIMESTAMPTZ_MS", "TIMESTAMPTZ_S")


def is_time_type(duck_type: str) -> bool:
    return duck_type.split("(")[0].strip().upper() in TIME_TYPES


def unparsable_times(column: str) -> exp.Condition:
    """Rows whose `column` is set but cannot be read as a timestamp."""
    ref = exp.column(column, quoted=True)
    return exp.and_(exp.Not(this=exp.Is(this=ref.copy(), expression=exp.Null())),
                    exp.Is(this=exp.TryCast(this=ref.copy(), to=exp.DataType.build("TIMESTAMP")),
                           expression=exp.Null()))


def require_time_columns(con: Any, source: Source, relation: exp.Expression, path: str) -> None:
    """Raise DataError when a time column of `source` (DuckDB) is not a timestamp, or when
    the source cannot be read at all (not parquet, say)."""
    from tally.catalog.sql.engines import reading_source

    with reading_source(source.name, path):
        described = con.execute(
            exp.select("*").from_(relation.copy()).limit(0).sql("duckdb")).description
    types = {name: str(kind) for name, kind, *_ in described}
    for column in (source.timestamp_field, source.created_timestamp_field):
        if column is None or column not in types or is_time_type(types[column]):
            continue
        query = exp.select("*").from_(relation.copy()).where(unparsable_times(column)).limit(
            EXAMPLES)
        rows = con.execute(query.sql("duckdb")).fetchall()
        examples = "; ".join(
            ", ".join(f"{name}={value!r}" for name, value in zip(types, row, strict=True))
            for row in rows)
        raise DataError(
            f"source {source.name} ({path}): column {column} is {types[column]}, not a "
            f"timestamp, so no metric can read it; rows whose value is not an ISO 8601 time: "
            f"{examples or 'none (cast the column to a timestamp)'}. Fix the data, or the "
            "source's timestamp field")
