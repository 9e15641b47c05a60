"""The entities a score table holds at its newest snapshot (the static web catalog writes an
explanation page for each of them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp
from tally.catalog.errors import DataError, LookupFailedError

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project


def newest_keys(project: Project, score_name: str, limit: int) -> list[str | int]:
    """Up to `limit` join-key values with a score at the newest snapshot, lowest first."""
    from tally.catalog.spec.tables import table_of
    from tally.catalog.sql.duck import connect

    score = project.scores.get(score_name)
    spec = table_of(project, score_name)
    if score is None or spec is None:
        raise LookupFailedError(f"unknown score {score_name!r}")
    path = spec.path(project)
    if not path.exists():
        raise DataError(f"score {score_name} is not computed yet ({path} is missing)")
    key = exp.column(project.entities[score.entity].join_key, quoted=True)
    scan = exp.func("read_parquet", exp.Literal.string(str(path)))
    newest = exp.Subquery(this=exp.select(exp.Max(this=exp.column("event_timestamp")))
                          .from_(scan.copy()))
    query = (exp.select(key).from_(scan).where(exp.EQ(this=exp.column("event_timestamp"),
                                                      expression=newest))
             .order_by(key.copy()).limit(max(0, limit)))
    con = connect(None)
    try:
        rows = con.execute(query.sql(dialect="duckdb")).fetchall()
    except Exception as exc:  # duckdb raises a family of its own errors
        raise DataError(f"reading {path}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        con.close()
    return [row[0] for row in rows]
