"""What every table of a compute run shares: the options, the results, the engine, and
the table state (`.tally/tables.json`) each write records into."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.compute.generations import WHOLE, next_generation
from tally.catalog.errors import DataError
from tally.catalog.spec.models import FUNNEL_KEYS, Metric
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec, read_state, table_specs, tables_by_feature
from tally.catalog.sql.duck import allowed_paths_for, connect
from tally.catalog.sql.engines import first_line
from tally.catalog.sql.parts import (
    ROW_GROUP_SIZE,
    part_span_us,
    replace_range,
    table_statistics,
    write_full,
)
from tally.catalog.store.fsutil import atomic_write_text
from tally.catalog.store.paths import DUCKDB_SPILL_DIR, TABLE_STATS_FILE

PLAN_VERSION = "3"  # 2: source fingerprints and table generations; 3: tables are parts
KEEP_ALL_AFTER = 1 << 62  # an upper bound of `keep` that keeps no old row after `low`
UP_TO_DATE = "up to date"
Progress = Callable[[str, int, int], None]


@dataclass
class TableResult:
    name: str
    kind: str
    rows: int
    new_snapshots: int | None  # snapshots computed; None for tables computed whole
    seconds: float
    path: Path
    mode: str  # full | incremental | skipped | up to date
    bucket_us: int | None = None
    since_us: int = WHOLE  # the first snapshot this write replaced (WHOLE: all of them)
    fingerprints: dict[str, Any] = field(default_factory=dict)  # kept in the table state


@dataclass(frozen=True)
class TableInputs:
    """What a derived or score table reads: computed tables, and sources of column metrics."""
    tables: set[str]
    column_sources: list[str]


@dataclass
class ComputeOptions:
    metrics: list[str] = field(default_factory=list)
    start: date | None = None
    end: date | None = None
    full: bool = False


def _dumped(metric: Metric) -> dict[str, Any]:
    """A metric as its definition hash reads it: without the funnel keys unless it is a
    funnel, so tables computed before funnels existed keep their hashes."""
    if metric.type == "funnel":
        return metric.model_dump(mode="json")
    return metric.model_dump(mode="json", exclude=set(FUNNEL_KEYS))


def definition_hash(project: Project, spec: TableSpec) -> str:
    parts: list[Any] = [PLAN_VERSION, spec.name, spec.kind]
    for name in spec.features:
        parts.append(_dumped(project.metrics[name]) if name in project.metrics
                     else project.scores[name].model_dump(mode="json"))
        if spec.kind == "derived":
            for i in project.derived_inputs(project.metrics[name]):
                parts.append(_dumped(project.metrics[i]))
    sources = [spec.source] if spec.source else []
    if spec.kind == "funnel":
        sources = [step.source for step in project.metrics[spec.features[0]].steps or []]
    for source in sources:
        parts.append(project.sources[source].model_dump(mode="json"))
        parts.append(project.entities[project.sources[source].entity].join_key)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def day_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1_000_000)


def source_path(project: Project, source_name: str) -> str:
    source = project.sources[source_name]
    path = project.root / source.path
    if "*" not in source.path and not path.exists():
        raise DataError(f"source {source_name}: data file {path} does not exist; ask its "
                        f"producer {source.owner} or fix `path` in its definition")
    return str(path)


def table_span(spec: TableSpec) -> int:
    """The span of the table's parts (catalog/sql/parts.py), from its grain."""
    grain = spec.grain.total_seconds() if spec.grain else 86_400
    return part_span_us(int(grain * 1_000_000))


def write_rows(table: Any, out: Path, key: str, spec: TableSpec,
               keep: tuple[int, int] | None, newest_us: int | None) -> int:
    """Write an Arrow table of new rows: the whole table (keep None), or the snapshots
    between keep's bounds, every other row of the table kept."""
    if keep is None:
        table = table.sort_by([(key, "ascending"), ("event_timestamp", "ascending")])
        return write_full(iter([table]), out, key, table_span(spec), newest_us)
    lo, hi = keep
    return replace_range(table, out, key, table_span(spec), lo,
                         None if hi >= KEEP_ALL_AFTER else hi)


def write_query(con: Any, select_sql: str, out: Path, key: str, spec: TableSpec,
                keep: tuple[int, int] | None, newest_us: int | None) -> int:
    """Write a DuckDB query's rows (whole or between keep's bounds, as `write_rows`); a
    whole table streams, sorted by key and time, a batch at a time."""
    if keep is not None:
        return write_rows(con.sql(select_sql).to_arrow_table(), out, key, spec, keep, None)
    ordered = con.sql(f'SELECT * FROM ({select_sql}) ORDER BY "{key}", event_timestamp')
    reader = ordered.to_arrow_reader(ROW_GROUP_SIZE)

    def chunks() -> Any:
        import pyarrow as pa

        yield reader.schema.empty_table()  # the schema, should there be no rows
        for batch in reader:
            yield pa.Table.from_batches([batch])

    return write_full(chunks(), out, key, table_span(spec), newest_us)


