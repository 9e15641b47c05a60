"""Composite scores: one table per score, computed in DuckDB after its component metrics.

Semantics (docs/scores.md, DESIGN.md "Semantics of a score"): at each snapshot, per
component, take the metric's value, apply `transform`, negate it under `lower_is_better`,
then normalise among the entities that have a value at that snapshot (within a segment
when `segment_by` is set): `percentile` = rank(method="average") / n, `minmax` =
(x - min) / (max - min), 0.5 when all are equal, or a fixed scale when `bounds` are set.
score = 100 * sum(w_i * norm_i) / sum(w_i) over the components the entity has (`skip`) or
over all of them, a missing one counting 0 (`zero`); contribution_i = 100 * w_i * norm_i /
the same denominator, so contributions add up to the score. A row exists for an entity at
a snapshot when at least one component has a value there.

The table holds `<join_key>, event_timestamp, created_timestamp, <score>, <score>_band`,
`<score>__<metric>_contribution` per component (the served columns), and for `tally
explain` the raw value `<score>__<metric>_value` and normalised value `..._norm`.
Scores and contributions are rounded to 9 decimals, so floating-point noise never moves
an entity across a band edge (0.3 * 100 is 30, in the `[30, 60)` band).

No Feast, no pandas here; the SQL is a sqlglot tree of quoted identifiers, numbers and
string literals, built with the node helpers of `compute.plans` (no user expression enters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp
from tally.catalog.errors import DataError
from tally.catalog.spec.models import Score, ScoreComponent
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import SNAPSHOT_KINDS, TableSpec, tables_by_feature
from tally.catalog.sql.relations import latest_column_rows
from tally.catalog.sql.trees import alias, col, fn, ident, num, op, table_relation
from tally.catalog.store.paths import is_glob

DECIMALS = 9


# -- column names ---------------------------------------------------------------------
def band_column(score: Score) -> str:
    return f"{score.name}_band"


def contribution_column(score: Score, metric: str) -> str:
    return f"{score.name}__{metric}_contribution"


def value_column(score: Score, metric: str) -> str:
    return f"{score.name}__{metric}_value"


def norm_column(score: Score, metric: str) -> str:
    return f"{score.name}__{metric}_norm"


def component_labels(score: Score) -> list[str]:
    """What names each component in column names and explanations: its metric, and for a
    metric the score uses again, `<metric>_2`, `<metric>_3`, ... in definition order."""
    seen: dict[str, int] = {}
    labels = []
    for c in score.components:
        seen[c.metric] = seen.get(c.metric, 0) + 1
        labels.append(c.metric if seen[c.metric] == 1 else f"{c.metric}_{seen[c.metric]}")
    return labels


def served_columns(score: Score) -> list[tuple[str, str]]:
    """(column, type) of what the score's FeatureView serves: float64 or string."""
    return [(score.name, "float64"), (band_column(score), "string"),
            *[(contribution_column(score, label), "float64")
              for label in component_labels(score)]]


# -- definitions helpers ----------------------------------------------------------------
def ordered_bands(score: Score) -> list[tuple[str, float, float]]:
    return sorted(((name, lo, hi) for name, (lo, hi) in score.bands.items()),
                  key=lambda b: b[1])


def top_band(score: Score) -> str | None:
    """The healthy band: the one reaching 100."""
    bands = ordered_bands(score)
    return bands[-1][0] if bands else None


def band_of(score: Score, value: float | None) -> str | None:
    """Half-open [lo, hi); the top band includes 100."""
    if value is None:
        return None
    bands = ordered_bands(score)
    for i, (name, lo, hi) in enumerate(bands):
        if lo <= value < hi or (i == len(bands) - 1 and value == hi):
            return name
    return None


def weight_shares(score: Score, present: dict[str, bool]) -> dict[str, float]:
    """100 * w_i / denominator per component label (the most a component can contribute);
    under `skip` a missing component has no share."""
    labelled = list(zip(component_labels(score), score.components, strict=True))
    if score.missing == "skip":
        total = sum(c.weight for label, c in labelled if present.get(label))
    else:
        total = sum(c.weight for c in score.components)
    return {label: (100.0 * c.weight / total if total and
                    (present.get(label) or score.missing == "zero") else 0.0)
            for label, c in labelled}


