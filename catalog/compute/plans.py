"""Computation plans: the SQL of each table as a sqlglot expression tree.

User expressions enter only as parsed, allow-listed trees whose columns are re-quoted;
everything else is built node by node, so the same plan renders for DuckDB or Spark.

Positions are integer bucket numbers: `epoch_us(ts) // B`, where the bucket B is the
greatest common divisor of the grain and every window of the group, so windows and
snapshots fall on bucket edges exactly. A snapshot at position K (a multiple of G =
grain / B) sees buckets K - W .. K - 1, i.e. rows with T - window <= ts < T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlglot import exp
from tally.catalog.spec.models import Metric, Source
from tally.catalog.spec.project import MetricGroup, Project
from tally.catalog.spec.sqlcheck import check_expression
from tally.catalog.sql.relations import latest_column_rows, source_relation
from tally.catalog.sql.trees import alias, col, fn, ident, num, op, table_relation

US = 1_000_000
ROUND_DIGITS = 9

# engine-specific scalar functions, by dialect
_EPOCH_US = {"duckdb": "epoch_us", "spark": "unix_micros"}
_FROM_US = {"duckdb": "make_timestamp", "spark": "timestamp_micros"}


def quoted_tree(text: str, rename: dict[str, str] | None = None) -> exp.Expr:
    """An allow-listed user expression with every column quoted (and optionally renamed)."""
    tree = check_expression(text, allow_star=True).tree.copy()
    names = rename or {}
    return exp.Paren(this=tree.transform(
        lambda node: col(names.get(node.name, node.name)) if isinstance(node, exp.Column)
        else node))


def epoch_us(node: exp.Expr, dialect: str) -> exp.Expr:
    return fn(_EPOCH_US[dialect], node)


def from_us(node: exp.Expr, dialect: str) -> exp.Expr:
    """Microseconds since the epoch as a UTC timestamp."""
    return exp.Cast(this=fn(_FROM_US[dialect], node), to=exp.DataType.build("TIMESTAMPTZ"))


@dataclass(frozen=True)
class GroupPlan:
    group: MetricGroup
    bucket_us: int
    grain_buckets: int
    windows: dict[str, int]  # metric -> window in buckets
    reach: int  # Wmax + G: how far back a snapshot looks for the entity-row rule

    def position_of(self, ts_us: int) -> int:
        return ts_us // self.bucket_us

    def snapshot_bounds(self, min_ts_us: int, max_ts_us: int) -> tuple[int, int]:
        """First boundary after the earliest row .. first boundary after the latest one."""
        g = self.grain_buckets
        return ((self.position_of(min_ts_us) // g + 1) * g,
                (self.position_of(max_ts_us) // g + 1) * g)


def plan_group(project: Project, group: MetricGroup) -> GroupPlan:
    metrics = [project.metrics[m] for m in group.metrics]
    grain_us = int(group.grain.total_seconds() * US)
    window_us = {m.name: int((m.window_delta or timedelta()).total_seconds() * US)
                 for m in metrics}
    bucket = grain_us
    for value in window_us.values():
        bucket = math.gcd(bucket, value)
    windows = {name: value // bucket for name, value in window_us.items()}
    grain_b = grain_us // bucket
    return GroupPlan(group, bucket, grain_b, windows, max(windows.values()) + grain_b)


@dataclass
class Partials:
    """The scan (`src`) and per-(entity, bucket) partial aggregates (`buckets`) of a group.

    `uses[i]` maps a role of metric i (sum, count, min, max) to its partial column."""
    metrics: list[Metric]
    src: exp.Select
    buckets: exp.Select
    uses: dict[int, dict[str, str]]
    names: list[str]  # every partial column, in order


def _scan_query(project: Project, plan: GroupPlan, metrics: list[Metric], *, path: str,
                low: int, high: int, dialect: str) -> exp.Select:
    """src: one pass over the file; each metric's expression and filter as columns."""
    source = project.sources[plan.group.source]
    entity = project.entities[plan.group.entity]
    ts = col(source.timestamp_field)
    scan_from = (low - plan.reach) * plan.bucket_us
    src_cols: list[exp.Expr] = [
        alias(col(entity.join_key), "__key"),
        alias(op(exp.IntDiv, epoch_us(ts, dialect), num(plan.bucket_us)), "__b"),
    ]
    for i, metric in enumerate(metrics):
        if metric.sql != "*":
            src_cols.append(alias(quoted_tree(metric.sql), f"__x{i}"))
        cond = quoted_tree(metric.filter) if metric.filter else exp.true()
        src_cols.append(alias(exp.func("coalesce", cond, exp.false()), f"__f{i}"))
    return (
        exp.select(*src_cols)
        .from_(source_relation(source, path, dialect))
        .where(exp.and_(
            exp.Not(this=exp.Is(this=col(entity.join_key), expression=exp.Null())),
            exp.Not(this=exp.Is(this=ts, expression=exp.Null())),
            exp.GTE(this=epoch_us(ts, dialect), expression=num(scan_from)),
            exp.LT(this=epoch_us(ts, dialect), expression=num(high * plan.bucket_us)),
        ))
    )


