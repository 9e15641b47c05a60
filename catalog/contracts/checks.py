"""Data contracts: each source's rules checked in DuckDB, metric expectations on computed
tables, results recorded in .tally/contracts.json, and the gate compute calls first.

One source costs one aggregate query (every rule's offending-row count in a single scan)
plus, for failing rules only, one small query for up to five example rows."""

from __future__ import annotations

import glob as globmod
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tally.catalog.contracts.results import (
    EXAMPLES,
    RuleResult,
    ident,
    literal,
)
from tally.catalog.contracts.results import fetch_rows as _rows
from tally.catalog.contracts.results import iso as _iso
from tally.catalog.errors import LookupFailedError, TallyError
from tally.catalog.spec.durations import parse_duration
from tally.catalog.spec.models import ColumnRule, Source
from tally.catalog.spec.moments import parse_moment
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import read_state
from tally.catalog.sql.timestamps import is_time_type, unparsable_times
from tally.catalog.store.fsutil import atomic_write_text, project_lock
from tally.catalog.store.paths import CONTRACT_RESULTS_FILE, is_glob

if TYPE_CHECKING:
    from tally.catalog.contracts.expectations import MetricReport

# Tally type -> (DuckDB type to cast to, DuckDB types accepted as that type)
_INTS = ("TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT")
# a timestamp at any precision, with or without a time zone, is a timestamp
_TIMESTAMPS = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_NS",
               "TIMESTAMP_US", "TIMESTAMP_MS", "TIMESTAMP_S", "TIMESTAMPTZ_NS", "TIMESTAMPTZ_US",
               "TIMESTAMPTZ_MS", "TIMESTAMPTZ_S")
TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "int32": ("INTEGER", _INTS),
    "int64": ("BIGINT", (*_INTS, "BIGINT", "UINTEGER")),
    "float32": ("FLOAT", ("FLOAT",)),
    "float64": ("DOUBLE", ("FLOAT", "DOUBLE", "DECIMAL", *_INTS, "BIGINT", "UINTEGER")),
    "string": ("VARCHAR", ("VARCHAR",)),
    "bool": ("BOOLEAN", ("BOOLEAN",)),
    "timestamp": ("TIMESTAMP", _TIMESTAMPS),
    "date": ("DATE", ("DATE",)),
}
NUMERIC = {"int32", "int64", "float32", "float64"}


class ContractViolationError(TallyError):
    """A source's contract fails and violations were not allowed; carries the report."""

    def __init__(self, message: str, report: ContractReport):
        super().__init__(message, mentions=("allow_violations",))
        self.report = report


# -- results -------------------------------------------------------------------------------

@dataclass
class SourceReport:
    source: str
    owner: str
    path: str
    rows: int | None = None
    results: list[RuleResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "owner": self.owner, "path": self.path,
                "rows": self.rows, "ok": self.ok, "rules": [r.to_dict() for r in self.results]}


@dataclass
class ContractReport:
    as_of: datetime
    sources: list[SourceReport] = field(default_factory=list)
    metrics: list[MetricReport] = field(default_factory=list)  # metric expectations
    allowed_violation: bool = False

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sources) and all(m.ok for m in self.metrics)

    @property
    def failing_sources(self) -> list[SourceReport]:
        return [s for s in self.sources if not s.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "as_of": _iso(self.as_of),
                "allowed_violation": self.allowed_violation,
                "sources": [s.to_dict() for s in self.sources],
                "metrics": [m.to_dict() for m in self.metrics]}


def scan_sql(path: str, file_format: str) -> str:
    """The table function reading a source's file(s)."""
    many = is_glob(path)
    if file_format == "csv":
        return (f"read_csv({literal(path)}, header=true, auto_detect=true, "
                "store_rejects=true)")
    return f"read_parquet({literal(path)}{', union_by_name=true' if many else ''})"


def _base_type(duck_type: str) -> str:
    return duck_type.split("(")[0].strip().upper()


def parse_as_of(value: str | datetime | None) -> datetime:
    """A moment for freshness; naive times are UTC; None is now."""
    moment = parse_moment(value, "as_of")
    return datetime.now(UTC) if moment is None else moment.astimezone(UTC)


# -- one source ----------------------------------------------------------------------------

