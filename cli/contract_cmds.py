"""`tally check` and `tally contract export|import`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from tally.cli.common import (
    JsonOption,
    current_project,
    err,
    keep_names_whole,
    print_json,
    project_root,
    stdout_console,
    wait_notice,
)

contract_app = typer.Typer(help="Data contracts in the Open Data Contract Standard (ODCS v3).",
                           no_args_is_help=True)


def check(
    source: Annotated[list[str] | None, typer.Option(
        "--source", help="Check only this source (repeat for several).")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Judge freshness at this time (ISO, naive = UTC; default now).")] = None,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Run each source's data contract and each metric's expectations; exit 1 on a failure."""
    from tally.catalog.pipeline import check_contracts as run_check

    project = current_project()
    report = run_check(project, source or None, as_of=as_of, on_wait=wait_notice)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        if not as_json:
            failing = [s.source for s in report.failing_sources]
            failing += [m.metric for m in report.metrics if not m.ok]
            err(f"contract check failed: {', '.join(failing)}")
        raise typer.Exit(1)


def _cell(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _print_report(report: Any) -> None:
    """One table per source (and per metric with expectations), then the failures' examples."""
    from rich.table import Table

    console = stdout_console()
    console.print(f"Data contracts as of {report.to_dict()['as_of']}")
    groups = [("source", s.source, s.owner, s.path, s.results, None) for s in report.sources]
    groups += [("metric", m.metric, m.owner, f"table {m.table}", m.results, m.skipped)
               for m in report.metrics]
    for kind, name, owner, where, results, skipped in groups:
        ok = all(r.ok for r in results)
        status = "[yellow]skipped[/]" if skipped else "[green]ok[/]" if ok else "[bold red]FAILS[/]"
        title = f"{kind} {name} ({where}) {status}; owner {owner}"
        if skipped:
            console.print(f"{title}: {skipped}", soft_wrap=True)
            continue
        table = Table(title=title, title_justify="left")
        for header in ("rule", "column", "result", "offending rows"):
            table.add_column(header, overflow="fold",
                             justify="right" if header == "offending rows" else "left")
        for result in results:
            mark = "[green]pass[/]" if result.ok else "[bold red]FAIL[/]"
            table.add_row(result.rule, result.column or "", mark,
                          "" if result.ok else str(result.offending_rows))
        console.print(keep_names_whole(table, 0, 1))
        for result in results:
            if result.ok:
                continue
            column = f" on {result.column}" if result.column else ""
            console.print(f"[bold red]{name}: {result.rule}{column}[/]: {result.message}; "
                          f"contact {owner}", soft_wrap=True)
            for example in result.examples:
                console.print(f"    {_cell(example)}", soft_wrap=True, markup=False)


@contract_app.command("export")
def export(
    source: Annotated[str, typer.Argument(help="The source whose contract to export.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write SOURCE's contract as an ODCS v3 YAML document."""
    from tally.catalog.contracts.odcs import export_yaml
    from tally.catalog.store.fsutil import atomic_write_text

    text = export_yaml(current_project(), source)
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    err(f"wrote {out}")


@contract_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="An ODCS v3 YAML document.")],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace a source (or file) of the same name.")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", help="The source name (default: the contract's schema object).")] = None,
    entity: Annotated[str | None, typer.Option(
        "--entity", help="The entity, when the contract does not say.")] = None,
    timestamp_field: Annotated[str | None, typer.Option(
        "--timestamp-field", help="The event time column, when the contract does not say.")
    ] = None,
    path: Annotated[str | None, typer.Option(
        "--path", help="The data file, relative to the project, when the contract does not "
        "say.")] = None,
) -> None:
    """Turn an ODCS v3 contract into a source under metrics/, validated with the project."""
    from tally.catalog.contracts.odcs import import_file

    written, source_name = import_file(project_root(), file, replace=replace, name=name,
                                       entity=entity, timestamp_field=timestamp_field,
                                       path=path, on_wait=wait_notice)
    err(f"imported source {source_name} as {written}")


def register_commands(app: typer.Typer) -> None:
    app.command("check")(check)
    app.add_typer(contract_app, name="contract")
