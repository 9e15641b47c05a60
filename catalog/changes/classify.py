"""The change plan between two states of the definitions, one entry per changed definition
(a metric per version), classified as the design says:

- `breaking`: served values can change (the fields in BREAKING_FIELDS, a removed
  definition or version, a model no longer reading a version it read, or a metric name whose
  current version moves, which changes what every unpinned reader gets);
- `additive`: a new definition or version, a model reading more (and nothing less);
- `metadata`: anything else (description, owner, tags, status, aliases, expect, ...)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tally.catalog.changes.readers import Reader, readers_of
from tally.catalog.changes.states import DefinitionTexts
from tally.catalog.spec.loading import parse_definitions
from tally.catalog.spec.models import Metric
from tally.catalog.spec.project import Definition, Project, split_reference
from tally.catalog.spec.versions import current_version
from tally.catalog.spec.yamlio import parse_yaml_text

BREAKING_FIELDS: dict[str, frozenset[str]] = {
    "metric": frozenset({"source", "entity", "aggregation", "expression", "filter", "window",
                         "grain", "type", "ttl", "steps", "within", "order", "same",
                         "measure"}),
    "score": frozenset({"entity", "components", "normalize", "missing", "bands"}),
    "source": frozenset({"path", "entity", "timestamp_field", "created_timestamp_field",
                         "format"}),
    "entity": frozenset({"join_key", "value_type"}),
    "model": frozenset(),
}
CLASS_ORDER = {"breaking": 0, "additive": 1, "metadata": 2}
Key = tuple[str, str, int | None]  # kind, name, version (metrics only)


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One changed definition: what changed, how, and (when breaking) whom it reaches."""

    kind: str
    name: str
    version: int | None
    change: str  # breaking | additive | metadata
    action: str  # added | removed | changed
    owner: str
    fields: list[FieldChange] = field(default_factory=list)
    readers: list[Reader] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}" if self.version is not None else self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_state(texts: DefinitionTexts) -> dict[Key, Definition]:
    """Every definition a state's files hold that its own model accepts (phase one only:
    an old state need not validate against today's data files)."""
    found: dict[Key, Definition] = {}
    for file, text in sorted(texts.items()):
        loaded, _ = parse_yaml_text(text, file)
        if loaded is None:
            continue
        definitions, _ = parse_definitions(loaded)
        for d in definitions:
            version = d.spec.version if d.kind == "metric" else None
            found.setdefault((d.kind, d.name, version), d)
    return found


def _dump(definition: Definition) -> dict[str, Any]:
    data: dict[str, Any] = definition.spec.model_dump(mode="json")
    return data


def _field_changes(before: Definition, after: Definition) -> list[FieldChange]:
    old, new = _dump(before), _dump(after)
    return [FieldChange(key, old.get(key), new.get(key))
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _read(features: list[str], currents: dict[str, int]) -> set[tuple[str, int | None]]:
    """What a model's features read in one state: (name, version), pins resolved."""
    read = set()
    for reference in features:
        name, version = split_reference(reference)
        read.add((name, version if version is not None else currents.get(name)))
    return read


def _class_of(kind: str, fields: list[FieldChange],
              currents: tuple[dict[str, int], dict[str, int]]) -> str:
    names = {f.field for f in fields}
    if names & BREAKING_FIELDS[kind]:
        return "breaking"
    if kind == "model" and "features" in names:
        features = next(f for f in fields if f.field == "features")
        before, after = _read(features.before, currents[0]), _read(features.after, currents[1])
        if before == after:
            return "metadata"  # only how a version is named changed (`x` -> `x@1`)
        return "additive" if before <= after else "breaking"
    return "metadata"


def _current_versions(state: dict[Key, Definition]) -> dict[str, int]:
    specs: dict[str, dict[int, Metric]] = {}
    for (kind, name, version), d in state.items():
        if kind == "metric" and version is not None:
            specs.setdefault(name, {})[version] = d.spec
    return {name: current_version(by_version) for name, by_version in specs.items()}


def _moved_current(project: Project, after: dict[Key, Definition],
                   currents: tuple[dict[str, int], dict[str, int]]) -> list[Change]:
    """A metric name whose current version moved: every unpinned reader gets new values."""
    old, new = currents
    changes = []
    for name in sorted(set(old) & set(new)):
        if old[name] != new[name]:
            owner = after[("metric", name, new[name])].spec.owner
            changes.append(Change(
                "metric", name, None, "breaking", "changed", owner,
                [FieldChange("current_version", old[name], new[name])],
                readers_of(project, "metric", name, None)))
    return changes


def plan_changes(project: Project, before: DefinitionTexts,
                 after: DefinitionTexts) -> list[Change]:
    """The classified changes from `before` to `after`; readers come from `project` (the
    loaded state `after` describes)."""
    old, new = parse_state(before), parse_state(after)
    currents = (_current_versions(old), _current_versions(new))
    changes: list[Change] = []
    for key in sorted(set(old) | set(new), key=lambda k: (k[0], k[1], k[2] or 0)):
        kind, name, version = key
        if key not in old:
            changes.append(Change(kind, name, version, "additive", "added",
                                  new[key].spec.owner))
            continue
        if key not in new:
            changes.append(Change(kind, name, version, "breaking", "removed",
                                  old[key].spec.owner))
            continue
        fields = _field_changes(old[key], new[key])
        if not fields:
            continue
        change = _class_of(kind, fields, currents)
        readers = readers_of(project, kind, name, version) if change == "breaking" else []
        changes.append(Change(kind, name, version, change, "changed", new[key].spec.owner,
                              fields, readers))
    changes += _moved_current(project, new, currents)
    return sorted(changes, key=lambda c: (CLASS_ORDER[c.change], c.kind, c.name,
                                          c.version or 0))


def breaking_for_models(changes: list[Change]) -> list[tuple[Change, list[Reader]]]:
    """The breaking changes some model reads, with those models."""
    found = []
    for change in changes:
        models = [r for r in change.readers if r.kind == "model"]
        if change.change == "breaking" and models:
            found.append((change, models))
    return found
