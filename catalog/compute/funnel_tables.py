"""Computing a funnel metric's table (compute/funnels.py holds its plan and SQL).

Up to date without reading data when the definition and every step source's files are as
they were. Otherwise each step source's day digest (compute/fingerprints.py) names the
earliest day whose rows changed, `t0`; a snapshot `T` only ever reads rows before `T`
(starts, step rows and the rows that decide whether the entity has a row), so the
snapshots after `t0` are recomputed and the older ones kept, and tables computed from the
funnel (scores, derived metrics) follow from the same snapshot. A new definition, `--full`
or a first run recomputes it whole. `start`/`end` narrow the snapshots recomputed; the rows
outside them are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tally.catalog.compute.fingerprints import (
    digest_query,
    earliest_change,
    file_fingerprint,
    time_bounds,
)
from tally.catalog.compute.funnels import FunnelPlan, funnel_query, plan_funnel
from tally.catalog.compute.generations import WHOLE
from tally.catalog.compute.session import (
    KEEP_ALL_AFTER,
    ComputeSession,
    TableResult,
    day_us,
    definition_hash,
    source_path,
    write_query,
)
from tally.catalog.errors import DataError, TallyError
from tally.catalog.spec.sqlcheck import check_expression
from tally.catalog.spec.tables import TableSpec
from tally.catalog.sql.engines import first_line


class FunnelTables(ComputeSession):
    """The funnel tables of a run (runner.Computer dispatches to `_compute_funnel`)."""

    def _funnel_files(self, plan: FunnelPlan) -> dict[str, Any]:
        return {s: file_fingerprint(self.project, self.project.sources[s])
                for s in plan.sources}

    def _funnel_unchanged(self, spec: TableSpec) -> bool:
        """Same definition, same step source files, table in place."""
        previous = self.state.get(spec.name, {})
        plan = plan_funnel(self.project, spec.features[0])
        return (not self.options.full and not self.options.start and not self.options.end
                and previous.get("definition_hash") == definition_hash(self.project, spec)
                and spec.path(self.project).exists()
                and previous.get("files") == self._funnel_files(plan))

    def _funnel_range(self, plan: FunnelPlan) -> tuple[int | None, int | None]:
        """The snapshots (grain numbers) `start`/`end` narrow the run to (None: the data's)."""
        g = plan.grain_us
        low = -(-day_us(self.options.start) // g) if self.options.start else None
        high = day_us(self.options.end) // g if self.options.end else None
        return low, high

    def _compute_funnel(self, spec: TableSpec) -> TableResult:
        project = self.project
        plan = plan_funnel(project, spec.features[0])
        paths = {s: source_path(project, s) for s in plan.sources}
        out = spec.path(project)
        out.parent.mkdir(parents=True, exist_ok=True)
        if self._funnel_unchanged(spec):
            return self._up_to_date(spec, out)
        engine = self._engine()
        if engine.dialect != "spark":
            self._require_times(engine, plan, paths)
        low, high = self._funnel_range(plan)
        ranged = low is not None or high is not None
        previous = self.state.get(spec.name, {})
        same = previous.get("definition_hash") == definition_hash(project, spec)
        reuse = same and out.exists() and not self.options.full
        files = None if ranged else self._funnel_files(plan)
        digests = None if files is None else self._funnel_digests(
            engine, plan, paths, files, previous if same else {})
        if digests is not None and reuse and "digests" in previous:
            changed = self._funnel_changed(previous["digests"], digests)
            if changed is None and "files" in previous:  # files touched, rows the same
                return self._up_to_date(spec, out, {"files": files, "digests": digests})
            if changed is not None:
                low = changed // plan.grain_us + 1  # the first snapshot after the change
        keep = None
        if low is not None and reuse:
            keep = (low * plan.grain_us,
                    high * plan.grain_us if high is not None else KEEP_ALL_AFTER)
        newest = self._newest_snapshot_us(plan, digests)
        self._write_funnel(engine, plan, spec, paths, (low, high), keep, newest)
        return TableResult(spec.name, spec.kind, 0, None, 0.0, out,
                           "incremental" if keep else "full",
                           since_us=keep[0] if keep else WHOLE,
                           fingerprints={"files": files, "digests": digests})

    def _write_funnel(self, engine: Any, plan: FunnelPlan, spec: TableSpec,
                      paths: dict[str, str], span: tuple[int | None, int | None],
                      keep: tuple[int, int] | None, newest_us: int | None) -> None:
        """Compute the snapshots in `span` (grain numbers; None: the data's) and write them:
        the whole table, or (keep) in place of the table's rows in keep's bounds."""
        out = spec.path(self.project)
        if self.progress:
            self.progress(spec.name, 0, 1)
        query = funnel_query(self.project, plan, paths=paths, low=span[0], high=span[1],
                             dialect=engine.dialect)
        if engine.dialect == "spark":
            self._write_spark(engine, query, out, plan.entity_key, spec.name, keep,
                              newest_us)
        else:
            self._write_funnel_duckdb(engine.con, query.sql("duckdb"), out, plan.entity_key,
                                      spec, keep, newest_us)
        if self.progress:
            self.progress(spec.name, 1, 1)

    def _funnel_digests(self, engine: Any, plan: FunnelPlan, paths: dict[str, str],
                        files: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
        """Each step source's day digest over the columns the funnel reads; a source whose
        files are as they were keeps the digest of the last run (no scan)."""
        old_files, old_digests = previous.get("files") or {}, previous.get("digests") or {}
        out = {}
        for name in plan.sources:
            if name in old_digests and old_files.get(name) == files[name]:
                out[name] = old_digests[name]
                continue
            source = self.project.sources[name]
            columns = {plan.metric.same} if plan.metric.same else set()
            for step in plan.metric.steps or []:
                if step.source == name:
                    columns |= set(check_expression(step.filter).columns)
            query = digest_query(source, plan.entity_key, [], paths[name], engine.dialect,
                                 columns=sorted(columns))
            out[name] = self._read_digest(engine, source, paths[name], query)
        return out

    @staticmethod
    def _newest_snapshot_us(plan: FunnelPlan, digests: dict[str, Any] | None) -> int | None:
        """The table's newest snapshot, the first after the newest step-source row (so a
        full write puts the newest span in a part of its own, as for groups)."""
        bounds = [time_bounds(d) for d in (digests or {}).values()]
        newest = [b[1] for b in bounds if b is not None]
        if not newest:
            return None
        return (max(newest) // plan.grain_us + 1) * plan.grain_us

    @staticmethod
    def _funnel_changed(old: dict[str, Any], new: dict[str, Any]) -> int | None:
        """The start of the earliest day whose rows changed in any step source."""
        changes = [earliest_change(old.get(name, {}), digest) for name, digest in new.items()]
        found = [c for c in changes if c is not None]
        return min(found) if found else None

    def _require_times(self, engine: Any, plan: FunnelPlan, paths: dict[str, str]) -> None:
        from tally.catalog.sql.relations import source_relation
        from tally.catalog.sql.timestamps import require_time_columns

        for name in plan.sources:
            source = self.project.sources[name]
            require_time_columns(engine.con, source,
                                 source_relation(source, paths[name], "duckdb"), paths[name])

    def _write_funnel_duckdb(self, con: Any, new_sql: str, out: Path, key: str,
                             spec: TableSpec, keep: tuple[int, int] | None,
                             newest_us: int | None) -> None:
        """The whole table, or (keep) its snapshots in keep's bounds, the other parts kept."""
        try:
            write_query(con, new_sql, out, key, spec, keep, newest_us)
        except TallyError:
            raise
        except Exception as exc:  # duckdb raises a family of its own errors
            raise DataError(f"computing funnel {spec.name}: {first_line(exc)}") from None
