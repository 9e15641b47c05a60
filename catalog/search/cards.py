"""Catalog cards: one JSON-ready dict per entity, source, metric, feature view, model and
score, with its definition, location, lineage, Feast names, last contract result and table
statistics. The search index stores these cards; `tally show` prints one."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tally.catalog.search.lineage import FEATURE_VIEW, Lineage, build_lineage, node_id, split_id

if TYPE_CHECKING:
    from tally.catalog.spec.project import Definition, Project
    from tally.catalog.spec.tables import TableSpec


def contract_state(has_contract: bool, result: dict[str, Any] | None) -> list[str]:
    """Facet values of a source's contract: passing | failing (+ violated when compute was
    allowed through the failure) | unchecked (never checked) | none (no contract)."""
    if not has_contract:
        return ["none"]
    if not isinstance(result, dict) or "ok" not in result:
        return ["unchecked"]
    if result.get("ok"):
        return ["passing"]
    return ["failing", "violated"] if result.get("allowed_violation") else ["failing"]


def _refs(ids: list[str]) -> list[dict[str, str]]:
    return [{"kind": k, "name": n} for k, n in map(split_id, ids)]


def _columns(project: Project, definition: Definition) -> list[str]:
    from tally.catalog.spec.sqlcheck import ExpressionRefused, check_expression

    spec = definition.spec
    if definition.kind == "entity":
        return [spec.join_key]
    if definition.kind == "source":
        return sorted(spec.contract.columns) if spec.contract else []
    if definition.kind == "model":
        return list(spec.features)
    if definition.kind == "score":
        return [c.metric for c in spec.components]
    if spec.type == "derived":
        return project.derived_inputs(spec)
    used: set[str] = {spec.same} if spec.type == "funnel" and spec.same else set()
    texts = [s.filter for s in spec.steps or ()] if spec.type == "funnel" else []
    for text in (spec.expression, spec.filter, *texts):
        if text:
            with contextlib.suppress(ExpressionRefused):
                used |= check_expression(text, allow_star=True).columns
    return sorted(used)


def _table_stats(table: str | None, stats: dict[str, Any], feature: str | None
                 ) -> dict[str, Any] | None:
    if not table:
        return None
    found = stats.get(table)
    if not isinstance(found, dict):
        return {"table": table, "computed": False}
    nulls = found.get("null_fraction")
    nulls = nulls if isinstance(nulls, dict) else {}
    out: dict[str, Any] = {"table": table, "computed": True, "rows": found.get("rows"),
                           "newest_snapshot": found.get("newest_snapshot")}
    out["null_fraction"] = nulls.get(feature) if feature else nulls
    return out


def _base(ident: str, graph: Lineage) -> dict[str, Any]:
    models = graph.models_using(ident)
    return {
        "id": ident,
        "upstream": _refs(graph.upstream(ident)),
        "downstream": _refs(graph.downstream(ident)),
        "models": [split_id(m)[1] for m in models],
        "model_count": graph.model_count(ident),
    }


def funnel_fields(spec: Any) -> dict[str, Any]:
    """A funnel's shape with every default spelled out (the definition omits defaults):
    its steps, within, window, grain, order, same, measure, and the columns its table
    serves."""
    from tally.catalog.spec.tables import funnel_columns

    return {
        "steps": [{"step": i, "source": step.source, "filter": step.filter}
                  for i, step in enumerate(spec.steps or (), start=1)],
        "within": spec.within, "window": spec.window, "grain": spec.grain or "1d",
        "order": spec.order, "same": spec.same, "measure": spec.measure,
        "columns": list(funnel_columns(spec.name, spec)),
    }


def definition_card(project: Project, graph: Lineage, definition: Definition,
                    tables: dict[str, Any], contracts: dict[str, Any]) -> dict[str, Any]:
    from tally.catalog.spec.models import spec_to_yaml_dict

    spec, kind, name = definition.spec, definition.kind, definition.name
    ident = node_id(kind, name)
    card: dict[str, Any] = {
        "kind": kind, "name": name, "description": spec.description, "owner": spec.owner,
        "owners": [spec.owner],
        "tags": list(spec.tags), "aliases": list(spec.aliases),
        "status": getattr(spec, "status", None),
        "version": getattr(spec, "version", None), "type": getattr(spec, "type", None),
        "entity": project.entity_of(name) if kind != "entity" else name,
        "source": getattr(spec, "source", None) if kind == "metric" else None,
        "columns": _columns(project, definition), "file": definition.file,
        "line": definition.line, "definition": spec_to_yaml_dict(spec),
        **_base(ident, graph),
    }
    direct_models = graph.direct_models(ident)
    feast: dict[str, Any] = {}
    if kind == "metric" and spec.type == "funnel":
        card["funnel"] = funnel_fields(spec)
    if kind in ("metric", "score"):
        table = graph.table_of_feature.get(name)
        feast = {"feature_view": table, "feature_services": direct_models}
        card["table"] = _table_stats(table, tables, name)
    elif kind == "entity":
        feast = {"entity": name}
    elif kind == "model":
        views = sorted({graph.table_of_feature[f] for f in spec.features
                        if f in graph.table_of_feature})
        feast = {"feature_service": name, "feature_views": views}
    card["feast"] = feast
    source_name = name if kind == "source" else card["source"]
    if source_name and source_name in project.sources:
        source = project.sources[source_name]
        result = contracts.get(source_name)
        state = contract_state(source.contract is not None, result)
        card["contract"] = {
            "source": source_name,
            "state": state[-1],
            "states": state,
            "producer": source.owner,
            "rules": spec_to_yaml_dict(source.contract) if source.contract else None,
            "last_check": result if isinstance(result, dict) else None,
        }
    return card


def table_card(project: Project, graph: Lineage, spec: TableSpec,
               tables: dict[str, Any]) -> dict[str, Any]:
    from tally.catalog.spec.durations import format_duration
    from tally.catalog.spec.tables import table_owners

    ident = node_id(FEATURE_VIEW, spec.name)
    what = {"group": f"aggregate metrics of source {spec.source}",
            "derived": "derived metrics", "column": f"columns served from source {spec.source}",
            "score": f"score {spec.features[0]}",
            "funnel": f"funnel {spec.features[0]} (with its step counts)"}[spec.kind]
    grain = f" at {format_duration(spec.grain)} grain" if spec.grain else ""
    ttl = spec.ttl(project)
    services = graph.direct_models(ident)
    return {
        "kind": FEATURE_VIEW, "name": spec.name,
        "description": f"Feast FeatureView of {what} about {spec.entity}{grain}: "
                       f"{', '.join(spec.features)}.",
        "owner": graph.owners[ident], "owners": table_owners(project, spec),
        "tags": sorted({t for f in spec.features for t in project.definitions[f].spec.tags}),
        "status": None, "version": None, "type": spec.kind, "entity": spec.entity,
        "source": spec.source, "columns": list(spec.columns), "file": None, "line": None,
        "definition": {"features": list(spec.columns), "table_kind": spec.kind,
                       "grain": format_duration(spec.grain) if spec.grain else None,
                       "ttl": format_duration(ttl) if ttl else None,
                       "path": spec.path(project).relative_to(project.root).as_posix()},
        **_base(ident, graph),
        "feast": {"feature_view": spec.name, "feature_services": services},
        "table": _table_stats(spec.name, tables, None),
    }


def _versions(project: Project, graph: Lineage, name: str) -> list[dict[str, Any]]:
    """Every version of a metric: status, deprecation, the fields changed from the version
    before it, the feature serving it and the models reading it (pinned or through the
    current name)."""
    versions = project.versions.get(name)
    if versions is None:
        return []
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for number in versions.numbers:
        spec = versions.definitions[number].spec
        dumped = spec.model_dump(mode="json", exclude={"version"})
        features = [versions.served[number]] if number in versions.served else []
        features += [name] if number == versions.current else []
        models = sorted({split_id(m)[1] for f in features
                         for m in graph.models_using(node_id("metric", f))})
        out.append({
            "version": number, "status": spec.status, "current": number == versions.current,
            "deprecated_on": dumped["deprecated_on"], "served_as": features,
            "changed": [] if previous is None else sorted(
                k for k in set(dumped) | set(previous) if dumped.get(k) != previous.get(k)),
            "models": models, "file": versions.definitions[number].file,
            "line": versions.definitions[number].line,
        })
        previous = dumped
    return out


def build_cards(project: Project) -> list[dict[str, Any]]:
    """Every card of the project, lineage and state files included."""
    from tally.catalog.spec.tables import read_state
    from tally.catalog.store.paths import CONTRACT_RESULTS_FILE, TABLE_STATS_FILE

    tables = read_state(project, TABLE_STATS_FILE)
    contracts = read_state(project, CONTRACT_RESULTS_FILE)
    graph = build_lineage(project)
    cards = []
    for d in project.definitions.values():
        if project.is_version_copy(d.name):
            continue  # shown in its metric's card, under versions
        card = definition_card(project, graph, d, tables, contracts)
        if d.kind == "metric":
            card["versions"] = _versions(project, graph, d.name)
            card["version_count"] = len(card["versions"])
        cards.append(card)
    cards += [table_card(project, graph, spec, tables) for spec in graph.tables.values()]
    return cards
