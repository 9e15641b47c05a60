"""`tally funnel`: a funnel metric's starts, reach per step and drop-off, summed across
entities at one snapshot, optionally per segment.

It reads the funnel's computed table (`data/tables/funnel_<name>.parquet`: `<name>__step_i`
is the starts counted at the snapshot that reached step i) with DuckDB; no Feast, no pandas.
A segment is found as a score component's `segment_by` finds it (docs/scores.md): the value
of a metric of the same entity in its table at the same snapshot, or, for a column metric,
the newest source row strictly before the snapshot within the metric's ttl.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.errors import DataError, LookupFailedError
from tally.catalog.spec.models import Metric
from tally.catalog.spec.moments import parse_moment
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import funnel_step_column, table_of
from tally.catalog.sql.relations import latest_column_rows
from tally.catalog.sql.trees import alias, col, table_relation
from tally.catalog.store.paths import is_glob


@dataclass
class StepReach:
    step: int
    source: str
    filter: str
    reached: int  # starts counted at the snapshot that reached this step
    from_previous: float | None  # reached / the previous step's reached
    from_start: float | None  # reached / starts
    dropped: int  # the previous step's reached - reached (0 at step 1)


@dataclass
class FunnelSegment:
    value: Any  # the segment metric's value; None: entities without one
    entities: int
    starts: int
    completions: int
    rate: float | None
    steps: list[StepReach] = field(default_factory=list)


@dataclass
class FunnelReport:
    metric: str
    entity: str
    join_key: str
    snapshot: str
    within: str
    window: str
    order: str
    same: str | None
    measure: str
    entities: int  # entities with a row at the snapshot
    entities_with_starts: int
    starts: int
    completions: int
    rate: float | None
    steps: list[StepReach] = field(default_factory=list)
    segment_by: str | None = None
    segments: list[FunnelSegment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: Any) -> str:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _funnel(project: Project, name: str) -> tuple[Metric, Path]:
    metric = project.metrics.get(name)
    funnels = ", ".join(sorted(n for n, m in project.metrics.items() if m.type == "funnel"
                               and not project.is_version_copy(n)))
    known = f"funnel metrics: {funnels or 'none (docs/definitions.md shows how to add one)'}"
    if metric is None or project.is_version_copy(name):
        raise LookupFailedError(f"unknown metric {name!r}; {known}")
    if metric.type != "funnel":
        article = "an" if metric.type[0] in "aeiou" else "a"
        raise LookupFailedError(f"{name} is {article} {metric.type} metric, not a funnel; "
                                f"{known}")
    spec = table_of(project, name)
    path = spec.path(project) if spec else None
    if path is None or not path.exists():
        raise DataError(f"funnel {name} is not computed yet ({path} is missing); compute its "
                        f"table first (`metrics` = [{name!r}])", mentions=("metrics",))
    return metric, path


def _run(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    from tally.catalog.sql.duck import connect

    con = connect(None)
    try:
        rows: list[tuple[Any, ...]] = con.execute(sql, params).fetchall()
    except Exception as exc:  # duckdb raises a family of its own errors
        raise DataError(f"reading the funnel table: {str(exc).strip().splitlines()[0]}"
                        ) from None
    finally:
        con.close()
    return rows


def _snapshot(name: str, path: Path, moment: datetime | None) -> datetime:
    """The newest snapshot of the table at or before `moment` (default: its newest)."""
    query = exp.select(exp.Max(this=col("event_timestamp"))).from_(
        table_relation(str(path), "duckdb"))
    params: list[Any] = []
    if moment is not None:
        query = query.where(exp.LTE(this=col("event_timestamp"), expression=exp.Placeholder()))
        params.append(moment)
    found = _run(query.sql(dialect="duckdb"), params)[0][0]
    if found is not None:
        return found  # type: ignore[no-any-return]
    if moment is None:
        raise LookupFailedError(f"funnel {name} has no snapshot (its table is empty: do its "
                                "sources have step-1 rows?)")
    first = _run(exp.select(exp.Min(this=col("event_timestamp"))).from_(
        table_relation(str(path), "duckdb")).sql(dialect="duckdb"), [])[0][0]
    raise LookupFailedError(f"{_iso(moment)}: funnel {name} has no snapshot at or before it; "
                            f"its first is {_iso(first)}, so give that time or a later one",
                            option="at")


def _moment(value: datetime) -> exp.Expr:
    return exp.Cast(this=exp.Literal.string(_iso(value)), to=exp.DataType.build("TIMESTAMPTZ"))


def _segment_rows(project: Project, metric: Metric, segment_by: str, key: str,
                  snapshot: exp.Expr) -> exp.Select:
    """The rows (__k, __v) of the segment metric at the snapshot."""
    seg = project.metrics.get(segment_by)
    if seg is None or project.is_version_copy(segment_by):
        raise LookupFailedError(f"{segment_by!r} is no metric of this project; give a metric "
                                f"of {metric.entity} (aggregate, derived, column or funnel)",
                                option="segment_by")
    if project.entity_of(segment_by) != metric.entity:
        raise LookupFailedError(f"{segment_by!r} is about {project.entity_of(segment_by)}, "
                                f"but funnel {metric.name} is about {metric.entity}; give a "
                                f"metric of {metric.entity}", option="segment_by")
    if seg.type == "column":
        return _column_rows(project, segment_by, key, snapshot)
    spec = table_of(project, segment_by)
    path = spec.path(project) if spec else None
    if path is None or not path.exists():
        raise DataError(f"segment_by {segment_by} is not computed yet ({path} is missing); "
                        f"compute its table first (`metrics` = [{segment_by!r}])",
                        mentions=("metrics",))
    rows = (exp.select(alias(col(key), "__k"), alias(col(segment_by), "__v"))
            .from_(table_relation(str(path), "duckdb"))
            .where(exp.EQ(this=col("event_timestamp"), expression=snapshot)))
    return rows


def _column_rows(project: Project, name: str, key: str, snapshot: exp.Expr) -> exp.Select:
    """A column metric's value per entity at the snapshot: its newest source row strictly
    before it (ties: the newest created timestamp), if within the metric's ttl."""
    spec = project.metrics[name]
    source = project.sources[spec.source or ""]
    path = project.root / source.path
    if not is_glob(source.path) and not path.exists():
        raise DataError(f"source {source.name}: data file {path} does not exist")
    newest = exp.Window(this=exp.RowNumber(), partition_by=[col("__k")],
                        order=exp.Order(expressions=[exp.Ordered(this=col("__ts"), desc=True)]))
    rows = (exp.select("__k", "__v", "__ts")
            .from_(latest_column_rows(key, source, str(path), spec.sql, "duckdb").subquery("__l"))
            .where(exp.LT(this=col("__ts"), expression=snapshot.copy()))
            .qualify(exp.EQ(this=newest, expression=exp.Literal.number(1))))
    ttl = project.ttl_of(name)
    if ttl is None:
        return exp.select("__k", "__v").from_(rows.subquery("__n"))
    fresh = exp.GTE(this=col("__ts"), expression=exp.Sub(
        this=snapshot.copy(), expression=exp.Interval(
            this=exp.Literal.string(str(int(ttl.total_seconds()))), unit=exp.var("SECOND"))))
    kept = exp.Case(ifs=[exp.If(this=fresh, true=col("__v"))])
    return exp.select("__k", alias(kept, "__v")).from_(rows.subquery("__n"))


