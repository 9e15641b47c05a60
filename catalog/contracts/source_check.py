"""One source's contract checked: one aggregate query counts every rule's offending rows
in a single scan (the unique key counted in key order when the data is stored so), then,
for failing rules only, one small query for up to five example rows."""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from tally.catalog.contracts.ordered import ordered_pass, settle_ordered
from tally.catalog.contracts.results import EXAMPLES, RuleResult, fetch_rows, ident, iso, literal
from tally.catalog.contracts.rules import Rule, parse_rule, plan
from tally.catalog.spec.durations import parse_duration
from tally.catalog.spec.models import Source
from tally.catalog.spec.project import Project
from tally.catalog.store.paths import is_glob


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


def scan_sql(path: str, file_format: str) -> str:
    """The table function reading a source's file(s)."""
    many = is_glob(path)
    if file_format == "csv":
        return (f"read_csv({literal(path)}, header=true, auto_detect=true, "
                "store_rejects=true)")
    return f"read_parquet({literal(path)}{', union_by_name=true' if many else ''})"


def _base_type(duck_type: str) -> str:
    return duck_type.split("(")[0].strip().upper()


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


def _check_with(con: Any, source: Source, path: str, as_of: datetime,
                report: SourceReport) -> None:
    scan = scan_sql(path, source.file_format)
    found = {row[0]: _base_type(row[1])
             for row in con.sql(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    rules = plan(source, found, as_of)
    ordered = ordered_pass(con, source, path, found, rules)
    fresh = next((r for r in rules if r.result.rule == "freshness"), None)
    newest_by_order = ordered is not None and ordered.newest_by_order
    wants_newest = fresh is not None and source.timestamp_field in found
    rows, newest = _aggregate_pass(
        con, scan, rules, f"max({ident(source.timestamp_field)})"
        if wants_newest and not newest_by_order else None)
    report.rows = rows
    if ordered is not None:
        newest = settle_ordered(con, scan, ordered, found, rows, newest)
    if source.file_format == "csv":
        rules.insert(0, parse_rule(con))
    if fresh is not None and wants_newest:
        _judge_freshness(fresh, newest, source, as_of, rows)
    _explain_failures(con, scan, source, rules, rows)
    report.results.extend(r.result for r in rules)


def _explain_failures(con: Any, scan: str, source: Source, rules: list[Rule],
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
            result.examples = fetch_rows(
                con, f"SELECT * FROM {scan} WHERE {rule.where_sql}{order} LIMIT {EXAMPLES}")
        elif not result.examples and rule.all_rows and result.rule != "missing_column":
            result.examples = fetch_rows(con, f"SELECT * FROM {scan} LIMIT {EXAMPLES}")


def _aggregate_pass(con: Any, scan: str, rules: list[Rule], newest_sql: str | None
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


def _judge_freshness(rule: Rule, newest: Any, source: Source, as_of: datetime,
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
        result.message = (f"newest {source.timestamp_field} is {iso(newest)}, "
                          f"{_age_text(age)} before the as-of time {iso(as_of)}; the contract "
                          f"allows {source.contract.freshness}")
        rule.where_sql = "true"
    else:
        result.message = f"newest {source.timestamp_field} is {iso(newest)}"


def _age_text(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


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