@dataclass
class _Rule:
    result: RuleResult
    count_sql: str | None  # an aggregate giving the offending-row count
    where_sql: str | None  # the predicate selecting offending rows, for examples
    order_sql: str | None = None
    all_rows: bool = False  # every row offends when the rule fails
    recount_sql: str | None = None  # an exact recount, run only when count_sql finds some
    key: list[str] = field(default_factory=list)  # unique: the key's columns
    where_key_sql: str | None = None  # unique: rows whose key has no null


def _resolve_files(project: Project, source: Source) -> tuple[str, list[str]]:
    full = project.root / source.path
    if is_glob(source.path):
        return str(full), sorted(globmod.glob(str(full)))
    return str(full), [str(full)] if full.is_file() else []


def check_source(project: Project, source: Source, as_of: datetime) -> SourceReport:
    """Run every rule of one source's contract; a file problem is a failed `readable` rule."""
    import duckdb

    report = SourceReport(source.name, source.owner, source.path)
    path, files = _resolve_files(project, source)
    if not files:
        report.results.append(RuleResult(
            "readable", None, False, message=f"{source.path}: no such file (looked for {path})"))
        return report
    from tally.catalog.contracts.spark import engine_connection  # DuckDB, or Spark per tally.yaml

    con = engine_connection(project.root, source.file_format, [Path(f) for f in files])
    try:
        _check_with(con, source, path, as_of, report)
    except duckdb.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.results.append(RuleResult(
            "readable", None, False,
            message=f"{source.path}: cannot be read as {source.file_format}: {detail}"))
    finally:
        con.close()
    return report


def _column_rules(name: str, spec: ColumnRule, found: dict[str, str]) -> list[_Rule]:
    """The rules of one declared column: presence, type, not_null, min/max, values."""
    cast_to, accepted = TYPES[spec.type]
    col = ident(name)
    if name not in found:
        return [_Rule(RuleResult("missing_column", name, False, message=(
            f"column {name} ({spec.type}) is missing from the data")), None, None,
            all_rows=True)]
    rules: list[_Rule] = []
    # a column already of the cast type is compared as it is (no cast per row)
    typed = col if found[name] == cast_to else f"TRY_CAST({col} AS {cast_to})"
    if found[name] not in accepted:
        bad = f"{col} IS NOT NULL AND {typed} IS NULL"
        rules.append(_Rule(RuleResult("column_type", name, False, message=(
            f"column {name} is {found[name]}, the contract says {spec.type}")),
            f"count(*) FILTER (WHERE {bad})", bad, all_rows=True))
    else:
        rules.append(_Rule(RuleResult("column_type", name, True), None, None))
    if not spec.nullable:
        cond = f"{col} IS NULL"
        rules.append(_Rule(RuleResult("not_null", name, True),
                           f"count(*) FILTER (WHERE {cond})", cond))
    for bound, op in (("min", "<"), ("max", ">")):
        limit = getattr(spec, bound)
        if limit is None:
            continue
        if spec.type not in NUMERIC:
            rules.append(_Rule(RuleResult(bound, name, False, message=(
                f"{bound} applies to numeric columns; {name} is declared {spec.type}")),
                None, None))
            continue
        cond = f"{typed} {op} {literal(limit)}"
        rules.append(_Rule(RuleResult(bound, name, True),
                           f"count(*) FILTER (WHERE {cond})", cond))
    if spec.values is not None:
        as_type = [_value_as(v, spec.type) for v in spec.values]
        allowed = ", ".join(literal(v) for v in as_type) or "NULL"
        cond = f"{typed} IS NOT NULL AND {typed} NOT IN ({allowed})"
        rules.append(_Rule(RuleResult("values", name, True),
                           f"count(*) FILTER (WHERE {cond})", cond))
    return rules


def _extra_column_rules(declared: dict[str, ColumnRule], found: dict[str, str]) -> list[_Rule]:
    extra = [name for name in found if name not in declared]
    if not extra:
        return [_Rule(RuleResult("extra_column", None, True), None, None)]
    return [_Rule(RuleResult("extra_column", name, False, message=(
        f"column {name} ({found[name]}) is not in the contract; add it, or set "
        "allow_extra_columns: true")), None, None, all_rows=True) for name in extra]


