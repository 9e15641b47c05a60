"""Where compute runs: DuckDB in process (the default) or a SparkSession, chosen by the
project config (`engine:` in tally.yaml, see catalog/config.py and docs/spark.md).

Both engines take the same sqlglot trees (catalog/plans.py) rendered in their dialect and
write the same table: a folder of parquet parts by snapshot range (catalog/sql/parts.py),
microsecond UTC timestamps, each part sorted by key and event_timestamp, swapped in whole.

Spark writes a folder of part files of its own; Tally instead collects the result to the
driver as Arrow (`DataFrame.toArrow()`) and writes the parts with pyarrow, so DuckDB
readers, contracts and Feast's FileSource read the table exactly as DuckDB's. Metric tables hold
one row per (entity, snapshot), far smaller than the sources Spark scans; docs/spark.md
says when that choice stops fitting. pyspark is imported only when the engine is spark.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.errors import DataError, TallyError

SPARK_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",  # timestamps are UTC, as in DuckDB and Feast
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    # Feast's Spark store turns this on in the shared session; Tally's SQL quotes plain names
    "spark.sql.parser.quotedRegexColumnNames": "false",
}
# settings Tally relies on, applied to the session even when it already exists
SPARK_REQUIRED = ("spark.sql.session.timeZone", "spark.sql.parquet.outputTimestampType",
                  "spark.sql.parser.quotedRegexColumnNames")


class EngineUnavailableError(TallyError):
    """engine: spark is set but pyspark or Java is missing."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def reading_source(name: str, path: str) -> Iterator[None]:
    """An engine's error while reading source `name` (duckdb raises a family of its own
    errors) as one DataError naming the source and its file."""
    try:
        yield
    except TallyError:
        raise
    except Exception as exc:
        raise DataError(f"reading source {name} ({path}): {first_line(exc)}") from None


class DuckDBEngine:
    """DuckDB in process; a connection per call, limited to the folders given."""

    dialect = "duckdb"

    def __init__(self, con: Any = None, allowed: list[Path] | None = None):
        if con is None:
            from tally.catalog.sql.duck import connect

            con = connect(allowed)
        self.con = con

    def scalar_row(self, query: exp.Expression | str) -> tuple[Any, ...]:
        sql = query if isinstance(query, str) else query.sql(self.dialect)
        return tuple(self.con.execute(sql).fetchone())

    def to_arrow(self, query: exp.Expression | str) -> Any:
        sql = query if isinstance(query, str) else query.sql(self.dialect)
        return self.con.sql(sql).to_arrow_table()

    def table_relation(self, path: str) -> exp.Expression:
        return exp.Table(this=exp.Anonymous(this="read_parquet",
                                            expressions=[exp.Literal.string(path)]))

    def close(self) -> None:
        self.con.close()


class SparkEngine:
    """A SparkSession (existing or new, built from `spark_conf`); results come back as Arrow."""

    dialect = "spark"

    def __init__(self, conf: dict[str, str] | None = None):
        self.spark = spark_session(conf or {})

    def scalar_row(self, query: exp.Expression | str) -> tuple[Any, ...]:
        table = self.to_arrow(query)
        return tuple(table.column(i)[0].as_py() for i in range(table.num_columns))

    def to_arrow(self, query: exp.Expression | str) -> Any:
        sql = query if isinstance(query, str) else query.sql(self.dialect)
        return self.spark.sql(sql).toArrow()

    def table_relation(self, path: str) -> exp.Expression:
        return exp.Table(this=exp.Identifier(this=path, quoted=True),
                         db=exp.to_identifier("parquet"))

    def close(self) -> None:  # the session outlives a run: it costs seconds to start
        pass


def check_spark_available() -> None:
    """Raise a clear error when pyspark or a Java runtime is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise EngineUnavailableError(
            "tally.yaml sets engine: spark, but pyspark is not installed; install the extra "
            "with `pip install 'tally[spark]'` (it needs a Java 17+ runtime too), or remove "
            "engine: spark to compute with DuckDB") from None
    java_home = os.environ.get("JAVA_HOME")
    has_java = shutil.which("java") is not None or bool(
        java_home and (Path(java_home) / "bin" / "java").exists())
    if not has_java:
        raise EngineUnavailableError(
            "tally.yaml sets engine: spark, but no Java runtime was found (no `java` on PATH, "
            "no JAVA_HOME); Spark needs Java 17 or newer: install one (e.g. apt-get install "
            "openjdk-17-jre-headless) or set JAVA_HOME; the extra is `pip install "
            "'tally[spark]'`")


def spark_session(conf: dict[str, str]) -> Any:
    """The active SparkSession, or a new one from `conf` (master defaults to local[*])."""
    check_spark_available()
    from pyspark.sql import SparkSession

    settings = {**SPARK_DEFAULTS, **conf}
    active = SparkSession.getActiveSession()
    if active is None:
        builder = SparkSession.builder.appName("tally")
        if "spark.master" not in settings:
            builder = builder.master("local[*]")
        for key, value in settings.items():
            builder = builder.config(key, value)
        try:
            active = builder.getOrCreate()
        except Exception as exc:  # py4j/Java errors: no JVM, bad master, ...
            raise EngineUnavailableError(f"cannot start Spark: {first_line(exc)}") from None
        with contextlib.suppress(Exception):
            active.sparkContext.setLogLevel("ERROR")
    for key in SPARK_REQUIRED:
        active.conf.set(key, settings[key])
    return active


def project_engine(root: Path) -> str:
    """`duckdb` or `spark`: the engine tally.yaml names."""
    from tally.catalog.spec.config import load_config

    return load_config(root).config.engine
