"""Funnel metrics (DESIGN.md "Funnel metrics"): the plan and its SQL as sqlglot trees, for
DuckDB or Spark (the same tree but for the step matches of step 2 below).

Times are epoch microseconds and snapshots grain numbers `n` (T = n * grain). The plan:
1. one scan per step source: key, time, the `same` value and each step's filter flag;
2. stage 1 is every start (r = s); stage i keeps the starts of stage i-1 whose earliest
   step-i row at or after the match time (sequential: r_{i-1}; any: s) makes
   r_i = max(r_{i-1}, a_i) < s + within. DuckDB finds that row with an ASOF join; Spark,
   which has none, with a running MIN over the starts and step rows of one (key[, same])
   in descending time, step rows first at a tie (a frame it streams). No per-row Python;
3. a start of stage i counts at the snapshots r_i < T <= s + window: +1 at
   n = r_i // G + 1, -1 at (s + window) // G + 1, summed per (key, n);
4. the entity's rows are the aggregates' rule (a row of any step source in
   [T - window - within - grain, T)), as islands of grain numbers made dense, and each
   step column is the running sum of its +1/-1 over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlglot import exp
from tally.catalog.compute.plans import epoch_us, from_us, quoted_tree
from tally.catalog.spec.models import Metric, Source
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import funnel_columns
from tally.catalog.sql.relations import source_relation
from tally.catalog.sql.trees import alias, col, ident, num, op

US = 1_000_000
BIGINT = exp.DataType.build("BIGINT")
Ctes = list[tuple[str, exp.Query]]


@dataclass(frozen=True)
class FunnelPlan:
    name: str  # the served feature (a version's `name__vN`)
    metric: Metric
    entity_key: str
    grain_us: int
    window_us: int
    within_us: int
    sources: tuple[str, ...]  # the distinct step sources, in step order

    @property
    def reach_us(self) -> int:
        """How far back a snapshot looks for the entity-row rule: window + within + grain."""
        return self.window_us + self.within_us + self.grain_us

    @property
    def steps(self) -> int:
        return len(self.metric.steps or ())

    def step_source(self, step: int) -> int:
        """Index in `sources` of step `step`'s (1-based) source."""
        return self.sources.index((self.metric.steps or [])[step - 1].source)


def _us(delta: timedelta | None) -> int:
    return int((delta or timedelta()).total_seconds() * US)


def plan_funnel(project: Project, name: str) -> FunnelPlan:
    metric = project.metrics[name]
    steps = metric.steps or []
    sources = tuple(dict.fromkeys(step.source for step in steps))
    entity = project.entities[metric.entity or ""]
    return FunnelPlan(name, metric, entity.join_key, _us(metric.grain_delta),
                      _us(metric.window_delta), _us(metric.within_delta), sources)


def _scan(plan: FunnelPlan, source: Source, index: int, path: str, dialect: str,
          scan_from: int | None, scan_to: int | None) -> exp.Select:
    """`__r<index>`: the source's rows with a key and a time, each step's filter as a flag."""
    ts = epoch_us(col(source.timestamp_field), dialect)
    columns: list[exp.Expr] = [alias(col(plan.entity_key), "__key"), alias(ts, "__t")]
    if plan.metric.same:
        columns.append(alias(col(plan.metric.same), "__v"))
    for step, spec in enumerate(plan.metric.steps or [], start=1):
        if spec.source == source.name:
            columns.append(alias(exp.func("coalesce", quoted_tree(spec.filter), exp.false()),
                                 f"__f{step}"))
    kept: list[exp.Expr] = [
        exp.Not(this=exp.Is(this=col(plan.entity_key), expression=exp.Null())),
        exp.Not(this=exp.Is(this=col(source.timestamp_field), expression=exp.Null()))]
    if scan_from is not None:
        kept.append(exp.GTE(this=ts.copy(), expression=num(scan_from)))
    if scan_to is not None:
        kept.append(exp.LT(this=ts.copy(), expression=num(scan_to)))
    return exp.select(*columns).from_(source_relation(source, path, dialect)).where(
        exp.and_(*kept))