def presence(score: Score, row: dict[str, object]) -> dict[str, bool]:
    """Per component label, whether the row has a normalised value for it."""
    return {label: row.get(norm_column(score, label)) is not None
            for label in component_labels(score)}


def shortfalls(score: Score, row: dict[str, object]) -> dict[str, float]:
    """Per component label, share - contribution: how far it pulls the score below 100.
    Under `skip`, missing components are left out (they do not pull the score down)."""
    present = presence(score, row)
    shares = weight_shares(score, present)
    out = {}
    for label in component_labels(score):
        if score.missing == "skip" and not present[label]:
            continue
        contribution = row.get(contribution_column(score, label)) or 0.0
        out[label] = shares[label] - float(contribution)  # type: ignore[arg-type]
    return out


def challenge_of(score: Score, row: dict[str, object]) -> str | None:
    """The component with the largest shortfall (first in definition order on ties)."""
    gaps = shortfalls(score, row)
    if not gaps:
        return None
    best = max(gaps.values())
    return next(m for m, g in gaps.items() if g == best)


# -- inputs -----------------------------------------------------------------------------
def _table_with(specs: dict[str, TableSpec], feature: str) -> TableSpec | None:
    return tables_by_feature(specs.values()).get(feature)


def input_tables(project: Project, score: Score, specs: dict[str, TableSpec]) -> set[str]:
    """The computed tables (group, derived or funnel) a score reads: its components' and any
    `segment_by` metric's that has snapshots."""
    names: set[str] = set()
    for c in score.components:
        for metric in (c.metric, c.segment_by):
            spec = _table_with(specs, metric) if metric else None
            if spec is not None and spec.kind in SNAPSHOT_KINDS:
                names.add(spec.name)
    return names


def _float(value: float) -> exp.Cast:
    if not math.isfinite(value):
        raise DataError(f"{value} is not a finite number")
    return exp.Cast(this=exp.Literal.number(repr(float(value))),
                    to=exp.DataType.build("DOUBLE"))


def _double(node: exp.Expr) -> exp.Cast:
    return exp.Cast(this=node, to=exp.DataType.build("DOUBLE"))


def _snapshot_input(project: Project, spec: TableSpec, metric: str, key: str) -> exp.Select:
    """A snapshot table's rows of `metric` as __k, __t, __v."""
    path = spec.path(project)
    if not path.exists():
        raise DataError(f"table {spec.name} (for {metric}) is not computed yet; run "
                        "without `metrics` first", mentions=("metrics",))
    return exp.select(alias(col(key), "__k"), alias(col("event_timestamp"), "__t"),
                      alias(col(metric), "__v")).from_(table_relation(str(path), "duckdb"))


def _column_segment(project: Project, metric: str, name: str) -> tuple[exp.Select, exp.Expr]:
    """A column metric as a segment: the newest source row strictly before the snapshot
    (ties: newest created timestamp), within the metric's ttl (as derived metrics read it).
    Returns the rows (__k, __ts, __v) and the segment value once joined as `name`."""
    spec = project.metrics[metric]
    source = project.sources[spec.source or ""]
    key = project.entities[source.entity].join_key
    path = project.root / source.path
    if not is_glob(source.path) and not path.exists():
        raise DataError(f"source {source.name}: data file {path} does not exist")
    rows = latest_column_rows(key, source, str(path), spec.sql, "duckdb")
    ttl = project.ttl_of(metric)
    valid: exp.Expr = exp.Not(this=exp.Is(this=col("__ts", name), expression=exp.Null()))
    if ttl is not None:
        valid = exp.and_(valid, exp.GTE(this=col("__ts", name), expression=exp.Sub(
            this=col("__t", "base"), expression=exp.Interval(
                this=exp.Literal.string(str(int(ttl.total_seconds()))),
                unit=exp.var("SECOND")))))
    return rows, exp.Case(ifs=[exp.If(this=valid, true=col("__v", name))])


