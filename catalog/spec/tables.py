"""The tables a project computes and serves: one per (source, entity, grain) group, one per
(entity, grain) for derived metrics, one per score, one per source for column metrics, one
per funnel metric. Each is one Feast FeatureView of the same name. Pure naming and layout;
no Feast here."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tally.catalog.spec.durations import format_duration
from tally.catalog.spec.models import Metric
from tally.catalog.spec.project import Project
from tally.catalog.store.paths import TABLES_DIR

# the kinds of computed table with a row per (entity, snapshot): what derived metrics and
# score components read
SNAPSHOT_KINDS = ("group", "derived", "funnel")


@dataclass(frozen=True)
class TableSpec:
    name: str
    kind: str  # group | derived | score | column | funnel
    entity: str
    features: tuple[str, ...]
    grain: timedelta | None
    source: str | None  # the source scanned (group) or served (column)
    # served columns that are no definition of their own: a funnel's `<name>__step_<i>`
    extra_columns: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Every served column: the features, then the extra columns."""
        return (*self.features, *self.extra_columns)

    def path(self, project: Project) -> Path:
        """Where the table is: a folder `<name>.parquet` of parts by snapshot range, which
        every parquet reader takes as one table (its layout: tally.catalog.sql.parts); for
        a column table, the source file itself."""
        if self.kind == "column" and self.source:
            return project.root / project.sources[self.source].path
        return project.root / TABLES_DIR / f"{self.name}.parquet"

    def ttl(self, project: Project) -> timedelta | None:
        ttls = [project.ttl_of(f) for f in self.features]
        return None if any(t is None for t in ttls) else max(ttls)  # type: ignore[type-var]


def funnel_step_column(name: str, step: int) -> str:
    """The column serving the starts of funnel `name` that reached `step` (1-based; step 1
    is every start counted)."""
    return f"{name}__step_{step}"


def funnel_columns(name: str, metric: Metric) -> tuple[str, ...]:
    """Every column a funnel's table serves, in order: `<name>` (the measure), then
    `<name>__step_1` (starts counted) .. `<name>__step_k` (starts that completed)."""
    steps = len(metric.steps or ())
    return (name, *(funnel_step_column(name, i) for i in range(1, steps + 1)))


def funnel_table_name(name: str) -> str:
    """The table (FeatureView) of a funnel metric; `name` is the served feature, so a
    version's table is `funnel_<name>__vN`."""
    return f"funnel_{name}"


def table_specs(project: Project) -> list[TableSpec]:
    specs: list[TableSpec] = []
    for group in project.groups():
        specs.append(TableSpec(group.name, "group", group.entity, group.metrics, group.grain,
                               group.source))
    derived: dict[tuple[str, timedelta], list[str]] = {}
    columns: dict[str, list[str]] = {}
    for name, metric in sorted(project.metrics.items()):
        if metric.type == "derived":
            entity, grain = project.entity_of(name), project.grain_of(name)
            if entity and grain:
                derived.setdefault((entity, grain), []).append(name)
        elif metric.type == "column" and metric.source:
            columns.setdefault(metric.source, []).append(name)
        elif metric.type == "funnel" and metric.entity:
            specs.append(TableSpec(funnel_table_name(name), "funnel", metric.entity, (name,),
                                   metric.grain_delta, None, funnel_columns(name, metric)[1:]))
    for (entity, grain), names in sorted(derived.items()):
        specs.append(TableSpec(f"derived_{entity}_{format_duration(grain)}", "derived", entity,
                               tuple(names), grain, None))
    for source, names in sorted(columns.items()):
        specs.append(TableSpec(f"{source}_columns", "column", project.sources[source].entity,
                               tuple(names), None, source))
    for name, score in sorted(project.scores.items()):
        grains = {project.grain_of(c.metric) for c in score.components} - {None}
        specs.append(TableSpec(f"score_{name}", "score", score.entity, (name,),
                               grains.pop() if len(grains) == 1 else timedelta(days=1), None))
    return specs


def tables_by_feature(specs: Iterable[TableSpec]) -> dict[str, TableSpec]:
    """The table (FeatureView) serving each metric or score among `specs`: the one answer
    every caller (compute, scores, serving, lineage, the Feast bridge) uses."""
    out: dict[str, TableSpec] = {}
    for spec in specs:
        for feature in spec.features:
            out.setdefault(feature, spec)
    return out


def table_owners(project: Project, spec: TableSpec) -> list[str]:
    """Who answers for a table: the owners of the definitions it serves, sorted. The one
    answer `show`, search and Feast's FeatureView owner (comma-joined) give."""
    return sorted({project.definitions[f].spec.owner for f in spec.features})


def table_of(project: Project, feature: str) -> TableSpec | None:
    """The table (FeatureView) that serves a metric or score."""
    return tables_by_feature(table_specs(project)).get(feature)


def read_state(project: Project, relative: Path) -> dict[str, Any]:
    """A JSON state file under .tally/ ({} when absent or unreadable)."""
    try:
        data = json.loads((project.root / relative).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
