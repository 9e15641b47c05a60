"""Compute every table of a project once: groups, derived metrics, then scores.

Incremental by default: each table recomputes the snapshots its sources or inputs changed
since it was computed (catalog/compute/fingerprints.py, generations.py; docs/compute.md);
with nothing changed, nothing is read. A changed definition or `full=True` recomputes it
all. Every table is written to a temp file and renamed into place, under the project
lock, so a killed run leaves the previous table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tally.catalog.compute.dependents import DependentTables
from tally.catalog.compute.fingerprints import (
    Digest,
    digest_of,
    digest_query,
    earliest_change,
    file_fingerprint,
    time_bounds,
)
from tally.catalog.compute.funnel_tables import FunnelTables
from tally.catalog.compute.generations import WHOLE
from tally.catalog.compute.plans import group_query, partial_plan, plan_group
from tally.catalog.compute.session import (
    KEEP_ALL_AFTER,
    ComputeOptions,
    Progress,
    TableResult,
    day_us,
    definition_hash,
    source_path,
    write_table,
)
from tally.catalog.errors import DataError, LookupFailedError, TallyError
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec
from tally.catalog.sql.duck import parquet_scan
from tally.catalog.sql.engines import first_line
from tally.catalog.store.fsutil import clean_temp_files, project_lock
from tally.catalog.store.paths import TABLES_DIR
from tally.catalog.store.runlog import Run, Stopwatch, append_run, now, table_run

__all__ = ["ComputeOptions", "Computer", "Progress", "TableResult", "compute"]


class Computer(DependentTables, FunnelTables):
    """Computes a project's tables; one instance per run."""

    def selected(self) -> list[TableSpec]:
        wanted = self.options.metrics
        unknown = [m for m in wanted if m not in self.project.metrics
                   and m not in self.project.scores]
        if unknown:
            raise LookupFailedError(f"unknown metric {', '.join(map(repr, unknown))}; "
                                    "`tally search` lists what exists")
        names: set[str] = set()
        for spec in self.specs.values():
            if spec.kind in ("group", "derived", "funnel") and (
                not wanted or set(spec.features) & set(wanted)
            ):
                names.add(spec.name)
        names |= self._selected_scores(names, wanted)
        for spec in list(self.specs.values()):
            if spec.kind == "derived" and spec.name in names:
                names.update(self._input_groups(spec))
        order = {"group": 0, "funnel": 0, "derived": 1, "score": 2}
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
        sources |= {step.source for spec in tables if spec.kind == "funnel"
                    for step in self.project.metrics[spec.features[0]].steps or []}
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

    def run(self) -> list[TableResult]:
        results = []
        tables = self.selected()
        run_watch, written = Stopwatch(), []
        with project_lock(self.project.root):
            clean_temp_files(self.project.root / TABLES_DIR)
            for spec in tables:
                started, watch = time.perf_counter(), Stopwatch()
                if spec.kind == "group":
                    result = self._compute_group(spec)
                elif spec.kind == "funnel":
                    result = self._compute_funnel(spec)
                elif spec.kind == "score":
                    result = self._compute_score(spec)
                else:
                    result = self._compute_derived(spec)
                result.seconds = time.perf_counter() - started
                results.append(result)
                self._record(spec, result)
                if result.mode != "skipped":
                    written.append(table_run(spec.name, result.path, result.rows, watch))
            append_run(self.project.root, Run(now(), "compute", run_watch.wall, run_watch.cpu,
                                              written), lock_held=True)
        return results

    # -- groups -----------------------------------------------------------------------
    def _compute_group(self, spec: TableSpec) -> TableResult:
        project = self.project
        group = next(g for g in project.groups() if g.name == spec.name)
        plan = plan_group(project, group)
        source = project.sources[group.source]
        src_path = source_path(project, group.source)
        out = spec.path(project)
        out.parent.mkdir(parents=True, exist_ok=True)
        if self._group_unchanged(spec):
            return self._up_to_date(spec, out)
        engine = self._engine([Path(src_path).parent, out.parent])
        key = project.entities[group.entity].join_key
        digest = self._digest(engine, source, key, plan, src_path)
        files: list[list[Any]] | None = file_fingerprint(project, source)
        bounds = time_bounds(digest)
        if bounds is None:
            return TableResult(spec.name, spec.kind, 0, 0, 0.0, out, "skipped")
        low, high = self._snapshot_range(plan, bounds)
        previous = self.state.get(spec.name, {})
        same = previous.get("definition_hash") == definition_hash(project, spec)
        ranged = bool(self.options.start or self.options.end)
        keep_old = same and out.exists() and not self.options.full and "digest" in previous
        replace_from = low
        if keep_old and not ranged:
            changed = earliest_change(previous["digest"], digest)
            if changed is None and "files" in previous:  # files touched, rows the same
                return self._up_to_date(spec, out, {"files": files})
            g = plan.grain_buckets
            last = int(previous.get("last_position", low))  # after --end: not the source's
            first_hit = last if changed is None else (plan.position_of(changed) // g + 1) * g
            replace_from = min(last, first_hit)  # older kept rows before the source's new
            low = max(low, replace_from)  # first snapshot (rows removed) are dropped
        if ranged:  # later runs must still see what changed outside the range
            files, digest = None, previous.get("digest", digest)
        total = max(0, (high - low) // plan.grain_buckets + 1)
        if self.progress:
            self.progress(spec.name, 0, total)
        keep = None
        if keep_old:
            keep = ((replace_from if not ranged else low) * plan.bucket_us,
                    high * plan.bucket_us if self.options.end else KEEP_ALL_AFTER)
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
            low = max(low, -(-plan.position_of(day_us(self.options.start)) // g) * g)
        if self.options.end:
            high = min(high, plan.position_of(day_us(self.options.end)) // g * g)
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
                and previous.get("definition_hash") == definition_hash(self.project, spec)
                and "digest" in previous and spec.path(self.project).exists()
                and previous.get("files") == file_fingerprint(self.project, source))

    def _digest(self, engine: Any, source: Any, key: str, plan: Any, path: str) -> Digest:
        """The source's day digest (catalog/compute/fingerprints.py): one scan."""
        metrics = [self.project.metrics[m] for m in plan.group.metrics]
        query = digest_query(source, key, metrics, path, engine.dialect)
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
            write_table(con, select_sql, out, f'"{key}", event_timestamp')
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

    def up_to_date(self, tables: list[TableSpec]) -> bool:
        """Whether every table is up to date, judged without reading any data: source files,
        definitions and input tables all as they were when it was computed."""
        for spec in tables:
            if spec.kind == "group":
                fresh = self._group_unchanged(spec)
            elif spec.kind == "funnel":
                fresh = self._funnel_unchanged(spec)
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


def compute(project: Project, options: ComputeOptions | None = None,
            progress: Progress | None = None) -> list[TableResult]:
    return Computer(project, options, progress).run()
