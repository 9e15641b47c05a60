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

No Feast, no pandas here; SQL is assembled from validated names (lower snake case) and
quoted paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tally.catalog.errors import DataError
from tally.catalog.spec.models import Score, ScoreComponent
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import TableSpec, tables_by_feature
from tally.catalog.sql.duck import parquet_scan, sql_ident
from tally.catalog.sql.relations import source_relation
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
    """The computed tables (group or derived) a score reads: its components' and any
    `segment_by` metric's that has snapshots."""
    names: set[str] = set()
    for c in score.components:
        for metric in (c.metric, c.segment_by):
            spec = _table_with(specs, metric) if metric else None
            if spec is not None and spec.kind in ("group", "derived"):
                names.add(spec.name)
    return names


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise DataError(f"{value} is not a finite number")
    return f"CAST({float(value)!r} AS DOUBLE)"


@dataclass(frozen=True)
class _Input:
    alias: str
    sql: str  # a SELECT giving __k, __t, __v


def _snapshot_input(project: Project, spec: TableSpec, metric: str, key: str,
                    alias: str) -> _Input:
    path = spec.path(project)
    if not path.exists():
        raise DataError(f"table {spec.name} (for {metric}) is not computed yet; run "
                        "without `metrics` first", mentions=("metrics",))
    return _Input(alias, f"SELECT {sql_ident(key)} AS __k, event_timestamp AS __t, "
                         f"{sql_ident(metric)} AS __v FROM {parquet_scan(path)}")


def _column_segment(project: Project, metric: str, alias: str) -> tuple[str, str]:
    """A column metric as a segment: the newest source row strictly before the snapshot
    (ties: newest created timestamp), within the metric's ttl (as derived metrics read it)."""
    spec = project.metrics[metric]
    source = project.sources[spec.source or ""]
    key = project.entities[source.entity].join_key
    path = project.root / source.path
    if not is_glob(source.path) and not path.exists():
        raise DataError(f"source {source.name}: data file {path} does not exist")
    relation = source_relation(source, str(path), "duckdb").sql("duckdb")
    order = (f" ORDER BY {sql_ident(source.created_timestamp_field)} DESC"
             if source.created_timestamp_field else "")
    cte = (f"SELECT {sql_ident(key)} AS __k, "
           f"CAST({sql_ident(source.timestamp_field)} AS TIMESTAMPTZ) AS __ts, "
           f"{sql_ident(spec.expression.strip())} AS __v FROM {relation} QUALIFY row_number() OVER "
           f"(PARTITION BY {sql_ident(key)}, {sql_ident(source.timestamp_field)}{order}) = 1")
    ttl = project.ttl_of(metric)
    valid = f"{alias}.__ts IS NOT NULL"
    if ttl is not None:
        valid += (f" AND {alias}.__ts >= base.__t - INTERVAL "
                  f"{int(ttl.total_seconds())} SECOND")
    return cte, f"CASE WHEN {valid} THEN {alias}.__v END"


def _transformed(component: ScoreComponent, value: str) -> str:
    expr = f"CAST({value} AS DOUBLE)"
    if component.transform == "log1p":
        expr = f"(CASE WHEN {expr} > -1 THEN ln(1 + {expr}) END)"
    if component.direction == "lower_is_better":
        expr = f"(0.0 - {expr})"
    # non-finite values count as missing; + 0.0 turns -0.0 into 0.0 so zeros tie
    return f"(CASE WHEN isfinite({expr}) THEN {expr} + 0.0 END)"


def _bounds(component: ScoreComponent) -> tuple[float, float]:
    """The bounds (given in the metric's own units) on the transformed, directed scale."""
    assert component.bounds is not None
    lo, hi = component.bounds
    if component.transform == "log1p":
        lo, hi = math.log1p(lo), math.log1p(hi)
    if component.direction == "lower_is_better":
        lo, hi = -hi, -lo
    return lo, hi


def _normalised(score: Score, component: ScoreComponent, x: str, segment: str | None) -> str:
    part = "__t" + (f", {segment}" if segment else "")
    if score.normalize_of(component) == "percentile":
        rank = (f"CAST(rank() OVER (PARTITION BY {part}, ({x} IS NULL) ORDER BY {x}) AS DOUBLE)"
                f" + (CAST(count(*) OVER (PARTITION BY {part}, {x}) AS DOUBLE) - 1) / 2")
        return (f"CASE WHEN {x} IS NOT NULL THEN ({rank}) / "
                f"CAST(count({x}) OVER (PARTITION BY {part}) AS DOUBLE) END")
    if component.bounds is not None:
        lo, hi = _bounds(component)
        clipped = f"least(greatest({x}, {_float(lo)}), {_float(hi)})"
        return (f"CASE WHEN {x} IS NOT NULL THEN ({clipped} - {_float(lo)}) / "
                f"({_float(hi)} - {_float(lo)}) END")
    low = f"min({x}) OVER (PARTITION BY {part})"
    high = f"max({x}) OVER (PARTITION BY {part})"
    return (f"CASE WHEN {x} IS NOT NULL THEN coalesce(({x} - {low}) / "
            f"nullif({high} - {low}, 0), 0.5) END")


