"""Metric versions: several list entries of one metric `name` with distinct `version`s.

`name` means the current version (the newest whose status is not draft); `name@N` pins
version N in models, score components and `--features`, and `name__vN` pins it in derived
expressions (a plain column name, so the SQL allow-list accepts it). A version is served
as its own feature `name__vN` when the metric has several versions or when a reader pins
it; the unpinned `name` always serves the current version. Every served feature is an
ordinary metric of the project, so compute puts each in its group's one scan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date

from tally.catalog.spec.models import Metric, Model, Score
from tally.catalog.spec.project import (
    PINNED_COLUMN,
    Definition,
    MetricVersions,
    Project,
    split_reference,
)
from tally.catalog.spec.sqlcheck import ExpressionRefused, check_expression

Report = Callable[[Definition, tuple[str | int, ...], str], None]


def served_name(name: str, version: int) -> str:
    return f"{name}__v{version}"


def reference_text(name: str, version: int | None) -> str:
    return name if version is None else f"{name}@{version}"


def current_version(specs: dict[int, Metric]) -> int:
    """The newest version whose status is not draft (the newest when all are drafts)."""
    released = [n for n, spec in specs.items() if spec.status != "draft"]
    return max(released or specs)


def _expression_pins(metric: Metric) -> set[tuple[str, int]]:
    try:
        columns = check_expression(metric.sql).columns
    except ExpressionRefused:
        return set()
    found = (PINNED_COLUMN.match(c) for c in columns)
    return {(m["base"], int(m["version"])) for m in found if m}


def _pins(project: Project, extra: list[Definition]) -> set[tuple[str, int]]:
    pins: set[tuple[str, int]] = set()
    references = [f for m in project.models.values() for f in m.features]
    references += [c.metric for s in project.scores.values() for c in s.components]
    for reference in references:
        name, version = split_reference(reference)
        if version is not None:
            pins.add((name, version))
    for spec in [*project.metrics.values(), *(d.spec for d in extra)]:
        if spec.type == "derived":
            pins |= _expression_pins(spec)
    return pins


def expand_versions(project: Project, extra: list[Definition], add: Report) -> None:
    """Give every metric its versions: `name` becomes the current version, and each served
    version is added as the metric `name__vN`. `extra` are the entries after the first of a
    name; readers' `name@N` references are then resolved to the features serving them."""
    by_name: dict[str, dict[int, Definition]] = {
        name: {project.definitions[name].spec.version: project.definitions[name]}
        for name in project.metrics}
    for definition in extra:
        by_name[definition.name][definition.spec.version] = definition
    pins = _pins(project, extra)
    for name, definitions in sorted(by_name.items()):
        current = current_version({n: d.spec for n, d in definitions.items()})
        project.add(definitions[current])
        wanted = set(definitions) if len(definitions) > 1 else {
            v for base, v in pins if base == name and v in definitions}
        served = {}
        for version in sorted(wanted):
            feature = served_name(name, version)
            other = project.definitions.get(feature)
            if other is not None:
                add(definitions[version], ("version",), f"version {version} of {name} is "
                    f"served as {feature!r}, which the {other.kind} at {other.file}:"
                    f"{other.line} already names; rename that one")
                continue
            definition = definitions[version]
            project.add(replace(definition, spec=definition.spec.model_copy(
                update={"name": feature})))
            served[version] = feature
        project.versions[name] = MetricVersions(name, definitions, current, served)
    _resolve_readers(project, add)


def _unknown_version(project: Project, reference: str) -> str:
    name, version = split_reference(reference)
    versions = project.versions.get(name)
    if versions is None:
        return (f"{reference!r} pins version {version} of {name!r}, which is not a metric; "
                "only metrics have versions")
    listing = ", ".join(map(str, versions.numbers))
    return f"metric {name!r} has no version {version} (its versions: {listing})"


def _resolve_readers(project: Project, add: Report) -> None:
    for name, model in list(project.models.items()):
        definition = project.definitions[name]
        features = []
        for index, reference in enumerate(model.features):
            feature = project.resolve(reference)
            if feature is None:
                add(definition, ("features", index), _unknown_version(project, reference))
            features.append(feature or reference)
        project.add(replace(definition, spec=model.model_copy(update={"features": features})))
    for name, score in list(project.scores.items()):
        definition = project.definitions[name]
        components = []
        for index, component in enumerate(score.components):
            feature = project.resolve(component.metric)
            if feature is None:
                add(definition, ("components", index, "metric"),
                    _unknown_version(project, component.metric))
            components.append(component.model_copy(
                update={"metric": feature or component.metric}))
        project.add(replace(definition, spec=score.model_copy(
            update={"components": components})))


def _replacement(versions: MetricVersions, version: int, today: date) -> str | None:
    """The newest released version other than `version` not deprecated by today."""
    for number in sorted(versions.definitions, reverse=True):
        spec = versions.definitions[number].spec
        deprecated = spec.deprecated_on is not None and spec.deprecated_on <= today
        if number != version and spec.status != "draft" and not deprecated:
            return reference_text(versions.name, None if number == versions.current
                                  else number)
    return None


def references(project: Project) -> list[tuple[Definition, tuple[str | int, ...], str]]:
    """(reader, field, feature read) for every model, score and derived metric input."""
    found: list[tuple[Definition, tuple[str | int, ...], str]] = []
    for name, spec in [*project.models.items(), *project.scores.items(),
                       *project.metrics.items()]:
        definition = project.definitions[name]
        if isinstance(spec, Model):
            found += [(definition, ("features", i), f) for i, f in enumerate(spec.features)]
        elif isinstance(spec, Score):
            found += [(definition, ("components", i, "metric"), c.metric)
                      for i, c in enumerate(spec.components)]
        elif isinstance(spec, Metric) and spec.type == "derived":
            try:
                inputs = check_expression(spec.sql).columns
            except ExpressionRefused:
                continue
            found += [(definition, ("expression",), f) for f in sorted(inputs)]
    return found


def check_deprecations(project: Project, today: date, add: Report, warn: Report) -> None:
    """A reader of a version with `deprecated_on` gets a warning before that date and an
    error on and after it, naming the replacement."""
    for reader, field, feature in references(project):
        found = project.version_of(feature)
        if found is None:
            continue
        name, version = found
        versions = project.versions[name]
        spec = versions.definitions[version].spec
        if spec.deprecated_on is None:
            continue
        replacement = _replacement(versions, version, today)
        move = f"move to {replacement}" if replacement else "no replacement is declared"
        what = f"{name}@{version} (read as {feature!r})"
        if today >= spec.deprecated_on:
            add(reader, field, f"{what} was deprecated on {spec.deprecated_on}; {move}")
        else:
            days = (spec.deprecated_on - today).days
            warn(reader, field, f"{what} is deprecated on {spec.deprecated_on} (in {days} "
                 f"day{'s' if days != 1 else ''}); {move}")
