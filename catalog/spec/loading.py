"""Loading a project from metrics/*.yaml, validated in two phases: each file's definitions
against their models (`parse_definitions`), then the rules across definitions
(`spec.validate.cross_check`)."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

from pydantic import ValidationError
from tally.catalog.errors import DefinitionError, Issue, ProjectNotFoundError
from tally.catalog.spec.issues import pydantic_issues
from tally.catalog.spec.models import KIND_KEYS, KIND_MODELS, KIND_SINGULAR
from tally.catalog.spec.project import Definition, Project
from tally.catalog.spec.validate import cross_check
from tally.catalog.spec.yamlio import (
    KeyPath,
    LoadedYaml,
    decode_definition_bytes,
    key_path_text,
    parse_yaml_text,
    read_definition_bytes,
)
from tally.catalog.store.fsutil import find_definition_files, pending_commit
from tally.catalog.store.paths import METRICS_DIR


def invalid_names(loaded: LoadedYaml, parsed: list[Definition]) -> dict[str, str]:
    """name -> kind of the file's definitions that have a name but failed their model."""
    valid = {(d.kind, d.name) for d in parsed}
    data = loaded.data if isinstance(loaded.data, dict) else {}
    out: dict[str, str] = {}
    for key, items in data.items():
        if key not in KIND_MODELS or not isinstance(items, list):
            continue
        for item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and (KIND_SINGULAR[key], name) not in valid:
                out[name] = KIND_SINGULAR[key]
    return out


def parse_definitions(loaded: LoadedYaml) -> tuple[list[Definition], list[Issue]]:
    """Phase one: one file's definitions, each checked against its model."""
    data = loaded.data
    if data is None:
        return [], [Issue(loaded.file, 1, "", "the file is empty; give it at least one of the "
                          f"keys {', '.join(KIND_KEYS)}")]
    if not isinstance(data, dict):
        return [], [Issue(loaded.file, 1, "", "the top level must be a mapping with keys "
                          f"{', '.join(KIND_KEYS)}")]
    definitions: list[Definition] = []
    issues: list[Issue] = []
    for key, items in data.items():
        if key not in KIND_MODELS:
            issues.append(Issue(loaded.file, loaded.line_of((key,)), str(key),
                                f"unknown top-level key; allowed: {', '.join(KIND_KEYS)}"))
            continue
        if not isinstance(items, list):
            issues.append(Issue(loaded.file, loaded.line_of((key,)), key,
                                "must be a list of definitions (items starting with `- `)"))
            continue
        model = KIND_MODELS[key]
        for index, item in enumerate(items):
            path: KeyPath = (key, index)
            if not isinstance(item, dict):
                issues.append(Issue(loaded.file, loaded.line_of(path), key_path_text(path),
                                    f"each {KIND_SINGULAR[key]} must be a mapping"))
                continue
            try:
                spec = model.model_validate(item)
            except ValidationError as exc:
                issues.extend(pydantic_issues(exc, path, loaded, model))
                continue
            definitions.append(
                Definition(KIND_SINGULAR[key], spec, loaded.file, loaded.line_of(path), path)
            )
    return definitions, issues


def check_project_root(root: Path) -> Path:
    root = Path(root).resolve()
    if not (root / METRICS_DIR).is_dir():
        raise ProjectNotFoundError(
            f"{root} is not a Tally project: it has no {METRICS_DIR}/ folder. Run `tally init "
            f"{root}` to create one, or point `project` at a project folder.",
            mentions=("project",)
        )
    return root


def load_project(
    root: Path | str = ".",
    *,
    overrides: dict[str, str | None] | None = None,
    today: date | None = None,
) -> Project:
    """Load and validate every definition under root/metrics.

    `overrides` maps a project-relative file name to new text (or None to drop the file),
    so a change can be validated together with the project before anything is written.
    `today` (default: the UTC date) decides which `deprecated_on` dates have passed.
    Raises DefinitionError with every issue found; warnings land in `project.warnings`.
    """
    root = check_project_root(Path(root))
    texts: dict[str, LoadedYaml | None] = {}
    issues: list[Issue] = []
    hashes: dict[str, str] = {}
    # a multi-file commit a killed writer left half done counts as done (fsutil.commit_files)
    overrides = {**pending_commit(root), **(overrides or {})}
    for path in find_definition_files(root):
        shown = path.relative_to(root).as_posix()
        if shown in overrides:
            continue
        data, problems = read_definition_bytes(path, shown)
        if data is None and not path.exists():
            continue  # removed by a concurrent writer since the listing: not part of the project
        loaded = None
        if data is not None:  # hashed from the very bytes parsed, so the index never
            hashes[shown] = hashlib.sha256(data).hexdigest()  # records unparsed content
            text, problems = decode_definition_bytes(data, shown)
            if text is not None:
                loaded, problems = parse_yaml_text(text, shown)
        issues.extend(problems)
        texts[shown] = loaded
    for shown, text in overrides.items():
        if text is None:
            continue
        loaded, problems = parse_yaml_text(text, shown)
        issues.extend(problems)
        texts[shown] = loaded
        hashes[shown] = hashlib.sha256(text.encode()).hexdigest()
    definitions: list[Definition] = []
    loaded_files = {name: loaded for name, loaded in texts.items() if loaded is not None}
    invalid: dict[str, str] = {}
    for loaded in loaded_files.values():
        found, problems = parse_definitions(loaded)
        definitions.extend(found)
        issues.extend(problems)
        invalid.update(invalid_names(loaded, found))
    project = Project(root=root, file_hashes=hashes)
    issues.extend(cross_check(project, definitions, loaded_files, invalid, today=today))
    if issues:
        raise DefinitionError(issues)
    return project


