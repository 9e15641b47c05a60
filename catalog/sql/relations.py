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
    return exp.Table(this=exp.Anonymous(this=reader, expressions=args))
