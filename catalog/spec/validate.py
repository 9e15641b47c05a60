"""Phase two of validation: rules across definitions. Returns issues, never raises."""

from __future__ import annotations

import glob
import os
from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path, PurePosixPath

from tally.catalog.errors import Issue
from tally.catalog.spec.config import read_config
from tally.catalog.spec.funnel_rules import check_funnel
from tally.catalog.spec.models import Metric, Model, Score, Source
from tally.catalog.spec.project import Definition, Project
from tally.catalog.spec.sqlcheck import BUILTIN_VALUES, ExpressionRefused, check_expression
from tally.catalog.spec.suggest import did_you_mean
from tally.catalog.spec.versions import check_deprecations, expand_versions
from tally.catalog.spec.yamlio import LoadedYaml
from tally.catalog.store.paths import CONFIG_FILE, glob_base

MAX_GLOB_MATCHES_CHECKED = 1000


class _Checker:
    def __init__(self, project: Project, files: dict[str, LoadedYaml],
                 invalid: dict[str, str] | None = None):
        self.project = project
        self.files = files
        self.invalid = invalid or {}  # name -> kind of definitions already reported invalid
        self.issues: list[Issue] = []
        config = read_config(project.root)
        self.issues.extend(config.issues)
        self.root_real = Path(os.path.realpath(project.root))
        self.allowed_dirs = (self.root_real, *config.allowed_dirs)

    def add(self, definition: Definition, field: tuple[str | int, ...], message: str) -> None:
        self.issues.append(definition.issue(field, message, self.files[definition.file]))

    def warn(self, definition: Definition, field: tuple[str | int, ...], message: str) -> None:
        warning = definition.issue(field, message, self.files[definition.file])
        if warning not in self.project.warnings:
            self.project.warnings.append(warning)

    def check_sql(self, d: Definition, field: tuple[str | int, ...], text: str,
                  known: set[str] | None, what: str) -> set[str]:
        return _check_sql(self, d, field, text, False, known, what)

    def where(self, name: str) -> str:
        d = self.project.definitions[name]
        return f"{d.file}:{d.line}"

    def expect_kind(self, d: Definition, field: tuple[str | int, ...], name: str,
                    kinds: tuple[str, ...]) -> bool:
        other = self.project.definitions.get(name)
        wanted = " or ".join(kinds)
        if other is None:
            if self.invalid.get(name) in kinds:
                return False  # its own problem is reported once, where it is defined
            close = [n for n, o in self.project.definitions.items() if o.kind in kinds]
            self.add(d, field, f"unknown {wanted} {name!r}{did_you_mean(name, close)}; "
                     "define it or fix the name")
            return False
        if other.kind not in kinds:
            self.add(d, field, f"{name!r} is a {other.kind} ({self.where(name)}), not a {wanted}")
            return False
        return True


def cross_check(project: Project, definitions: list[Definition],
                files: dict[str, LoadedYaml], invalid: dict[str, str] | None = None,
                today: date | None = None) -> list[Issue]:
    """`invalid` names definitions whose own keys failed (reported already): a reference
    to one is not reported again as unknown."""
    checker = _Checker(project, files, invalid)
    later_versions = _add_definitions(checker, definitions)
    expand_versions(project, later_versions, checker.add)
    for d in list(project.definitions.values()):
        if d.kind == "source":
            _check_source(checker, d)
        elif d.kind == "metric":
            _check_metric(checker, d)
        elif d.kind == "model":
            _check_model(checker, d)
        elif d.kind == "score":
            _check_score(checker, d)
    _check_derived_cycles(checker)
    check_deprecations(project, today or datetime.now(UTC).date(), checker.add, checker.warn)
    return checker.issues


def _add_definitions(c: _Checker, definitions: list[Definition]) -> list[Definition]:
    """Add each definition once per name; returns the further versions of metrics."""
    versions: dict[tuple[str, int], Definition] = {}
    later: list[Definition] = []
    for d in sorted(definitions, key=lambda d: (d.file, d.line)):
        first = c.project.definitions.get(d.name)
        if first is None:
            c.project.add(d)
        elif d.kind != "metric" or first.kind != "metric":
            c.add(d, ("name",), f"name {d.name!r} is already used by the {first.kind} "
                  f"at {first.file}:{first.line}; names are unique across the project")
            continue
        if d.kind != "metric":
            continue
        same = versions.get((d.name, d.spec.version))
        if same is not None:
            c.add(d, ("version",), f"version {d.spec.version} of metric {d.name!r} is "
                  f"already defined at {same.file}:{same.line}; give each version its own "
                  "number")
        elif first is not None:
            later.append(d)
        versions.setdefault((d.name, d.spec.version), d)
    return later


