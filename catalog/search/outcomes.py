"""The trend of a model's outcome metric over a period: its mean over entities at the
period's first and at its last snapshot, read from the metric's computed table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlglot import exp
from tally.catalog.spec.tables import table_specs, tables_by_feature
from tally.catalog.sql.duck import connect

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project


@dataclass
class OutcomeTrend:
    metric: str
    first_snapshot: str | None = None
    first_mean: float | None = None
    last_snapshot: str | None = None
    last_mean: float | None = None
    note: str | None = None  # why there is no trend, when there is none

    @property
    def change(self) -> float | None:
        if self.first_mean is None or self.last_mean is None:
            return None
        return self.last_mean - self.first_mean

    @property
    def relative_change(self) -> float | None:
        if self.change is None or not self.first_mean:
            return None
        return self.change / abs(self.first_mean)


def _us(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1_000_000)


def _means_query(path: str, column: str, since: datetime, until: datetime) -> exp.Expression:
    """Per snapshot in [since, until]: its time and the mean of `column` over entities."""
    stamp_us = exp.func("epoch_us", exp.column("event_timestamp"))
    return (
        exp.select(exp.column("event_timestamp").as_("snapshot"),
                   exp.func("avg", exp.column(column, quoted=True)).as_("mean"))
        .from_(exp.func("read_parquet", exp.Literal.string(path)))
        .where(exp.and_(exp.GTE(this=stamp_us, expression=exp.Literal.number(_us(since))),
                        exp.LTE(this=stamp_us.copy(),
                                expression=exp.Literal.number(_us(until)))))
        .group_by(exp.column("event_timestamp"))
        .order_by(exp.column("event_timestamp"))
    )


def outcome_trend(project: Project, metric: str, since: datetime,
                  until: datetime) -> OutcomeTrend:
    """The outcome's mean at the first and last snapshot in the period (never raises for
    a table not computed yet: the trend then carries a note)."""
    table = tables_by_feature(table_specs(project)).get(metric)
    if table is None or table.kind == "column":
        return OutcomeTrend(metric, note="not a computed metric table (column metrics "
                                         "have no snapshots)")
    path = table.path(project)
    if not path.exists():
        return OutcomeTrend(metric, note=f"{table.name} is not computed yet")
    con = connect([path.parent])
    rows = _snapshot_means(con, str(path), metric, since, until)
    note = None
    if not rows:  # the data ends before the period: the same span, ending at its newest
        newest = con.execute(exp.select(exp.func("max", exp.column("event_timestamp")))
                             .from_(exp.func("read_parquet", exp.Literal.string(str(path))))
                             .sql(dialect="duckdb")).fetchall()[0][0]
        if newest is None:
            return OutcomeTrend(metric, note="the table has no snapshot")
        newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
        rows = _snapshot_means(con, str(path), metric, newest - (until - since), newest)
        note = f"no snapshot in the period; the same span ending at the newest, {newest:%Y-%m-%d}"
    if not rows:
        return OutcomeTrend(metric, note="no snapshot with a value")
    (first, first_mean), (last, last_mean) = rows[0], rows[-1]
    return OutcomeTrend(metric, first.isoformat(), float(first_mean), last.isoformat(),
                        float(last_mean), note)


def _snapshot_means(con: Any, path: str, metric: str, since: datetime,
                    until: datetime) -> list[tuple[Any, Any]]:
    query = _means_query(path, metric, since, until)
    rows: list[tuple[Any, Any]] = con.execute(query.sql(dialect="duckdb")).fetchall()
    return [r for r in rows if r[1] is not None]
