"""What every command shares: the project folder, stdout/stderr consoles, JSON output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from tally.catalog.errors import TallyError


@dataclass
class State:
    project: Path = Path(".")
    debug: bool = False


STATE = State()


def project_root() -> Path:
    return STATE.project


def current_project() -> Any:
    """The project at --project, loaded (pydantic and the spec models are imported here,
    not when the CLI starts: search and show never need them)."""
    from tally.catalog.spec.loading import load_project

    project = load_project(project_root())
    show_warnings(project)
    return project


def show_warnings(project: Any) -> None:
    """The project's validation warnings (e.g. a deprecated version read), on stderr."""
    for warning in project.warnings:
        err(f"warning: {warning.render()}")


def err(message: str) -> None:
    """A diagnostic line on stderr."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def wait_notice(message: str) -> None:
    err(message)


# library parameter -> the flag that sets it, where the flag is not --<name with dashes>
FLAGS = {"tags": "--tag", "metrics": "--metric"}


def flag_of(option: str) -> str:
    return FLAGS.get(option, "--" + option.replace("_", "-"))


def error_text(exc: TallyError) -> str:
    """A library error as the CLI says it: the options it names spelled as flags."""
    return exc.render(flag_of)


JsonOption = typer.Option("--json", help="Print JSON only, on stdout.")


def keep_names_whole(table: Any, *name_columns: int) -> Any:
    """Tables never cut a name: the name columns keep their widest cell on one line, and the
    other columns wrap (fold) instead of ending in `…`, at any terminal width (80 columns
    when piped)."""
    from rich.cells import cell_len

    for index, column in enumerate(table.columns):
        cells = [str(column.header), *(str(c) for c in column._cells)]
        if index in name_columns:
            column.no_wrap = True
            column.min_width = max(cell_len(c) for c in cells)
        else:  # wrapped between words where room allows, else folded
            column.overflow, column.no_wrap = "fold", False
    return table
