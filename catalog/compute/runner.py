"""Compute every table of a project once: groups, derived metrics, then scores.

Incremental by default: each table recomputes the snapshots its sources or inputs changed
since it was computed (catalog/compute/fingerprints.py, generations.py; docs/compute.md);
with nothing changed, nothing is read. A changed definition or `full=True` recomputes it
all. Every table is written to a temp file and renamed into place, under the project
lock, so a killed run leaves the previous table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from tally.catalog.compute.dependents import DependentTables
from tally.catalog.compute.fingerprints import (
    Digest,
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
    table_span,
    write_query,
    write_rows,
)
from tally.catalog.errors import DataError, LookupFailedError, TallyError
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec
from tally.catalog.sql.engines import first_line
from tally.catalog.sql.parts import newest_span_start, write_full
from tally.catalog.store.fsutil import clean_temp_files, project_lock
from tally.catalog.store.paths import TABLES_DIR
from tally.catalog.store.runlog import Run, Stopwatch, append_run, now, table_run

__all__ = ["ComputeOptions", "Computer", "Progress", "TableResult", "compute"]


KIND_ORDER = {"group": 0, "funnel": 0, "derived": 1, "score": 2}  # tables after the ones they read
SIDE_BY_SIDE = 2  # tables of one rank computed at once in an incremental run
Computed = tuple[TableSpec, TableResult, Stopwatch]


@dataclass(frozen=True)
class TableKind:
    compute: Callable[[TableSpec], TableResult]
    fresh: Callable[[TableSpec], bool]  # up to date, judged without reading data


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
        return sorted((self.specs[n] for n in names),
                      key=lambda s: (KIND_ORDER[s.kind], s.name))

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
            for spec, result, watch in self._computed(tables):
                results.append(result)
                self._record(spec, result)
                if result.mode != "skipped":
                    written.append(table_run(spec.name, result.path, result.rows, watch))
            append_run(self.project.root, Run(now(), "compute", run_watch.wall, run_watch.cpu,
                                              written), lock_held=True)
        return results

    def _computed(self, tables: list[TableSpec]) -> Iterator[Computed]:
        """Each table computed, in order. The tables of one rank (`KIND_ORDER`) read none
        of each other, so in an incremental run on DuckDB they are computed side by side
        (`_side_by_side`): a daily run is many small queries, each on a core or two."""
        for _, rank in groupby(tables, key=lambda spec: KIND_ORDER[spec.kind]):
            specs = list(rank)
            if len(specs) > 1 and self._side_by_side(specs):
                yield from self._compute_side_by_side(specs)
            else:
                yield from map(self._compute_one, specs)

    def _compute_one(self, spec: TableSpec) -> Computed:
        started, watch = time.perf_counter(), Stopwatch()
        result = self._kinds()[spec.kind].compute(spec)
        result.seconds = time.perf_counter() - started
        return spec, result, watch

    def _side_by_side(self, specs: list[TableSpec]) -> bool:
        """Whether to compute these tables at once: an incremental run (no `full`, no
        range) on DuckDB, on more than one core, where each table was computed before with
        the same definition and (groups, funnels) has the fingerprints that date a change,
        so each reads only what its changes reach. A first or `--full` run, which holds a
        whole table, stays one table at a time."""
        from tally.catalog.sql.engines import project_engine

        options = self.options
        if (options.full or options.start or options.end or (os.cpu_count() or 1) < 2
                or project_engine(self.project.root) == "spark"):
            return False
        return all(self._recorded_for_changes(spec) for spec in specs)

    def _recorded_for_changes(self, spec: TableSpec) -> bool:
        entry = self.state.get(spec.name, {})
        dated = spec.kind not in ("group", "funnel") or (
            "files" in entry and ("digest" in entry or "digests" in entry))
        return (dated and entry.get("definition_hash") == definition_hash(self.project, spec)
                and spec.path(self.project).exists())

    def _compute_side_by_side(self, specs: list[TableSpec]) -> Iterator[Computed]:
        """The tables computed on SIDE_BY_SIDE threads, each with a cursor of the run's
        connection, yielded in order as they finish (the caller records each). When one
        fails, the others still finish and are yielded; then the first failure raises."""
        self._duckdb()  # the run's connection, made once, before the threads
        cursors: list[Any] = []

        def compute(spec: TableSpec) -> Computed:
            cursor = self._use_cursor()
            if cursor is not None:
                cursors.append(cursor)
            return self._compute_one(spec)

        failure: Exception | None = None
        try:
            with ThreadPoolExecutor(SIDE_BY_SIDE, thread_name_prefix="tally-table") as pool:
                for future in [pool.submit(compute, spec) for spec in specs]:
                    try:
                        done = future.result()
                    except Exception as exc:  # re-raised once the others are recorded
                        failure = failure or exc
                        continue
                    yield done
        finally:
            for cursor in cursors:
                cursor.close()
        if failure is not None:
            raise failure

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
        engine = self._engine()
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
        rows = self._write_group(engine, plan, src_path, (low, high), key, spec, keep)
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

    def _write_group(self, engine: Any, plan: Any, src_path: str, span: tuple[int, int],
                     key: str, spec: TableSpec, keep: tuple[int, int] | None) -> int:
        low, high = span
        out, newest = spec.path(self.project), high * plan.bucket_us
        if engine.dialect == "spark":
            query = group_query(self.project, plan, path=src_path, low=low, high=high,
                                dialect="spark")
            return self._write_spark(engine, query, out, key, spec.name, keep, newest)
        if not self._kernel_write(engine.con, plan, src_path, span, key, spec, keep):
            self._write_group_sql(engine.con, plan, src_path, span, key, spec, keep)
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
        return self._read_digest(engine, source, path,
                                 digest_query(source, key, metrics, path, engine.dialect))

    def _write_group_sql(self, con: Any, plan: Any, src_path: str, span: tuple[int, int],
                         key: str, spec: TableSpec, keep: tuple[int, int] | None) -> None:
        """The whole group as one DuckDB query (plans.group_query); with `keep`, its rows
        replace that range of the table's parts (catalog/sql/parts.py)."""
        low, high = span
        new_sql = group_query(self.project, plan, path=src_path, low=low, high=high).sql(
            "duckdb")
        try:
            write_query(con, new_sql, spec.path(self.project), key, spec, keep,
                        high * plan.bucket_us)
        except TallyError:
            raise
        except Exception as exc:
            raise DataError(f"computing {spec.name} from {src_path}: {first_line(exc)}"
                            ) from None

    def _kernel_write(self, con: Any, plan: Any, src_path: str, span: tuple[int, int],
                      key: str, spec: TableSpec, keep: tuple[int, int] | None) -> bool:
        """Compute and write the group through the columnar kernel (catalog/kernel.py):
        the whole table chunk by chunk, or the range `keep` into the table's parts; False
        when it declines (partial types it does not handle, or new rows that would not fit
        in memory) and the SQL plan should run instead."""
        import pyarrow as pa
        from tally.catalog.compute.kernel import fits_in_memory, prepare_group, stream_group

        low, high = span
        out = spec.path(self.project)
        parts = partial_plan(self.project, plan, path=src_path, low=low, high=high)
        try:
            if keep is None:  # a whole table: streamed from the scan, a piece at a time
                stream = stream_group(con, parts, plan, low=low, high=high)
                if stream is None:
                    return False
                part_span, newest = table_span(spec), high * plan.bucket_us
                split_us = newest_span_start(newest, part_span)
                write_full(stream.tables(key, split_us=split_us), out, key, part_span, newest)
                return True
            run = prepare_group(con, parts, plan, low=low, high=high)
            if run is None:
                return False
            if not fits_in_memory(run):
                return False
            write_rows(pa.concat_tables(list(run.tables(key))), out, key, spec, keep, None)
            return True
        except TallyError:
            raise
        except Exception as exc:  # duckdb raises a family of its own errors
            raise DataError(f"computing {spec.name} from {src_path}: {first_line(exc)}"
                            ) from None

    def up_to_date(self, tables: list[TableSpec]) -> bool:
        """Whether every table is up to date, judged without reading any data: source files,
        definitions and input tables all as they were when it was computed."""
        kinds = self._kinds()
        return all(kinds[spec.kind].fresh(spec) for spec in tables)

    def _kinds(self) -> dict[str, TableKind]:
        """How each kind of table is computed and judged up to date: a new kind of table
        adds its entry here (and its rank in `KIND_ORDER`)."""
        return {
            "group": TableKind(self._compute_group, self._group_unchanged),
            "funnel": TableKind(self._compute_funnel, self._funnel_unchanged),
            "derived": TableKind(self._compute_derived, lambda spec: self._changed_from(
                spec, self._derived_inputs(spec, self._input_groups(spec))) is None),
            "score": TableKind(self._compute_score, lambda spec: self._changed_from(
                spec, self._score_inputs(spec)) is None),
        }

    def unchanged(self, tables: list[TableSpec]) -> list[TableResult]:
        """The results of a run that found every table up to date (see `up_to_date`)."""
        return [self._up_to_date(spec, spec.path(self.project)) for spec in tables]


def compute(project: Project, options: ComputeOptions | None = None,
            progress: Progress | None = None) -> list[TableResult]:
    return Computer(project, options, progress).run()