def _transformed(component: ScoreComponent, value: exp.Expr) -> exp.Expr:
    x: exp.Expr = _double(value)
    if component.transform == "log1p":
        x = exp.Paren(this=exp.Case(ifs=[exp.If(
            this=exp.GT(this=x, expression=num(-1)),
            true=fn("ln", op(exp.Add, num(1), x.copy())))]))
    if component.direction == "lower_is_better":
        x = op(exp.Sub, num(0.0), x)
    # non-finite values count as missing; + 0.0 turns -0.0 into 0.0 so zeros tie
    return exp.Case(ifs=[exp.If(this=fn("isfinite", x),
                                true=op(exp.Add, x.copy(), num(0.0)))])


def _bounds(component: ScoreComponent) -> tuple[float, float]:
    """The bounds (given in the metric's own units) on the transformed, directed scale."""
    assert component.bounds is not None
    lo, hi = component.bounds
    if component.transform == "log1p":
        lo, hi = math.log1p(lo), math.log1p(hi)
    if component.direction == "lower_is_better":
        lo, hi = -hi, -lo
    return lo, hi


def _over(node: exp.Expr, partition: list[exp.Expr],
          order: exp.Expr | None = None) -> exp.Window:
    return exp.Window(this=node, partition_by=[p.copy() for p in partition],
                      order=exp.Order(expressions=[exp.Ordered(this=order.copy())])
                      if order is not None else None)


def _when_present(x: exp.Expr, value: exp.Expr) -> exp.Case:
    return exp.Case(ifs=[exp.If(this=exp.Not(this=exp.Is(this=x.copy(),
                                                         expression=exp.Null())),
                                true=value)])


def _percentile(x: exp.Expr, part: list[exp.Expr]) -> exp.Expr:
    """rank(method="average") / n among the entities with a value."""
    is_null = exp.Paren(this=exp.Is(this=x.copy(), expression=exp.Null()))
    rank = op(exp.Add, _double(_over(exp.func("rank"), [*part, is_null], x)),
              op(exp.Div, op(exp.Sub, _double(_over(exp.Count(this=exp.Star()),
                                                    [*part, x])), 1), 2))
    return op(exp.Div, rank, _double(_over(exp.Count(this=x.copy()), part)))


def _minmax(x: exp.Expr, part: list[exp.Expr], component: ScoreComponent) -> exp.Expr:
    """(x - min) / (max - min), 0.5 when all are equal; or a fixed scale from `bounds`."""
    if component.bounds is not None:
        lo, hi = _bounds(component)
        clipped = exp.func("least", exp.func("greatest", x.copy(), _float(lo)), _float(hi))
        return op(exp.Div, op(exp.Sub, clipped, _float(lo)), op(exp.Sub, _float(hi), _float(lo)))
    low, high = _over(exp.Min(this=x.copy()), part), _over(exp.Max(this=x.copy()), part)
    spread = exp.func("nullif", op(exp.Sub, high, low.copy()), num(0))
    return exp.func("coalesce", op(exp.Div, op(exp.Sub, x.copy(), low), spread), num(0.5))


def _normalised(score: Score, component: ScoreComponent, x: exp.Expr,
                segment: exp.Expr | None) -> exp.Case:
    part: list[exp.Expr] = [col("__t"), *([segment] if segment is not None else [])]
    if score.normalize_of(component) == "percentile":
        return _when_present(x, _percentile(x, part))
    return _when_present(x, _minmax(x, part, component))


def _component_inputs(project: Project, score: Score, specs: dict[str, TableSpec],
                      key: str) -> tuple[list[tuple[str, exp.Query]], list[_Join]]:
    """Each component's snapshot rows (`__c<i>`), every (entity, snapshot) where one has a
    value (`__keys`), and the joins of the components onto those keys."""
    ctes: list[tuple[str, exp.Query]] = []
    joins: list[_Join] = []
    for i, c in enumerate(score.components):
        spec = _table_with(specs, c.metric)
        if spec is None or spec.kind not in SNAPSHOT_KINDS:
            raise DataError(f"score {score.name}: component {c.metric} has no snapshot table")
        ctes.append((f"__c{i}", _snapshot_input(project, spec, c.metric, key)))
        joins.append(_Join(f"__c{i}", "left", _same_snapshot(f"__c{i}")))
    present = [exp.select(col("__k"), col("__t")).from_(f"__c{i}").where(
        exp.Not(this=exp.Is(this=col("__v"), expression=exp.Null())))
        for i in range(len(score.components))]
    keys: exp.Query = present[0]
    for other in present[1:]:
        keys = keys.union(other, distinct=True)
    ctes.append(("__keys", keys))
    return ctes, joins


