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

from sqlglot import exp
from tally.catalog.spec.models import Metric, Source
from tally.catalog.spec.project import MetricGroup, Project
from tally.catalog.spec.sqlcheck import check_expression
from tally.catalog.sql.relations import source_relation

US = 1_000_000
ROUND_DIGITS = 9

# engine-specific scalar functions, by dialect
_EPOCH_US = {"duckdb": "epoch_us", "spark": "unix_micros"}
_FROM_US = {"duckdb": "make_timestamp", "spark": "timestamp_micros"}


def ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def num(value: int | float) -> exp.Literal:
    return exp.Literal.number(value)


def fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def alias(node: exp.Expression, name: str) -> exp.Alias:
    return exp.Alias(this=node, alias=ident(name))


def quoted_tree(text: str, rename: dict[str, str] | None = None) -> exp.Expression:
    """An allow-listed user expression with every column quoted (and optionally renamed)."""
    tree = check_expression(text, allow_star=True).tree.copy()
    names = rename or {}
    return exp.Paren(this=tree.transform(
        lambda node: col(names.get(node.name, node.name)) if isinstance(node, exp.Column)
        else node))


def op(kind: type[exp.Binary], left: exp.Expression, right: exp.Expression | int) -> exp.Paren:
    """A parenthesised binary operation, so the rendered SQL keeps the tree's precedence."""
    return exp.Paren(this=kind(this=left, expression=num(right) if isinstance(right, int)
                               else right))


def epoch_us(node: exp.Expression, dialect: str) -> exp.Expression:
    return fn(_EPOCH_US[dialect], node)


def from_us(node: exp.Expression, dialect: str) -> exp.Expression:
    """Microseconds since the epoch as a UTC timestamp."""
    return exp.Cast(this=fn(_FROM_US[dialect], node), to=exp.DataType.build("TIMESTAMPTZ"))


def _window(agg: exp.Expression, *, start: int | str, end: int | str | None,
            order: str = "__pos") -> exp.Window:
    def side(value: int | str | None) -> tuple[exp.Expression | str, str]:
        if value == "unbounded":
            return "UNBOUNDED", "PRECEDING"
        if value is None:
            return "CURRENT ROW", ""
        return num(value), "PRECEDING"

    start_v, start_side = side(start)
    end_v, end_side = side(end)
    return exp.Window(
        this=agg,
        partition_by=[col("__key")],
        order=exp.Order(expressions=[exp.Ordered(this=col(order), nulls_first=False)]),
        spec=exp.WindowSpec(kind="RANGE", start=start_v, start_side=start_side,
                            end=end_v, end_side=end_side or None),
    )


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


