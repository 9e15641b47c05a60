"""`tally init`, `validate`, `register`. (`show` lives in cli/catalog_cmds.py.)

Catalog imports happen inside the commands, so `tally search` does not pay for loading
the spec models (pydantic) it does not need."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tally.cli.common import (
    JsonOption,
    err,
    print_json,
    project_root,
    show_warnings,
    wait_notice,
)


def init(directory: Annotated[Path, typer.Argument(help="Folder for the new project.")]) -> None:
    """Scaffold a project: metrics/ with one example, feature_repo/feature_store.yaml."""
    from tally.feature_repo.scaffold import init_project

    scaffold = init_project(directory)
    for path in scaffold.written:
        err(f"wrote {path}")
    for path in scaffold.extended:
        err(f"added Tally's lines to {path} (your lines are kept)")
    for path in scaffold.kept:
        err(f"kept your {path} as it is")
    err(f"next: cd {directory} && tally validate")


def validate(as_json: Annotated[bool, JsonOption] = False) -> None:
    """Load and validate every definition; report every problem at once."""
    from tally.catalog.errors import DefinitionError
    from tally.catalog.spec.loading import load_project

    try:
        project = load_project(project_root())
    except DefinitionError as exc:
        if as_json:
            print_json({"ok": False, "issues": [i.to_dict() for i in exc.issues]})
            raise typer.Exit(1) from None
        raise
    counts: dict[str, int] = {}
    for definition in project.definitions.values():
        if not project.is_version_copy(definition.name):
            counts[definition.kind] = counts.get(definition.kind, 0) + 1
    if as_json:
        print_json({"ok": True, "counts": counts, "issues": [],
                    "warnings": [w.to_dict() for w in project.warnings]})
        return
    show_warnings(project)
    summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(counts.items()))
    files = len(project.file_hashes)
    err(f"ok: {summary} in {files} file{'s' if files != 1 else ''}")


def register(
    file: Annotated[Path, typer.Argument(help="A YAML file of definitions.")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace definitions of the same names.")
    ] = False,
) -> None:
    """Validate FILE together with the project, then add it under metrics/ atomically."""
    from tally.catalog.spec.authoring import register_file

    result = register_file(project_root(), file, replace=replace, on_wait=wait_notice)
    err(f"registered {', '.join(result.names) or 'no definitions'} as {result.path}")
    if result.replaced:
        err(f"replaced {', '.join(result.replaced)}")


def register_commands(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(validate)
    app.command()(register)
