"""Compute every table of a project once with DuckDB: groups, derived metrics, then scores.

Incremental by default: a table whose definition is unchanged is recomputed from its
newest snapshot on (that snapshot included, as its source may have grown); a changed
definition or `full=True` recomputes it all. Every table is written to a temp file and
renamed into place, under the project lock, so a killed run leaves the previous table.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.compute.plans import derived_query, group_query, partial_plan, plan_group
from tally.catalog.errors import DataError, LookupFailedError, TallyError
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec, read_state, table_specs, tables_by_feature
from tally.catalog.sql.duck import connect, parquet_scan, sql_ident, sql_string
from tally.catalog.sql.engines import first_line
from tally.catalog.store.fsutil import (
    atomic_write_text,
    clean_temp_files,
    project_lock,
    replacing,
)
from tally.catalog.store.paths import DUCKDB_SPILL_DIR, TABLE_STATS_FILE, TABLES_DIR

PLAN_VERSION = "1"
Progress = Callable[[str, int, int], None]


@dataclass
class TableResult:
    name: str
    kind: str
    rows: int
    new_snapshots: int | None  # snapshots computed; None for tables computed whole
    seconds: float
    path: Path
    mode: str  # full | incremental | skipped
    bucket_us: int | None = None


@dataclass
class ComputeOptions:
    metrics: list[str] = field(default_factory=list)
    start: date | None = None
    end: date | None = None
    full: bool = False


def _definition_hash(project: Project, spec: TableSpec) -> str:
    parts: list[Any] = [PLAN_VERSION, spec.name, spec.kind]
    for name in spec.features:
        parts.append(project.metrics[name].model_dump(mode="json") if name in project.metrics
                     else project.scores[name].model_dump(mode="json"))
        if spec.kind == "derived":
            for i in project.derived_inputs(project.metrics[name]):
                parts.append(project.metrics[i].model_dump(mode="json"))
    if spec.source:
        parts.append(project.sources[spec.source].model_dump(mode="json"))
        parts.append(project.entities[project.sources[spec.source].entity].join_key)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1_000_000)


def _source_path(project: Project, source_name: str) -> str:
    source = project.sources[source_name]
    path = project.root / source.path
    if "*" not in source.path and not path.exists():
        raise DataError(f"source {source_name}: data file {path} does not exist; ask its "
                        f"producer {source.owner} or fix `path` in its definition")
    return str(path)


def _run(con: Any, query: exp.Expression, what: str) -> Any:
    try:
        return con.execute(query.sql("duckdb"))
    except Exception as exc:  # duckdb raises a family of its own errors
        raise DataError(f"{what}: {first_line(exc)}") from None


def _write_table(con: Any, select_sql: str, path: Path, order: str) -> None:
    with replacing(path, ".parquet", crash_name="compute-") as tmp:
        con.execute(f"COPY ({select_sql} ORDER BY {order}) TO {sql_string(str(tmp))} "
                    "(FORMAT parquet, ROW_GROUP_SIZE 122880)")


class Computer:
    """Computes a project's tables; one instance per run."""

    def __init__(self, project: Project, options: ComputeOptions | None = None,
                 progress: Progress | None = None):
        self.project = project
        self.options = options or ComputeOptions()
        self.progress = progress
        self.specs = {s.name: s for s in table_specs(project)}
        self.state = read_state(project, TABLE_STATS_FILE)
        self._spill = project.root / DUCKDB_SPILL_DIR
        self._spark: Any = None

    def _engine(self, allowed: list[Path]) -> Any:
        """The project's engine (tally.yaml `engine:`): DuckDB limited to `allowed`, or the
        one SparkSession of this run."""
        from tally.catalog.sql.engines import DuckDBEngine, SparkEngine, project_engine

        if project_engine(self.project.root) == "spark":
            if self._spark is None:
                from tally.catalog.spec.config import load_config

                self._spark = SparkEngine(dict(load_config(self.project.root).config.spark_conf))
            return self._spark
        return DuckDBEngine(connect(allowed, temp_directory=self._spill))

    def selected(self) -> list[TableSpec]:
        wanted = self.options.metrics
        unknown = [m for m in wanted if m not in self.project.metrics
                   and m not in self.project.scores]
        if unknown:
            raise LookupFailedError(f"unknown metric {', '.join(map(repr, unknown))}; "
                                    "`tally search` lists what exists")
        names: set[str] = set()
        for spec in self.specs.values():
            if spec.kind in ("group", "derived") and (
                not wanted or set(spec.features) & set(wanted)
            ):
                names.add(spec.name)
        names |= self._selected_scores(names, wanted)
        for spec in list(self.specs.values()):
            if spec.kind == "derived" and spec.name in names:
                names.update(self._input_groups(spec))
        order = {"group": 0, "derived": 1, "score": 2}
        return sorted((self.specs[n] for n in names), key=lambda s: (order[s.kind], s.name))

    def sources_read(self, tables: list[TableSpec]) -> list[str]:
        """Every source the tables read: scanned groups, column inputs of derived metrics,
        column metrics that segment a score. Their contracts gate the run."""
        columns: set[str] = set()
        for spec in tables:
            if spec.kind == "derived":
                columns |= {i for n in spec.features
                            for i in self.project.derived_inputs(self.project.metrics[n])}
            elif spec.kind == "score":
                columns |= {c.segment_by for c in self.project.scores[spec.features[0]].components
                            if c.segment_by}
        sources = {spec.source for spec in tables if spec.kind == "group" and spec.source}
        for name in columns:
            metric = self.project.metrics.get(name)
            if metric is not None and metric.type == "column" and metric.source:
                sources.add(metric.source)
        return sorted(sources)

    def _selected_scores(self, names: set[str], wanted: list[str]) -> set[str]:
        """Scores named (with their input tables), or whose inputs are being computed and
        the rest already are."""
        from tally.catalog.scores.plans import input_tables

        out: set[str] = set()
        for score in self.project.scores.values():
            spec = self.specs[f"score_{score.name}"]
            inputs = input_tables(self.project, score, self.specs)
            if not wanted or score.name in wanted:
                out |= {spec.name, *inputs}
            elif inputs & names and all(
                    n in names or self.specs[n].path(self.project).exists() for n in inputs):
                out.add(spec.name)
        return out

    def _input_groups(self, spec: TableSpec) -> set[str]:
        groups: set[str] = set()
        for name in spec.features:
            for i in self.project.derived_inputs(self.project.metrics[name]):
                table = tables_by_feature(self.specs.values()).get(i)
                if table is not None and table.kind == "group":
                    groups.add(table.name)
        return groups

    def run(self) -> list[TableResult]:
        results = []
        tables = self.selected()
        with project_lock(self.project.root):
            clean_temp_files(self.project.root / TABLES_DIR)
            for spec in tables:
                started = time.perf_counter()
                if spec.kind == "group":
                    result = self._compute_group(spec)
                elif spec.kind == "score":
                    result = self._compute_score(spec)
                else:
                    result = self._compute_derived(spec)
                result.seconds = time.perf_counter() - started
                results.append(result)
                self._record(spec, result)
        return results

    # -- groups -----------------------------------------------------------------------
    def _compute_group(self, spec: TableSpec) -> TableResult:
        project = self.project
        group = next(g for g in project.groups() if g.name == spec.name)
        plan = plan_group(project, group)
        source = project.sources[group.source]
        src_path = _source_path(project, group.source)
        out = spec.path(project)
        out.parent.mkdir(parents=True, exist_ok=True)
        engine = self._engine([Path(src_path).parent, out.parent])
        bounds = self._time_bounds(engine, source, src_path)
        if bounds is None:
            return TableResult(spec.name, spec.kind, 0, 0, 0.0, out, "skipped")
        low, high = plan.snapshot_bounds(*bounds)
        g = plan.grain_buckets
        if self.options.start:
            low = max(low, -(-plan.position_of(_us(self.options.start)) // g) * g)
        if self.options.end:
            high = min(high, plan.position_of(_us(self.options.end)) // g * g)
        previous = self.state.get(spec.name, {})
        same = previous.get("definition_hash") == _definition_hash(project, spec)
        mode = "full"
        if same and out.exists() and not self.options.full and previous.get("last_position"):
            low = max(low, int(previous["last_position"]))
            mode = "incremental"
        total = max(0, (high - low) // g + 1)
        if self.progress:
            self.progress(spec.name, 0, total)
        key = project.entities[group.entity].join_key
        keep_old = out.exists() and (mode == "incremental" or self.options.start or
                                     self.options.end) and same
        keep = (low * plan.bucket_us, high * plan.bucket_us) if keep_old else None
        rows = 0
        if engine.dialect == "spark":
            query = group_query(project, plan, path=src_path, low=low, high=high,
                                dialect="spark")
            rows = self._write_spark(engine, query, out, key, spec.name, keep)
        elif not self._kernel_write(engine.con, plan, src_path, low, high, key, spec.name,
                                    out, keep):
            self._write_group_sql(engine.con, plan, src_path, low, high, key, spec.name, out,
                                  keep)
        if self.progress:
            self.progress(spec.name, total, total)
        return TableResult(spec.name, spec.kind, rows, total, 0.0, out, mode, plan.bucket_us)

    def _write_group_sql(self, con: Any, plan: Any, src_path: str, low: int, high: int,
                         key: str, name: str, out: Path, keep: tuple[int, int] | None) -> None:
        """The whole group as one DuckDB query (plans.group_query), merged in SQL with the
        kept rows of the previous table outside `keep` when given."""
        new_sql = group_query(self.project, plan, path=src_path, low=low, high=high).sql(
            "duckdb")
        if keep:
            old = (f"SELECT * FROM {parquet_scan(out)} WHERE "
                   f"epoch_us(event_timestamp) < {keep[0]} OR "
                   f"epoch_us(event_timestamp) > {keep[1]}")
            select_sql = f"SELECT * FROM ({old}) UNION ALL BY NAME SELECT * FROM ({new_sql})"
        else:
            select_sql = f"SELECT * FROM ({new_sql})"
        try:
            _write_table(con, select_sql, out, f'"{key}", event_timestamp')
        except TallyError:
            raise
        except Exception as exc:
            raise DataError(f"computing {name} from {src_path}: {first_line(exc)}") from None

    def _kernel_write(self, con: Any, plan: Any, src_path: str, low: int, high: int,
                      key: str, name: str, out: Path, keep: tuple[int, int] | None) -> bool:
        """Compute and write the group through the columnar kernel (catalog/kernel.py),
        merged with the kept rows outside `keep` when given; False when it declines
        (partial types it does not handle, or a merged table that would not fit in memory)
        and the SQL plan should run instead."""
        import pyarrow as pa
        from tally.catalog.compute.kernel import fits_in_memory, prepare_group
        from tally.catalog.sql.engines import write_arrow_chunks, write_arrow_table

        parts = partial_plan(self.project, plan, path=src_path, low=low, high=high)
        try:
            run = prepare_group(con, parts, plan, low=low, high=high)
            if run is None:
                return False
            if keep is None:
                write_arrow_chunks(run.tables(key), out, key)
            elif fits_in_memory(run):
                write_arrow_table(pa.concat_tables(list(run.tables(key))), out, key, keep)
            else:
                return False
            return True
        except TallyError:
            raise
        except Exception as exc:  # duckdb raises a family of its own errors
            raise DataError(f"computing {name} from {src_path}: {first_line(exc)}") from None

    def _time_bounds(self, engine: Any, source: Any, path: str) -> tuple[int, int] | None:
        from tally.catalog.compute.plans import epoch_us
        from tally.catalog.sql.relations import source_relation
        from tally.catalog.sql.trees import col

        ts, dialect = col(source.timestamp_field), engine.dialect
        query = exp.select(exp.Min(this=epoch_us(ts, dialect)),
                           exp.Max(this=epoch_us(ts, dialect))).from_(
            source_relation(source, path, dialect))
        if dialect == "spark":
            try:
                low, high = engine.scalar_row(query)
            except Exception as exc:  # pyspark/py4j raise many types
                raise DataError(f"reading source {source.name} ({path}): "
                                f"{first_line(exc)}") from None
        else:
            low, high = _run(engine.con, query,
                             f"reading source {source.name} ({path})").fetchall()[0]
        if low is None:
            return None
        return int(low), int(high)

    # -- derived ----------------------------------------------------------------------
    def _compute_derived(self, spec: TableSpec) -> TableResult:
        project = self.project
        entity_key = project.entities[spec.entity].join_key
        group_of: dict[str, str] = {}
        group_paths: dict[str, str] = {}
        column_inputs: dict[str, tuple[Any, str]] = {}
        for other in self.specs.values():
            for feature in other.features:
                if other.kind == "group":
                    group_of[feature] = other.name
                    group_paths[other.name] = str(other.path(project))
                elif other.kind == "column" and other.source:
                    column_inputs[feature] = (project.sources[other.source],
                                              _source_path(project, other.source))
        needed = self._input_groups(spec)
        missing = [g for g in needed if not Path(group_paths[g]).exists()]
        if missing:
            raise DataError(f"derived table {spec.name} needs {', '.join(missing)}; compute "
                            "without `metrics` first", mentions=("metrics",))
        out = spec.path(project)
        if self.progress:
            self.progress(spec.name, 0, 1)
        engine = self._engine([out.parent, *[Path(p).parent for _, p in column_inputs.values()]])
        query = derived_query(project, spec.features, entity_key=entity_key,
                              group_paths=group_paths, column_inputs=column_inputs,
                              group_of=group_of, dialect=engine.dialect)
        if engine.dialect == "spark":
            rows = self._write_spark(engine, query, out, entity_key, spec.name, None)
            if self.progress:
                self.progress(spec.name, 1, 1)
            return TableResult(spec.name, spec.kind, rows, None, 0.0, out, "full")
        return self._write_whole(engine.con, f"SELECT * FROM ({query.sql('duckdb')})", out,
                                 entity_key, spec)

    def _write_whole(self, con: Any, select_sql: str, out: Path, key: str,
                     spec: TableSpec) -> TableResult:
        """Write a table computed whole (derived, score) and report it."""
        try:
            _write_table(con, select_sql, out, f'"{key}", event_timestamp')
        except Exception as exc:
            raise DataError(f"computing {spec.name}: {first_line(exc)}") from None
        if self.progress:
            self.progress(spec.name, 1, 1)
        return TableResult(spec.name, spec.kind, 0, None, 0.0, out, "full")

    # -- scores -----------------------------------------------------------------------
    def _compute_score(self, spec: TableSpec) -> TableResult:
        from tally.catalog.scores.plans import input_paths, score_query

        score = self.project.scores[spec.features[0]]
        out = spec.path(self.project)
        out.parent.mkdir(parents=True, exist_ok=True)
        if self.progress:
            self.progress(spec.name, 0, 1)
        query = score_query(self.project, score, self.specs)
        con = connect([out.parent, *input_paths(self.project, score, self.specs)])
        key = self.project.entities[score.entity].join_key
        return self._write_whole(con, query, out, key, spec)

    def _write_spark(self, engine: Any, query: exp.Expression, out: Path, key: str,
                     name: str, keep: tuple[int, int] | None) -> int:
        """Run on Spark, collect as Arrow, write one sorted parquet file atomically (see
        catalog/engines.py for why one file rather than Spark's folder of parts)."""
        from tally.catalog.sql.engines import write_arrow_table

        try:
            table = engine.to_arrow(query)
        except Exception as exc:  # pyspark/py4j raise many types
            raise DataError(f"computing {name} on Spark: {first_line(exc)}") from None
        return write_arrow_table(table, out, key, keep)

    # -- state ------------------------------------------------------------------------
    def _record(self, spec: TableSpec, result: TableResult) -> None:
        """Read the written table once for its statistics (rows included) into the state."""
        if result.mode == "skipped":
            return
        con = connect(None)
        nulls = ", ".join(f"avg(CASE WHEN {sql_ident(f)} IS NULL THEN 1.0 ELSE 0.0 END)"
                          for f in spec.features)
        row = con.execute(f"SELECT count(*), max(event_timestamp), max(epoch_us(event_timestamp))"
                          f", {nulls} FROM {parquet_scan(result.path)}").fetchall()[0]
        result.rows = int(row[0])
        entry = {
            "path": result.path.relative_to(self.project.root).as_posix(),
            "kind": spec.kind,
            "rows": result.rows,
            "newest_snapshot": row[1].isoformat() if row[1] is not None else None,
            "null_fraction": {f: (float(v) if v is not None else None)
                              for f, v in zip(spec.features, row[3:], strict=True)},
            "definition_hash": _definition_hash(self.project, spec),
            "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if result.bucket_us and row[2] is not None:
            entry["last_position"] = int(row[2]) // result.bucket_us
        self.state[spec.name] = entry
        atomic_write_text(self.project.root / TABLE_STATS_FILE,
                          json.dumps(self.state, indent=2, sort_keys=True))


def compute(project: Project, options: ComputeOptions | None = None,
            progress: Progress | None = None) -> list[TableResult]:
    return Computer(project, options, progress).run()
