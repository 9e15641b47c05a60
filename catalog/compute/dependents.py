"""Tables computed from other tables: derived metrics, then scores. Each recomputes only
the snapshots its inputs rewrote since it read them (catalog/compute/generations.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.compute.fingerprints import (
    Digest,
    digest_of,
    digest_query,
    earliest_change,
    file_fingerprint,
)
from tally.catalog.compute.generations import WHOLE, generations, inputs_changed
from tally.catalog.compute.plans import derived_query, snapshots_from
from tally.catalog.compute.session import (
    KEEP_ALL_AFTER,
    ComputeSession,
    TableInputs,
    TableResult,
    definition_hash,
    source_path,
    write_query,
    write_rows,
)
from tally.catalog.errors import DataError, TallyError
from tally.catalog.spec.tables import TableSpec
from tally.catalog.sql.engines import first_line, reading_source


class DependentTables(ComputeSession):
    """Derived and score tables of a run (runner.Computer adds the groups)."""

    _column_digests: dict[str, Digest]

    def _compute_derived(self, spec: TableSpec) -> TableResult:
        project = self.project
        entity_key = project.entities[spec.entity].join_key
        group_of: dict[str, str] = {}
        group_paths: dict[str, str] = {}
        column_inputs: dict[str, tuple[Any, str]] = {}
        for other in self.specs.values():
            for feature in other.features:
                if other.kind in ("group", "funnel"):
                    group_of[feature] = other.name
                    group_paths[other.name] = str(other.path(project))
                elif other.kind == "column" and other.source:
                    column_inputs[feature] = (project.sources[other.source],
                                              source_path(project, other.source))
        needed = self._input_groups(spec)
        missing = [g for g in needed if not Path(group_paths[g]).exists()]
        if missing:
            raise DataError(f"derived table {spec.name} needs {', '.join(missing)}; compute "
                            "without `metrics` first", mentions=("metrics",))
        out = spec.path(project)
        inputs = self._derived_inputs(spec, needed)
        since = self._changed_from(spec, inputs)
        if since is None:
            return self._up_to_date(spec, out)
        if self.progress:
            self.progress(spec.name, 0, 1)
        engine = self._engine()
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
        it), None when it is up to date: its inputs' writes since it read them, and the
        earliest changed day of a column-metric source (a row at `t` is seen by the
        snapshots after it)."""
        previous = self.state.get(spec.name, {})
        if (self.options.full or previous.get("definition_hash") != definition_hash(
                self.project, spec) or not spec.path(self.project).exists()):
            return WHOLE
        seen: dict[str, int] = previous.get("inputs", {})
        since = inputs_changed(self.state, seen, inputs.tables)
        files, digests = previous.get("column_files", {}), previous.get("column_digests", {})
        for name in inputs.column_sources:
            source = self.project.sources[name]
            if files.get(name) == file_fingerprint(self.project, source):
                continue
            if name not in digests:
                return WHOLE
            change = earliest_change(digests[name], self._column_digest(name))
            if change is not None:
                since = change if since is None else min(since, change)
        return since

    def _column_digest(self, name: str) -> Digest:
        """The day digest of a column-metric source (read with DuckDB once per run)."""
        if name not in self._column_digests:
            source = self.project.sources[name]
            path = source_path(self.project, name)
            metrics = [m for m in self.project.metrics.values()
                       if m.type == "column" and m.source == name]
            query = digest_query(source, self.project.entities[source.entity].join_key,
                                 metrics, path, "duckdb")
            with reading_source(name, path):
                rows = self._duckdb().con.execute(query.sql("duckdb")).fetchall()
            self._column_digests[name] = digest_of(rows)
        return self._column_digests[name]

    def _column_files(self, inputs: TableInputs) -> dict[str, Any]:
        return {name: file_fingerprint(self.project, self.project.sources[name])
                for name in inputs.column_sources}

    def _write_computed(self, engine: Any, query: exp.Expression | str, out: Path, key: str,
                        spec: TableSpec, since: int, inputs: TableInputs) -> TableResult:
        """Write a table computed from other tables (derived, score): whole, or its
        snapshots from `since` on into its parts, the older parts kept."""
        sql = query if isinstance(query, str) else query.sql(engine.dialect)
        fingerprints = {"inputs": generations(self.state, inputs.tables),
                        "column_files": self._column_files(inputs),
                        "column_digests": {name: self._column_digest(name)
                                           for name in inputs.column_sources}}
        keep = None
        if since != WHOLE:
            sql, keep = snapshots_from(sql, since, engine.dialect), (since, KEEP_ALL_AFTER)
        newest = self._newest_input_us(inputs)
        try:
            if engine.dialect == "duckdb":
                write_query(engine.con, sql, out, key, spec, keep, newest)
            else:
                write_rows(engine.to_arrow(sql), out, key, spec, keep, newest)
        except TallyError:
            raise
        except Exception as exc:  # duckdb and pyspark/py4j raise many types
            raise DataError(f"computing {spec.name}: {first_line(exc)}") from None
        if self.progress:
            self.progress(spec.name, 1, 1)
        return TableResult(spec.name, spec.kind, 0, None, 0.0, out,
                           "full" if since == WHOLE else "incremental", since_us=since,
                           fingerprints=fingerprints)

    def _newest_input_us(self, inputs: TableInputs) -> int | None:
        """The newest snapshot of the input tables (their state, written earlier in this
        run): where a whole write's newest part starts."""
        newest = [int(self.state[t]["newest_us"]) for t in inputs.tables
                  if self.state.get(t, {}).get("newest_us") is not None]
        return max(newest) if newest else None

    def _compute_score(self, spec: TableSpec) -> TableResult:
        from tally.catalog.scores.plans import score_query

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
        key = self.project.entities[score.entity].join_key
        return self._write_computed(self._duckdb(), query, out, key, spec, since, inputs)

    def _score_inputs(self, spec: TableSpec) -> TableInputs:
        from tally.catalog.scores.plans import input_tables

        score = self.project.scores[spec.features[0]]
        segments = {self.project.metrics[c.segment_by].source or "" for c in score.components
                    if c.segment_by and c.segment_by in self.project.metrics
                    and self.project.metrics[c.segment_by].type == "column"}
        return TableInputs(input_tables(self.project, score, self.specs),
                           sorted(segments - {""}))
