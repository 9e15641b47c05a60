"""`tally diff`: changed definitions since a git revision or the last apply, classified."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tally.cli.common import JsonOption, current_project, err, print_json, stdout_console

if TYPE_CHECKING:
    from tally.catalog.changes.diff import DiffReport


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _readers(change: Any) -> str:
    out = []
    for r in change.readers:
        how = "pinned" if r.pinned else (f"via {r.via}" if r.via else "unpinned")
        out.append(f"{r.kind} {r.name} ({r.owner}, {how})")
    return "; ".join(out) or "-"


def print_report(report: DiffReport) -> None:
    """The classified changes as a table on stdout (nothing when there are none)."""
    from rich.table import Table

    if not report.changes:
        err(f"no definition changes since {report.against}")
        return
    table = Table("change", "kind", "name", "what changed", "read by (owner)",
                  title=f"definition changes since {report.against}")
    for c in report.changes:
        fields = "; ".join(f"{f.field}: {_value(f.before)} -> {_value(f.after)}"
                           for f in c.fields) or c.action
        table.add_row(c.change, c.kind, c.label, fields, _readers(c))
    stdout_console().print(table)


def diff(
    against: Annotated[str | None, typer.Option(
        "--against", help="A git revision (default: the last `tally apply`).")] = None,
    fail_on: Annotated[str | None, typer.Option(
        "--fail-on", help="Exit 1 when a change of this class is found: breaking.")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Each changed definition, classified breaking/additive/metadata, with whom it breaks."""
    from tally.catalog.changes.diff import diff_definitions
    from tally.catalog.errors import UsageError

    if fail_on not in (None, "breaking"):
        raise UsageError(f"--fail-on {fail_on!r}: the only class to fail on is breaking")
    report = diff_definitions(current_project(), against)
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
    if fail_on == "breaking" and report.breaking:
        err(f"{len(report.breaking)} breaking change(s) since {report.against}")
        raise typer.Exit(1)


def register_commands(app: typer.Typer) -> None:
    app.command()(diff)
