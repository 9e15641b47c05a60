"""Reuse: which features the models share, which no model uses, and which definitions compute
the same thing under different names (duplicated pipelines to merge).

Two metrics compute the same thing when they have the same type and, for an aggregate, the
same source, aggregation, window, normalised expression and normalised filter (for a column
metric: source and column; for a derived metric: the normalised expression). Normalising
parses the SQL with sqlglot, lower-cases identifiers, simplifies (`5 < x` is `x > 5`, `AND`
operands sorted) and sorts the operands of commutative operators (`a + b` is `b + a`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tally.catalog.search.lineage import build_lineage, node_id, split_id

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project


@dataclass
class FeatureUse:
    name: str
    kind: str  # metric | score
    owner: str
    models: list[str]  # models listing it as a feature
    indirect_models: list[str]  # models reaching it only through derived metrics or scores
    model_count: int  # models using it directly or not (Lineage.model_count, as search)


@dataclass
class DuplicateGroup:
    """Definitions that compute the same thing; `signature` says what they share."""

    names: list[str]
    owners: list[str]
    signature: dict[str, Any]
    models: list[str]


@dataclass
class ReuseReport:
    features: list[FeatureUse] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)

    @property
    def unused(self) -> list[str]:
        """Features no model uses, directly or through another feature."""
        return [f.name for f in self.features if not f.models and not f.indirect_models]

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [asdict(f) for f in self.features],
            "unused": self.unused,
            "duplicates": [asdict(d) for d in self.duplicates],
        }

    def to_frame(self) -> Any:
        import pandas as pd

        rows = [{"name": f.name, "kind": f.kind, "owner": f.owner,
                 "model_count": f.model_count, "models": ", ".join(f.models),
                 "indirect_models": ", ".join(f.indirect_models)} for f in self.features]
        return pd.DataFrame(rows, columns=["name", "kind", "owner", "model_count", "models",
                                           "indirect_models"])


def normalize_sql(text: str | None) -> str | None:
    """A canonical form of a metric expression or filter, equal for equivalent spellings."""
    if text is None:
        return None
    if text.strip() == "*":
        return "*"
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
    from sqlglot.optimizer.simplify import simplify

    try:
        tree = normalize_identifiers(sqlglot.parse_one(text, read="duckdb"), dialect="duckdb")
        tree = simplify(tree)
    except (SqlglotError, RecursionError, ValueError):
        return " ".join(text.lower().split())

    commutative = (exp.Add, exp.Mul, exp.EQ, exp.NEQ, exp.And, exp.Or)

    def sort_operands(node: exp.Expression) -> exp.Expression:
        if isinstance(node, commutative):
            left, right = node.left, node.right
            if left.sql(dialect="duckdb") > right.sql(dialect="duckdb"):
                node.set("this", right)
                node.set("expression", left)
        return node

    tree = tree.transform(sort_operands)
    while isinstance(tree, exp.Paren):
        tree = tree.this
    return str(tree.sql(dialect="duckdb", normalize=True))


def signature(project: Project, name: str) -> tuple[Any, ...] | None:
    """What a metric computes, independent of its name, description and owner."""
    metric = project.metrics.get(name)
    if metric is None:
        return None
    if metric.type == "aggregate":
        window = metric.window_delta
        return ("aggregate", metric.source, metric.aggregation,
                normalize_sql(metric.expression), normalize_sql(metric.filter),
                int(window.total_seconds()) if window else None)
    if metric.type == "column":
        return ("column", metric.source, normalize_sql(metric.expression))
    if metric.type == "funnel":
        steps = tuple((s.source, normalize_sql(s.filter)) for s in metric.steps or [])
        return ("funnel", metric.entity, steps, metric.within, metric.window, metric.grain,
                metric.order, metric.same, metric.measure)
    return ("derived", normalize_sql(metric.expression))


_SIGNATURE_KEYS = {
    "aggregate": ("type", "source", "aggregation", "expression", "filter", "window_seconds"),
    "column": ("type", "source", "expression"),
    "derived": ("type", "expression"),
    "funnel": ("type", "entity", "steps", "within", "window", "grain", "order", "same",
               "measure"),
}


def reuse_report(project: Project) -> ReuseReport:
    graph = build_lineage(project)
    report = ReuseReport()
    copies = {n for n in project.metrics if project.is_version_copy(n)}
    currents = {(v.name, v.current) for v in project.versions.values()}
    current = {n for n in copies if project.version_of(n) in currents}
    features = [(n, "metric") for n in sorted(set(project.metrics) - current)]  # as `name`
    features += [(n, "score") for n in sorted(project.scores)]
    for name, kind in features:
        ident = node_id(kind, name)
        direct = graph.direct_models(ident)
        every = [split_id(m)[1] for m in graph.models_using(ident)]
        report.features.append(FeatureUse(
            name, kind, project.definitions[name].spec.owner, direct,
            sorted(set(every) - set(direct)), graph.model_count(ident)))
    report.features.sort(key=lambda f: (-f.model_count, -len(f.indirect_models), f.name))
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name in sorted(set(project.metrics) - copies):  # versions differ, or are one
        sig = signature(project, name)
        if sig is not None:
            groups.setdefault(sig, []).append(name)
    for sig, names in sorted(groups.items(), key=lambda kv: kv[1]):
        if len(names) < 2:
            continue
        models = sorted({split_id(m)[1] for n in names
                         for m in graph.models_using(node_id("metric", n))})
        owners = sorted({project.metrics[n].owner for n in names})
        report.duplicates.append(DuplicateGroup(
            names, owners, dict(zip(_SIGNATURE_KEYS[sig[0]], sig, strict=True)), models))
    return report
