"""The gated runs: check -> compute here, apply -> materialize in tally.feature_repo (which
calls `gate` from here first). The CLI, the demo and notebooks all go through these, so no
caller computes, registers or serves a source whose contract fails unless it says
`allow_violations` (and the violation is then recorded)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tally.catalog.compute.runner import ComputeOptions, Computer, Progress, TableResult
from tally.catalog.contracts.checks import ContractReport, check
from tally.catalog.contracts.checks import gate as contract_gate
from tally.catalog.spec.project import Project

__all__ = ["ComputeOptions", "ComputeRun", "ContractReport", "Gate", "TableResult",
           "check_contracts", "compute", "gate"]


@dataclass(frozen=True)
class Gate:
    """How a run treats contracts: the moment freshness is judged at (default now), and
    whether a failing contract is recorded and passed (`allow_violations`) or refused."""

    as_of: str | datetime | None = None
    allow_violations: bool = False
    on_wait: Callable[[str], None] | None = None  # told once when the project lock is busy


@dataclass
class ComputeRun:
    contracts: ContractReport  # no sources checked when every table was up to date
    tables: list[TableResult] = field(default_factory=list)
    up_to_date: bool = False  # nothing changed: no data read, nothing written


def check_contracts(project: Project, sources: Iterable[str] | None = None, *,
                    as_of: str | datetime | None = None,
                    on_wait: Callable[[str], None] | None = None) -> ContractReport:
    """Check the contracts of the named sources (all when None) and the expectations of
    their metrics; record the results. Never raises for a failing contract."""
    return check(project, sources, as_of=as_of, on_wait=on_wait)


def gate(project: Project, sources: Iterable[str] | None, run_gate: Gate | None = None
         ) -> ContractReport:
    """The contract gate every run passes first: checks the sources (all when None),
    records the results, raises ContractViolationError when one fails unless allowed."""
    run_gate = run_gate or Gate()
    return contract_gate(project, sources, as_of=run_gate.as_of,
                         allow_violations=run_gate.allow_violations, on_wait=run_gate.on_wait)


def compute(project: Project, options: ComputeOptions | None = None, *,
            run_gate: Gate | None = None, progress: Progress | None = None,
            on_gate: Callable[[ContractReport], Any] | None = None) -> ComputeRun:
    """Compute the selected tables after the gate of exactly the sources they read.

    `on_gate` sees the contract report before computing starts (e.g. to warn about an
    allowed violation)."""
    computer = Computer(project, options, progress)
    tables = computer.selected()
    if computer.up_to_date(tables):  # nothing is read or computed, so nothing to gate
        as_of = datetime.now(UTC)
        return ComputeRun(ContractReport(as_of), computer.unchanged(tables), up_to_date=True)
    report = gate(project, computer.sources_read(tables), run_gate)
    if on_gate is not None:
        on_gate(report)
    return ComputeRun(report, computer.run())
