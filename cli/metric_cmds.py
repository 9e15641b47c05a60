"""`tally metric new`."""

from __future__ import annotations

from typing import Annotated

import typer
from tally.cli.common import err, project_root, wait_notice

app = typer.Typer(help="Write metric definitions.", no_args_is_help=True)


@app.command("new")
def new(
    name: Annotated[str, typer.Option("--name", help="Lower snake case, unique.")],
    source: Annotated[str, typer.Option("--source", help="The source to aggregate.")],
    aggregation: Annotated[
        str, typer.Option("--aggregation", help="count|count_distinct|sum|avg|min|max")
    ],
    expression: Annotated[str, typer.Option("--expression", help="SQL over source columns.")],
    window: Annotated[str, typer.Option("--window", help="Trailing window, e.g. 30d.")],
    owner: Annotated[str, typer.Option("--owner", help="Who answers for it.")],
    description: Annotated[str, typer.Option("--description", help="What it means.")],
    grain: Annotated[str | None, typer.Option("--grain", help="Snapshot cadence.")] = None,
    filter_: Annotated[str | None, typer.Option("--filter", help="SQL boolean filter.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeat for several.")] = None,
) -> None:
    """Write a new aggregate metric to metrics/NAME.yaml, after validating it."""
    from tally.catalog.spec.authoring import new_metric

    fields = {
        "name": name, "description": description or None, "owner": owner or None,
        "source": source, "aggregation": aggregation, "expression": expression,
        "filter": filter_, "window": window, "grain": grain, "tags": tag or [],
    }
    path = new_metric(project_root(), fields, on_wait=wait_notice)
    err(f"wrote {path}")
