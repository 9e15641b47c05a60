"""Metric expectations (`expect: {min, max, max_null_fraction}`) checked on the computed
tables (data/tables/<table>.parquet, a metric's column named after it; a column metric is
served from its source file, its column is the expression). Skipped until computed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tally.catalog.contracts.results import EXAMPLES, RuleResult, fetch_rows, ident, literal
from tally.catalog.spec.models import Metric
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import table_of
from tally.catalog.sql.parts import table_exists


@dataclass
class MetricReport:
    metric: str
    owner: str
    table: str
    skipped: str | None = None  # why nothing was checked (table not computed yet)
    results: list[RuleResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "owner": self.owner, "table": self.table,
                "ok": self.ok, "skipped": self.skipped,
                "rules": [r.to_dict() for r in self.results]}


def check_expectations(project: Project, metric_names: Iterable[str] | None = None
                       ) -> list[MetricReport]:
    """Check each metric's `expect` on its computed table; skipped when not computed yet."""
    import duckdb
    from tally.catalog.contracts.spark import engine_connection  # DuckDB, or Spark per tally.yaml

    names = sorted(metric_names) if metric_names is not None else sorted(project.metrics)
    reports: list[MetricReport] = []
    con = None  # one connection for every metric, opened when the first table is there
    try:
        for name in names:
            metric = project.metrics.get(name)
            if metric is None or metric.expect is None:
                continue
            table = table_of(project, name)
            if table is None:
                continue
            report = MetricReport(name, metric.owner, table.name)
            reports.append(report)
            path = table.path(project)
            if not table_exists(path):
                report.skipped = f"{path.relative_to(project.root)} not computed yet"
                continue
            if con is None:
                con = engine_connection(project.root, "parquet")
            try:
                _expect_with(con, metric, _metric_column(metric, table.kind), path, report)
            except duckdb.Error as exc:
                report.results.append(RuleResult("readable", None, False, message=(
                    f"{path.relative_to(project.root)}: {str(exc).strip().splitlines()[0]}")))
    finally:
        if con is not None:
            con.close()
    return reports


def _metric_column(metric: Metric, kind: str) -> str:
    return metric.sql if kind == "column" else metric.name


def _expect_with(con: Any, metric: Metric, column: str, path: Path,
                 report: MetricReport) -> None:
    assert metric.expect is not None
    scan = f"read_parquet({literal(str(path))})"
    found = {r[0] for r in con.sql(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    if column not in found:
        report.results.append(RuleResult("missing_column", column, False, message=(
            f"column {column} is missing from {report.table}; recompute the table")))
        return
    value = f"TRY_CAST({ident(column)} AS DOUBLE)"
    checks: list[tuple[str, str]] = []
    if metric.expect.min is not None:
        checks.append(("expect_min", f"{value} < {literal(metric.expect.min)}"))
    if metric.expect.max is not None:
        checks.append(("expect_max", f"{value} > {literal(metric.expect.max)}"))
    if metric.expect.max_null_fraction is not None:
        checks.append(("expect_max_null_fraction", f"{ident(column)} IS NULL"))
    selects = ["count(*)", *(f"count(*) FILTER (WHERE {cond})" for _, cond in checks)]
    row = con.sql(f"SELECT {', '.join(selects)} FROM {scan}").fetchall()[0]
    total = int(row[0])
    for (rule, cond), count in zip(checks, row[1:], strict=True):
        count = int(count or 0)
        if rule == "expect_max_null_fraction":
            fraction = count / total if total else 0.0
            limit = metric.expect.max_null_fraction or 0.0
            ok = fraction <= limit
            message = f"null fraction {fraction:.4f} (limit {limit})"
        else:
            ok = count == 0
            bound = metric.expect.min if rule == "expect_min" else metric.expect.max
            message = "" if ok else (f"{count} rows {'below' if rule == 'expect_min' else 'above'}"
                                     f" {bound}")
        result = RuleResult(rule, column, ok, 0 if ok and rule != "expect_max_null_fraction"
                            else count, [], message)
        if not ok:
            result.examples = fetch_rows(con, f"SELECT * FROM {scan} WHERE {cond} LIMIT {EXAMPLES}")
        report.results.append(result)
