"""Data contracts: each source's rules checked in DuckDB, metric expectations on computed
tables, results recorded in .tally/contracts.json, and the gate compute calls first.

The rules and how they are built from a contract are in rules.py, one source's check in
source_check.py, the unique count over data in key order in ordered.py; the names callers
use are importable from here."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tally.catalog.contracts.results import iso
from tally.catalog.contracts.rules import NUMERIC, TYPES
from tally.catalog.contracts.source_check import SourceReport, check_source, scan_sql
from tally.catalog.errors import LookupFailedError, TallyError
from tally.catalog.spec.models import Source
from tally.catalog.spec.moments import parse_moment
from tally.catalog.spec.project import Project
from tally.catalog.spec.tables import read_state
from tally.catalog.store.fsutil import atomic_write_text, project_lock
from tally.catalog.store.paths import CONTRACT_RESULTS_FILE

if TYPE_CHECKING:
    from tally.catalog.contracts.expectations import MetricReport

__all__ = ["NUMERIC", "TYPES", "ContractReport", "ContractViolationError", "SourceReport",
           "check", "check_source", "gate", "parse_as_of", "record_results", "scan_sql",
           "violation_message"]


class ContractViolationError(TallyError):
    """A source's contract fails and violations were not allowed; carries the report."""

    def __init__(self, message: str, report: ContractReport):
        super().__init__(message, mentions=("allow_violations",))
        self.report = report


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
        return {"ok": self.ok, "as_of": iso(self.as_of),
                "allowed_violation": self.allowed_violation,
                "sources": [s.to_dict() for s in self.sources],
                "metrics": [m.to_dict() for m in self.metrics]}


def parse_as_of(value: str | datetime | None) -> datetime:
    """A moment for freshness; naive times are UTC; None is now."""
    moment = parse_moment(value, "as_of")
    return datetime.now(UTC) if moment is None else moment.astimezone(UTC)


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
    checked_at = iso(datetime.now(UTC))
    with project_lock(project.root, on_wait=on_wait):
        state = read_state(project, CONTRACT_RESULTS_FILE)
        for source in report.sources:
            state[source.source] = {
                "ok": source.ok,
                "checked_at": checked_at,
                "as_of": iso(report.as_of),
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
