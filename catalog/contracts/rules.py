"""The rules of a source's contract, each as SQL over the source's scan: the declared
columns' presence, type, not_null, min/max and values; extra columns; the unique key;
freshness; the time columns every metric reads; and the CSV lines DuckDB cannot parse."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tally.catalog.contracts.results import EXAMPLES, RuleResult, ident, literal
from tally.catalog.spec.models import ColumnRule, Source
from tally.catalog.sql.timestamps import is_time_type, unparsable_times

INT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT")
# a timestamp at any precision, with or without a time zone, is a timestamp
TIMESTAMP_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_NS",
                   "TIMESTAMP_US", "TIMESTAMP_MS", "TIMESTAMP_S", "TIMESTAMPTZ_NS",
                   "TIMESTAMPTZ_US", "TIMESTAMPTZ_MS", "TIMESTAMPTZ_S")
# Tally type -> (DuckDB type to cast to, DuckDB types accepted as that type)
TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "int32": ("INTEGER", INT_TYPES),
    "int64": ("BIGINT", (*INT_TYPES, "BIGINT", "UINTEGER")),
    "float32": ("FLOAT", ("FLOAT",)),
    "float64": ("DOUBLE", ("FLOAT", "DOUBLE", "DECIMAL", *INT_TYPES, "BIGINT", "UINTEGER")),
    "string": ("VARCHAR", ("VARCHAR",)),
    "bool": ("BOOLEAN", ("BOOLEAN",)),
    "timestamp": ("TIMESTAMP", TIMESTAMP_TYPES),
    "date": ("DATE", ("DATE",)),
}
NUMERIC = {"int32", "int64", "float32", "float64"}


@dataclass
class Rule:
    """One rule of a contract: its result so far and the SQL that judges it."""

    result: RuleResult
    count_sql: str | None  # an aggregate giving the offending-row count
    where_sql: str | None  # the predicate selecting offending rows, for examples
    order_sql: str | None = None
    all_rows: bool = False  # every row offends when the rule fails
    recount_sql: str | None = None  # an exact recount, run only when count_sql finds some
    key: list[str] = field(default_factory=list)  # unique: the key's columns
    where_key_sql: str | None = None  # unique: rows whose key has no null


def plan(source: Source, found: dict[str, str], as_of: datetime) -> list[Rule]:
    """Every rule of the contract, given the columns (name -> DuckDB type) the data has."""
    contract = source.contract
    rules: list[Rule] = []
    declared = contract.columns if contract else {}
    for name, spec in declared.items():
        rules += _column_rules(name, spec, found)
    if contract and not contract.allow_extra_columns and declared:
        rules += _extra_column_rules(declared, found)
    if contract and contract.unique:
        rules.append(_unique_rule(list(contract.unique), found))
    if contract and contract.freshness:
        rules.extend(_freshness_rule(source, found, as_of))
    rules.extend(_time_column_rules(source, found))
    return rules


def _column_rules(name: str, spec: ColumnRule, found: dict[str, str]) -> list[Rule]:
    """The rules of one declared column: presence, type, not_null, min/max, values."""
    cast_to, accepted = TYPES[spec.type]
    col = ident(name)
    if name not in found:
        return [Rule(RuleResult("missing_column", name, False, message=(
            f"column {name} ({spec.type}) is missing from the data")), None, None,
            all_rows=True)]
    rules: list[Rule] = []
    # a column already of the cast type is compared as it is (no cast per row)
    typed = col if found[name] == cast_to else f"TRY_CAST({col} AS {cast_to})"
    if found[name] not in accepted:
        bad = f"{col} IS NOT NULL AND {typed} IS NULL"
        rules.append(Rule(RuleResult("column_type", name, False, message=(
            f"column {name} is {found[name]}, the contract says {spec.type}")),
            f"count(*) FILTER (WHERE {bad})", bad, all_rows=True))
    else:
        rules.append(Rule(RuleResult("column_type", name, True), None, None))
    if not spec.nullable:
        cond = f"{col} IS NULL"
        rules.append(Rule(RuleResult("not_null", name, True),
                           f"count(*) FILTER (WHERE {cond})", cond))
    for bound, op in (("min", "<"), ("max", ">")):
        limit = getattr(spec, bound)
        if limit is None:
            continue
        if spec.type not in NUMERIC:
            rules.append(Rule(RuleResult(bound, name, False, message=(
                f"{bound} applies to numeric columns; {name} is declared {spec.type}")),
                None, None))
            continue
        cond = f"{typed} {op} {literal(limit)}"
        rules.append(Rule(RuleResult(bound, name, True),
                           f"count(*) FILTER (WHERE {cond})", cond))
    if spec.values is not None:
        as_type = [_value_as(v, spec.type) for v in spec.values]
        allowed = ", ".join(literal(v) for v in as_type) or "NULL"
        cond = f"{typed} IS NOT NULL AND {typed} NOT IN ({allowed})"
        rules.append(Rule(RuleResult("values", name, True),
                           f"count(*) FILTER (WHERE {cond})", cond))
    return rules


def _extra_column_rules(declared: dict[str, ColumnRule], found: dict[str, str]) -> list[Rule]:
    extra = [name for name in found if name not in declared]
    if not extra:
        return [Rule(RuleResult("extra_column", None, True), None, None)]
    return [Rule(RuleResult("extra_column", name, False, message=(
        f"column {name} ({found[name]}) is not in the contract; add it, or set "
        "allow_extra_columns: true")), None, None, all_rows=True) for name in extra]


def _unique_rule(unique: list[str], found: dict[str, str]) -> Rule:
    key = ", ".join(ident(c) for c in unique)
    label = ", ".join(unique)
    missing = [c for c in unique if c not in found]
    if missing:
        return Rule(RuleResult("unique", label, False, message=(
            f"unique key column {', '.join(missing)} is missing")), None, None)
    # rows with a null in the key are left to not_null, as SQL's UNIQUE does
    whole = " AND ".join(f"{ident(c)} IS NOT NULL" for c in unique)
    others = [ident(c) for c in found if c not in unique]
    # counted on a 64-bit hash of the key (cheaper than the key itself); a hash
    # collision can only over-count, and a failure is recounted exactly below.
    # CASE (NULL for rows left out, which DISTINCT skips) rather than FILTER: DuckDB
    # then groups on the hash alone, not on (hash, filter flag) - ~10% less work
    return Rule(
        RuleResult("unique", label, True),
        f"count(*) FILTER (WHERE {whole}) - count(DISTINCT CASE WHEN {whole} "
        f"THEN hash({key}) END)",
        f"{whole} QUALIFY count(*) OVER (PARTITION BY {key}) > 1",
        order_sql=", ".join([key, *others]),
        key=list(unique), where_key_sql=whole,
        recount_sql=f"count(*) - count(DISTINCT row({key})) FILTER (WHERE {whole}) "
                    f"- count(*) FILTER (WHERE NOT ({whole}))")




def _time_column_rules(source: Source, found: dict[str, str]) -> list[Rule]:
    """The source's time columns must be timestamps, contract or not: every metric reads
    them. A contract's own column_type rule covers a column it declares a timestamp."""
    declared = source.contract.columns if source.contract else {}
    rules = []
    for name in (source.timestamp_field, source.created_timestamp_field):
        if (name is None or name not in found or is_time_type(found[name])
                or (name in declared and declared[name].type == "timestamp")):
            continue
        bad = unparsable_times(name).sql("duckdb")
        rules.append(Rule(RuleResult("column_type", name, False, message=(
            f"column {name} is {found[name]}, not a timestamp; every metric of source "
            f"{source.name} reads it as time (write ISO 8601 times)")),
            f"count(*) FILTER (WHERE {bad})", bad, all_rows=True))
    return rules


