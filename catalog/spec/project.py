"""A project: its definitions and the semantics shared by compute, registration and the
catalog. Loading and validating one from metrics/*.yaml is `spec.loading`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tally.catalog.errors import Issue
from tally.catalog.spec.durations import parse_duration
from tally.catalog.spec.models import Entity, Metric, Model, Score, Source
from tally.catalog.spec.yamlio import KeyPath, LoadedYaml, key_path_text

# `name__vN`: the feature serving version N of metric `name` (and a pin in an expression)
PINNED_COLUMN = re.compile(r"^(?P<base>[a-z][a-z0-9_]*?)__v(?P<version>[1-9][0-9]*)$")


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


@dataclass(frozen=True)
class MetricVersions:
    """Every version of one metric name and the feature that serves each
    (spec.versions builds them while the project validates)."""

    name: str
    definitions: dict[int, Definition]
    current: int
    served: dict[int, str]  # version -> feature name; the current one also as `name`

    @property
    def numbers(self) -> list[int]:
        return sorted(self.definitions)


def split_reference(reference: str) -> tuple[str, int | None]:
    """`name@N` -> (name, N); `name` -> (name, None)."""
    name, at, version = reference.partition("@")
    return (name, int(version)) if at else (name, None)


@dataclass
class Project:
    root: Path
    definitions: dict[str, Definition] = field(default_factory=dict)
    file_hashes: dict[str, str] = field(default_factory=dict)
    versions: dict[str, MetricVersions] = field(default_factory=dict)  # per metric name
    warnings: list[Issue] = field(default_factory=list)  # e.g. a deprecated version read

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

    # -- metric versions (docs/definitions.md) ------------------------------------------
    def resolve(self, reference: str) -> str | None:
        """The feature serving a reference (`name` or `name@N`), or None when N is no
        version of the metric `name`. A pin of a metric's only version that nothing else
        pins is served by `name` itself."""
        name, version = split_reference(reference)
        if version is None:
            return name
        versions = self.versions.get(name)
        if versions is None or version not in versions.definitions:
            return None
        if version in versions.served:
            return versions.served[version]
        return name if len(versions.definitions) == 1 else None

    def version_of(self, feature: str) -> tuple[str, int] | None:
        """(metric name, version) a served metric feature computes, or None."""
        match = PINNED_COLUMN.match(feature)
        if match and match["base"] in self.versions:
            versions = self.versions[match["base"]]
            if versions.served.get(int(match["version"])) == feature:
                return versions.name, int(match["version"])
        if feature in self.versions:
            return feature, self.versions[feature].current
        return None

    def is_version_copy(self, name: str) -> bool:
        """Whether `name` is the `name__vN` feature of a version, not a definition itself."""
        found = self.version_of(name)
        return found is not None and found[0] != name

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

        return sorted(check_expression(metric.sql).columns)

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
    if spec.type == "funnel":
        return spec.entity
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
    if metric.type in ("aggregate", "funnel"):
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
        if score.ttl:
            return parse_duration(score.ttl)
        return _smallest([_ttl_of(project, c.metric, set(seen)) for c in score.components])
    metric = project.metrics.get(name)
    if metric is None:
        return None
    if metric.type != "derived" or metric.ttl:
        return metric.own_ttl()
    return _smallest([_ttl_of(project, i, set(seen)) for i in project.derived_inputs(metric)])


def _smallest(ttls: list[timedelta | None]) -> timedelta | None:
    """The smallest ttl, None (no expiry) counting as the largest: a derived value is never
    served when an input it was computed from would have expired (DESIGN.md)."""
    finite = [t for t in ttls if t is not None]
    return min(finite) if finite else None
