"""Compute every table of a project once with DuckDB: groups, derived metrics, then scores.

Incremental by default: a table whose definition is unchanged is recomputed from its
newest snapshot on (that snapshot included, as its source may have grown); a changed
definition or `full=True` recomputes it all. Every table is written to a temp file and
renamed into place, under the project lock, so a killed run leaves the previous table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.compute.fingerprints import (
    Digest,
    digest_of,
    digest_query,
    earliest_change,
    file_fingerprint,
    time_bounds,
)
from tally.catalog.compute.generations import WHOLE, generations, inputs_changed, next_generation
from tally.catalog.compute.plans import (
    derived_query,
    group_query,
    partial_plan,
    plan_group,
    snapshots_from,
)
from tally.catalog.errors import DataError, LookupFailedError, TallyError
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import (
    STATE_DIR,
    TABLE_STATS_FILE,
    TABLES_DIR,
    TableSpec,
    read_state,
    table_specs,
)
from tally.catalog.sql.duck import connect, parquet_scan, sql_ident, sql_string
from tally.catalog.sql.engines import first_line
from tally.catalog.store.fsutil import (
    atomic_write_text,
    clean_temp_files,
    crash_point,
    project_lock,
    temp_path_beside,
)

PLAN_VERSION = "2"  # 2: state records source fingerprints and table generations
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


def _write_table(con: Any, select_sql: str, path: Path, order: str) -> None:
    tmp = temp_path_beside(path, ".parquet")
    try:
        con.execute(f"COPY ({select_sql} ORDER BY {order}) TO {sql_string(str(tmp))} "
                    "(FORMAT parquet, ROW_GROUP_SIZE 122880)")
        crash_point("compute-before-rename")
        os.replace(tmp, path)
        crash_point("compute-after-rename")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


class Computer:
    """Computes a project's tables; one instance per run."""

    def __init__(self, project: Project, options: ComputeOptions | None = None,
                 progress: Progress | None = None):
        self.project = project
        self.options = options or ComputeOptions()
        self.progress = progress
        self.specs = {s.name: s for s in table_specs(project)}
        self.state = read_state(project, TABLE_STATS_FILE)
        self._spill = project.root / STATE_DIR / "duckdb_tmp"
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
                table = next((s for s in self.specs.values() if i in s.features), None)
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
        if self._group_unchanged(spec):
            return self._up_to_date(spec, out)
        engine = self._engine([Path(src_path).parent, out.parent])
        key = project.entities[group.entity].join_key
        digest = self._digest(engine, source, key, plan, src_path)
        files = file_fingerprint(project, source)
        bounds = time_bounds(digest)
        if bounds is None:
            return TableResult(spec.name, spec.kind, 0, 0, 0.0, out, "skipped")
        low, high = self._snapshot_range(plan, bounds)
        previous = self.state.get(spec.name, {})
        same = previous.get("definition_hash") == _definition_hash(project, spec)
        ranged = bool(self.options.start or self.options.end)
        keep_old = same and out.exists() and not self.options.full and "digest" in previous
        if keep_old and not ranged:
            changed = earliest_change(previous["digest"], digest)
            if changed is None and "files" in previous:  # files touched, rows the same
                return self._up_to_date(spec, out, {"files": files})
            g = plan.grain_buckets
            last = int(previous.get("last_position", low))  # after --end: not the source's
            first_hit = last if changed is None else (plan.position_of(changed) // g + 1) * g
            low = max(low, min(last, first_hit))
        if ranged:  # later runs must still see what changed outside the range
            files, digest = None, previous.get("digest", digest)  # type: ignore[assignment]
        total = max(0, (high - low) // plan.grain_buckets + 1)
        if self.progress:
            self.progress(spec.name, 0, total)
        keep = (low * plan.bucket_us, high * plan.bucket_us if self.options.end
                else KEEP_ALL_AFTER) if keep_old else None
        rows = self._write_group(engine, plan, src_path, low, high, key, spec.name, out, keep)
        if self.progress:
            self.progress(spec.name, total, total)
        return TableResult(spec.name, spec.kind, rows, total, 0.0, out,
                           "incremental" if keep_old else "full", plan.bucket_us,
                           since_us=keep[0] if keep else WHOLE,
                           fingerprints={"files": files, "digest": digest})

    def _snapshot_range(self, plan: Any, bounds: tuple[int, int]) -> tuple[int, int]:
        """The snapshot positions low..high the source spans, narrowed by --start/--end."""
        low, high = plan.snapshot_bounds(*bounds)
        g = plan.grain_buckets
        if self.options.start:
            low = max(low, -(-plan.position_of(_us(self.options.start)) // g) * g)
        if self.options.end:
            high = min(high, plan.position_of(_us(self.options.end)) // g * g)
        return low, high

    def _write_group(self, engine: Any, plan: Any, src_path: str, low: int, high: int,
                     key: str, name: str, out: Path, keep: tuple[int, int] | None) -> int:
        if engine.dialect == "spark":
            query = group_query(self.project, plan, path=src_path, low=low, high=high,
                                dialect="spark")
            return self._write_spark(engine, query, out, key, name, keep)
        if not self._kernel_write(engine.con, plan, src_path, low, high, key, name, out,
                                  keep):
            self._write_group_sql(engine.con, plan, src_path, low, high, key, name, out, keep)
        return 0

    def _group_unchanged(self, spec: TableSpec) -> bool:
        """Same definition, same source files (names, sizes, times), table in place: up to
        date without reading any data."""
        previous = self.state.get(spec.name, {})
        source = self.project.sources[spec.source or ""]
        return (not self.options.full and not self.options.start and not self.options.end
                and previous.get("definition_hash") == _definition_hash(self.project, spec)
                and "digest" in previous and spec.path(self.project).exists()
                and previous.get("files") == file_fingerprint(self.project, source))

    def _up_to_date(self, spec: TableSpec, out: Path,
                    fingerprints: dict[str, Any] | None = None) -> TableResult:
        if self.progress:
            self.progress(spec.name, 1, 1)
        rows = int(self.state.get(spec.name, {}).get("rows", 0))
        return TableResult(spec.name, spec.kind, rows, 0, 0.0, out, UP_TO_DATE,
                           fingerprints=fingerprints or {})

    def _digest(self, engine: Any, source: Any, key: str, plan: Any, path: str) -> Digest:
        """The source's day digest (catalog/compute/fingerprints.py): one scan."""
        metrics = [self.project.metrics[m] for m in plan.group.metrics]
        query = digest_query(source, key, metrics, path, engine.dialect)
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
            raise DataError(f"derived table {spec.name} needs {', '.join(missing)}; run "
                            "`tally compute` without --metric first")
        out = spec.path(project)
        inputs = self._derived_inputs(spec, needed)
        since = self._changed_from(spec, inputs)
        if since is None:
            return self._up_to_date(spec, out)
        if self.progress:
            self.progress(spec.name, 0, 1)
        engine = self._engine([out.parent, *[Path(p).parent for _, p in column_inputs.values()]])
        query = derived_query(project, spec.features, entity_key=entity_key,
                              group_paths=group_paths, column_inputs=column_inputs,
                              group_of=group_of, dialect=engine.dialect)
        return self._write_computed(engine, query, out, entity_key, spec, since, inputs)

    def _derived_inputs(self, spec: TableSpec, groups: set[str]) -> TableInputs:
        sources = {self.project.metrics[i].source or "" for n in spec.features
                   for i in self.project.derived_inputs(self.project.metrics[n])
                   if self.project.metrics[i].type == "column"}
        return TableInputs(groups, sorted(sources - {""}))

    def _changed_from(self, spec: TableSpec, inputs: TableInputs) -> int | None:
        """From which snapshot a derived or score table must be recomputed (WHOLE: all of
        it), None when it is up to date: its inputs' writes since it read them."""
        previous = self.state.get(spec.name, {})
        if (self.options.full or previous.get("definition_hash") != _definition_hash(
                self.project, spec) or not spec.path(self.project).exists()
                or previous.get("column_files") != self._column_files(inputs)):
            return WHOLE
        return inputs_changed(self.state, previous.get("inputs", {}), inputs.tables)

    def _column_files(self, inputs: TableInputs) -> dict[str, Any]:
        return {name: file_fingerprint(self.project, self.project.sources[name])
                for name in inputs.column_sources}

    def _write_computed(self, engine: Any, query: exp.Expression | str, out: Path, key: str,
                        spec: TableSpec, since: int, inputs: TableInputs) -> TableResult:
        """Write a table computed from other tables (derived, score): whole, or its
        snapshots from `since` on merged with the older rows kept."""
        from tally.catalog.sql.engines import write_arrow_table

        sql = query if isinstance(query, str) else query.sql(engine.dialect)
        fingerprints = {"inputs": generations(self.state, inputs.tables),
                        "column_files": self._column_files(inputs)}
        if since != WHOLE:
            sql = snapshots_from(sql, since, engine.dialect)
        if engine.dialect == "duckdb":
            if since != WHOLE:
                sql = (f"SELECT * FROM {parquet_scan(out)} WHERE epoch_us(event_timestamp) "
                       f"< {int(since)} UNION ALL BY NAME {sql}")
            result = self._write_whole(engine.con, f"SELECT * FROM ({sql})", out, key, spec)
            result.mode = "full" if since == WHOLE else "incremental"
        else:
            try:
                table = engine.to_arrow(sql)
            except Exception as exc:  # duckdb and pyspark/py4j raise many types
                raise DataError(f"computing {spec.name}: {first_line(exc)}") from None
            keep = (since, KEEP_ALL_AFTER) if since != WHOLE else None
            write_arrow_table(table, out, key, keep)
            result = TableResult(spec.name, spec.kind, 0, None, 0.0, out,
                                 "full" if since == WHOLE else "incremental")
        if self.progress:
            self.progress(spec.name, 1, 1)
        result.since_us, result.fingerprints = since, fingerprints
        return result

    def _write_whole(self, con: Any, select_sql: str, out: Path, key: str,
                     spec: TableSpec) -> TableResult:
        """Write a table computed whole (derived, score) and report it."""
        try:
            _write_table(con, select_sql, out, f'"{key}", event_timestamp')
        except Exception as exc:
            raise DataError(f"computing {spec.name}: {first_line(exc)}") from None
        return TableResult(spec.name, spec.kind, 0, None, 0.0, out, "full")

    # -- scores -----------------------------------------------------------------------
    def _compute_score(self, spec: TableSpec) -> TableResult:
        from tally.catalog.scores.plans import input_paths, score_query
        from tally.catalog.sql.engines import DuckDBEngine

        score = self.project.scores[spec.features[0]]
        out = spec.path(self.project)
        out.parent.mkdir(parents=True, exist_ok=True)
        inputs = self._score_inputs(spec)
        since = self._changed_from(spec, inputs)
        if since is None:
            return self._up_to_date(spec, out)
        if self.progress:
            self.progress(spec.name, 0, 1)
        query = score_query(self.project, score, self.specs)
        con = connect([out.parent, *input_paths(self.project, score, self.specs)])
        key = self.project.entities[score.entity].join_key
        return self._write_computed(DuckDBEngine(con), query, out, key, spec, since, inputs)

    def _score_inputs(self, spec: TableSpec) -> TableInputs:
        from tally.catalog.scores.plans import input_tables

        score = self.project.scores[spec.features[0]]
        segments = {self.project.metrics[c.segment_by].source or "" for c in score.components
                    if c.segment_by and c.segment_by in self.project.metrics
                    and self.project.metrics[c.segment_by].type == "column"}
        return TableInputs(input_tables(self.project, score, self.specs),
                           sorted(segments - {""}))

    def up_to_date(self, tables: list[TableSpec]) -> bool:
        """Whether every table is up to date, judged without reading any data: source files,
        definitions and input tables all as they were when it was computed."""
        for spec in tables:
            if spec.kind == "group":
                fresh = self._group_unchanged(spec)
            elif spec.kind == "derived":
                inputs = self._derived_inputs(spec, self._input_groups(spec))
                fresh = self._changed_from(spec, inputs) is None
            else:
                fresh = self._changed_from(spec, self._score_inputs(spec)) is None
            if not fresh:
                return False
        return True

    def unchanged(self, tables: list[TableSpec]) -> list[TableResult]:
        """The results of a run that found every table up to date (see `up_to_date`)."""
        return [self._up_to_date(spec, spec.path(self.project)) for spec in tables]

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
                          json.dumps(self.state, indent=2, sort_keys=True))

    def _statistics(self, spec: TableSpec, result: TableResult) -> dict[str, Any]:
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
        return entry


def compute(project: Project, options: ComputeOptions | None = None,
            progress: Progress | None = None) -> list[TableResult]:
    return Computer(project, options, progress).run()
