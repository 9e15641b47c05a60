"""Entry point: `tally [--project DIR] [--debug] COMMAND`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from tally.catalog.errors import TallyError, UsageError
from tally.cli import common, definitions_cmds, metric_cmds

app = typer.Typer(
    name="tally",
    help="Tally: business metrics declared once in YAML, computed once, served through Feast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    project: Annotated[
        Path, typer.Option("--project", "-p", help="The project folder (default: here).")
    ] = Path("."),
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    common.STATE.project = project
    common.STATE.debug = debug


definitions_cmds.register_commands(app)
app.add_typer(metric_cmds.app, name="metric")


def _load_optional_groups() -> None:
    """Command groups of later layers; each module adds its own commands."""
    import importlib

    for module in ("tally.cli.compute_cmds", "tally.cli.catalog_cmds", "tally.cli.contract_cmds",
                   "tally.cli.score_cmds", "tally.cli.ui_cmds", "tally.cli.diff_cmds",
                   "tally.cli.portfolio_cmds", "tally.cli.funnel_cmds"):
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        loaded.register_commands(app)


_load_optional_groups()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; usage errors exit 2 (typer's own handling), Tally errors exit 1."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if not debug:
        import warnings

        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="feast")
    try:
        app(args=args, prog_name="tally")
    except UsageError as exc:
        common.err(f"usage error: {common.error_text(exc)}")
        sys.exit(2)
    except TallyError as exc:
        if debug:
            raise
        common.err(f"error: {common.error_text(exc)}")
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if debug:
            raise
        common.err(f"internal error: {type(exc).__name__}: {exc}\n"
                   "This is a bug in tally; rerun with --debug for the traceback and report it.")
        sys.exit(1)


if __name__ == "__main__":
    main()
