"""`tally funnel`: a funnel metric's starts, reach per step and drop-off across entities at
one snapshot, as a table (and a chart with --plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from tally.cli.common import (
    JsonOption,
    current_project,
    err,
    keep_names_whole,
    print_json,
    stdout_console,
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _steps_table(report: Any) -> Any:
    from rich.table import Table

    labels = [f"{s.step}. {s.filter}\n   ({s.source})" for s in report.steps]
    table = Table(title=f"{report.metric}: reach per step")
    # never cut a step: its widest line sets the column (a long filter widens the table)
    table.add_column("step (source)", no_wrap=True, min_width=max(
        len(line) for label in labels for line in label.splitlines()))
    for name in ("reached", "of prev.", "of starts", "dropped"):
        table.add_column(name, justify="right", no_wrap=True)
    for label, s in zip(labels, report.steps, strict=True):
        table.add_row(label, f"{s.reached:,}",
                      "-" if s.step == 1 else _percent(s.from_previous),
                      _percent(s.from_start), "-" if s.step == 1 else f"{s.dropped:,}")
    return table


def _segments_table(report: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"by {report.segment_by} (reached per step; no value: entities "
                        f"without one at the snapshot)")
    table.add_column(report.segment_by, no_wrap=True)
    table.add_column(f"{report.entity}s", justify="right")
    for step in report.steps:
        table.add_column(f"step {step.step}", justify="right", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    for seg in report.segments:
        table.add_row("(no value)" if seg.value is None else str(seg.value),
                      f"{seg.entities:,}", *(f"{s.reached:,}" for s in seg.steps),
                      _percent(seg.rate))
    return keep_names_whole(table, 0)


def funnel(
    name: Annotated[str, typer.Argument(help="The funnel metric's name.")],
    at: Annotated[str | None, typer.Option(
        "--at", help="Newest snapshot at or before this date/time (default: the newest).")
    ] = None,
    segment_by: Annotated[str | None, typer.Option(
        "--segment-by", help="Also per value of this metric of the same entity at the "
        "snapshot (e.g. a plan tier).")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the funnel as a chart (.png).")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Starts, step-by-step reach and drop-off of a funnel metric across entities."""
    from tally.catalog.search.funnel_plot import plot_funnel
    from tally.catalog.search.funnel_report import funnel_report

    report = funnel_report(current_project(), name, at, segment_by)
    if plot is not None:
        plot_funnel(report, plot)
        err(f"wrote the funnel chart to {plot}")
    if as_json:
        print_json(report.to_dict())
        return
    console = stdout_console()
    same = f", same {report.same}" if report.same else ""
    console.print(f"{report.metric} at {report.snapshot}")
    console.print(f"{report.order}, within {report.within}{same}; starts in the trailing "
                  f"{report.window}")
    console.print(f"{report.starts:,} starts across {report.entities_with_starts:,} of "
                  f"{report.entities:,} {report.entity}s; {report.completions:,} completed "
                  f"({_percent(report.rate)})")
    console.print(_steps_table(report))
    if report.segment_by:
        console.print(_segments_table(report))


def register_commands(app: typer.Typer) -> None:
    app.command()(funnel)