def partial_plan(project: Project, plan: GroupPlan, *, path: str, low: int, high: int,
                 dialect: str = "duckdb") -> Partials:
    group = plan.group
    source = project.sources[group.source]
    entity = project.entities[group.entity]
    metrics: list[Metric] = [project.metrics[m] for m in group.metrics]
    ts = col(source.timestamp_field)
    bucket = num(plan.bucket_us)
    scan_from = (low - plan.reach) * plan.bucket_us

    # src: one pass over the file; each metric's expression and filter as columns
    src_cols: list[exp.Expression] = [
        alias(col(entity.join_key), "__key"),
        alias(op(exp.IntDiv, epoch_us(ts, dialect), bucket), "__b"),
    ]
    for i, metric in enumerate(metrics):
        if metric.expression.strip() != "*":
            src_cols.append(alias(quoted_tree(metric.expression), f"__x{i}"))
        cond = quoted_tree(metric.filter) if metric.filter else exp.true()
        src_cols.append(alias(exp.func("coalesce", cond, exp.false()), f"__f{i}"))
    src = (
        exp.select(*src_cols)
        .from_(source_relation(source, path, dialect))
        .where(exp.and_(
            exp.Not(this=exp.Is(this=col(entity.join_key), expression=exp.Null())),
            exp.Not(this=exp.Is(this=ts, expression=exp.Null())),
            exp.GTE(this=epoch_us(ts, dialect), expression=num(scan_from)),
            exp.LT(this=epoch_us(ts, dialect), expression=num(high * plan.bucket_us)),
        ))
    )

    # buckets: partial aggregates per (entity, bucket), one per distinct (kind, expression,
    # filter) so metrics differing only by window share their partials
    partials: dict[tuple[str, str, str], str] = {}
    partial_cols: list[exp.Expression] = []

    def partial(kind: str, i: int) -> str:
        metric = metrics[i]
        key = (kind, metric.expression.strip(), (metric.filter or "").strip())
        if key not in partials:
            name = f"__p{len(partials)}"
            x = col(f"__x{i}")
            node = {"count": exp.Count(this=exp.Star() if key[1] == "*" else x),
                    "sum": exp.Sum(this=x), "min": exp.Min(this=x),
                    "max": exp.Max(this=x)}[kind]
            partial_cols.append(alias(exp.Filter(this=node, expression=exp.Where(
                this=col(f"__f{i}"))), name))
            partials[key] = name
        return partials[key]

    uses: dict[int, dict[str, str]] = {}
    for i, metric in enumerate(metrics):
        agg = metric.aggregation
        if agg == "count":
            uses[i] = {"sum": partial("count", i)}
        elif agg == "sum":
            uses[i] = {"sum": partial("sum", i)}
        elif agg == "avg":
            uses[i] = {"sum": partial("sum", i), "count": partial("count", i)}
        elif agg in ("min", "max"):
            uses[i] = {agg: partial(agg, i)}
    buckets = (exp.select(col("__key"), col("__b"), *partial_cols).from_("src")
               .group_by(col("__key"), col("__b")))
    return Partials(metrics, src, buckets, uses, list(partials.values()))


def occurrences(metric_index: int) -> exp.Select:
    """Distinct (entity, value, bucket) occurrences of a count_distinct metric (from `src`)."""
    x, f = col(f"__x{metric_index}"), col(f"__f{metric_index}")
    return exp.select(col("__key"), alias(x, "__v"), col("__b")).distinct().from_("src").where(
        exp.and_(f, exp.Not(this=exp.Is(this=x.copy(), expression=exp.Null()))))


