"""`tally compute`, `plan`, `apply`, `materialize`, `training-frame`, `demo`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from tally.catalog.errors import UsageError
from tally.catalog.spec.moments import parse_moment
from tally.cli.common import (
    JsonOption,
    current_project,
    err,
    keep_names_whole,
    print_json,
    stdout_console,
    wait_notice,
)

if TYPE_CHECKING:
    from rich.progress import TaskID
    from tally.catalog.pipeline import ContractReport, Gate
    from tally.feature_repo.registry import Change

AsOf = Annotated[str | None, typer.Option("--as-of", help="Contract time (default: now).")]
AllowViolations = Annotated[bool, typer.Option(
    "--allow-violations", help="Go ahead when a contract fails, and record the violation.")]


def _date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a date; write YYYY-MM-DD") from None


def _run_gate(as_of: str | None, allow: bool) -> Gate:
    from tally.catalog.pipeline import Gate

    return Gate(as_of=as_of, allow_violations=allow, on_wait=wait_notice)


def _warn_allowed(report: ContractReport) -> None:
    for source in report.failing_sources:
        broken = ", ".join(f"{f.rule}{f' on {f.column}' if f.column else ''} "
                           f"({f.offending_rows} rows)" for f in source.failures)
        err(f"warning: going ahead with source {source.source} despite its contract "
            f"violations: {broken} (recorded; `tally show {source.source}` reports them)")


@contextmanager
def _next_step() -> Iterator[None]:
    """Add the command that fixes a not-computed or not-applied feature to its error."""
    from tally.feature_repo.readiness import NotAppliedError, NotComputedError

    try:
        yield
    except NotComputedError as exc:
        flags = " ".join(f"--metric {name}" for name in exc.features)
        raise NotComputedError(f"{exc}\nrun: tally compute {flags}", exc.features) from None
    except NotAppliedError as exc:
        raise NotAppliedError(f"{exc}\nrun: tally apply", exc.features) from None


def compute(
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Compute only the tables of these metrics (repeat; NAME@N: a "
        "version).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="First snapshot date.")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Last snapshot date.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Recompute every snapshot.")] = False,
    as_of: AsOf = None,
    allow_violations: AllowViolations = False,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Compute metric tables: one DuckDB scan per (source, entity, grain) group."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from tally.catalog.pipeline import ComputeOptions
    from tally.catalog.pipeline import compute as gated_compute

    project = current_project()
    options = ComputeOptions(metrics=[project.resolve(m) or m for m in metric or []],
                             start=_date(start, "--start"), end=_date(end, "--end"), full=full)
    if options.start and options.end and options.start > options.end:
        raise UsageError("--start is after --end")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[n]}"),
                  TimeElapsedColumn(), transient=not as_json, disable=as_json,
                  console=Console(stderr=True)) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=max(total, 1), n="")
            bar.update(tasks[name], completed=done if total else 1,
                       n=f"{total} snapshots" if total else "")

        run = gated_compute(project, options, run_gate=_run_gate(as_of, allow_violations),
                            progress=progress, on_gate=_warn_allowed)
    results = run.tables
    if run.up_to_date:
        err("every table is up to date: sources and definitions unchanged since the last "
            "compute")
    rows = [{"table": r.name, "kind": r.kind, "mode": r.mode, "rows": r.rows,
             "snapshots": r.new_snapshots, "seconds": round(r.seconds, 2),
             "path": str(r.path)} for r in results]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("table", "kind", "mode", "rows", "snapshots", "seconds", title="computed")
    for r in rows:
        table.add_row(str(r["table"]), str(r["kind"]), str(r["mode"]), f"{r['rows']:,}",
                      "-" if r["snapshots"] is None else f"{r['snapshots']:,}", f"{r['seconds']}")
    stdout_console().print(keep_names_whole(table, 0))


def _print_changes(changes: list[Change], as_json: bool, verb: str) -> None:
    if as_json:
        print_json([asdict(c) for c in changes])
        return
    from rich.table import Table

    table = Table("action", "kind", "name", "details", title=verb)
    for c in changes:
        if c.action != "keep":
            table.add_row(c.action, c.kind, c.name, "; ".join(c.details)[:200])
    if not table.row_count:
        err("no changes: the Feast registry matches the definitions")
        return
    stdout_console().print(keep_names_whole(table, 2))


def plan(as_json: Annotated[bool, JsonOption] = False) -> None:
    """What `tally apply` would add, change or remove in the Feast registry, beside the
    definition changes since the last apply (breaking/additive/metadata)."""
    from tally.catalog.changes.diff import diff_definitions
    from tally.cli.diff_cmds import print_report
    from tally.feature_repo.registry import plan as registry_plan

    project = current_project()
    changes, report = registry_plan(project), diff_definitions(project)
    if as_json:
        print_json({"feast": [asdict(c) for c in changes], "definitions": report.to_dict()})
        return
    _print_changes(changes, False, "plan")
    print_report(report)


AcceptBreaking = Annotated[bool, typer.Option(
    "--accept-breaking", help="Apply even when a breaking change reaches a model.")]


def apply(as_of: AsOf = None, allow_violations: AllowViolations = False,
          accept_breaking: AcceptBreaking = False,
          as_json: Annotated[bool, JsonOption] = False) -> None:
    """Register every table as a Feast FeatureView and every model as a FeatureService."""
    from tally.feature_repo.registry import apply as registry_apply

    changes = registry_apply(current_project(), _run_gate(as_of, allow_violations),
                             accept_breaking=accept_breaking)
    _print_changes(changes, as_json, "applied")


def materialize(
    start: Annotated[str | None, typer.Option("--start", help="From (default: last run).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Up to (default: now).")] = None,
    as_of: AsOf = None,
    allow_violations: AllowViolations = False,
) -> None:
    """Load the newest feature values into the online store (SQLite)."""
    from tally.feature_repo.serving import materialize as run

    with _next_step():
        views = run(current_project(), parse_moment(start, "start"), parse_moment(end, "end"),
                    _run_gate(as_of, allow_violations))
    err(f"materialized {len(views)} feature views into the online store")


def training_frame(
    entities: Annotated[Path, typer.Option("--entities", help="Entity rows (.parquet/.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write (.parquet/.csv).")],
    model: Annotated[str | None, typer.Option("--model", help="A model's features.")] = None,
    features: Annotated[str | None, typer.Option("--features", help="A,B,C")] = None,
    timestamp_column: Annotated[str, typer.Option(
        "--timestamp-column", help="The entity rows' time column (ISO 8601).")
    ] = "event_timestamp",
) -> None:
    """Point-in-time-correct training data for entity rows, in their order."""
    from tally.feature_repo.serving import check_frame_path, read_entity_file, write_frame
    from tally.feature_repo.serving import training_frame as build

    names = [f.strip() for f in features.split(",") if f.strip()] if features else None
    if (model is None) == (names is None):
        raise UsageError("give exactly one of --model NAME or --features A,B")
    check_frame_path(out)  # before the frame is built, not after
    with _next_step():
        frame = build(read_entity_file(entities), model=model, features=names,
                      project=current_project(), timestamp_column=timestamp_column)
    write_frame(frame, out)
    err(f"wrote {len(frame):,} rows x {len(frame.columns)} columns to {out}")


def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the demo project.")] = Path(
        "tally-demo"),
    accounts: Annotated[int, typer.Option("--accounts", min=10, max=1_000_000,
                                          help="How many accounts to generate.")] = 3000,
) -> None:
    """The whole flow on generated adoption data: validate, check, compute, apply,
    materialize, and a churn_risk training frame with renewal labels."""
    from tally.feature_repo.demo import run_demo

    report = run_demo(directory, accounts=accounts, on_step=lambda s: err(f"... {s}"))
    console = stdout_console()
    from rich.table import Table

    table = Table("step", "seconds", "what", title=f"tally demo in {report.root}")
    for step in report.steps:
        table.add_row(step.name, f"{step.seconds:.1f}", step.summary)
    console.print(table)
    for line in report.notes:
        console.print(line)


def register_commands(app: typer.Typer) -> None:
    app.command()(compute)
    app.command()(plan)
    app.command()(apply)
    app.command()(materialize)
    app.command("training-frame")(training_frame)
    app.command()(demo)
