"""Changing a project's definitions: init, register, metric new. Validate first, then write."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.catalog.errors import DefinitionError, Issue, TallyError, UsageError
from tally.catalog.spec.loading import check_project_root, load_project
from tally.catalog.spec.models import KIND_KEYS, NAME_PATTERN
from tally.catalog.spec.yamlio import (
    decode_definition_bytes,
    parse_yaml_text,
    read_definition_bytes,
    read_yaml_file,
)
from tally.catalog.store.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    clean_temp_files,
    commit_files,
    find_definition_files,
    finish_commit,
    project_lock,
)
from tally.catalog.store.paths import (
    FEASTIGNORE,
    FEATURE_STORE_YAML,
    METRICS_DIR,
    STATE_DIR,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def yaml_text(data: Any) -> str:
    """Definitions as YAML, as Tally writes them (block style, 2-space indents)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


@dataclass(frozen=True)
class Scaffold:
    """What `init` did: files written, files of the user's kept as they were, and files
    of the user's that gained Tally's lines (an existing .gitignore)."""

    written: list[Path]
    kept: list[Path]
    extended: list[Path]


def init_project(target: Path, *, name: str | None = None,
                 extra_files: Mapping[Path, str] | None = None) -> Scaffold:
    """Scaffold a project that validates, checks, computes and applies as made (with a
    sample data file); refuse a folder that already holds a project, never overwrite a
    user's file.

    `extra_files` (project-relative path -> text) are written with it: the Feast side adds
    its definitions.py this way (`tally.feature_repo.scaffold`), so catalog/ holds no copy."""
    from tally.catalog.spec.sample_data import SAMPLE_PATH, sample_logins

    target = Path(target)
    if (target / METRICS_DIR).exists() or (target / FEATURE_STORE_YAML).exists():
        raise TallyError(f"{target} already holds a Tally project (metrics/ or "
                         "feature_repo/feature_store.yaml exists); choose an empty folder")
    project_name = name or re.sub(r"[^a-z0-9_]", "_", target.resolve().name.lower()) or "tally"
    if not re.match(r"^[a-z]", project_name):
        project_name = f"tally_{project_name}"
    files: dict[Path, bytes] = {
        Path(METRICS_DIR) / "example.yaml": (TEMPLATES / "example.yaml").read_bytes(),
        FEATURE_STORE_YAML: (TEMPLATES / "feature_store.yaml")
        .read_text().replace("{project}", project_name).encode(),
        FEASTIGNORE: (TEMPLATES / "feastignore").read_bytes(),
        SAMPLE_PATH: sample_logins(),
        **{path: text.encode() for path, text in (extra_files or {}).items()},
    }
    done = Scaffold([], [], [])
    target.mkdir(parents=True, exist_ok=True)
    with project_lock(target):
        for relative, data in files.items():
            path = target / relative
            if path.exists():
                done.kept.append(path)
                continue
            atomic_write_bytes(path, data)
            done.written.append(path)
        _extend_gitignore(target / ".gitignore", done)
    return done


def _extend_gitignore(path: Path, done: Scaffold) -> None:
    """Tally's ignore lines added to a .gitignore, the user's own lines all kept."""
    ours = (TEMPLATES / "gitignore").read_text().splitlines()
    if not path.exists():
        atomic_write_text(path, "\n".join(ours) + "\n")
        done.written.append(path)
        return
    text = path.read_text("utf-8", errors="surrogateescape")
    have = {line.strip() for line in text.splitlines()}
    missing = [line for line in ours if line.strip() and line.strip() not in have]
    if not missing:
        done.kept.append(path)
        return
    joined = text + ("" if not text or text.endswith("\n") else "\n")
    atomic_write_bytes(path, (joined + "# Tally\n" + "\n".join(missing) + "\n").encode(
        "utf-8", errors="surrogateescape"))
    done.extended.append(path)


@dataclass(frozen=True)
class Registered:
    path: Path
    names: list[str]
    replaced: list[str]
    removed_from: list[Path]


def _identity(kind: str, item: dict[str, Any]) -> str:
    """What a definition replaces: its name, and for a metric beyond version 1 `name@N`
    (each version of a metric is a definition of its own)."""
    version = item.get("version", 1) if kind == "metrics" else 1
    return item["name"] if version == 1 else f"{item['name']}@{version}"


def _names_of(loaded_data: Any) -> list[tuple[str, int, str]]:
    out = []
    if isinstance(loaded_data, dict):
        for kind in KIND_KEYS:
            items = loaded_data.get(kind)
            for index, item in enumerate(items if isinstance(items, list) else []):
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    out.append((kind, index, _identity(kind, item)))
    return out