def _keys(plan: FunnelPlan) -> list[exp.Expr]:
    """What a start and its step rows must share: the key, and the `same` value."""
    return [col("__key"), col("__v")] if plan.metric.same else [col("__key")]


def _not_null(name: str) -> exp.Expr:
    return exp.Not(this=exp.Is(this=col(name), expression=exp.Null()))


def _step_rows(plan: FunnelPlan, step: int) -> exp.Select:
    rows = exp.select(*_keys(plan), col("__t")).from_(f"__r{plan.step_source(step)}").where(
        col(f"__f{step}"))
    return rows.where(_not_null("__v")) if plan.metric.same else rows


def _reached(plan: FunnelPlan, reach: exp.Expr) -> exp.Expr:
    """Whether a reach time falls before `s + within`."""
    return exp.LT(this=reach, expression=op(exp.Add, col("__s"), plan.within_us))


def _asof_stage(plan: FunnelPlan, step: int) -> Ctes:
    """DuckDB's form of `_stage_ctes`: an ASOF join finds the earliest step row at or after
    the match time directly (faster; the same rows, tests/test_spark.py)."""
    match = "__r" if plan.metric.order == "sequential" else "__s"
    on: list[exp.Expr] = [exp.EQ(this=col(k.name, "__p"), expression=col(k.name, "__q"))
                          for k in _keys(plan)]
    on.append(exp.LTE(this=col(match, "__p"), expression=col("__t", "__q")))
    reach = exp.func("greatest", col("__r", "__p"), col("__t", "__q"))
    stage = exp.select(*[col(k.name, "__p") for k in _keys(plan)], col("__s", "__p"),
                       alias(reach, "__r")).from_(exp.Table(
        this=ident(f"__stage{step - 1}"), alias=exp.TableAlias(this=ident("__p")))).join(
        exp.Subquery(this=_step_rows(plan, step), alias=exp.TableAlias(this=ident("__q"))),
        on=exp.and_(*on), join_type="asof")
    return [(f"__stage{step}", stage.where(_reached(plan, reach.copy())))]


def _stage_ctes(plan: FunnelPlan, step: int) -> Ctes:
    """`__stage<step>` from `__stage<step-1>`: the starts that reached `step`, with r."""
    keys = _keys(plan)
    match = col("__r") if plan.metric.order == "sequential" else col("__s")
    null = exp.Cast(this=exp.Null(), to=BIGINT)
    starts = exp.select(*keys, col("__s"), col("__r"), alias(match, "__o"),
                        alias(num(0), "__kind"), alias(null, "__t")).from_(f"__stage{step - 1}")
    rows = exp.select(*keys, alias(null.copy(), "__s"), alias(null.copy(), "__r"),
                      alias(col("__t"), "__o"), alias(num(1), "__kind"), col("__t")).from_(
        exp.Subquery(this=_step_rows(plan, step), alias=exp.TableAlias(this=ident("__q"))))
    if plan.metric.same:  # a null `same` value matches nothing
        starts = starts.where(_not_null("__v"))
    earliest = exp.Window(
        this=exp.Min(this=col("__t")), partition_by=[k.copy() for k in keys],
        order=exp.Order(expressions=[exp.Ordered(this=col("__o"), desc=True),
                                     exp.Ordered(this=col("__kind"), desc=True)]),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                            end="CURRENT ROW"))
    matched = exp.select(*[k.copy() for k in keys], col("__s"), col("__r"), col("__kind"),
                         alias(earliest, "__a")).from_(exp.Subquery(
        this=starts.union(rows, distinct=False), alias=exp.TableAlias(this=ident("__u"))))
    reach = exp.func("greatest", col("__r"), col("__a"))
    stage = exp.select(*[k.copy() for k in keys], col("__s"), alias(reach, "__r")).from_(
        f"__m{step}").where(exp.and_(
            exp.EQ(this=col("__kind"), expression=num(0)), _not_null("__a"),
            _reached(plan, reach.copy())))
    return [(f"__m{step}", matched), (f"__stage{step}", stage)]