def _same_snapshot(name: str) -> exp.Expr:
    return exp.and_(exp.EQ(this=col("__k", name), expression=col("__k", "base")),
                    exp.EQ(this=col("__t", name), expression=col("__t", "base")))


@dataclass(frozen=True)
class _Join:
    """A join onto the keys (`base`) in `__base`."""
    name: str
    kind: str  # "left" | "asof left"
    on: exp.Expr


def _segment_inputs(project: Project, score: Score, specs: dict[str, TableSpec], key: str
                    ) -> tuple[list[tuple[str, exp.Query]], list[_Join], dict[str, str],
                               list[exp.Alias]]:
    """Each distinct `segment_by` metric as rows (`__s<j>`), its join onto the keys, the
    column it becomes in `__base` (`__g<j>`) and that column's expression."""
    ctes: list[tuple[str, exp.Query]] = []
    joins: list[_Join] = []
    segments: dict[str, str] = {}  # segment metric -> column in __base
    columns: list[exp.Alias] = []
    for c in score.components:
        if not c.segment_by or c.segment_by in segments:
            continue
        name = f"__s{len(segments)}"
        metric = project.metrics.get(c.segment_by)
        if metric is not None and metric.type == "column":
            rows, value = _column_segment(project, c.segment_by, name)
            ctes.append((name, rows))
            joins.append(_Join(name, "asof left", exp.and_(
                exp.EQ(this=col("__k", name), expression=col("__k", "base")),
                exp.GT(this=col("__t", "base"), expression=col("__ts", name)))))
        else:
            spec = _table_with(specs, c.segment_by)
            if spec is None or spec.kind not in SNAPSHOT_KINDS:
                raise DataError(f"score {score.name}: segment_by {c.segment_by} is not a "
                                "metric with a table")
            ctes.append((name, _snapshot_input(project, spec, c.segment_by, key)))
            joins.append(_Join(name, "left", _same_snapshot(name)))
            value = col("__v", name)
        segments[c.segment_by] = f"__g{len(segments)}"
        columns.append(alias(value, segments[c.segment_by]))
    return ctes, joins, segments, columns


def _weighted_sums(score: Score) -> tuple[exp.Select, exp.Expr]:
    """`__sums`: the weighted normalised values (`__num`) and the weights present
    (`__have`); and the score's denominator."""
    weights = [_float(c.weight) for c in score.components]
    numerator = [op(exp.Mul, w, exp.func("coalesce", col(f"__n{i}"), num(0)))
                 for i, w in enumerate(weights)]
    have = [exp.Case(ifs=[exp.If(this=exp.Not(this=exp.Is(this=col(f"__n{i}"),
                                                           expression=exp.Null())),
                                 true=w.copy())], default=num(0))
            for i, w in enumerate(weights)]
    sums = exp.select(exp.Star(), alias(exp.Paren(this=_added(numerator)), "__num"),
                      alias(exp.Paren(this=_added(have)), "__have")).from_("__norms")
    denominator: exp.Expr = col("__have") if score.missing == "skip" else _float(
        sum(c.weight for c in score.components))
    return sums, denominator


def _added(terms: Sequence[exp.Expr]) -> exp.Expr:
    total = terms[0]
    for term in terms[1:]:
        total = exp.Add(this=total, expression=term)
    return total


def _rounded(node: exp.Expr) -> exp.Expr:
    return exp.func("round", node, num(DECIMALS))


