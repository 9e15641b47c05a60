"""Who reads a definition: the derived metrics, scores and models downstream of it, each
with its owner and whether it reads a pinned version (`name@N`) or the current one."""

from __future__ import annotations

from dataclasses import dataclass

from tally.catalog.spec.project import Project
from tally.catalog.spec.versions import references


@dataclass(frozen=True)
class Reader:
    kind: str  # metric | score | model
    name: str  # `name@N` for a pinned version of a metric
    owner: str
    pinned: bool  # reads a pinned version rather than the current one
    via: str | None  # the reader it is reached through; None when it reads the thing itself


def _features_of(project: Project, kind: str, name: str, version: int | None) -> set[str]:
    """The served features whose values a change of (kind, name, version) changes."""
    if kind == "score":
        return {name} if name in project.scores else set()
    if kind == "source":
        return {f for f, m in project.metrics.items() if m.source == name}
    versions = project.versions.get(name) if kind == "metric" else None
    if versions is None:
        return set()
    if version is None:  # the name itself (its current version moved)
        return {name}
    features = {versions.served[version]} if version in versions.served else set()
    return features | ({name} if versions.current == version else set())


def _label(project: Project, feature: str) -> str:
    found = project.version_of(feature)
    return f"{found[0]}@{found[1]}" if found and found[0] != feature else feature


def readers_of(project: Project, kind: str, name: str, version: int | None) -> list[Reader]:
    """Every derived metric, score and model downstream of the definition, once each."""
    reading: dict[str, list[tuple[str, str]]] = {}  # feature -> [(reader name, its kind)]
    for definition, _, feature in references(project):
        entry = (definition.name, definition.kind)
        if entry not in reading.setdefault(feature, []):
            reading[feature].append(entry)
    found: dict[tuple[str, str], Reader] = {}
    queue: list[tuple[str, str | None]] = [
        (f, None) for f in sorted(_features_of(project, kind, name, version))]
    while queue:
        feature, via = queue.pop(0)
        for reader, reader_kind in reading.get(feature, []):
            label = _label(project, reader) if reader_kind == "metric" else reader
            if (reader_kind, label) in found:
                continue
            owner = str(project.definitions[reader].spec.owner)
            pinned = via is None and _label(project, feature) != feature
            found[(reader_kind, label)] = Reader(reader_kind, label, owner, pinned, via)
            if reader_kind in ("metric", "score"):
                queue.append((reader, label))
    return sorted(found.values(), key=lambda r: (r.via is not None, r.kind, r.name))
