"""`tally init`, `validate`, `register`, `show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catalog.authoring import init_project, register_file
from catalog.errors import DefinitionError, LookupFailedError
from catalog.project import load_project
from catalog.spec import spec_to_yaml_dict

from .common import JsonOption, err, print_json, project_root, stdout_console, wait_notice


def init(directory: Annotated[Path, typer.Argument(help="Folder for the new project.")]) -> None:
    """Scaffold a project: metrics/ with one example, feature_repo/feature_store.yaml."""
    for path in init_project(directory):
        err(f"wrote {path}")
    err(f"next: cd {directory} && tally validate")


def validate(as_json: Annotated[bool, JsonOption] = False) -> None:
    """Load and validate every definition; report every problem at once."""
    try:
        project = load_project(project_root())
    except DefinitionError as exc:
        if as_json:
            print_json({"ok": False, "issues": [i.to_dict() for i in exc.issues]})
            raise typer.Exit(1) from None
        raise
    counts: dict[str, int] = {}
    for definition in project.definitions.values():
        counts[definition.kind] = counts.get(definition.kind, 0) + 1
    if as_json:
        print_json({"ok": True, "counts": counts, "issues": []})
        return
    summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(counts.items()))
    err(f"ok: {summary} in {len(project.file_hashes)} files")


def register(
    file: Annotated[Path, typer.Argument(help="A YAML file of definitions.")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace definitions of the same names.")
    ] = False,
) -> None:
    """Validate FILE together with the project, then add it under metrics/ atomically."""
    result = register_file(project_root(), file, replace=replace, on_wait=wait_notice)
    err(f"registered {', '.join(result.names) or 'no definitions'} as {result.path}")
    if result.replaced:
        err(f"replaced {', '.join(result.replaced)}")


def show(
    name: Annotated[str, typer.Argument(help="Any entity, source, metric, model or score.")],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """One definition: what it says, where it is written."""
    project = load_project(project_root())
    definition = project.get(name)
    if definition is None:
        raise LookupFailedError(f"no definition named {name!r}; try `tally search {name}`")
    card = {"kind": definition.kind, "name": name, "file": definition.file,
            "line": definition.line, "definition": spec_to_yaml_dict(definition.spec)}
    if as_json:
        print_json(card)
        return
    console = stdout_console()
    console.print(f"[bold]{name}[/] ({definition.kind}) {definition.file}:{definition.line}")
    for key, value in card["definition"].items():
        console.print(f"  {key}: {value}")


def register_commands(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(validate)
    app.command()(register)
    app.command()(show)