def _without_names(path: Path, names: set[str]) -> str | None:
    """The file's text with the definitions named in `names` removed, comments kept."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt", pure=True)
    data = yaml.load(path.read_text("utf-8"))
    changed = False
    for kind in KIND_KEYS:
        items = data.get(kind) if hasattr(data, "get") else None
        if not items:
            continue
        for index in reversed(range(len(items))):
            item = items[index]
            if isinstance(item, dict) and isinstance(item.get("name"), str) and (
                    _identity(kind, item) in names):
                del items[index]
                changed = True
        if not items:
            del data[kind]
    if not changed:
        return None
    return yaml_text(data) if data else ""


def _recover(root: Path) -> None:
    """Undo the traces of a writer killed earlier; call holding the project lock."""
    clean_temp_files(root / METRICS_DIR)
    clean_temp_files(root / STATE_DIR, recursive=False)
    finish_commit(root)


def register_file(root: Path | str, file: Path, *, replace: bool = False,
                  on_wait: Any = None) -> Registered:
    """Validate `file` together with the project, then write it as metrics/<file name>.

    With `replace`, an existing file of that name is replaced and definitions of the same
    names in other files are removed from them, all validated together before any write.
    """
    root = check_project_root(Path(root))
    file = Path(file)
    if not file.exists():
        raise UsageError(f"{file}: no such file")
    if file.suffix != ".yaml":
        raise UsageError(f"{file}: definition files end in .yaml")
    if file.name.startswith("."):
        raise UsageError(f"{file}: names starting with `.` are hidden and never loaded; "
                         "rename the file")
    data, issues = read_definition_bytes(file, str(file))
    text, more = decode_definition_bytes(data, str(file)) if data is not None else (None, [])
    if text is None:
        raise DefinitionError([*issues, *more])
    return register_text(root, file.name, text, shown_as=str(file), replace=replace,
                         on_wait=on_wait)


def register_text(root: Path | str, file_name: str, text: str, *, shown_as: str,
                  replace: bool = False, on_wait: Any = None) -> Registered:
    """register_file for text in hand (written as metrics/<file_name>); problems in the
    text itself are reported against `shown_as`."""
    root = check_project_root(Path(root))
    loaded, parsed = parse_yaml_text(text, shown_as)
    if parsed or loaded is None:
        raise DefinitionError(parsed)
    shown = f"{METRICS_DIR}/{file_name}"
    destination = root / shown
    with project_lock(root, on_wait=on_wait):
        _recover(root)
        if destination.exists() and not replace:
            raise DefinitionError([Issue(shown_as, 1, "", f"{shown} already exists; pass "
                                         "`replace` to replace it")], mentions=("replace",))
        existing: dict[str, str] = {}
        for path in find_definition_files(root):
            relative = path.relative_to(root).as_posix()
            if relative == shown:
                continue
            other, _ = read_yaml_file(path, relative)
            for _, _, name in _names_of(other.data if other else None):
                existing[name] = relative
        candidate = _names_of(loaded.data)
        clashes = {name for _, _, name in candidate if name in existing}
        if clashes and not replace:
            raise DefinitionError([
                Issue(shown_as, loaded.line_of((kind, index, "name")), f"{kind}[{index}].name",
                      f"{name!r} already exists in {existing[name]}; pass `replace` to "
                      "replace it")
                for kind, index, name in candidate if name in clashes
            ], mentions=("replace",))
        overrides: dict[str, str | None] = {shown: text}
        for holder in sorted({existing[name] for name in clashes}):
            overrides[holder] = _without_names(root / holder, clashes) or None
        load_project(root, overrides=overrides)
        commit_files(root, overrides)
        removed = [root / relative for relative in overrides if relative != shown]
    return Registered(destination, [n for _, _, n in candidate], sorted(clashes), removed)


def new_metric(root: Path | str, fields: dict[str, Any], *, on_wait: Any = None) -> Path:
    """Write a new aggregate metric as metrics/<name>.yaml after validating it with the project."""
    root = check_project_root(Path(root))
    name = fields.get("name") or ""
    if not re.match(NAME_PATTERN, name):
        raise UsageError(f"{name!r} is not a valid name; use lower snake case matching "
                         f"{NAME_PATTERN}", option="name")
    shown = f"{METRICS_DIR}/{name}.yaml"
    text = yaml_text({"metrics": [{k: v for k, v in fields.items() if v not in (None, [])}]})
    with project_lock(root, on_wait=on_wait):
        _recover(root)
        if (root / shown).exists():
            raise TallyError(f"{shown} already exists; choose another name or edit that file")
        try:
            load_project(root, overrides={shown: text})
        except DefinitionError as exc:
            ours = [i for i in exc.issues if i.file == shown]
            if ours:
                given = [(i, _field_of(i.key)) for i in ours]
                raise DefinitionError(
                    [Issue("(the given fields)", 0, f"`{field}`" if field in fields else i.key,
                           i.message) for i, field in given],
                    mentions=sorted({field for _, field in given if field in fields})) from None
            raise
        commit_files(root, {shown: text})
    return root / shown


def _field_of(key: str) -> str:
    """The field of a metric an issue's key path ends in (`metrics[0].tags[1]` -> tags)."""
    return key.split(".")[-1].split("[")[0]