def group_query(project: Project, plan: GroupPlan, *, path: str, low: int, high: int,
                dialect: str = "duckdb") -> exp.Select:
    """One scan of the source computing every metric of the group for snapshot positions
    `low`..`high` (multiples of G, inclusive)."""
    entity = project.entities[plan.group.entity]
    g, reach = plan.grain_buckets, plan.reach
    parts = partial_plan(project, plan, path=path, low=low, high=high, dialect=dialect)
    metrics, src, buckets, uses = parts.metrics, parts.src, parts.buckets, parts.uses

    # islands of activity: runs of buckets closer than `reach`; an entity has a row at the
    # snapshots from just after an island's first bucket to `reach` after its last one
    gap = op(exp.Sub, col("__b"), exp.Window(
        this=exp.func("lag", col("__b")), partition_by=[col("__key")],
        order=exp.Order(expressions=[exp.Ordered(this=col("__b"))])))
    marks = exp.select(
        col("__key"), col("__b"),
        alias(exp.Case(ifs=[exp.If(this=exp.LTE(this=gap, expression=num(reach)),
                                   true=num(0))], default=num(1)), "__new"),
    ).from_("buckets")
    numbered = exp.select(
        col("__key"), col("__b"),
        alias(exp.Window(this=exp.Sum(this=col("__new")), partition_by=[col("__key")],
                         order=exp.Order(expressions=[exp.Ordered(this=col("__b"))]),
                         spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED",
                                             start_side="PRECEDING", end="CURRENT ROW")),
              "__island"),
    ).from_("marks")
    spans = (exp.select(col("__key"), col("__island"),
                        alias(exp.Min(this=col("__b")), "__first"),
                        alias(exp.Max(this=col("__b")), "__last"))
             .from_("numbered").group_by(col("__key"), col("__island")))
    # every bucket position of an island: the running sums need the history, and on a
    # dense series a window of W buckets is simply W rows
    dense_end = exp.func("least", op(exp.Add, col("__last"), reach), num(high))
    dense = exp.select(
        col("__key"), col("__island"), col("__first"),
        alias(exp.Explode(this=exp.GenerateSeries(
            start=col("__first"), end=dense_end, step=num(1))), "__pos"),
    ).from_("spans")
    if dialect == "spark":  # Spark's sequence() fails on an empty range; DuckDB's is empty
        dense = dense.where(exp.LTE(this=col("__first"), expression=dense_end.copy()))

    ctes: list[tuple[str, exp.Expression]] = []
    series = (exp.select(col("__key", "dense"), col("__island", "dense"),
                         col("__first", "dense"), col("__pos", "dense"),
                         *[col(n, "buckets") for n in parts.names])
              .from_("dense")
              .join("buckets", on=exp.and_(
                  exp.EQ(this=col("__key", "dense"), expression=col("__key", "buckets")),
                  exp.EQ(this=col("__pos", "dense"), expression=col("__b", "buckets"))),
                  join_type="left"))
    # count_distinct: each value covers the snapshots after its occurrences (islands of
    # occurrences closer than W): +1 where coverage starts, -1 where it ends
    distinct = [i for i, m in enumerate(metrics) if m.aggregation == "count_distinct"]
    for i in distinct:
        w = plan.windows[metrics[i].name]
        occ = occurrences(i)
        gap_v = op(exp.Sub, col("__b"), exp.Window(
            this=exp.func("lag", col("__b")), partition_by=[col("__key"), col("__v")],
            order=exp.Order(expressions=[exp.Ordered(this=col("__b"))])))
        occ_marks = exp.select(col("__key"), col("__v"), col("__b"), alias(exp.Case(
            ifs=[exp.If(this=exp.LTE(this=gap_v, expression=num(w)), true=num(0))],
            default=num(1)), "__new")).from_(f"occ{i}")
        occ_num = exp.select(col("__key"), col("__v"), col("__b"), alias(exp.Window(
            this=exp.Sum(this=col("__new")), partition_by=[col("__key"), col("__v")],
            order=exp.Order(expressions=[exp.Ordered(this=col("__b"))]),
            spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                                end="CURRENT ROW")), "__island")).from_(f"occm{i}")
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
        ctes += [(f"occ{i}", occ), (f"occm{i}", occ_marks), (f"occn{i}", occ_num),
                 (f"occs{i}", occ_span), (f"delta{i}", deltas)]
        series = series.select(col(f"__d{i}", f"delta{i}")).join(
            f"delta{i}", on=exp.and_(
                exp.EQ(this=col("__key", "dense"), expression=col("__key", f"delta{i}")),
                exp.EQ(this=col("__pos", "dense"), expression=col("__pos", f"delta{i}"))),
            join_type="left")

    def over(node: exp.Expression, start: int | str, end: int | str | None) -> exp.Window:
        def side(value: int | str | None) -> tuple[exp.Expression | str, str | None]:
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

    # sliding windows of W rows over the dense series (a running total differenced would
    # carry a NaN or an infinity into every later window)
    running_cols: list[exp.Expression] = [col("__key"), col("__island"), col("__first"),
                                          col("__pos")]
    sliding: dict[tuple[str, int], str] = {}

    def windowed_total(name: str, w: int) -> exp.Expression:
        """The partial's total over buckets K-W..K-1 (0 over none)."""
        if (name, w) not in sliding:
            sliding[(name, w)] = f"__s{len(sliding)}"
            running_cols.append(alias(exp.func("coalesce", over(exp.Sum(this=col(name)), w, 1),
                                               num(0)), sliding[(name, w)]))
        return col(sliding[(name, w)])

    for i, metric in enumerate(metrics):
        w = plan.windows[metric.name]
        if metric.aggregation in ("min", "max"):
            node = exp.Min if metric.aggregation == "min" else exp.Max
            running_cols.append(alias(over(node(this=col(uses[i][metric.aggregation])), w, 1),
                                      f"__v{i}"))
        elif metric.aggregation == "count_distinct":
            running_cols.append(alias(over(exp.Sum(this=exp.func("coalesce", col(f"__d{i}"),
                                                                     num(0))),
                                           "unbounded", None), f"__v{i}"))

    outputs: list[exp.Expression] = [
        alias(col("__key"), entity.join_key),
        alias(from_us(op(exp.Mul, col("__pos"), plan.bucket_us), dialect), "event_timestamp"),
        alias(from_us(op(exp.Mul, col("__pos"), plan.bucket_us), dialect), "created_timestamp"),
    ]
    for i, metric in enumerate(metrics):
        w = plan.windows[metric.name]
        agg = metric.aggregation
        if agg in ("count", "sum"):
            value: exp.Expression = windowed_total(uses[i]["sum"], w)
        elif agg == "avg":
            value = op(exp.Div, windowed_total(uses[i]["sum"], w),
                       exp.func("nullif", windowed_total(uses[i]["count"], w), num(0)))
        else:  # min, max, count_distinct: computed in `running`
            value = col(f"__v{i}")
        if agg in ("count", "count_distinct"):
            value = exp.Cast(this=value, to=exp.DataType.build("BIGINT"))
        elif agg in ("sum", "avg"):
            # engines add a window's buckets in orders of their own; rounding far below
            # any business precision makes reruns, incremental runs and engines agree
            value = exp.func("round", exp.Cast(this=value, to=exp.DataType.build("DOUBLE")),
                             num(ROUND_DIGITS))
        outputs.append(alias(value, metric.name))
    keep = exp.and_(
        exp.EQ(this=exp.Mod(this=col("__pos"), expression=num(g)), expression=num(0)),
        exp.GT(this=col("__pos"), expression=col("__first")),
        exp.GTE(this=col("__pos"), expression=num(low)),
        exp.LTE(this=col("__pos"), expression=num(high)))
    running = exp.select(*running_cols).from_("series")
    values = exp.select(col("__pos"), col("__first"), *outputs).from_("running")
    final = (exp.select(*[col(a.alias) for a in outputs]).from_("vals").where(keep))
    query = final
    for name, sub in [("src", src), ("buckets", buckets), ("marks", marks),
                      ("numbered", numbered), ("spans", spans), ("dense", dense), *ctes,
                      ("series", series), ("running", running), ("vals", values)]:
        query = query.with_(name, as_=sub)
    return query.order_by(col(entity.join_key), col("event_timestamp"))


