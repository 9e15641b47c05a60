"""Contracts on Spark: the same rules as catalog/contracts/rules.py, through a SparkSession.

contracts/rules.py writes each rule once, as DuckDB SQL over `read_parquet(...)`.
`SparkConnection` stands in for the DuckDB connection there: it parses that SQL with
sqlglot and renders it for Spark (read_parquet -> parquet.`path`, row(...) -> struct(...),
QUALIFY -> a window column in a subquery), and reports column types under DuckDB's names,
so every rule, count, example and message is the same on both engines.

CSV sources are checked in DuckDB even on Spark: the `parse` rule lists the lines DuckDB's
reader rejects, which Spark's reader has no equivalent for (docs/spark.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from sqlglot import exp, parse_one

QUALIFY_COLUMN = "__tally_qualify"


class SparkQueryError(duckdb.Error):
    """A Spark failure, as the DuckDB error source_check.py already reports as unreadable."""


def duck_type(field_type: Any) -> str:
    """A Spark column type under the DuckDB name rules.TYPES judges."""
    name = type(field_type).__name__
    return {
        "ByteType": "TINYINT", "ShortType": "SMALLINT", "IntegerType": "INTEGER",
        "LongType": "BIGINT", "FloatType": "FLOAT", "DoubleType": "DOUBLE",
        "DecimalType": "DECIMAL", "StringType": "VARCHAR", "VarcharType": "VARCHAR",
        "CharType": "VARCHAR", "BooleanType": "BOOLEAN", "DateType": "DATE",
        "TimestampType": "TIMESTAMP WITH TIME ZONE", "TimestampNTZType": "TIMESTAMP",
        "BinaryType": "BLOB",
    }.get(name, str(field_type.simpleString()).upper())


def to_spark_sql(sql: str) -> str:
    """DuckDB SQL of contracts/rules.py rendered for Spark."""
    tree = parse_one(sql, read="duckdb")

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.ReadParquet):
            path = node.this.expressions[0]
            return exp.Table(this=exp.Identifier(this=path.name, quoted=True),
                             db=exp.to_identifier("parquet"))
        if isinstance(node, exp.Anonymous) and str(node.this).lower() == "row":
            return exp.Struct(expressions=node.expressions)
        if isinstance(node, exp.Anonymous) and str(node.this).lower() == "hash":
            return exp.Anonymous(this="xxhash64", expressions=node.expressions)
        return node

    tree = tree.transform(rewrite)
    if isinstance(tree, exp.Select) and tree.args.get("qualify") is not None:
        tree = _without_qualify(tree)
    return tree.sql("spark")


def _without_qualify(select: exp.Select) -> exp.Select:
    """SELECT ... QUALIFY w > n ORDER BY .. LIMIT k as an outer filter on a window column
    (sqlglot's own rewrite applies LIMIT before the filter). The extra column is dropped
    from the result by SparkConnection."""
    condition = select.args["qualify"].this.copy()
    inner = select.copy()
    for key in ("qualify", "order", "limit"):
        inner.set(key, None)
    windows = list(condition.find_all(exp.Window))
    for i, window in enumerate(windows):
        inner = inner.select(exp.alias_(window.copy(), f"{QUALIFY_COLUMN}{i}", quoted=True))
        window.replace(exp.column(f"{QUALIFY_COLUMN}{i}", quoted=True))
    outer = exp.select("*").from_(exp.Subquery(this=inner, alias=exp.TableAlias(
        this=exp.to_identifier("__tally_q")))).where(condition)
    if select.args.get("order") is not None:
        outer.set("order", select.args["order"].copy())
    if select.args.get("limit") is not None:
        outer.set("limit", select.args["limit"].copy())
    return outer


class _Result:
    def __init__(self, table: Any):
        self.table = table

    def fetchall(self) -> list[tuple[Any, ...]]:
        columns = [c.to_pylist() for c in self.table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def to_arrow_table(self) -> Any:
        return self.table


class SparkConnection:
    """The part of a DuckDB connection the contract checks use: sql(...).fetchall() /
    .to_arrow_table(), and close()."""

    def __init__(self, spark: Any):
        self.spark = spark

    def sql(self, sql: str) -> _Result:
        import pyarrow as pa

        text = sql.strip()
        try:
            if text.upper().startswith("DESCRIBE "):
                frame = self.spark.sql(to_spark_sql(text[len("DESCRIBE "):]))
                rows = [(f.name, duck_type(f.dataType)) for f in frame.schema.fields]
                return _Result(pa.table({"column_name": [r[0] for r in rows],
                                         "column_type": [r[1] for r in rows]}))
            table = self.spark.sql(to_spark_sql(text)).toArrow()
        except SparkQueryError:
            raise
        except Exception as exc:  # AnalysisException, Py4JJavaError, ...
            from tally.catalog.sql.engines import first_line

            raise SparkQueryError(_short(first_line(exc))) from None
        extra = [c for c in table.column_names if c.startswith(QUALIFY_COLUMN)]
        return _Result(table.drop_columns(extra) if extra else table)

    def close(self) -> None:  # the session is shared; it stays up
        pass


def _short(message: str) -> str:
    """Spark's messages start with an error class in brackets; keep what a user needs."""
    return message[:500]


def engine_connection(root: Path, file_format: str = "parquet",
                      allowed: list[Path] | None = None) -> Any:
    """The connection contract rules run on: DuckDB's, or a SparkConnection when tally.yaml
    says engine: spark (CSV sources keep DuckDB, see above)."""
    from tally.catalog.sql.duck import connect as duck_connect
    from tally.catalog.sql.engines import project_engine, spark_session

    if file_format == "csv" or project_engine(root) != "spark":
        return duck_connect(allowed)
    from tally.catalog.spec.config import load_config

    return SparkConnection(spark_session(dict(load_config(root).config.spark_conf)))
