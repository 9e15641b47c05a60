"""What contract checks and metric expectations share: a rule's result, how many example
rows a failure shows, SQL text quoting by sqlglot, and query rows as JSON-ready values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

EXAMPLES = 5


@dataclass
class RuleResult:
    rule: str  # see docs/contracts.md for the list
    column: str | None
    ok: bool
    offending_rows: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- SQL building: every identifier quoted, every value a literal built by sqlglot -----------

def ident(name: str) -> str:
    from sqlglot import exp

    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def literal(value: Any) -> str:
    from sqlglot import exp

    return exp.convert(value).sql(dialect="duckdb")


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fetch_rows(con: Any, sql: str) -> list[dict[str, Any]]:
    return [jsonable(row) for row in con.sql(sql).to_arrow_table().to_pylist()]