# the partials each aggregation reads, by role
_ROLES = {"count": ("count",), "sum": ("sum",), "avg": ("sum", "count"),
          "min": ("min",), "max": ("max",)}


class _PartialColumns:
    """Partial aggregates per (entity, bucket), one per distinct (kind, expression, filter),
    so metrics differing only by window share their partials."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics
        self.columns: list[exp.Expr] = []
        self._names: dict[tuple[str, str, str], str] = {}

    @property
    def names(self) -> list[str]:
        return list(self._names.values())

    def partial(self, kind: str, i: int) -> str:
        metric = self.metrics[i]
        key = (kind, metric.sql, (metric.filter or "").strip())
        if key not in self._names:
            name = f"__p{len(self._names)}"
            x = col(f"__x{i}")
            node = {"count": exp.Count(this=exp.Star() if key[1] == "*" else x),
                    "sum": exp.Sum(this=x), "min": exp.Min(this=x),
                    "max": exp.Max(this=x)}[kind]
            self.columns.append(alias(exp.Filter(this=node, expression=exp.Where(
                this=col(f"__f{i}"))), name))
            self._names[key] = name
        return self._names[key]

    def uses(self) -> dict[int, dict[str, str]]:
        """Per metric index, its roles (sum, count, min, max) -> partial column."""
        uses: dict[int, dict[str, str]] = {}
        for i, metric in enumerate(self.metrics):
            agg = metric.aggregation
            if agg in _ROLES:
                # count feeds the "sum" role: its windowed total is the sum of counts
                uses[i] = {("sum" if agg == "count" else role): self.partial(role, i)
                           for role in _ROLES[agg]}
        return uses


def partial_plan(project: Project, plan: GroupPlan, *, path: str, low: int, high: int,
                 dialect: str = "duckdb") -> Partials:
    metrics: list[Metric] = [project.metrics[m] for m in plan.group.metrics]
    src = _scan_query(project, plan, metrics, path=path, low=low, high=high, dialect=dialect)
    partials = _PartialColumns(metrics)
    uses = partials.uses()
    buckets = (exp.select(col("__key"), col("__b"), *partials.columns).from_("src")
               .group_by(col("__key"), col("__b")))
    return Partials(metrics, src, buckets, uses, partials.names)


def occurrences(metric_index: int) -> exp.Select:
    """Distinct (entity, value, bucket) occurrences of a count_distinct metric (from `src`)."""
    x, f = col(f"__x{metric_index}"), col(f"__f{metric_index}")
    return exp.select(col("__key"), alias(x, "__v"), col("__b")).distinct().from_("src").where(
        exp.and_(f, exp.Not(this=exp.Is(this=x.copy(), expression=exp.Null()))))


def _lag_gap(partition: list[exp.Expr]) -> exp.Paren:
    """The distance in buckets from the previous row of the partition (null on its first)."""
    return op(exp.Sub, col("__b"), exp.Window(
        this=exp.func("lag", col("__b")), partition_by=partition,
        order=exp.Order(expressions=[exp.Ordered(this=col("__b"))])))


def _new_run(gap: exp.Expr, limit: int) -> exp.Alias:
    """1 where a row starts a new run (further than `limit` buckets from the previous)."""
    return alias(exp.Case(ifs=[exp.If(this=exp.LTE(this=gap, expression=num(limit)),
                                      true=num(0))], default=num(1)), "__new")


def _run_number(partition: list[exp.Expr]) -> exp.Alias:
    """The running count of run starts: which run (island) a row belongs to."""
    return alias(exp.Window(this=exp.Sum(this=col("__new")), partition_by=partition,
                            order=exp.Order(expressions=[exp.Ordered(this=col("__b"))]),
                            spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED",
                                                start_side="PRECEDING", end="CURRENT ROW")),
                 "__island")


def _island_ctes(plan: GroupPlan, high: int, dialect: str) -> list[tuple[str, exp.Query]]:
    """Islands of activity: runs of buckets closer than `reach`; an entity has a row at the
    snapshots from just after an island's first bucket to `reach` after its last one.
    `dense` holds every bucket position of an island: the running sums need the history,
    and on a dense series a window of W buckets is simply W rows."""
    reach = plan.reach
    marks = exp.select(col("__key"), col("__b"),
                       _new_run(_lag_gap([col("__key")]), reach)).from_("buckets")
    numbered = exp.select(col("__key"), col("__b"),
                          _run_number([col("__key")])).from_("marks")
    spans = (exp.select(col("__key"), col("__island"),
                        alias(exp.Min(this=col("__b")), "__first"),
                        alias(exp.Max(this=col("__b")), "__last"))
             .from_("numbered").group_by(col("__key"), col("__island")))
    dense_end = exp.func("least", op(exp.Add, col("__last"), reach), num(high))
    dense = exp.select(
        col("__key"), col("__island"), col("__first"),
        alias(exp.Explode(this=exp.GenerateSeries(
            start=col("__first"), end=dense_end, step=num(1))), "__pos"),
    ).from_("spans")
    if dialect == "spark":  # Spark's sequence() fails on an empty range; DuckDB's is empty
        dense = dense.where(exp.LTE(this=col("__first"), expression=dense_end.copy()))
    return [("marks", marks), ("numbered", numbered), ("spans", spans), ("dense", dense)]


def _dense_series(parts: Partials) -> exp.Select:
    """The dense positions with the partials of the bucket at each (null where none)."""
    return (exp.select(col("__key", "dense"), col("__island", "dense"),
                       col("__first", "dense"), col("__pos", "dense"),
                       *[col(n, "buckets") for n in parts.names])
            .from_("dense")
            .join("buckets", on=exp.and_(
                exp.EQ(this=col("__key", "dense"), expression=col("__key", "buckets")),
                exp.EQ(this=col("__pos", "dense"), expression=col("__b", "buckets"))),
                join_type="left"))


def _coverage_ctes(i: int, w: int) -> list[tuple[str, exp.Query]]:
    """count_distinct metric i: each value covers the snapshots after its occurrences
    (islands of occurrences closer than W): +1 where coverage starts, -1 where it ends,
    summed per (entity, position) into `delta<i>`."""
    by_value: list[exp.Expr] = [col("__key"), col("__v")]
    occ_marks = exp.select(col("__key"), col("__v"), col("__b"),
                           _new_run(_lag_gap(by_value), w)).from_(f"occ{i}")
    occ_num = exp.select(col("__key"), col("__v"), col("__b"),
                         _run_number([col("__key"), col("__v")])).from_(f"occm{i}")
    occ_span = (exp.select(col("__key"), alias(exp.Min(this=col("__b")), "__first"),
                           alias(exp.Max(this=col("__b")), "__last"))
                .from_(f"occn{i}").group_by(col("__key"), col("__v"), col("__island")))
    edges = exp.select(col("__key"), alias(op(exp.Add, col("__first"), 1), "__pos"),
                       alias(num(1), "__d")).from_(f"occs{i}").union(
        exp.select(col("__key"), alias(op(exp.Add, col("__last"), w + 1), "__pos"),
                   alias(num(-1), "__d")).from_(f"occs{i}"), distinct=False)
    deltas = (exp.select(col("__key"), col("__pos"),
                         alias(exp.Sum(this=col("__d")), f"__d{i}"))
              .from_(exp.Subquery(this=edges, alias=exp.TableAlias(this=ident("e"))))
              .group_by(col("__key"), col("__pos")))
    return [(f"occ{i}", occurrences(i)), (f"occm{i}", occ_marks), (f"occn{i}", occ_num),
            (f"occs{i}", occ_span), (f"delta{i}", deltas)]


def _join_coverage(series: exp.Select, i: int) -> exp.Select:
    """`series` with count_distinct metric i's coverage deltas (`__d<i>`) joined on."""
    return series.select(col(f"__d{i}", f"delta{i}")).join(
        f"delta{i}", on=exp.and_(
            exp.EQ(this=col("__key", "dense"), expression=col("__key", f"delta{i}")),
            exp.EQ(this=col("__pos", "dense"), expression=col("__pos", f"delta{i}"))),
        join_type="left")