class ComputeSession:
    """One run's project, options, engine and table state (runner.Computer computes)."""

    def __init__(self, project: Project, options: ComputeOptions | None = None,
                 progress: Progress | None = None):
        self.project = project
        self.options = options or ComputeOptions()
        self.progress = progress
        self.specs = {s.name: s for s in table_specs(project)}
        self.state = read_state(project, TABLE_STATS_FILE)
        self._spill = project.root / DUCKDB_SPILL_DIR
        self._spark: Any = None
        self._duck: Any = None
        self._thread = threading.local()  # a worker thread's own cursor (runner.Computer)
        self._column_digests: dict[str, Any] = {}

    def _engine(self) -> Any:
        """The project's engine (tally.yaml `engine:`): the run's DuckDB connection, or
        the one SparkSession of this run."""
        from tally.catalog.sql.engines import SparkEngine, project_engine

        if project_engine(self.project.root) == "spark":
            if self._spark is None:
                from tally.catalog.spec.config import load_config

                self._spark = SparkEngine(dict(load_config(self.project.root).config.spark_conf))
            return self._spark
        return self._duckdb()

    def _duckdb(self) -> Any:
        """The run's one DuckDB connection (each costs tens of milliseconds), limited to the
        project's sources and its tables (`duck.allowed_paths_for`)."""
        from tally.catalog.sql.engines import DuckDBEngine

        cursor = getattr(self._thread, "engine", None)
        if cursor is not None:
            return cursor
        if self._duck is None:
            self._duck = DuckDBEngine(connect(allowed_paths_for(self.project),
                                              temp_directory=self._spill))
        return self._duck

    def _use_cursor(self) -> Any | None:
        """Give this (worker) thread a cursor of the run's connection, unless it has one:
        the same database, settings and allowed paths, with queries of its own (one
        connection runs one query at a time). Returns a new cursor, for the caller to
        close after the thread's last table."""
        from tally.catalog.sql.engines import DuckDBEngine

        if getattr(self._thread, "engine", None) is not None:
            return None
        self._thread.engine = DuckDBEngine(self._duckdb().con.cursor())
        return self._thread.engine

    def _read_digest(self, engine: Any, source: Any, path: str,
                     query: exp.Select) -> dict[str, list[int]]:
        """Run a day-digest query (catalog/compute/fingerprints.py) over one source."""
        from tally.catalog.compute.fingerprints import digest_of

        if engine.dialect != "spark":
            from tally.catalog.sql.relations import source_relation
            from tally.catalog.sql.timestamps import require_time_columns

            require_time_columns(engine.con, source, source_relation(source, path, "duckdb"),
                                 path)
        try:
            if engine.dialect == "spark":
                table = engine.to_arrow(query)
                rows = list(zip(*[table.column(i).to_pylist()
                                  for i in range(table.num_columns)], strict=True))
            else:
                rows = engine.con.execute(query.sql("duckdb")).fetchall()
        except Exception as exc:  # duckdb and pyspark/py4j raise many types
            raise DataError(f"reading source {source.name} ({path}): "
                            f"{first_line(exc)}") from None
        return digest_of(rows)

    def _input_groups(self, spec: TableSpec) -> set[str]:
        groups: set[str] = set()
        for name in spec.features:
            for i in self.project.derived_inputs(self.project.metrics[name]):
                table = tables_by_feature(self.specs.values()).get(i)
                if table is not None and table.kind in ("group", "funnel"):
                    groups.add(table.name)
        return groups

    def _up_to_date(self, spec: TableSpec, out: Path,
                    fingerprints: dict[str, Any] | None = None) -> TableResult:
        if self.progress:
            self.progress(spec.name, 1, 1)
        rows = int(self.state.get(spec.name, {}).get("rows", 0))
        return TableResult(spec.name, spec.kind, rows, 0, 0.0, out, UP_TO_DATE,
                           fingerprints=fingerprints or {})

    def _write_spark(self, engine: Any, query: exp.Expression, out: Path, key: str,
                     name: str, keep: tuple[int, int] | None, newest_us: int | None) -> int:
        """Run on Spark, collect as Arrow, write the parts (catalog/sql/parts.py) with
        pyarrow (catalog/sql/engines.py says why not Spark's own writer)."""
        try:
            table = engine.to_arrow(query)
        except Exception as exc:  # pyspark/py4j raise many types
            raise DataError(f"computing {name} on Spark: {first_line(exc)}") from None
        return write_rows(table, out, key, self.specs[name], keep, newest_us)

    def _record(self, spec: TableSpec, result: TableResult) -> None:
        """Read the written table once for its statistics (rows included) into the state,
        with the fingerprints and generation later runs compare against."""
        if result.mode == "skipped" or (result.mode == UP_TO_DATE and not result.fingerprints):
            return
        entry = dict(self.state.get(spec.name, {}))
        if result.mode != UP_TO_DATE:
            entry.update(self._statistics(spec, result))
            entry.update(next_generation(entry, result.since_us))
        entry.update({k: v for k, v in result.fingerprints.items() if v is not None})
        for name, value in result.fingerprints.items():
            if value is None:
                entry.pop(name, None)
        self.state[spec.name] = entry
        atomic_write_text(self.project.root / TABLE_STATS_FILE,
                          json.dumps(self.state, sort_keys=True))  # C encoder: fast

    def _statistics(self, spec: TableSpec, result: TableResult) -> dict[str, Any]:
        """From the parts' footers (catalog/sql/parts.py): no data read."""
        stats = table_statistics(result.path, list(spec.features))
        result.rows = stats.rows
        newest = (datetime.fromtimestamp(stats.newest_us / 1e6, UTC).isoformat()
                  if stats.newest_us is not None else None)
        entry = {
            "path": result.path.relative_to(self.project.root).as_posix(),
            "kind": spec.kind,
            "rows": result.rows,
            "newest_snapshot": newest,
            "newest_us": stats.newest_us,
            "null_fraction": {f: (stats.nulls[f] / stats.rows if stats.rows else None)
                              for f in spec.features},
            "definition_hash": definition_hash(self.project, spec),
            "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if result.bucket_us and stats.newest_us is not None:
            entry["last_position"] = stats.newest_us // result.bucket_us
        return entry