def _sums(metric: Metric, path: Path, key: str, snapshot: exp.Expr,
          segment: exp.Select | None) -> exp.Select:
    """Per segment (one row without one): entities, entities with starts, the sum of each
    step column, at the snapshot."""
    steps = len(metric.steps or ())
    funnel = (exp.select(col(key), *(col(funnel_step_column(metric.name, i))
                                     for i in range(1, steps + 1)))
              .from_(table_relation(str(path), "duckdb"))
              .where(exp.EQ(this=col("event_timestamp"), expression=snapshot)))
    first = col(funnel_step_column(metric.name, 1), "f")
    columns: list[exp.Expr] = [
        exp.Count(this=exp.Star()),
        exp.Count(this=exp.Nullif(this=exp.Coalesce(this=first, expressions=[
            exp.Literal.number(0)]), expression=exp.Literal.number(0))),
        *(exp.Coalesce(this=exp.Sum(this=col(funnel_step_column(metric.name, i), "f")),
                       expressions=[exp.Literal.number(0)]) for i in range(1, steps + 1)),
    ]
    query = exp.select(*columns).from_(funnel.subquery("f"))
    if segment is None:
        return query
    query = query.join(segment.subquery("s"), on=exp.EQ(this=col(key, "f"),
                                                         expression=col("__k", "s")),
                       join_type="left")
    value = col("__v", "s")
    return (query.select(alias(value, "__segment"), append=False).select(*columns)
            .group_by(value.copy()).order_by(exp.Ordered(this=value.copy(), nulls_first=False)))


def _reach(metric: Metric, sums: list[int]) -> list[StepReach]:
    steps = metric.steps or []
    out = []
    for i, (step, reached) in enumerate(zip(steps, sums, strict=True)):
        previous = sums[i - 1] if i else reached
        out.append(StepReach(step=i + 1, source=step.source, filter=step.filter,
                             reached=int(reached), from_previous=_ratio(reached, previous),
                             from_start=_ratio(reached, sums[0]),
                             dropped=int(previous - reached)))
    return out


def funnel_report(project: Project, name: str, at: str | datetime | date | None = None,
                  segment_by: str | None = None) -> FunnelReport:
    """Funnel `name` at its newest snapshot <= `at` (default: its newest): entities, starts,
    the starts that reached each step, conversion from the previous step and from the start,
    and the drop-off per step, summed across entities; with `segment_by` (a metric of the
    same entity), the same per value of that metric."""
    metric, path = _funnel(project, name)
    entity = project.entities[metric.entity or ""]
    snapshot = _snapshot(name, path, parse_moment(at))
    key = entity.join_key
    totals = _run(_sums(metric, path, key, _moment(snapshot), None).sql(dialect="duckdb"),
                  [])[0]
    sums = [int(v) for v in totals[2:]]
    report = FunnelReport(
        metric=name, entity=entity.name, join_key=key, snapshot=_iso(snapshot),
        within=metric.within or "", window=metric.window or "", order=metric.order,
        same=metric.same, measure=metric.measure, entities=int(totals[0]),
        entities_with_starts=int(totals[1]), starts=sums[0], completions=sums[-1],
        rate=_ratio(sums[-1], sums[0]), steps=_reach(metric, sums), segment_by=segment_by)
    if segment_by is not None:
        segment = _segment_rows(project, metric, segment_by, key, _moment(snapshot))
        query = _sums(metric, path, key, _moment(snapshot), segment)
        for row in _run(query.sql(dialect="duckdb"), []):
            seg_sums = [int(v) for v in row[3:]]
            report.segments.append(FunnelSegment(
                value=row[0], entities=int(row[1]), starts=seg_sums[0],
                completions=seg_sums[-1], rate=_ratio(seg_sums[-1], seg_sums[0]),
                steps=_reach(metric, seg_sums)))
    return report