def _island_window(node: exp.Expr, start: int | Literal["unbounded"], end: int | None
                   ) -> exp.Window:
    """`node` over the rows of an island from `start` rows back ("unbounded": all) to `end`
    rows back (None: the current row)."""
    def side(value: int | Literal["unbounded"] | None) -> tuple[exp.Expr | str, str | None]:
        if value == "unbounded":
            return "UNBOUNDED", "PRECEDING"
        if value is None:
            return "CURRENT ROW", None
        return num(value), "PRECEDING"

    (start_v, start_s), (end_v, end_s) = side(start), side(end)
    return exp.Window(
        this=node, partition_by=[col("__key"), col("__island")],
        order=exp.Order(expressions=[exp.Ordered(this=col("__pos"))]),
        spec=exp.WindowSpec(kind="ROWS", start=start_v, start_side=start_s, end=end_v,
                            end_side=end_s))


class _RunningColumns:
    """The columns of the `running` CTE: sliding windows of W rows over the dense series
    (a running total differenced would carry a NaN or an infinity into every later
    window), each distinct (partial, W) total computed once."""

    def __init__(self, plan: GroupPlan, metrics: list[Metric],
                 uses: dict[int, dict[str, str]]) -> None:
        self.columns: list[exp.Expr] = [col("__key"), col("__island"), col("__first"),
                                              col("__pos")]
        self._totals: dict[tuple[str, int], str] = {}
        for i, metric in enumerate(metrics):
            w = plan.windows[metric.name]
            if metric.aggregation in ("min", "max"):
                node = exp.Min if metric.aggregation == "min" else exp.Max
                self.columns.append(alias(_island_window(
                    node(this=col(uses[i][metric.aggregation])), w, 1), f"__v{i}"))
            elif metric.aggregation == "count_distinct":
                self.columns.append(alias(_island_window(
                    exp.Sum(this=exp.func("coalesce", col(f"__d{i}"), num(0))),
                    "unbounded", None), f"__v{i}"))

    def total(self, name: str, w: int) -> exp.Column:
        """The partial's total over buckets K-W..K-1 (0 over none)."""
        if (name, w) not in self._totals:
            self._totals[(name, w)] = f"__s{len(self._totals)}"
            self.columns.append(alias(exp.func(
                "coalesce", _island_window(exp.Sum(this=col(name)), w, 1), num(0)),
                self._totals[(name, w)]))
        return col(self._totals[(name, w)])


