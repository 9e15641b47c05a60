"""Lineage: who feeds what. Nodes are every definition plus every computed table (one Feast
FeatureView each); edges run upstream -> downstream:

entity -> source, entity -> score, source -> metric, source -> feature view (the table that
scans or serves it), metric -> derived metric, metric -> score (a component),
metric/score -> feature view (the table that serves it), metric/score -> model (a feature),
feature view -> model (the FeatureService reads it).

Pure Python over a loaded Project; no Feast, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tally.catalog.spec.tables import TableSpec, table_specs, tables_by_feature

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project

FEATURE_VIEW = "feature_view"
KIND_ORDER = ("entity", "source", "metric", "score", FEATURE_VIEW, "model")


def node_id(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def split_id(ident: str) -> tuple[str, str]:
    kind, _, name = ident.partition(":")
    return kind, name


@dataclass
class Lineage:
    """The project's lineage graph, by node id (`kind:name`)."""

    owners: dict[str, str] = field(default_factory=dict)
    down: dict[str, set[str]] = field(default_factory=dict)
    up: dict[str, set[str]] = field(default_factory=dict)
    tables: dict[str, TableSpec] = field(default_factory=dict)
    table_of_feature: dict[str, str] = field(default_factory=dict)

    def add_node(self, ident: str, owner: str) -> None:
        self.owners[ident] = owner
        self.down.setdefault(ident, set())
        self.up.setdefault(ident, set())

    def add_edge(self, upstream: str, downstream: str) -> None:
        if upstream in self.owners and downstream in self.owners and upstream != downstream:
            self.down[upstream].add(downstream)
            self.up[downstream].add(upstream)

    def downstream(self, ident: str) -> list[str]:
        return sort_ids(self.down.get(ident, ()))

    def upstream(self, ident: str) -> list[str]:
        return sort_ids(self.up.get(ident, ()))

    def transitive_down(self, ident: str) -> list[str]:
        """Everything downstream. A feature view is followed to its models only when it is
        the start: a view reached through one metric does not make every model that reads
        another metric of the same view depend on the first."""
        return sort_ids(walk(ident, lambda i: self.down.get(i, ()) if (
            i == ident or not i.startswith(FEATURE_VIEW + ":")) else ()))

    def direct_models(self, ident: str) -> list[str]:
        """Names of the models that read `ident` itself (not through another node)."""
        return sorted(split_id(d)[1] for d in self.down.get(ident, ()) if d.startswith("model:"))

    def models_using(self, ident: str) -> list[str]:
        """Models that use `ident` directly or through derived metrics and scores."""
        return [i for i in self.transitive_down(ident) if i.startswith("model:")]

    def model_count(self, ident: str) -> int:
        """How many models use `ident`, directly or not: the one count search, show and
        reuse give."""
        return len(self.models_using(ident))


def walk(start: str, neighbours) -> set[str]:  # type: ignore[no-untyped-def]
    """Every node reachable from `start` (excluded) through `neighbours`."""
    seen: set[str] = set()
    queue = deque([start])
    while queue:
        for nxt in neighbours(queue.popleft()):
            if nxt not in seen and nxt != start:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def sort_ids(ids) -> list[str]:  # type: ignore[no-untyped-def]
    def key(ident: str) -> tuple[int, str]:
        kind, name = split_id(ident)
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else 99, name)

    return sorted(ids, key=key)


def table_owner(project: Project, spec: TableSpec) -> str:
    """Who answers for a table (tables.table_owners), comma-joined when several."""
    from tally.catalog.spec.tables import table_owners

    return ", ".join(table_owners(project, spec))


def build_lineage(project: Project) -> Lineage:
    graph = Lineage()
    for name, definition in project.definitions.items():
        graph.add_node(node_id(definition.kind, name), definition.spec.owner)
    specs = table_specs(project)
    for spec in specs:
        ident = node_id(FEATURE_VIEW, spec.name)
        graph.add_node(ident, table_owner(project, spec))
        graph.tables[spec.name] = spec
    graph.table_of_feature = {f: s.name for f, s in tables_by_feature(specs).items()}
    for name, source in project.sources.items():
        graph.add_edge(node_id("entity", source.entity), node_id("source", name))
    for name, metric in project.metrics.items():
        me = node_id("metric", name)
        if metric.type == "derived":
            for used in project.derived_inputs(metric):
                graph.add_edge(node_id("metric", used), me)
        elif metric.type == "funnel":
            for step_source in dict.fromkeys(step.source for step in metric.steps or []):
                graph.add_edge(node_id("source", step_source), me)
        elif metric.source:
            graph.add_edge(node_id("source", metric.source), me)
    for name, score in project.scores.items():
        me = node_id("score", name)
        graph.add_edge(node_id("entity", score.entity), me)
        for component in score.components:
            graph.add_edge(node_id("metric", component.metric), me)
    for table_name, spec in graph.tables.items():
        view = node_id(FEATURE_VIEW, table_name)
        if spec.source:
            graph.add_edge(node_id("source", spec.source), view)
        for feature in spec.features:
            graph.add_edge(_feature_id(project, feature), view)
    for name, model in project.models.items():
        me = node_id("model", name)
        for feature in model.features:
            graph.add_edge(_feature_id(project, feature), me)
            table = graph.table_of_feature.get(feature)
            if table:
                graph.add_edge(node_id(FEATURE_VIEW, table), me)
    return graph


def _feature_id(project: Project, name: str) -> str:
    return node_id("score" if name in project.scores else "metric", name)