def _check_source(c: _Checker, d: Definition) -> None:
    source: Source = d.spec
    c.expect_kind(d, ("entity",), source.entity, ("entity",))
    problem = _path_problem(c, source.path)
    if problem:
        c.add(d, ("path",), problem)
    elif source.file_format == "csv" and not source.path.lower().endswith(".csv") and (
        source.format is None
    ):
        c.add(d, ("path",), "cannot tell the format; end the path with .parquet or .csv")
    contract = source.contract
    if contract is None or not contract.columns:
        return
    declared = contract.columns
    entity = c.project.entities.get(source.entity)
    needed = [("timestamp_field", source.timestamp_field)]
    if source.created_timestamp_field:
        needed.append(("created_timestamp_field", source.created_timestamp_field))
    if entity is not None:
        needed.append(("entity", entity.join_key))
    for field, column in needed:
        if column not in declared:
            c.add(d, (field,), f"column {column!r} is not among the contract's columns "
                  f"({', '.join(declared)}); add it to contract.columns")
    for time_column in (source.timestamp_field, source.created_timestamp_field):
        if time_column in declared and declared[time_column].type not in ("timestamp", "date"):
            c.add(d, ("contract", "columns", time_column, "type"),
                  f"{time_column!r} is a time column, so its type must be timestamp or date")
    for index, column in enumerate(contract.unique):
        if column not in declared:
            c.add(d, ("contract", "unique", index), f"unique column {column!r} is not among "
                  "the contract's columns")


