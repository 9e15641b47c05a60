"""The FROM item that reads a source's file(s), as a sqlglot tree for DuckDB or Spark; the one
relation compute plans and score plans both scan."""

from __future__ import annotations

from sqlglot import exp
from tally.catalog.spec.models import Source


def source_relation(source: Source, path: str, dialect: str) -> exp.Expression:
    """The FROM item reading a source file."""
    if dialect == "spark":
        fmt = "csv" if source.file_format == "csv" else "parquet"
        return exp.Table(this=exp.Identifier(this=path, quoted=True), db=exp.to_identifier(fmt))
    reader = "read_csv" if source.file_format == "csv" else "read_parquet"
    args: list[exp.Expression] = [exp.Literal.string(path)]
    if source.file_format == "csv":
        args.append(exp.EQ(this=exp.column("header"), expression=exp.true()))
    table = exp.Table(this=exp.Anonymous(this=reader, expressions=args))
    zoned_ns = nanosecond_zoned_columns(source, path) if source.file_format == "parquet" else []
    if not zoned_ns:
        return table
    # DuckDB has no epoch_us(TIMESTAMPTZ_NS) (pandas writes those): read them as TIMESTAMPTZ
    star = exp.Star(replace=[exp.alias_(exp.Cast(this=exp.column(c, quoted=True),
                                                 to=exp.DataType.build("TIMESTAMPTZ")),
                                        c, quoted=True) for c in zoned_ns])
    return exp.select(star).from_(table).subquery()


def nanosecond_zoned_columns(source: Source, path: str) -> list[str]:
    """The source's time columns stored as zoned nanosecond timestamps (parquet metadata of
    its first file; a file that cannot be read is left to the query to report)."""
    import glob

    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(glob.glob(path)) if any(ch in path for ch in "*?[") else [path]
    try:
        schema = pq.read_schema(files[0])
    except (IndexError, OSError, ValueError):
        return []
    names = [n for n in (source.timestamp_field, source.created_timestamp_field) if n]
    return [n for n in names if n in schema.names
            and pa.types.is_timestamp(schema.field(n).type)
            and schema.field(n).type.unit == "ns" and schema.field(n).type.tz is not None]


def latest_column_rows(join_key: str, source: Source, path: str, column: str,
                       dialect: str) -> exp.Select:
    """A column metric's source as one row per (entity, timestamp), ties broken by the
    newest created timestamp: `__k, __ts, __v`. Every reader of column metrics (derived
    inputs, score segments, funnel segments) starts from these rows."""
    from tally.catalog.sql.trees import alias, col, num

    created = source.created_timestamp_field
    order = [exp.Ordered(this=col(created), desc=True)] if created else []
    if dialect == "spark" and not order:  # Spark's row_number() needs an order
        order = [exp.Ordered(this=col(source.timestamp_field))]
    return (exp.select(alias(col(join_key), "__k"),
                       alias(exp.Cast(this=col(source.timestamp_field),
                                      to=exp.DataType.build("TIMESTAMPTZ")), "__ts"),
                       alias(col(column), "__v"))
            .from_(source_relation(source, path, dialect))
            .qualify(exp.EQ(this=exp.Window(
                this=exp.RowNumber(), partition_by=[col(join_key), col(source.timestamp_field)],
                order=exp.Order(expressions=order) if order else None),
                expression=num(1))))
