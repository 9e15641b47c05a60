"""Computing a funnel metric's table (compute/funnels.py holds its plan and SQL).

Up to date without reading data when the definition and every step source's files are as
they were; otherwise the table is recomputed whole (a funnel's start at `s` reads rows up
to `s + within`, so a changed day moves snapshots on both sides of it). `start`/`end`
narrow the snapshots recomputed; the rows outside them are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tally.catalog.compute.fingerprints import file_fingerprint
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
        same = (self.state.get(spec.name, {}).get("definition_hash")
                == definition_hash(project, spec))
        keep = None
        if ranged and same and out.exists() and not self.options.full:
            g = plan.grain_us
            keep = ((low or 0) * g, high * g if high is not None else KEEP_ALL_AFTER)
        if self.progress:
            self.progress(spec.name, 0, 1)
        query = funnel_query(project, plan, paths=paths, low=low, high=high,
                             dialect=engine.dialect)
        if engine.dialect == "spark":
            self._write_spark(engine, query, out, plan.entity_key, spec.name, keep, None)
        else:
            self._write_funnel_duckdb(engine.con, query.sql("duckdb"), out, plan.entity_key,
                                      spec, keep)
        if self.progress:
            self.progress(spec.name, 1, 1)
        return TableResult(spec.name, spec.kind, 0, None, 0.0, out,
                           "incremental" if keep else "full",
                           since_us=keep[0] if keep else WHOLE,
                           fingerprints={"files": None if ranged else self._funnel_files(plan)})

    def _require_times(self, engine: Any, plan: FunnelPlan, paths: dict[str, str]) -> None:
        from tally.catalog.sql.relations import source_relation
        from tally.catalog.sql.timestamps import require_time_columns

        for name in plan.sources:
            source = self.project.sources[name]
            require_time_columns(engine.con, source,
                                 source_relation(source, paths[name], "duckdb"), paths[name])

    def _write_funnel_duckdb(self, con: Any, new_sql: str, out: Path, key: str,
                             spec: TableSpec, keep: tuple[int, int] | None) -> None:
        """The whole table, or (keep) its snapshots in keep's bounds, the other parts kept."""
        try:
            write_query(con, new_sql, out, key, spec, keep, None)
        except TallyError:
            raise
        except Exception as exc:  # duckdb raises a family of its own errors
            raise DataError(f"computing funnel {spec.name}: {first_line(exc)}") from None