def score_query(project: Project, score: Score, specs: dict[str, TableSpec]) -> str:
    """The SELECT computing the score table from the computed component tables."""
    key = project.entities[score.entity].join_key
    ctes: list[tuple[str, str]] = []
    values: list[str] = []
    for i, c in enumerate(score.components):
        spec = _table_with(specs, c.metric)
        if spec is None or spec.kind not in ("group", "derived"):
            raise DataError(f"score {score.name}: component {c.metric} has no snapshot table")
        ctes.append((f"__c{i}", _snapshot_input(project, spec, c.metric, key, f"__c{i}").sql))
        values.append(f"__c{i}.__v")
    keys = " UNION ".join(f"SELECT __k, __t FROM __c{i} WHERE __v IS NOT NULL"
                          for i in range(len(score.components)))
    ctes.append(("__keys", keys))
    joins = [f"LEFT JOIN __c{i} ON __c{i}.__k = base.__k AND __c{i}.__t = base.__t"
             for i in range(len(score.components))]
    segments: dict[str, str] = {}  # segment metric -> column in __base
    segment_exprs: list[str] = []
    for c in score.components:
        if not c.segment_by or c.segment_by in segments:
            continue
        alias = f"__s{len(segments)}"
        metric = project.metrics.get(c.segment_by)
        if metric is not None and metric.type == "column":
            cte, expr = _column_segment(project, c.segment_by, alias)
            ctes.append((alias, cte))
            joins.append(f"ASOF LEFT JOIN {alias} ON {alias}.__k = base.__k "
                         f"AND base.__t > {alias}.__ts")
        else:
            spec = _table_with(specs, c.segment_by)
            if spec is None or spec.kind not in ("group", "derived"):
                raise DataError(f"score {score.name}: segment_by {c.segment_by} is not a "
                                "metric with a table")
            ctes.append((alias, _snapshot_input(project, spec, c.segment_by, key, alias).sql))
            joins.append(f"LEFT JOIN {alias} ON {alias}.__k = base.__k AND "
                         f"{alias}.__t = base.__t")
            expr = f"{alias}.__v"
        segments[c.segment_by] = f"__g{len(segments)}"
        segment_exprs.append(f"{expr} AS {segments[c.segment_by]}")
    base_cols = ["base.__k", "base.__t", *[f"{v} AS __v{i}" for i, v in enumerate(values)],
                 *segment_exprs]
    ctes.append(("__base", f"SELECT {', '.join(base_cols)} FROM __keys AS base "
                           + " ".join(joins)))
    xs = ", ".join(f"{_transformed(c, f'__v{i}')} AS __x{i}"
                   for i, c in enumerate(score.components))
    ctes.append(("__xs", f"SELECT *, {xs} FROM __base"))
    norms = ", ".join(
        f"{_normalised(score, c, f'__x{i}', segments.get(c.segment_by or ''))} AS __n{i}"
        for i, c in enumerate(score.components))
    ctes.append(("__norms", f"SELECT *, {norms} FROM __xs"))
    weights = [_float(c.weight) for c in score.components]
    numerator = " + ".join(f"{w} * coalesce(__n{i}, 0)" for i, w in enumerate(weights))
    have = " + ".join(f"CASE WHEN __n{i} IS NOT NULL THEN {w} ELSE 0 END"
                      for i, w in enumerate(weights))
    denominator = "__have" if score.missing == "skip" else _float(
        sum(c.weight for c in score.components))
    ctes.append(("__sums", f"SELECT *, ({numerator}) AS __num, ({have}) AS __have "
                           "FROM __norms"))
    name = score.name
    out = [f"__k AS {sql_ident(key)}", "__t AS event_timestamp", "__t AS created_timestamp",
           f"round(100 * __num / {denominator}, {DECIMALS}) AS {sql_ident(name)}"]
    contributions, extras = [], []
    labels = component_labels(score)
    for i, (label, w) in enumerate(zip(labels, weights, strict=True)):
        contributions.append(f"round(100 * {w} * coalesce(__n{i}, 0) / {denominator}, "
                             f"{DECIMALS}) AS {sql_ident(contribution_column(score, label))}")
        extras.append(f"CAST(__v{i} AS DOUBLE) AS {sql_ident(value_column(score, label))}")
        extras.append(f"__n{i} AS {sql_ident(norm_column(score, label))}")
    ctes.append(("__scored", f"SELECT {', '.join(out + contributions + extras)} "
                             "FROM __sums WHERE __have > 0"))
    bands = ordered_bands(score)
    whens = []
    for j, (band, lo, hi) in enumerate(bands):
        upper = "<=" if j == len(bands) - 1 else "<"
        whens.append(f"WHEN {sql_ident(name)} >= {_float(lo)} AND {sql_ident(name)} {upper} "
                     f"{_float(hi)} THEN '{band}'")
    band_sql = (f"CASE {' '.join(whens)} END" if whens else "CAST(NULL AS VARCHAR)")
    tail = [sql_ident(contribution_column(score, label)) for label in labels]
    tail += [col for label in labels for col in
             (sql_ident(value_column(score, label)), sql_ident(norm_column(score, label)))]
    select = (f"SELECT {sql_ident(key)}, event_timestamp, created_timestamp, {sql_ident(name)}, "
              f"{band_sql} AS {sql_ident(band_column(score))}, {', '.join(tail)} FROM __scored")
    return "WITH " + ", ".join(f"{n} AS ({q})" for n, q in ctes) + " " + select


def input_paths(project: Project, score: Score, specs: dict[str, TableSpec]) -> list[Path]:
    """Folders the score query reads (for a hardened connection's allow-list)."""
    tables = input_tables(project, score, specs)
    folders = {s.path(project).parent for n, s in specs.items() if n in tables}
    for c in score.components:
        metric = project.metrics.get(c.segment_by or "")
        if metric is not None and metric.type == "column" and metric.source:
            folders.add((project.root / project.sources[metric.source].path).parent)
    return sorted(folders)