def _value_as(value: Any, column_type: str) -> Any:
    if column_type in ("int32", "int64") and not isinstance(value, bool):
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    if column_type in ("float32", "float64") and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            return str(value)
    if column_type == "string":
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def _freshness_rule(source: Source, found: dict[str, str], as_of: datetime) -> list[Rule]:
    ts = source.timestamp_field
    assert source.contract and source.contract.freshness
    if ts not in found:
        return [Rule(RuleResult("freshness", ts, False, message=(
            f"timestamp column {ts} is missing, so freshness cannot be judged")), None, None,
            all_rows=True)]
    # newest first, ties in column order: the same examples on every engine and run
    return [Rule(RuleResult("freshness", ts, True), None, None, order_sql=", ".join(
        [f"{ident(ts)} DESC", *(ident(c) for c in found if c != ts)]))]


def parse_rule(con: Any) -> Rule:
    rejected = con.sql(
        "SELECT line, error_message, csv_line FROM reject_errors "
        "WHERE scan_id = (SELECT max(scan_id) FROM reject_errors) ORDER BY line"
    ).fetchall()
    first: dict[int, dict[str, Any]] = {}
    for line, error, text in rejected:  # one line may be reported once per error found
        first.setdefault(int(line), {"line": int(line), "error": error, "text": text})
    lines = sorted(first)
    examples = [first[line] for line in lines[:EXAMPLES]]
    ok = not lines
    message = "" if ok else (f"{len(lines)} line{'s' if len(lines) != 1 else ''} of the CSV "
                             "cannot be parsed and were left out of every other rule")
    return Rule(RuleResult("parse", None, ok, len(lines), examples, message), None, None)
