"""Validation of funnel metrics (DESIGN.md "Funnel metrics"): each rule reports an issue at
the key it is about (`steps[i].source`, `steps[i].filter`, `same`, `within`, ...)."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from tally.catalog.spec.models import Metric
from tally.catalog.spec.project import Definition, Project

MAX_WITHIN = timedelta(days=365)
Field = tuple[str | int, ...]


class Checks(Protocol):
    """What validation's checker offers the funnel rules."""

    project: Project

    def add(self, definition: Definition, field: Field, message: str) -> None: ...

    def warn(self, definition: Definition, field: Field, message: str) -> None: ...

    def expect_kind(self, d: Definition, field: Field, name: str,
                    kinds: tuple[str, ...]) -> bool: ...

    def check_sql(self, d: Definition, field: Field, text: str,
                  known: set[str] | None, what: str) -> set[str]: ...


def check_funnel(c: Checks, d: Definition) -> None:
    metric: Metric = d.spec
    steps = metric.steps or []
    if len(steps) < 2:
        c.add(d, ("steps",), f"a funnel needs at least 2 steps (it has {len(steps)}): a start "
              "(step 1) and the steps it must go on to")
    entity_known = c.expect_kind(d, ("entity",), metric.entity or "", ("entity",))
    for index in range(len(steps)):
        _check_step(c, d, index, entity_known)
    _check_durations(c, d, metric)


def _check_step(c: Checks, d: Definition, index: int, entity_known: bool) -> None:
    metric: Metric = d.spec
    step = (metric.steps or [])[index]
    if not c.expect_kind(d, ("steps", index, "source"), step.source, ("source",)):
        return
    source = c.project.sources[step.source]
    if entity_known and source.entity != metric.entity:
        c.add(d, ("steps", index, "source"), f"source {step.source!r} is about "
              f"{source.entity}, but the funnel is about {metric.entity}; every step's source "
              "must be about the funnel's entity")
    known = set(source.contract.columns) if source.contract and source.contract.columns else None
    what = f"the columns of source {source.name}'s contract"
    c.check_sql(d, ("steps", index, "filter"), step.filter, known, what)
    first_of_source = [s.source for s in metric.steps or []].index(step.source) == index
    if (metric.same is not None and known is not None and metric.same not in known
            and first_of_source):  # one problem per source, however many steps read it
        c.add(d, ("same",), f"column {metric.same!r} is not among {what} (step {index + 1}); "
              "`same` must name a column every step's source has")


def _check_durations(c: Checks, d: Definition, metric: Metric) -> None:
    within = metric.within_delta
    if within is not None and within > MAX_WITHIN:
        c.add(d, ("within",), f"within {metric.within} is longer than a year (365d); a "
              "funnel's steps must complete within 365d of its start")
    window = metric.window_delta
    if window is not None and metric.grain_delta > window:
        c.warn(d, ("grain",), f"grain {metric.grain or '1d'} is longer than window "
               f"{metric.window}: starts that fall between two snapshots are never counted")