def _metric_value(metric: Metric, i: int, w: int, uses: dict[int, dict[str, str]],
                  running: _RunningColumns) -> exp.Expr:
    """Metric i's value at a snapshot, typed and rounded as served."""
    agg = metric.aggregation
    if agg in ("count", "sum"):
        value: exp.Expr = running.total(uses[i]["sum"], w)
    elif agg == "avg":
        value = op(exp.Div, running.total(uses[i]["sum"], w),
                   exp.func("nullif", running.total(uses[i]["count"], w), num(0)))
    else:  # min, max, count_distinct: computed in `running`
        value = col(f"__v{i}")
    if agg in ("count", "count_distinct"):
        return exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
    if agg in ("sum", "avg"):
        # engines add a window's buckets in orders of their own; rounding far below
        # any business precision makes reruns, incremental runs and engines agree
        return exp.func("round", exp.Cast(this=value, to=exp.DataType.build("DOUBLE")),
                        num(ROUND_DIGITS))
    return value


def _snapshot_kept(plan: GroupPlan, low: int, high: int) -> exp.Expr:
    """The positions that are snapshots of the run: on the grain, after the island's first
    bucket, within `low`..`high`."""
    return exp.and_(
        exp.EQ(this=exp.Mod(this=col("__pos"), expression=num(plan.grain_buckets)),
               expression=num(0)),
        exp.GT(this=col("__pos"), expression=col("__first")),
        exp.GTE(this=col("__pos"), expression=num(low)),
        exp.LTE(this=col("__pos"), expression=num(high)))


