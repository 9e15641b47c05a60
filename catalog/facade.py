"""`Catalog`: the typed facade a notebook (and `tally.load`) uses over one project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.catalog.search.lineage import Lineage, build_lineage
from tally.catalog.search.portfolio import Portfolio, portfolio
from tally.catalog.search.query import Card, Impact, SearchResults, impact, search, show
from tally.catalog.search.reuse import ReuseReport, reuse_report
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.models import Entity, Metric, Model, Score, Source
from tally.catalog.spec.project import Project


@dataclass(frozen=True)
class Catalog:
    """A loaded, validated project and the catalog questions asked of it."""

    project: Project

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def entities(self) -> dict[str, Entity]:
        return self.project.entities

    @property
    def sources(self) -> dict[str, Source]:
        return self.project.sources

    @property
    def metrics(self) -> dict[str, Metric]:
        return self.project.metrics

    @property
    def models(self) -> dict[str, Model]:
        return self.project.models

    @property
    def scores(self) -> dict[str, Score]:
        return self.project.scores

    def search(self, query: str = "", *, owner: list[str] | None = None,
               tag: list[str] | None = None, kind: list[str] | None = None,
               status: list[str] | None = None, contract: list[str] | None = None,
               limit: int = 20) -> SearchResults:
        """Ranked catalog search; `.to_frame()` on the result gives pandas."""
        options = {"owner": owner, "tag": tag, "kind": kind, "status": status,
                   "contract": contract}
        given: dict[str, Any] = {key: value for key, value in options.items() if value}
        return search(self.root, query, project=self.project, limit=limit, **given)

    def show(self, name: str) -> Card:
        """The catalog card of `name`: definition, owner, contract state, lineage."""
        return show(self.root, name, project=self.project)

    def impact(self, name: str) -> Impact:
        """Everything downstream of `name` and whom to notify."""
        return impact(self.root, name, project=self.project)

    def reuse(self) -> ReuseReport:
        """Feature use per model, unused features, duplicated pipelines."""
        return reuse_report(self.project)

    def portfolio(self, since: str = "90d") -> Portfolio:
        """Per model: features, attributed cost, use and outcome trend over `since`."""
        return portfolio(self.project, since)

    def lineage(self) -> Lineage:
        """The graph source -> metric -> feature view -> model of the whole project."""
        return build_lineage(self.project)


def load(path: str | Path = ".") -> Catalog:
    """The project at `path`, loaded and validated (raises DefinitionError when invalid)."""
    return Catalog(load_project(path))
