"""A metric's (or score's) distribution over its most recent snapshots, read from the
computed table: per snapshot the count of entities with a value, the 10th, 50th and 90th
percentile, the minimum and the maximum. The web catalog plots it; a notebook can use it.

Only tables of grain-aligned snapshots qualify (aggregate groups, derived metrics, scores);
a column metric is served from its source's own irregular rows, so it has none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlglot import exp
from tally.catalog.errors import DataError, LookupFailedError

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project

DEFAULT_SNAPSHOTS = 30
_SNAPSHOT_TABLES = ("group", "derived", "score")


@dataclass(frozen=True)
class SnapshotSummary:
    snapshot: str
    count: int
    p10: float | None
    p50: float | None
    p90: float | None
    low: float | None
    high: float | None


@dataclass
class Distribution:
    """`computed` is False when the table is not there yet (nothing to plot)."""

    name: str
    table: str
    computed: bool
    snapshots: list[SnapshotSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary_query(path: str, column: str, snapshots: int) -> exp.Expression:
    value = exp.cast(exp.column(column, quoted=True), exp.DataType.build("double"))
    scan = exp.func("read_parquet", exp.Literal.string(path))

    def pct(q: float) -> exp.Func:
        return exp.func("quantile_cont", value.copy(), exp.Literal.number(q))

    recent = (exp.select("event_timestamp").distinct().from_(scan.copy())
              .order_by(exp.Ordered(this=exp.column("event_timestamp"), desc=True))
              .limit(snapshots))
    picked = exp.In(this=exp.column("event_timestamp"), query=exp.Subquery(this=recent))
    return (exp.select(
        exp.column("event_timestamp"),
        exp.alias_(exp.Count(this=value.copy()), "n"),
        exp.alias_(pct(0.1), "p10"), exp.alias_(pct(0.5), "p50"), exp.alias_(pct(0.9), "p90"),
        exp.alias_(exp.Min(this=value.copy()), "low"),
        exp.alias_(exp.Max(this=value.copy()), "high"),
    ).from_(scan).where(picked).group_by(exp.column("event_timestamp"))
        .order_by(exp.column("event_timestamp")))


def _iso(value: Any) -> str:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def distribution(project: Project, name: str, snapshots: int = DEFAULT_SNAPSHOTS
                 ) -> Distribution | None:
    """The summaries of `name`'s newest `snapshots` snapshots, oldest first; None when
    `name` is served from a table without snapshots (a column metric)."""
    from tally.catalog.spec.tables import table_of

    if name not in project.metrics and name not in project.scores:
        raise LookupFailedError(f"no metric or score named {name!r}")
    spec = table_of(project, name)
    if spec is None or spec.kind not in _SNAPSHOT_TABLES:
        return None
    path = spec.path(project)
    result = Distribution(name, spec.name, path.exists())
    if not result.computed:
        return result
    from tally.catalog.sql.duck import connect

    sql = _summary_query(str(path), name, max(1, snapshots)).sql(dialect="duckdb")
    con = connect(None)
    try:
        rows = con.execute(sql).fetchall()
    except Exception as exc:  # duckdb raises a family of its own errors
        raise DataError(f"reading {path}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        con.close()
    result.snapshots = [SnapshotSummary(_iso(t), int(n), *map(_number, rest))
                        for t, n, *rest in rows]
    return result