def table_relation(path: str, dialect: str) -> exp.Expression:
    """The FROM item reading a computed (parquet) table."""
    if dialect == "spark":
        return exp.Table(this=exp.Identifier(this=path, quoted=True),
                         db=exp.to_identifier("parquet"))
    return exp.Table(this=exp.Anonymous(this="read_parquet",
                                        expressions=[exp.Literal.string(path)]))


def _rename_table(tree: exp.Expression, old: str, new: str) -> exp.Expression:
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


def derived_query(project: Project, names: tuple[str, ...], *, entity_key: str,
                  group_paths: dict[str, str], column_inputs: dict[str, tuple[Source, str]],
                  group_of: dict[str, str], dialect: str = "duckdb") -> exp.Select:
    """Row by row evaluation of derived metrics on the joined snapshot rows of their inputs.

    Rows: every (entity, snapshot) of the aggregate input tables. Column inputs take the
    newest source row strictly before the snapshot (ties: newest created timestamp), if
    within the column metric's ttl.
    """
    key, ts_out = col(entity_key), col("event_timestamp")
    leaves = sorted({i for n in names for i in project.derived_inputs(project.metrics[n])}
                    - set(names))
    groups = sorted({group_of[i] for i in leaves if i in group_of})
    keys_query: exp.Query = exp.select(key, ts_out).from_(exp.to_identifier(groups[0]))
    for table in groups[1:]:
        keys_query = keys_query.union(exp.select(key, ts_out).from_(exp.to_identifier(table)),
                                      distinct=True)
    ctes: list[tuple[str, exp.Expression]] = []
    for table in groups:
        ctes.append((table, exp.select("*").from_(table_relation(group_paths[table], dialect))))
    ctes.append(("__keys", keys_query))
    base = exp.select(col(entity_key, "__keys"), col("event_timestamp", "__keys")).from_(
        "__keys")
    for table in groups:
        base = base.join(exp.to_identifier(table), on=exp.and_(
            exp.EQ(this=col(entity_key, "__keys"), expression=col(entity_key, table)),
            exp.EQ(this=col("event_timestamp", "__keys"),
                   expression=col("event_timestamp", table))), join_type="left")
    selected = [col(i, group_of[i]) for i in leaves if i in group_of]
    base = base.select(*selected)
    current = "__base"
    ctes.append((current, base))
    for i, metric_name in enumerate(leaf for leaf in leaves if leaf in column_inputs):
        source, path = column_inputs[metric_name]
        metric = project.metrics[metric_name]
        column = metric.expression.strip()
        created = source.created_timestamp_field
        order = [exp.Ordered(this=col(created), desc=True)] if created else []
        if dialect == "spark" and not order:  # Spark's row_number() needs an order
            order = [exp.Ordered(this=col(source.timestamp_field))]
        latest = (exp.select(alias(col(project.entities[source.entity].join_key), "__k"),
                             alias(exp.Cast(this=col(source.timestamp_field),
                                            to=exp.DataType.build("TIMESTAMPTZ")), "__ts"),
                             alias(col(column), "__v"))
                  .from_(source_relation(source, path, dialect))
                  .qualify(exp.EQ(this=exp.Window(
                      this=exp.RowNumber(), partition_by=[
                          col(project.entities[source.entity].join_key),
                          col(source.timestamp_field)],
                      order=exp.Order(expressions=order) if order else None),
                      expression=num(1))))
        ctes.append((f"__c{i}", latest))
        ttl = project.ttl_of(metric_name)
        valid = exp.Not(this=exp.Is(this=col("__ts", f"__c{i}"), expression=exp.Null()))
        if ttl is not None:
            valid = exp.and_(valid, exp.GTE(this=col("__ts", f"__c{i}"), expression=exp.Sub(
                this=col("event_timestamp", current),
                expression=exp.Interval(this=exp.Literal.string(
                    str(int(ttl.total_seconds()))), unit=exp.var("SECOND")))))
        joined = exp.select(exp.Column(this=exp.Star(), table=ident(current)), alias(
            exp.Case(ifs=[exp.If(this=valid, true=col("__v", f"__c{i}"))]),
            metric_name)).from_(exp.to_identifier(current))
        if dialect == "spark":
            ctes.append((f"__a{i}", _asof_window(current, f"__c{i}", entity_key)))
            joined = joined.join(exp.to_identifier(f"__a{i}"), on=exp.and_(
                exp.EQ(this=col(entity_key, current), expression=col(entity_key, f"__a{i}")),
                exp.EQ(this=col("event_timestamp", current),
                       expression=col("event_timestamp", f"__a{i}"))), join_type="left")
            joined = _rename_table(joined, f"__c{i}", f"__a{i}")
        else:
            joined = joined.join(
                exp.to_identifier(f"__c{i}"),
                on=exp.and_(exp.EQ(this=col(entity_key, current),
                                   expression=col("__k", f"__c{i}")),
                            exp.LT(this=col("__ts", f"__c{i}"),
                                   expression=col("event_timestamp", current))),
                join_type="asof left")
        current = f"__j{i}"
        ctes.append((current, joined))
    for depth, layer in enumerate(derived_layers(project, names)):
        step = exp.select("*", *[
            alias(quoted_tree(project.metrics[n].expression), n) for n in layer
        ]).from_(exp.to_identifier(current))
        current = f"__layer{depth}"
        ctes.append((current, step))
    final = exp.select(
        col(entity_key), col("event_timestamp"), alias(col("event_timestamp"),
                                                       "created_timestamp"),
        *[alias(exp.Cast(this=col(n), to=exp.DataType.build("DOUBLE")), n) for n in names],
    ).from_(exp.to_identifier(current))
    for name, sub in ctes:
        final = final.with_(name, as_=sub)
    return final.order_by(col(entity_key), col("event_timestamp"))


def snapshots_from(select_sql: str, since_us: int, dialect: str) -> str:
    """The rows of a table query (derived, score) at snapshots from `since_us` on. Both
    engines push the filter down to the input tables' scans: every input is joined on, or
    partitioned by, the snapshot time."""
    since = exp.GTE(this=col("event_timestamp"), expression=from_us(num(since_us), dialect))
    return f"SELECT * FROM ({select_sql}) AS __all WHERE {since.sql(dialect)}"