def _with_ctes(query: exp.Select, ctes: list[tuple[str, exp.Query]]) -> exp.Select:
    for name, sub in ctes:
        query = query.with_(name, as_=sub, copy=False)  # a copy each: quadratic
    return query


def group_query(project: Project, plan: GroupPlan, *, path: str, low: int, high: int,
                dialect: str = "duckdb") -> exp.Select:
    """One scan of the source computing every metric of the group for snapshot positions
    `low`..`high` (multiples of G, inclusive)."""
    entity = project.entities[plan.group.entity]
    parts = partial_plan(project, plan, path=path, low=low, high=high, dialect=dialect)
    metrics = parts.metrics
    series = _dense_series(parts)
    coverage: list[tuple[str, exp.Query]] = []
    for i, metric in enumerate(metrics):
        if metric.aggregation == "count_distinct":
            coverage += _coverage_ctes(i, plan.windows[metric.name])
            series = _join_coverage(series, i)
    running = _RunningColumns(plan, metrics, parts.uses)
    stamp = from_us(op(exp.Mul, col("__pos"), plan.bucket_us), dialect)
    outputs: list[exp.Alias] = [
        alias(col("__key"), entity.join_key), alias(stamp, "event_timestamp"),
        alias(stamp.copy(), "created_timestamp"),
        *[alias(_metric_value(m, i, plan.windows[m.name], parts.uses, running), m.name)
          for i, m in enumerate(metrics)]]
    values = exp.select(col("__pos"), col("__first"), *outputs).from_("running")
    final = (exp.select(*[col(a.alias) for a in outputs]).from_("vals")
             .where(_snapshot_kept(plan, low, high)))
    ctes = [("src", parts.src), ("buckets", parts.buckets),
            *_island_ctes(plan, high, dialect), *coverage, ("series", series),
            ("running", exp.select(*running.columns).from_("series")), ("vals", values)]
    return _with_ctes(final, ctes).order_by(col(entity.join_key), col("event_timestamp"))


def _rename_table(tree: exp.Expr, old: str, new: str) -> exp.Expr:
    """Re-point column references `old`.x at `new`.x."""
    return tree.transform(lambda node: col(node.name, new) if isinstance(node, exp.Column)
                          and node.table == old else node)