def _unique_rule(unique: list[str], found: dict[str, str]) -> _Rule:
    key = ", ".join(ident(c) for c in unique)
    label = ", ".join(unique)
    missing = [c for c in unique if c not in found]
    if missing:
        return _Rule(RuleResult("unique", label, False, message=(
            f"unique key column {', '.join(missing)} is missing")), None, None)
    # rows with a null in the key are left to not_null, as SQL's UNIQUE does
    whole = " AND ".join(f"{ident(c)} IS NOT NULL" for c in unique)
    others = [ident(c) for c in found if c not in unique]
    # counted on a 64-bit hash of the key (cheaper than the key itself); a hash
    # collision can only over-count, and a failure is recounted exactly below.
    # CASE (NULL for rows left out, which DISTINCT skips) rather than FILTER: DuckDB
    # then groups on the hash alone, not on (hash, filter flag) - ~10% less work
    return _Rule(
        RuleResult("unique", label, True),
        f"count(*) FILTER (WHERE {whole}) - count(DISTINCT CASE WHEN {whole} "
        f"THEN hash({key}) END)",
        f"{whole} QUALIFY count(*) OVER (PARTITION BY {key}) > 1",
        order_sql=", ".join([key, *others]),
        key=list(unique), where_key_sql=whole,
        recount_sql=f"count(*) - count(DISTINCT row({key})) FILTER (WHERE {whole}) "
                    f"- count(*) FILTER (WHERE NOT ({whole}))")


def _plan(source: Source, found: dict[str, str], as_of: datetime) -> list[_Rule]:
    """Every rule of the contract, given the columns (name -> DuckDB type) the data has."""
    contract = source.contract
    rules: list[_Rule] = []
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


def _time_column_rules(source: Source, found: dict[str, str]) -> list[_Rule]:
    """The source's time columns must be timestamps, contract or not: every metric reads
    them. A contract's own column_type rule covers a column it declares a timestamp."""
    declared = source.contract.columns if source.contract else {}
    rules = []
    for name in (source.timestamp_field, source.created_timestamp_field):
        if (name is None or name not in found or is_time_type(found[name])
                or (name in declared and declared[name].type == "timestamp")):
            continue
        bad = unparsable_times(name).sql("duckdb")
        rules.append(_Rule(RuleResult("column_type", name, False, message=(
            f"column {name} is {found[name]}, not a timestamp; every metric of source "
            f"{source.name} reads it as time (write ISO 8601 times)")),
            f"count(*) FILTER (WHERE {bad})", bad, all_rows=True))
    return rules


@dataclass
class _OrderedPass:
    """The unique rule counted by streaming a key column in order (see _ordered_key), the
    hash count it replaces, and the not_null rules of that column it answers too."""
    rule: _Rule
    column: str
    unique_sql: str | None
    newest_by_order: bool
    by_order: list[_Rule]


def _ordered_pass(con: Any, source: Source, path: str, found: dict[str, str],
                  rules: list[_Rule]) -> _OrderedPass | None:
    ordered = _ordered_key(con, source, path, found, rules)
    if ordered is None:
        return None
    rule, column = ordered
    unique_sql, rule.count_sql = rule.count_sql, None
    # the ordered column, read anyway, gives its own null count and (last) newest value:
    # the aggregate pass then skips it - exact for microsecond timestamps (epoch_us)
    newest_by_order = (column == source.timestamp_field
                       and found[column] in ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"))
    by_order = [r for r in rules if newest_by_order and r.result.rule == "not_null"
                and r.result.column == source.timestamp_field]
    for r in by_order:
        r.count_sql = None
    return _OrderedPass(rule, column, unique_sql, newest_by_order, by_order)


def _aggregate_pass(con: Any, scan: str, rules: list[_Rule], newest_sql: str | None
                    ) -> tuple[int, Any]:
    """One scan counting every rule's offending rows (exact recounts where a count is
    found); returns the row count and the newest timestamp when `newest_sql` asks for it."""
    counted = [r for r in rules if r.count_sql]
    selects = ["count(*)"] + [r.count_sql for r in counted if r.count_sql]
    if newest_sql is not None:
        selects.append(newest_sql)
    row = con.sql(f"SELECT {', '.join(selects)} FROM {scan}").fetchall()[0]
    for rule, count in zip(counted, row[1:1 + len(counted)], strict=True):
        rule.result.offending_rows = int(count or 0)
        if count and rule.recount_sql:
            recount = con.sql(f"SELECT {rule.recount_sql} FROM {scan}").fetchall()[0][0]
            rule.result.offending_rows = int(recount or 0)
        if rule.result.rule != "column_type":
            rule.result.ok = rule.result.offending_rows == 0
    return int(row[0]), row[-1]


def _settle_ordered(con: Any, scan: str, ordered: _OrderedPass, found: dict[str, str],
                    rows: int, newest: Any) -> Any:
    """Count the unique rule in key order (the hash count when the data is not in order
    after all); returns the newest timestamp, from that column when it is the time field."""
    rule, column = ordered.rule, ordered.column
    count, present, last = _ordered_duplicates(con, scan, rule, column, found[column], rows)
    if count is None:  # not in order after all: the hash count, as in the single pass
        count = con.sql(f"SELECT {ordered.unique_sql} FROM {scan}").fetchall()[0][0]
        if count and rule.recount_sql:
            count = con.sql(f"SELECT {rule.recount_sql} FROM {scan}").fetchall()[0][0]
    rule.result.offending_rows = int(count or 0)
    rule.result.ok = rule.result.offending_rows == 0
    if not ordered.newest_by_order:
        return newest
    if present is None:  # the fetch stopped early: ask the file
        present, newest = con.sql(f"SELECT count({ident(column)}), "
                                  f"max({ident(column)}) FROM {scan}").fetchall()[0]
    elif last is not None:
        newest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=last)
        if found[column] == "TIMESTAMP":
            newest = newest.replace(tzinfo=None)
    else:
        newest = None
    for r in ordered.by_order:
        r.result.offending_rows = rows - int(present)
        r.result.ok = r.result.offending_rows == 0
    return newest