def _within(path: Path, folders: tuple[Path, ...]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


def _path_problem(c: _Checker, raw: str) -> str | None:
    """Why the source path `raw` may not be read, or None.

    The path must stay inside the project root or a folder tally.yaml allows, both as
    written and once symlinks are resolved: for the file itself when it exists, for the
    base folder of a glob and for (the first thousand of) its matches.
    """
    fix = ("give a path relative to the project root without `..`, or allow the folder in "
           f"{CONFIG_FILE} (allowed_data_dirs)")
    if any(ord(ch) < 32 for ch in raw):
        return f"{raw!r} has a control character; write a plain path"
    if raw.startswith("~"):
        return f"{raw!r} leaves the project: `~` is not expanded; {fix}"
    pure = PurePosixPath(raw.replace("\\", "/"))
    written = Path(os.path.normpath(pure if pure.is_absolute() else c.project.root / pure))
    roots = (c.project.root, *c.allowed_dirs)
    if not _within(written, roots) or (".." in pure.parts and len(c.allowed_dirs) == 1):
        return f"{raw!r} leaves the project; {fix}"
    base, is_glob = glob_base(pure)
    base_path = base if base.is_absolute() else c.project.root / base
    real = Path(os.path.realpath(base_path))
    if not _within(real, c.allowed_dirs):
        what = "the folder of the glob" if is_glob else "the file"
        return (f"{raw!r} leaves the project: {what} resolves through a symlink to {real}; "
                f"{fix}")
    if is_glob:
        pattern = str(pure if pure.is_absolute() else c.project.root / pure)
        for match in islice(glob.iglob(pattern, recursive=True), MAX_GLOB_MATCHES_CHECKED):
            target = Path(os.path.realpath(match))
            if not _within(target, c.allowed_dirs):
                return (f"{raw!r} leaves the project: {match} resolves through a symlink to "
                        f"{target}; {fix}")
    return None


def _check_sql(c: _Checker, d: Definition, field: str | tuple[str | int, ...], text: str,
               allow_star: bool, known: set[str] | None, what: str) -> set[str]:
    path = (field,) if isinstance(field, str) else field
    try:
        checked = check_expression(text, allow_star=allow_star)
    except ExpressionRefused as exc:
        c.add(d, path, f"{exc}: {text!r}")
        return set()
    builtins = sorted((checked.columns & BUILTIN_VALUES) - (known or set()))
    if builtins:
        c.add(d, path, f"{', '.join(map(repr, builtins))}: DuckDB reads this as a built-in "
              "value, not a column; declare it in the source's contract columns if the source "
              f"really has such a column: {text!r}")
        return set(checked.columns)
    if known is not None:
        unknown = sorted(checked.columns - known)
        if unknown:
            c.add(d, path, f"{', '.join(map(repr, unknown))} not among {what} "
                  f"({', '.join(sorted(known)) or 'none'})")
    return set(checked.columns)


def _check_metric(c: _Checker, d: Definition) -> None:
    metric: Metric = d.spec
    if metric.type == "derived":
        inputs = _check_sql(c, d, "expression", metric.sql, False, None, "")
        for name in sorted(inputs):
            c.expect_kind(d, ("expression",), name, ("metric",))
        return
    if metric.type == "funnel":
        check_funnel(c, d)
        return
    if not c.expect_kind(d, ("source",), metric.source or "", ("source",)):
        return
    source: Source = c.project.sources[metric.source or ""]
    known = set(source.contract.columns) if source.contract and source.contract.columns else None
    what = f"the columns of source {source.name}'s contract"
    _check_sql(c, d, "expression", metric.sql,
               metric.aggregation == "count", known, what)
    if metric.filter:
        _check_sql(c, d, "filter", metric.filter, False, known, what)
    if metric.type == "column":
        try:
            tree = check_expression(metric.sql).tree
        except ExpressionRefused:
            return
        from sqlglot import exp

        if not isinstance(tree, exp.Column):
            c.add(d, ("expression",), "a column metric serves one source column as-is; "
                  "give the column name alone (use a derived metric for arithmetic)")


def _check_model(c: _Checker, d: Definition) -> None:
    model: Model = d.spec
    seen: set[str] = set()
    for index, feature in enumerate(model.features):
        if feature in seen:
            c.add(d, ("features", index), f"feature {feature!r} is listed twice")
        seen.add(feature)
        if "@" not in feature:  # an unresolved pin is reported by versions.expand_versions
            c.expect_kind(d, ("features", index), feature, ("metric", "score"))
    if model.outcome is not None:
        c.expect_kind(d, ("outcome",), model.outcome, ("metric", "score"))


def _check_score(c: _Checker, d: Definition) -> None:
    score: Score = d.spec
    c.expect_kind(d, ("entity",), score.entity, ("entity",))
    for index, component in enumerate(score.components):
        field = ("components", index, "metric")
        if "@" in component.metric or not c.expect_kind(d, field, component.metric,
                                                         ("metric",)):
            continue
        entity = c.project.entity_of(component.metric)
        if entity is not None and entity != score.entity:
            c.add(d, field, f"metric {component.metric!r} is about {entity}, but the score is "
                  f"about {score.entity}")
        if c.project.metrics[component.metric].type == "column":
            c.add(d, field, f"{component.metric!r} is a column metric without snapshots; a "
                  "score component needs an aggregate or derived metric")
        if component.segment_by is not None:
            seg_field = ("components", index, "segment_by")
            if c.expect_kind(d, seg_field, component.segment_by, ("metric",)):
                seg_entity = c.project.entity_of(component.segment_by)
                if seg_entity is not None and seg_entity != score.entity:
                    c.add(d, seg_field, f"segment_by {component.segment_by!r} is about "
                          f"{seg_entity}, but the score is about {score.entity}")


def _derived_graph(c: _Checker) -> dict[str, set[str]]:
    """Each derived metric -> the metrics its expression reads."""
    metrics = c.project.metrics
    graph: dict[str, set[str]] = {}
    for name, metric in metrics.items():
        if metric.type == "derived":
            try:
                graph[name] = set(check_expression(metric.sql).columns) & set(metrics)
            except ExpressionRefused:
                graph[name] = set()
    return graph


def _report_cycles(c: _Checker, graph: dict[str, set[str]]) -> set[str]:
    """Report every derived metric on a cycle of the graph, once; returns them."""
    state: dict[str, int] = {}
    in_cycle: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph.get(name, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [name, nxt]
                for member in cycle:
                    if member not in in_cycle:
                        in_cycle.add(member)
                        d = c.project.definitions[member]
                        c.add(d, ("expression",), "derived metrics form a cycle: "
                              + " -> ".join(cycle))
            elif state.get(nxt) is None:
                visit(nxt, [*trail, nxt])
        state[name] = 2

    for name in sorted(graph):
        if state.get(name) is None:
            visit(name, [name])
    return in_cycle


def _check_derived_inputs(c: _Checker, name: str, inputs: list[str]) -> None:
    """A derived metric's inputs share one entity and one grain, and one has snapshots."""
    d = c.project.definitions[name]
    entities = {i: c.project.entity_of(i) for i in inputs}
    if len({e for e in entities.values() if e}) > 1:
        listing = ", ".join(f"{i} ({e})" for i, e in sorted(entities.items()))
        c.add(d, ("expression",), f"inputs are about different entities: {listing}")
        return
    grains = {i: c.project.grain_of(i) for i in inputs}
    distinct = {g for g in grains.values() if g is not None}
    if len(distinct) > 1:
        from tally.catalog.spec.durations import format_duration

        listing = ", ".join(f"{i} ({format_duration(g)})" for i, g in sorted(grains.items())
                            if g is not None)
        c.add(d, ("expression",), f"inputs have different grains: {listing}")
    elif not distinct:
        c.add(d, ("expression",), "a derived metric needs at least one aggregate input "
              "to give it snapshots; column metrics alone have none")


def _check_derived_cycles(c: _Checker) -> None:
    graph = _derived_graph(c)
    in_cycle = _report_cycles(c, graph)
    for name, metric in sorted(c.project.metrics.items()):
        if metric.type != "derived" or name in in_cycle:
            continue
        inputs = sorted(graph[name])  # already only metric names
        if inputs:
            _check_derived_inputs(c, name, inputs)