def _scored(score: Score, key: str, denominator: exp.Expr) -> exp.Select:
    """`__scored`: the score, each contribution, raw value and normalised value."""
    out: list[exp.Expr] = [
        alias(col("__k"), key), alias(col("__t"), "event_timestamp"),
        alias(col("__t"), "created_timestamp"),
        alias(_rounded(op(exp.Div, op(exp.Mul, num(100), col("__num")), denominator.copy())),
              score.name)]
    extras: list[exp.Expr] = []
    for i, (label, c) in enumerate(zip(component_labels(score), score.components,
                                       strict=True)):
        share = op(exp.Mul, op(exp.Mul, num(100), _float(c.weight)),
                   exp.func("coalesce", col(f"__n{i}"), num(0)))
        out.append(alias(_rounded(op(exp.Div, share, denominator.copy())),
                         contribution_column(score, label)))
        extras.append(alias(_double(col(f"__v{i}")), value_column(score, label)))
        extras.append(alias(col(f"__n{i}"), norm_column(score, label)))
    return exp.select(*out, *extras).from_("__sums").where(
        exp.GT(this=col("__have"), expression=num(0)))


def _band(score: Score) -> exp.Expr:
    """The band of the score: half-open [lo, hi), the top band including 100."""
    bands = ordered_bands(score)
    if not bands:
        return exp.Cast(this=exp.Null(), to=exp.DataType.build("VARCHAR"))
    value = col(score.name)
    ifs = [exp.If(this=exp.and_(
        exp.GTE(this=value.copy(), expression=_float(lo)),
        (exp.LTE if j == len(bands) - 1 else exp.LT)(this=value.copy(), expression=_float(hi))),
        true=exp.Literal.string(band)) for j, (band, lo, hi) in enumerate(bands)]
    return exp.Case(ifs=ifs)


def score_plan(project: Project, score: Score, specs: dict[str, TableSpec]) -> exp.Select:
    """The SELECT computing the score table from the computed component tables."""
    key = project.entities[score.entity].join_key
    ctes, joins = _component_inputs(project, score, specs, key)
    segment_ctes, segment_joins, segments, segment_columns = _segment_inputs(
        project, score, specs, key)
    ctes += segment_ctes
    base = exp.select(col("__k", "base"), col("__t", "base"),
                      *[alias(col("__v", f"__c{i}"), f"__v{i}")
                        for i in range(len(score.components))],
                      *segment_columns).from_(
        exp.Table(this=ident("__keys"), alias=exp.TableAlias(this=ident("base"))))
    for join in [*joins, *segment_joins]:
        base = base.join(exp.to_identifier(join.name), on=join.on, join_type=join.kind)
    xs = [alias(_transformed(c, col(f"__v{i}")), f"__x{i}")
          for i, c in enumerate(score.components)]
    norms = [alias(_normalised(score, c, col(f"__x{i}"),
                               col(segments[c.segment_by]) if c.segment_by else None),
                   f"__n{i}") for i, c in enumerate(score.components)]
    sums, denominator = _weighted_sums(score)
    ctes += [("__base", base), ("__xs", exp.select(exp.Star(), *xs).from_("__base")),
             ("__norms", exp.select(exp.Star(), *norms).from_("__xs")), ("__sums", sums),
             ("__scored", _scored(score, key, denominator))]
    labels = component_labels(score)
    tail = [col(contribution_column(score, label)) for label in labels]
    tail += [col(column) for label in labels for column in
             (value_column(score, label), norm_column(score, label))]
    final = exp.select(col(key), col("event_timestamp"), col("created_timestamp"),
                       col(score.name), alias(_band(score), band_column(score)),
                       *tail).from_("__scored")
    for name, sub in ctes:
        final = final.with_(name, as_=sub, copy=False)  # a copy each: quadratic
    return final


def score_query(project: Project, score: Score, specs: dict[str, TableSpec]) -> str:
    """The score table's SELECT, as DuckDB SQL."""
    return score_plan(project, score, specs).sql("duckdb")


def input_paths(project: Project, score: Score, specs: dict[str, TableSpec]) -> list[Path]:
    """Folders the score query reads (for a hardened connection's allow-list)."""
    tables = input_tables(project, score, specs)
    folders = {s.path(project).parent for n, s in specs.items() if n in tables}
    for c in score.components:
        metric = project.metrics.get(c.segment_by or "")
        if metric is not None and metric.type == "column" and metric.source:
            folders.add((project.root / project.sources[metric.source].path).parent)
    return sorted(folders)