def _explain_failures(con: Any, scan: str, source: Source, rules: list[_Rule],
                      rows: int) -> None:
    """Give each failed rule its offending-row count, message and example rows."""
    for rule in rules:
        result = rule.result
        if result.ok:
            continue
        if rule.all_rows and result.offending_rows == 0:
            result.offending_rows = rows
        if not result.message:
            result.message = _failure_message(source, result)
        if not result.examples and rule.where_sql is not None:
            order = f" ORDER BY {rule.order_sql}" if rule.order_sql else ""
            result.examples = _rows(
                con, f"SELECT * FROM {scan} WHERE {rule.where_sql}{order} LIMIT {EXAMPLES}")
        elif not result.examples and rule.all_rows and result.rule != "missing_column":
            result.examples = _rows(con, f"SELECT * FROM {scan} LIMIT {EXAMPLES}")


def _check_with(con: Any, source: Source, path: str, as_of: datetime,
                report: SourceReport) -> None:
    scan = scan_sql(path, source.file_format)
    found = {row[0]: _base_type(row[1])
             for row in con.sql(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    rules = _plan(source, found, as_of)
    ordered = _ordered_pass(con, source, path, found, rules)
    fresh = next((r for r in rules if r.result.rule == "freshness"), None)
    newest_by_order = ordered is not None and ordered.newest_by_order
    wants_newest = fresh is not None and source.timestamp_field in found
    rows, newest = _aggregate_pass(
        con, scan, rules, f"max({ident(source.timestamp_field)})"
        if wants_newest and not newest_by_order else None)
    report.rows = rows
    if ordered is not None:
        newest = _settle_ordered(con, scan, ordered, found, rows, newest)
    if source.file_format == "csv":
        rules.insert(0, _parse_rule(con))
    if fresh is not None and wants_newest:
        _judge_freshness(fresh, newest, source, as_of, rows)
    _explain_failures(con, scan, source, rules, rows)
    report.results.extend(r.result for r in rules)


# -- unique keys of data stored in key order ------------------------------------------------
#
# Counting distinct keys needs a hash table over every row: most of a check's time. Data is
# often stored in the order of one key column (events by time); then rows sharing that
# column's value are neighbours, a row whose value differs from both neighbours has a key no
# other row has, and only the few rows with a tied value need counting. Parquet row-group
# statistics say which key column may be in order (metadata only); streaming that one
# column then proves it, and any disorder falls back to the hash count.

_ORDERED_TYPES = {**{t: "CAST({} AS BIGINT)" for t in (*_INTS, "BIGINT", "UINTEGER")},
                  **{t: "epoch_us({})" for t in _TIMESTAMPS if not t.startswith("TIMESTAMPTZ_")},
                  **{t: "epoch_us(CAST({} AS TIMESTAMPTZ))" for t in _TIMESTAMPS
                     if t.startswith("TIMESTAMPTZ_")}}
_MAX_TIES = 10_000  # more tied values than this: the hash count is as cheap
_IN_ONE_ARRAY = 16_000_000  # up to this many rows (128 MB) the column is fetched at once


def _ordered_key(con: Any, source: Source, path: str, found: dict[str, str],
                 rules: list[_Rule]) -> tuple[_Rule, str] | None:
    """The unique rule and a key column whose row groups are in order, when there is one."""
    import duckdb

    rule = next((r for r in rules if r.result.rule == "unique" and r.count_sql), None)
    if (rule is None or source.file_format != "parquet"
            or not isinstance(con, duckdb.DuckDBPyConnection)):
        return None
    for column in rule.key:
        duck_type = found[column]
        if duck_type not in _ORDERED_TYPES:
            continue
        bounds = (f"SELECT TRY_CAST(stats_min_value AS {duck_type}) AS lo, "
                  f"TRY_CAST(stats_max_value AS {duck_type}) AS hi, file_name, row_group_id "
                  f"FROM parquet_metadata({literal(path)}) "
                  f"WHERE path_in_schema = {literal(column)}")
        bad = con.sql(
            f"SELECT count(*) FILTER (WHERE lo IS NULL OR hi IS NULL OR lo < prev), count(*) "
            f"FROM (SELECT lo, hi, lag(hi) OVER (ORDER BY file_name, row_group_id) AS prev "
            f"FROM ({bounds}))").fetchall()[0]
        if bad[1] and not bad[0]:
            return rule, column
    return None


def _ordered_duplicates(con: Any, scan: str, rule: _Rule, column: str,
                        duck_type: str, rows: int
                        ) -> tuple[int | None, int | None, int | None]:
    """(rows repeating a key, counted exactly, rows with a value in `column`, its last
    value) if `column` is in order; (None, None, None) if it is not."""
    import numpy as np

    value = _ORDERED_TYPES[duck_type].format(ident(column))
    # every row with a value, not only those with a whole key: reads one column, and the
    # order of the column over all its values is the order over any subset of them
    query = con.sql(f"SELECT {value} AS v FROM {scan} WHERE {ident(column)} IS NOT NULL")
    if rows <= _IN_ONE_ARRAY:  # one array: spares importing pyarrow (a fifth of a second)
        batches: Iterable[Any] = [query.fetchnumpy()["v"]]
    else:
        batches = (batch.column(0).to_numpy() for batch in query.to_arrow_reader(1 << 20))
    tied: set[int] = set()
    last: int | None = None
    present = 0
    for values in batches:
        present += len(values)
        if not len(values):
            continue
        if last is not None:
            values = np.concatenate(([last], values))
        before, after = values[:-1], values[1:]
        if (after < before).any():
            return None, None, None
        same = np.flatnonzero(after == before)
        if len(same):
            tied.update(values[same].tolist())
            if len(tied) > _MAX_TIES:
                return None, None, None
        last = int(values[-1])
    if not tied:
        return 0, present, last
    listed = ", ".join(str(v) for v in sorted(tied))
    key = ", ".join(ident(c) for c in rule.key)
    return int(con.sql(
        f"SELECT count(*) - count(DISTINCT row({key})) FROM {scan} "
        f"WHERE {rule.where_key_sql} AND {value} IN ({listed})").fetchall()[0][0] or 0
        ), present, last


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


def _freshness_rule(source: Source, found: dict[str, str], as_of: datetime) -> list[_Rule]:
    ts = source.timestamp_field
    assert source.contract and source.contract.freshness
    if ts not in found:
        return [_Rule(RuleResult("freshness", ts, False, message=(
            f"timestamp column {ts} is missing, so freshness cannot be judged")), None, None,
            all_rows=True)]
    # newest first, ties in column order: the same examples on every engine and run
    return [_Rule(RuleResult("freshness", ts, True), None, None, order_sql=", ".join(
        [f"{ident(ts)} DESC", *(ident(c) for c in found if c != ts)]))]


def _judge_freshness(rule: _Rule, newest: Any, source: Source, as_of: datetime,
                     rows: int) -> None:
    assert source.contract and source.contract.freshness
    limit = parse_duration(source.contract.freshness)
    result = rule.result
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    elif isinstance(newest, date) and not isinstance(newest, datetime):
        newest = datetime.combine(newest, time(), UTC)
    if not isinstance(newest, datetime):
        result.ok = False
        result.offending_rows = rows
        result.message = (f"no {source.timestamp_field} values, so the data is older than "
                          f"the freshness limit {source.contract.freshness}")
        return
    age = as_of - newest
    if age > limit:
        result.ok = False
        result.offending_rows = rows  # every row is older than the limit
        result.message = (f"newest {source.timestamp_field} is {_iso(newest)}, "
                          f"{_age_text(age)} before the as-of time {_iso(as_of)}; the contract "
                          f"allows {source.contract.freshness}")
        rule.where_sql = "true"
    else:
        result.message = f"newest {source.timestamp_field} is {_iso(newest)}"


def _age_text(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def _parse_rule(con: Any) -> _Rule:
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
    return _Rule(RuleResult("parse", None, ok, len(lines), examples, message), None, None)


def _failure_message(source: Source, result: RuleResult) -> str:
    rule = source.contract.columns.get(result.column or "") if source.contract else None
    what = {
        "not_null": "null values in a column declared nullable: false",
        "min": f"values below min {rule.min if rule else ''}",
        "max": f"values above max {rule.max if rule else ''}",
        "values": f"values outside {rule.values if rule else ''}",
        "unique": f"rows repeating a key of unique [{result.column}]",
    }.get(result.rule, result.rule)
    return f"{result.offending_rows} rows with {what}"


# -- running, recording, gating -------------------------------------------------------------

def _sources(project: Project, names: Iterable[str] | None) -> list[Source]:
    if names is None:
        return [project.sources[n] for n in sorted(project.sources)]
    out = []
    for name in names:
        if name not in project.sources:
            known = ", ".join(sorted(project.sources)) or "none"
            raise LookupFailedError(f"no source named {name!r}; the sources are: {known}")
        out.append(project.sources[name])
    return out


def check(project: Project, source_names: Iterable[str] | None = None, *,
          as_of: str | datetime | None = None, expectations: bool = True,
          record: bool = True, on_wait: Any = None) -> ContractReport:
    """Check the contracts of the named sources (all when None) and, with `expectations`,
    the `expect` of their metrics on computed tables; record results in .tally/contracts.json."""
    moment = parse_as_of(as_of)
    sources = _sources(project, source_names)
    report = ContractReport(moment, [check_source(project, s, moment) for s in sources])
    if expectations:
        chosen = {s.name for s in sources}
        metrics = [n for n, m in project.metrics.items()
                   if source_names is None or m.source in chosen]
        from tally.catalog.contracts.expectations import check_expectations

        report.metrics = check_expectations(project, metrics)
    if record:
        record_results(project, report, on_wait=on_wait)
    return report


def record_results(project: Project, report: ContractReport, *, on_wait: Any = None) -> None:
    """Merge each source's result into .tally/contracts.json, atomically, under the lock."""
    checked_at = _iso(datetime.now(UTC))
    with project_lock(project.root, on_wait=on_wait):
        state = read_state(project, CONTRACT_RESULTS_FILE)
        for source in report.sources:
            state[source.source] = {
                "ok": source.ok,
                "checked_at": checked_at,
                "as_of": _iso(report.as_of),
                "allowed_violation": bool(report.allowed_violation and not source.ok),
                "rows": source.rows,
                "owner": source.owner,
                "failures": [
                    {"rule": r.rule, "column": r.column, "offending_rows": r.offending_rows,
                     "examples": r.examples, "message": r.message}
                    for r in source.failures
                ],
            }
        text = json.dumps(state, indent=2, sort_keys=True, default=str, ensure_ascii=False)
        atomic_write_text(project.root / CONTRACT_RESULTS_FILE, text + "\n")


def gate(project: Project, source_names: Iterable[str] | None,
         as_of: str | datetime | None = None, allow_violations: bool = False, *,
         on_wait: Any = None) -> ContractReport:
    """Check the sources' contracts before compute/apply/materialize.

    Records every result; raises ContractViolationError naming source, rule, offending
    rows and owner when one fails, unless `allow_violations` (then the violation is
    recorded as allowed and the report returned)."""
    report = check(project, source_names, as_of=as_of, expectations=False, record=False)
    report.allowed_violation = allow_violations
    record_results(project, report, on_wait=on_wait)
    if report.failing_sources and not allow_violations:
        raise ContractViolationError(violation_message(report), report)
    return report


def violation_message(report: ContractReport) -> str:
    lines = []
    for source in report.failing_sources:
        lines.append(f"the contract of source {source.source} ({source.path}) fails; "
                     f"contact its producer {source.owner}:")
        for failure in source.failures:
            where = f" on {failure.column}" if failure.column else ""
            lines.append(f"  rule {failure.rule}{where}: {failure.offending_rows} offending "
                         f"rows; {failure.message}")
    lines.append("Fix the data (or the contract), or pass `allow_violations` to go ahead "
                 "anyway; the violation is then recorded in .tally/contracts.json.")
    return "\n".join(lines)
