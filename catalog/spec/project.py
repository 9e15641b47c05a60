"""A project: its definitions loaded from metrics/*.yaml, validated in two phases."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tally.catalog.errors import DefinitionError, Issue, ProjectNotFoundError
from tally.catalog.store.fsutil import METRICS_DIR, find_definition_files
from tally.catalog.spec.models import (
    KIND_KEYS,
    KIND_MODELS,
    KIND_SINGULAR,
    Entity,
    FieldError,
    Metric,
    Model,
    Score,
    Source,
    Spec,
)
from tally.catalog.spec.yamlio import (
    KeyPath,
    LoadedYaml,
    decode_definition_bytes,
    key_path_text,
    parse_yaml_text,
    read_definition_bytes,
)


@dataclass(frozen=True)
class Definition:
    """One definition and where it was written."""

    kind: str  # entity | source | metric | model | score
    spec: Any
    file: str
    line: int
    key_path: KeyPath

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def issue(self, field_path: tuple[str | int, ...], message: str, lines: LoadedYaml) -> Issue:
        path = (*self.key_path, *field_path)
        return Issue(self.file, lines.line_of(path), key_path_text(path), message)


@dataclass(frozen=True)
class MetricGroup:
    """Aggregate metrics sharing (source, entity, grain): one scan, one table, one FeatureView."""

    source: str
    entity: str
    grain: timedelta
    metrics: tuple[str, ...]

    @property
    def name(self) -> str:
        from tally.catalog.spec.durations import format_duration

        return f"{self.source}_{format_duration(self.grain)}"


@dataclass
class Project:
    root: Path
    definitions: dict[str, Definition] = field(default_factory=dict)
    file_hashes: dict[str, str] = field(default_factory=dict)

    _by_kind: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def add(self, definition: Definition) -> None:
        """Register a definition (validation does, once per name)."""
        self.definitions[definition.name] = definition
        self._by_kind.setdefault(definition.kind, {})[definition.name] = definition.spec

    # -- lookups (kept per kind as definitions are added: loops read them constantly) --
    def _of(self, kind: str) -> dict[str, Any]:
        return self._by_kind.setdefault(kind, {})

    @property
    def entities(self) -> dict[str, Entity]:
        return self._of("entity")

    @property
    def sources(self) -> dict[str, Source]:
        return self._of("source")

    @property
    def metrics(self) -> dict[str, Metric]:
        return self._of("metric")

    @property
    def models(self) -> dict[str, Model]:
        return self._of("model")

    @property
    def scores(self) -> dict[str, Score]:
        return self._of("score")

    def get(self, name: str) -> Definition | None:
        return self.definitions.get(name)

    # -- semantics shared by compute, registration and the catalog ------------------
    def entity_of(self, name: str) -> str | None:
        return _entity_of(self, name, set())

    def grain_of(self, name: str) -> timedelta | None:
        return _grain_of(self, name, set())

    def ttl_of(self, name: str) -> timedelta | None:
        """Feast ttl of a metric or score; None means no expiry."""
        return _ttl_of(self, name, set())

    def derived_inputs(self, metric: Metric) -> list[str]:
        from tally.catalog.spec.sqlcheck import check_expression

        return sorted(check_expression(metric.expression).columns)

    def groups(self) -> list[MetricGroup]:
        grouped: dict[tuple[str, str, timedelta], list[str]] = {}
        for name, metric in sorted(self.metrics.items()):
            if metric.type != "aggregate" or metric.source not in self.sources:
                continue
            source = self.sources[metric.source]
            grouped.setdefault((source.name, source.entity, metric.grain_delta), []).append(name)
        return [MetricGroup(s, e, g, tuple(m)) for (s, e, g), m in sorted(grouped.items())]


def _entity_of(project: Project, name: str, seen: set[str]) -> str | None:
    if name in seen:
        return None
    seen.add(name)
    spec = project.definitions[name].spec if name in project.definitions else None
    if isinstance(spec, Score):
        return spec.entity
    if isinstance(spec, Source):
        return spec.entity
    if not isinstance(spec, Metric):
        return None
    if spec.type != "derived":
        source = project.sources.get(spec.source or "")
        return source.entity if source else None
    entities = {_entity_of(project, i, seen) for i in project.derived_inputs(spec)}
    entities.discard(None)
    return entities.pop() if len(entities) == 1 else None


def _grain_of(project: Project, name: str, seen: set[str]) -> timedelta | None:
    if name in seen:
        return None
    seen.add(name)
    metric = project.metrics.get(name)
    if metric is None:
        return None
    if metric.type == "aggregate":
        return metric.grain_delta
    if metric.type == "column":
        return None
    grains = {_grain_of(project, i, seen) for i in project.derived_inputs(metric)}
    grains.discard(None)
    return grains.pop() if len(grains) == 1 else None


def _ttl_of(project: Project, name: str, seen: set[str]) -> timedelta | None:
    if name in seen:
        return None
    seen.add(name)
    score = project.scores.get(name)
    if score is not None:
        ttls = [_ttl_of(project, c.metric, set(seen)) for c in score.components]
        return None if any(t is None for t in ttls) else max(ttls)  # type: ignore[type-var]
    metric = project.metrics.get(name)
    if metric is None:
        return None
    if metric.type != "derived":
        return metric.own_ttl()
    ttls = [_ttl_of(project, i, set(seen)) for i in project.derived_inputs(metric)]  # per path
    return None if not ttls or any(t is None for t in ttls) else max(ttls)  # type: ignore[type-var]


# -- loading -----------------------------------------------------------------------------

_PYDANTIC_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _pydantic_issues(
    exc: ValidationError, base: KeyPath, loaded: LoadedYaml, model: type[Spec]
) -> list[Issue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, cause.field)
        path = (*base, *loc)
        kind = error["type"]
        message = _PYDANTIC_MESSAGES.get(kind, error["msg"])
        if kind == "extra_forbidden" and len(loc) == 1:
            allowed = ", ".join(model.model_fields)
            message = f"unknown key; allowed keys here are: {allowed}"
        elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
            message = (f"{error['input']!r} is not a valid name; use lower snake case "
                       "matching ^[a-z][a-z0-9_]{0,62}$")
        elif kind == "value_error":
            message = error["msg"].removeprefix("Value error, ")
        issues.append(Issue(loaded.file, loaded.line_of(path), key_path_text(path), message))
    return issues


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
                issues.extend(_pydantic_issues(exc, path, loaded, model))
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
            f"{root}` to create one, or pass --project DIR."
        )
    return root


def load_project(
    root: Path | str = ".",
    *,
    overrides: dict[str, str | None] | None = None,
) -> Project:
    """Load and validate every definition under root/metrics.

    `overrides` maps a project-relative file name to new text (or None to drop the file),
    so a change can be validated together with the project before anything is written.
    Raises DefinitionError with every issue found.
    """
    from tally.catalog.store.fsutil import pending_commit
    from tally.catalog.spec.validate import cross_check

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
    for loaded in loaded_files.values():
        found, problems = parse_definitions(loaded)
        definitions.extend(found)
        issues.extend(problems)
    project = Project(root=root, file_hashes=hashes)
    issues.extend(cross_check(project, definitions, loaded_files))
    if issues:
        raise DefinitionError(issues)
    return project