def _asof_window(base: str, latest: str, entity_key: str) -> exp.Select:
    """Spark has no ASOF join: for each (entity, snapshot) of `base`, the newest row of
    `latest` (__k, __ts, __v) strictly before the snapshot, as one window over the union of
    both on a time axis. At equal times snapshot rows sort first, so a source row at the
    snapshot itself stays unseen (`<`, as the DuckDB ASOF join). The row is carried as a
    struct, so a null __v in the newest row stays null rather than falling back to an
    older value. Result columns: entity_key, event_timestamp, __ts, __v."""
    keys = exp.select(alias(col(entity_key), "__k"), alias(col("event_timestamp"), "__t"),
                      alias(num(0), "__o"), alias(exp.Null(), "__r")).distinct().from_(
        exp.to_identifier(base))
    rows = exp.select(col("__k"), alias(col("__ts"), "__t"), alias(num(1), "__o"),
                      alias(exp.func("named_struct", exp.Literal.string("ts"), col("__ts"),
                                     exp.Literal.string("v"), col("__v")), "__r")
                      ).from_(exp.to_identifier(latest))
    both = keys.union(rows, distinct=False)
    carried = exp.Window(
        this=exp.IgnoreNulls(this=exp.LastValue(this=col("__r"))),
        partition_by=[col("__k")],
        order=exp.Order(expressions=[exp.Ordered(this=col("__t")),
                                     exp.Ordered(this=col("__o"))]),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                            end="CURRENT ROW"))
    marked = exp.select(col("__k"), col("__t"), col("__o"), alias(carried, "__m")).from_(
        exp.Subquery(this=both, alias=exp.TableAlias(this=ident("__u"))))
    return exp.select(
        alias(col("__k"), entity_key), alias(col("__t"), "event_timestamp"),
        alias(exp.Dot(this=col("__m"), expression=ident("ts")), "__ts"),
        alias(exp.Dot(this=col("__m"), expression=ident("v")), "__v"),
    ).from_(exp.Subquery(this=marked, alias=exp.TableAlias(this=ident("__s")))).where(
        exp.EQ(this=col("__o"), expression=num(0)))


def derived_layers(project: Project, names: tuple[str, ...]) -> list[list[str]]:
    """Derived metrics in evaluation order: each layer needs only earlier ones."""
    pending = {n: set(project.derived_inputs(project.metrics[n])) & set(names) for n in names}
    layers: list[list[str]] = []
    done: set[str] = set()
    while pending:
        ready = sorted(n for n, needs in pending.items() if needs <= done)
        if not ready:
            raise ValueError(f"derived metrics form a cycle: {sorted(pending)}")
        layers.append(ready)
        done.update(ready)
        for n in ready:
            del pending[n]
    return layers


def _snapshot_base(entity_key: str, groups: list[str], group_paths: dict[str, str],
                   selected: list[exp.Column], dialect: str) -> list[tuple[str, exp.Query]]:
    """The group tables, every (entity, snapshot) of them (`__keys`) and those keys with the
    aggregate inputs (`selected`) joined on (`__base`)."""
    key, ts_out = col(entity_key), col("event_timestamp")
    keys_query: exp.Query = exp.select(key, ts_out).from_(exp.to_identifier(groups[0]))
    for table in groups[1:]:
        keys_query = keys_query.union(exp.select(key, ts_out).from_(exp.to_identifier(table)),
                                      distinct=True)
    ctes: list[tuple[str, exp.Query]] = [
        (table, exp.select("*").from_(table_relation(group_paths[table], dialect)))
        for table in groups]
    ctes.append(("__keys", keys_query))
    base = exp.select(col(entity_key, "__keys"), col("event_timestamp", "__keys")).from_(
        "__keys")
    for table in groups:
        base = base.join(exp.to_identifier(table), on=exp.and_(
            exp.EQ(this=col(entity_key, "__keys"), expression=col(entity_key, table)),
            exp.EQ(this=col("event_timestamp", "__keys"),
                   expression=col("event_timestamp", table))), join_type="left")
    ctes.append(("__base", base.select(*selected)))
    return ctes


def _within_ttl(project: Project, metric_name: str, rows: str, current: str
                ) -> exp.Expr:
    """Whether the column row found in `rows` may serve the snapshot of `current`."""
    ttl = project.ttl_of(metric_name)
    valid: exp.Expr = exp.Not(this=exp.Is(this=col("__ts", rows),
                                                expression=exp.Null()))
    if ttl is not None:
        valid = exp.and_(valid, exp.GTE(this=col("__ts", rows), expression=exp.Sub(
            this=col("event_timestamp", current),
            expression=exp.Interval(this=exp.Literal.string(
                str(int(ttl.total_seconds()))), unit=exp.var("SECOND")))))
    return valid


