"""`tally explain` and `tally segments`: why an entity got its score, and who is outside
the healthy band by the component that pulls them down most."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tally.cli.common import (
    JsonOption,
    current_project,
    err,
    keep_names_whole,
    print_json,
    stdout_console,
)

At = Annotated[str | None, typer.Option(
    "--at", help="Newest snapshot at or before this date/time (default: the newest).")]


def _num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _funnel_line(metric: str, steps: list[int]) -> str:
    """A funnel component's steps for the entity: each step's reach and its share of the
    previous step."""
    if not steps or not steps[0]:
        return f"{metric} steps: no starts counted at this snapshot"
    parts = [f"{steps[0]:,} started"]
    for i, reached in enumerate(steps[1:], start=2):
        share = f" ({reached / steps[i - 2]:.0%})" if steps[i - 2] else ""
        parts.append(f"step {i} {reached:,}{share}")
    return f"{metric} steps: " + ", ".join(parts)


def explain(
    score: Annotated[str, typer.Argument(help="The score's name.")],
    entity: Annotated[str, typer.Option("--entity", help="The entity's key (join key value).")],
    at: At = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the contributions as a waterfall chart (.png).")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """A score's value, band and per-component contributions for one entity."""
    from tally.catalog.scores.explain import explain as run
    from tally.catalog.scores.explain import plot_explanation

    result = run(current_project(), score, entity, at)
    if plot is not None:
        plot_explanation(result, plot)
        err(f"wrote the waterfall chart to {plot}")
    if as_json:
        print_json(result.to_dict())
        return
    from rich.table import Table

    change = "" if result.change is None else (
        f", {result.change:+.2f} since {result.previous_snapshot}")
    title = (f"{result.score} of {result.entity} {result.key} at {result.snapshot}: "
             f"{result.value:.2f} ({result.band or 'no band'}){change}")
    table = Table(title=title)
    table.add_column("component", no_wrap=True)
    for name in ("raw", "normalised", "weight", "contribution", "shortfall", "Δ contrib."):
        table.add_column(name, justify="right", no_wrap=True)
    for c in result.components:
        table.add_row(c.metric, _num(c.raw_value, 3), _num(c.normalised, 3), f"{c.weight:g}",
                      _num(c.contribution), _num(c.shortfall),
                      _num(c.contribution_change, 2, True))
    table.add_row("total", "", "", "", _num(sum(c.contribution for c in result.components)),
                  "", _num(result.change, 2, True), end_section=True)
    console = stdout_console()
    console.print(keep_names_whole(table, 0))
    for c in result.components:
        if c.funnel_steps is not None:
            console.print(_funnel_line(c.metric, c.funnel_steps))
    if result.challenge:
        console.print(f"pulls it down most: {result.challenge}; missing components: "
                      f"{result.missing}; --json adds shares and the other changes")


def segments(
    score: Annotated[str, typer.Argument(help="The score's name.")],
    at: At = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Entities outside the healthy band, grouped by the component that pulls them down."""
    from tally.catalog.scores.explain import segments as run

    result = run(current_project(), score, at)
    if as_json:
        print_json(result.to_dict())
        return
    from rich.table import Table

    console = stdout_console()
    console.print(f"{result.score} at {result.snapshot}: " + ", ".join(
        f"{band} {count:,}" for band, count in result.bands.items()))
    table = Table(title=f"{result.outside:,} of {result.entities:,} outside "
                        f"{result.healthy_band}, by adoption challenge")
    table.add_column("adoption challenge", no_wrap=True)
    for name in ("entities", "share", "mean score", "mean shortfall"):
        table.add_column(name, justify="right")
    table.add_column("bands")
    table.add_column("examples")
    for g in result.groups:
        table.add_row(g.challenge, f"{g.count:,}", f"{g.share:.0%}", f"{g.mean_score:.1f}",
                      f"{g.mean_shortfall:.1f}",
                      ", ".join(f"{b} {n}" for b, n in g.bands.items()),
                      ", ".join(map(str, g.examples)))
    console.print(keep_names_whole(table, 0))


def register_commands(app: typer.Typer) -> None:
    app.command()(explain)
    app.command()(segments)