def _events(plan: FunnelPlan) -> exp.Query:
    """+1 at the first snapshot after r_i, -1 after the last one the start is counted at."""
    g, w = plan.grain_us, plan.window_us
    out: exp.Query | None = None
    for step in range(1, plan.steps + 1):
        first = op(exp.Add, op(exp.IntDiv, col("__r"), g), 1)
        after = op(exp.Add, op(exp.IntDiv, op(exp.Add, col("__s"), w), g), 1)
        counted = exp.LT(this=first, expression=after)
        for node, delta in ((first, 1), (after, -1)):
            part = exp.select(col("__key"), alias(node.copy(), "__n"),
                              alias(num(delta), "__d"), alias(num(step), "__i")).from_(
                f"__stage{step}").where(counted.copy())
            out = part if out is None else out.union(part, distinct=False)
    assert out is not None
    return out


def _deltas(plan: FunnelPlan, low: int | None) -> exp.Select:
    """The +1/-1 per (key, n) and step; with `low`, those before it summed at `low` (a
    start's two marks fall in one island, so the sum at `low` is the count there)."""
    sums = [alias(exp.Sum(this=exp.Case(
        ifs=[exp.If(this=exp.EQ(this=col("__i"), expression=num(step)), true=col("__d"))],
        default=num(0))), f"__d{step}") for step in range(1, plan.steps + 1)]
    n: exp.Expr = col("__n") if low is None else exp.func("greatest", col("__n"), num(low))
    return exp.select(col("__key"), alias(n, "__n"), *sums).from_("__ev").group_by(
        col("__key"), n.copy())


def _running(partition: list[exp.Expr], order: exp.Expr, node: exp.Expr,
             rows_before: int = 0) -> exp.Window:
    """`node` over the partition's rows up to the current one (or `rows_before` back)."""
    end: exp.Expr | str = num(rows_before) if rows_before else "CURRENT ROW"
    return exp.Window(this=node, partition_by=partition,
                      order=exp.Order(expressions=[exp.Ordered(this=order)]),
                      spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED",
                                          start_side="PRECEDING", end=end,
                                          end_side="PRECEDING" if rows_before else None))


def _entity_rows(plan: FunnelPlan, low: int | None, high: int | None, dialect: str) -> Ctes:
    """`__dense`: every (key, n) the entity has a row at, from islands of grain numbers
    (from `low` on: the running counts start from the deltas summed there)."""
    g = plan.grain_us
    every: exp.Query | None = None
    for index in range(len(plan.sources)):
        part = exp.select(col("__key"), col("__t")).from_(f"__r{index}")
        every = part if every is None else every.union(part, distinct=False)
    assert every is not None
    active = exp.select(col("__key"), alias(op(exp.IntDiv, col("__t"), g), "__b"),
                        alias(exp.Max(this=col("__t")), "__tmax")).from_(exp.Subquery(
        this=every, alias=exp.TableAlias(this=ident("__all")))).group_by(
        col("__key"), op(exp.IntDiv, col("__t"), g))
    newest: exp.Expr = op(exp.Add, exp.Max(this=col("__b")), 1)
    if high is not None:
        newest = exp.func("least", newest, num(high))
    bound = exp.select(alias(newest, "__hi")).from_("__act")
    ends = alias(op(exp.IntDiv, op(exp.Add, col("__tmax"), plan.reach_us), g), "__e")
    marks = exp.select(col("__key"), col("__b"), ends).from_("__act")
    before = _running([col("__key")], col("__b"), exp.Max(this=col("__e")), rows_before=1)
    new = exp.Case(ifs=[exp.If(this=exp.LTE(this=col("__b"), expression=before),
                               true=num(0))], default=num(1))
    flagged = exp.select(col("__key"), col("__b"), col("__e"), alias(new, "__new")).from_(
        "__ends")
    numbered = exp.select(col("__key"), col("__b"), col("__e"), alias(
        _running([col("__key")], col("__b"), exp.Sum(this=col("__new"))), "__island")).from_(
        "__flags")
    spans = exp.select(col("__key"), alias(op(exp.Add, exp.Min(this=col("__b")), 1), "__first"),
                       alias(exp.Max(this=col("__e")), "__last")).from_("__isl").group_by(
        col("__key"), col("__island"))
    stop = exp.func("least", col("__last"), col("__hi"))
    first: exp.Expr = col("__first") if low is None else exp.func(
        "greatest", col("__first"), num(low))
    dense = exp.select(col("__key"), alias(exp.Explode(this=exp.GenerateSeries(
        start=first, end=stop, step=num(1))), "__n")).from_("__spans").join(
        "__bound", join_type="cross")
    if dialect == "spark":  # Spark's sequence() fails on an empty range; DuckDB's is empty
        dense = dense.where(exp.LTE(this=first.copy(), expression=stop.copy()))
    return [("__act", active), ("__bound", bound), ("__ends", marks), ("__flags", flagged),
            ("__isl", numbered), ("__spans", spans), ("__dense", dense)]