def _join_column_input(project: Project, metric_name: str, i: int, current: str,
                       entity_key: str, dialect: str) -> list[tuple[str, exp.Query]]:
    """`current` with column input `metric_name` (rows in `__c<i>`) joined on as of each
    snapshot: the CTEs to add, the last of them (`__j<i>`) the joined rows."""
    rows = f"__c{i}"
    joined = exp.select(exp.Column(this=exp.Star(), table=ident(current)), alias(
        exp.Case(ifs=[exp.If(this=_within_ttl(project, metric_name, rows, current),
                             true=col("__v", rows))]),
        metric_name)).from_(exp.to_identifier(current))
    ctes: list[tuple[str, exp.Query]] = []
    if dialect == "spark":
        ctes.append((f"__a{i}", _asof_window(current, rows, entity_key)))
        joined = joined.join(exp.to_identifier(f"__a{i}"), on=exp.and_(
            exp.EQ(this=col(entity_key, current), expression=col(entity_key, f"__a{i}")),
            exp.EQ(this=col("event_timestamp", current),
                   expression=col("event_timestamp", f"__a{i}"))), join_type="left")
        renamed = _rename_table(joined, rows, f"__a{i}")
        assert isinstance(renamed, exp.Select)
        joined = renamed
    else:
        joined = joined.join(
            exp.to_identifier(rows),
            on=exp.and_(exp.EQ(this=col(entity_key, current), expression=col("__k", rows)),
                        exp.LT(this=col("__ts", rows),
                               expression=col("event_timestamp", current))),
            join_type="asof left")
    ctes.append((f"__j{i}", joined))
    return ctes


def derived_query(project: Project, names: tuple[str, ...], *, entity_key: str,
                  group_paths: dict[str, str], column_inputs: dict[str, tuple[Source, str]],
                  group_of: dict[str, str], dialect: str = "duckdb") -> exp.Select:
    """Row by row evaluation of derived metrics on the joined snapshot rows of their inputs.

    Rows: every (entity, snapshot) of the aggregate input tables. Column inputs take the
    newest source row strictly before the snapshot (ties: newest created timestamp), if
    within the column metric's ttl.
    """
    leaves = sorted({i for n in names for i in project.derived_inputs(project.metrics[n])}
                    - set(names))
    groups = sorted({group_of[i] for i in leaves if i in group_of})
    ctes = _snapshot_base(entity_key, groups, group_paths,
                          [col(i, group_of[i]) for i in leaves if i in group_of], dialect)
    current = "__base"
    for i, metric_name in enumerate(leaf for leaf in leaves if leaf in column_inputs):
        source, path = column_inputs[metric_name]
        column = project.metrics[metric_name].sql
        join_key = project.entities[source.entity].join_key
        ctes.append((f"__c{i}", latest_column_rows(join_key, source, path, column, dialect)))
        ctes += _join_column_input(project, metric_name, i, current, entity_key, dialect)
        current = f"__j{i}"
    for depth, layer in enumerate(derived_layers(project, names)):
        step = exp.select("*", *[
            alias(quoted_tree(project.metrics[n].sql), n) for n in layer
        ]).from_(exp.to_identifier(current))
        current = f"__layer{depth}"
        ctes.append((current, step))
    final = exp.select(
        col(entity_key), col("event_timestamp"), alias(col("event_timestamp"),
                                                       "created_timestamp"),
        *[alias(exp.Cast(this=col(n), to=exp.DataType.build("DOUBLE")), n) for n in names],
    ).from_(exp.to_identifier(current))
    return _with_ctes(final, ctes).order_by(col(entity_key), col("event_timestamp"))


def snapshots_from(select_sql: str, since_us: int, dialect: str) -> str:
    """The rows of a table query (derived, score) at snapshots from `since_us` on. Both
    engines push the filter down to the input tables' scans: every input is joined on, or
    partitioned by, the snapshot time."""
    since = exp.GTE(this=col("event_timestamp"), expression=from_us(num(since_us), dialect))
    return f"SELECT * FROM ({select_sql}) AS __all WHERE {since.sql(dialect)}"