def _measure(plan: FunnelPlan) -> exp.Expr:
    starts, completions = col("__c1"), col(f"__c{plan.steps}")
    if plan.metric.measure == "starts":
        return exp.Cast(this=starts, to=BIGINT)
    if plan.metric.measure == "completions":
        return exp.Cast(this=completions, to=BIGINT)
    return op(exp.Div, exp.Cast(this=completions, to=exp.DataType.build("DOUBLE")),
              exp.func("nullif", starts.copy(), num(0)))


def funnel_query(project: Project, plan: FunnelPlan, *, paths: dict[str, str],
                 low: int | None = None, high: int | None = None,
                 dialect: str = "duckdb") -> exp.Select:
    """The funnel's table for snapshots (grain numbers) `low`..`high` (None: the data's)."""
    scan_from = None if low is None else low * plan.grain_us - plan.reach_us
    scan_to = None if high is None else high * plan.grain_us
    ctes: Ctes = [(f"__r{i}", _scan(plan, project.sources[s], i, paths[s], dialect,
                                    scan_from, scan_to)) for i, s in enumerate(plan.sources)]
    first = exp.select(*_keys(plan), alias(col("__t"), "__s"), alias(col("__t"), "__r")).from_(
        f"__r{plan.step_source(1)}").where(col("__f1"))
    ctes.append(("__stage1", first))
    for step in range(2, plan.steps + 1):
        ctes += _asof_stage(plan, step) if dialect == "duckdb" else _stage_ctes(plan, step)
    ctes += [("__ev", _events(plan)), ("__deltas", _deltas(plan, low))]
    ctes += _entity_rows(plan, low, high, dialect)
    key_n = exp.and_(exp.EQ(this=col("__key", "__dense"), expression=col("__key", "__deltas")),
                     exp.EQ(this=col("__n", "__dense"), expression=col("__n", "__deltas")))
    counts = [alias(_running([col("__key", "__dense")], col("__n", "__dense"), exp.Sum(
        this=exp.func("coalesce", col(f"__d{step}", "__deltas"), num(0)))), f"__c{step}")
        for step in range(1, plan.steps + 1)]
    running = exp.select(col("__key", "__dense"), col("__n", "__dense"), *counts).from_(
        "__dense").join("__deltas", on=key_n, join_type="left")
    ctes.append(("__counts", running))
    stamp = from_us(op(exp.Mul, col("__n"), plan.grain_us), dialect)
    names = funnel_columns(plan.name, plan.metric)
    final = exp.select(
        alias(col("__key"), plan.entity_key), alias(stamp, "event_timestamp"),
        alias(stamp.copy(), "created_timestamp"), alias(_measure(plan), names[0]),
        *[alias(exp.Cast(this=col(f"__c{step}"), to=BIGINT), names[step])
          for step in range(1, plan.steps + 1)]).from_("__counts")
    if low is not None:
        final = final.where(exp.GTE(this=col("__n"), expression=num(low)))
    for name, sub in ctes:
        final = final.with_(name, as_=sub, copy=False)  # a copy each: quadratic
    return final.order_by(col(plan.entity_key), col("event_timestamp"), copy=False)
