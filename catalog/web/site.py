"""What each page of the web catalog shows, as plain template contexts, built from the
catalog's own library calls (search, cards, lineage, reuse, explain, segments,
distribution): the server and the static build render the same contexts.

Page addresses are relative to the site root and the same in both: `index.html`,
`{kind}/{name}.html`, `score/{name}/explain/{key}.html`, `reuse.html` and `portfolio.html` (REPORTS
lists the report pages).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from tally.catalog.errors import DataError, LookupFailedError
from tally.catalog.scores.entities import newest_keys
from tally.catalog.scores.explain import explain, segments
from tally.catalog.search.cards import build_cards
from tally.catalog.search.distribution import distribution
from tally.catalog.search.index import current_inputs
from tally.catalog.search.lineage import Lineage, build_lineage, node_id
from tally.catalog.search.portfolio import portfolio
from tally.catalog.search.query import CONTRACT_FACETS, KINDS, STATUSES, SearchResults, search
from tally.catalog.search.reuse import reuse_report
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.moments import parse_moment
from tally.catalog.spec.project import Project
from tally.catalog.web.svg import distribution_svg, lineage_svg, waterfall_svg

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
KEY = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")  # an entity key that can name a file
REPORTS: list[tuple[str, str]] = [("reuse.html", "Reuse"), ("portfolio.html", "Portfolio")]
FACETS = ("owner", "tag", "kind", "status", "contract")
# card fields the entry page shows in its own places (the facts list, the badges, the
# sections below); every other non-empty field gets a section of its own
_SHOWN_FIELDS = {"kind", "name", "description", "owner", "owners", "tags", "aliases", "status",
                 "version", "version_count", "type", "entity", "source", "columns", "file",
                 "line", "definition", "upstream", "downstream", "models", "model_count",
                 "feast", "table", "contract", "id"}


def entry_href(kind: str, name: str) -> str:
    return f"{kind}/{name}.html"


def explain_href(score: str, key: str | int) -> str:
    return f"score/{score}/explain/{key}.html"


@dataclass
class _Loaded:
    inputs: dict[str, Any]
    project: Project
    graph: Lineage
    cards: dict[str, dict[str, Any]]
    memo: dict[tuple[str, str], Any] = field(default_factory=dict)  # reads of computed tables

    def once(self, what: str, name: str, read: Callable[[], Any]) -> Any:
        """`read()` the first time; the fingerprint covers .tally/tables.json, which every
        compute rewrites, so a memo never outlives the tables it was read from."""
        if (what, name) not in self.memo:
            self.memo[(what, name)] = read()
        return self.memo[(what, name)]


class Site:
    """One project's catalog pages; reloads the project when its definitions or state
    files change (the same fingerprint as the search index)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def loaded(self) -> _Loaded:
        inputs = current_inputs(self.root)
        with self._lock:
            if self._loaded is None or self._loaded.inputs != inputs:
                project = load_project(self.root)
                cards = {card["id"]: card for card in build_cards(project)}
                self._loaded = _Loaded(inputs, project, build_lineage(project), cards)
            return self._loaded

    @property
    def title(self) -> str:
        return self.root.name

    # -- search ----------------------------------------------------------------------

    def facet_choices(self) -> dict[str, list[str]]:
        cards = self.loaded().cards.values()
        owners = sorted({o.strip() for c in cards for o in (c.get("owner") or "").split(",")
                         if o.strip()})
        tags = sorted({t for c in cards for t in c.get("tags") or []})
        return {"owner": owners, "tag": tags, "kind": list(KINDS), "status": list(STATUSES),
                "contract": list(CONTRACT_FACETS)}

    def search(self, query: str, filters: dict[str, list[str]], limit: int = 50
               ) -> SearchResults:
        self.loaded()
        given = {facet: filters.get(facet) or None for facet in FACETS}
        return search(self.root, query, limit=limit, owner=given["owner"], tag=given["tag"],
                      kind=given["kind"], status=given["status"], contract=given["contract"])

    def search_context(self, query: str, filters: dict[str, list[str]], limit: int = 50
                       ) -> dict[str, Any]:
        results = self.search(query, filters, limit)
        hits = [{**vars(h), "href": entry_href(h.kind, h.name)} for h in results]
        return {"query": query, "filters": filters, "choices": self.facet_choices(),
                "hits": hits, "total": results.total}

    def search_index(self) -> list[dict[str, Any]]:
        """What the static site's in-page search ranks over: one entry per card."""
        out = []
        for card in self.loaded().cards.values():
            definition = card.get("definition") or {}
            contract = card.get("contract") or {}
            out.append({
                "kind": card["kind"], "name": card["name"], "owner": card.get("owner"),
                "description": (card.get("description") or "").strip(),
                "tags": card.get("tags") or [], "status": card.get("status"),
                "version": card.get("version"), "model_count": card.get("model_count", 0),
                "aliases": [str(a) for a in definition.get("aliases") or []],
                "contract": contract.get("states") or (["none"] if card["kind"] == "source"
                                                       else []),
                "href": entry_href(card["kind"], card["name"]),
            })
        return sorted(out, key=lambda e: (e["kind"], e["name"]))

    # -- entry pages -------------------------------------------------------------------

    def card(self, kind: str, name: str) -> dict[str, Any]:
        card = self.loaded().cards.get(node_id(kind, name)) if NAME.match(name) else None
        if kind not in KINDS or card is None:
            raise LookupFailedError(f"no {kind} named {name!r} in this catalog")
        return card

    def entry_context(self, kind: str, name: str) -> dict[str, Any]:
        loaded = self.loaded()
        card = self.card(kind, name)
        context: dict[str, Any] = {
            "card": card, "definition": card.get("definition") or {},
            "extras": {k: v for k, v in card.items() if k not in _SHOWN_FIELDS and v},
            "lineage": lineage_svg(loaded.graph, card["id"], entry_href),
            "freshness": freshness(card), "distribution": None, "score": None,
        }
        if kind in ("metric", "score"):
            dist = loaded.once("distribution", name, partial(distribution, loaded.project, name))
            if dist is not None and dist.computed:
                context["distribution"] = {"svg": distribution_svg(dist),
                                           "newest": dist.snapshots[-1:] or None,
                                           "count": len(dist.snapshots)}
        if kind == "score":
            context["score"] = self.score_context(name)
        return context

    def score_context(self, name: str) -> dict[str, Any]:
        """The segments of a score and the entity keys to pick from."""
        loaded = self.loaded()
        project = loaded.project
        try:
            result = loaded.once("segments", name, partial(segments, project, name))
        except (DataError, LookupFailedError) as exc:
            return {"name": name, "error": str(exc), "segments": None, "examples": []}
        examples = [str(k) for g in result.groups for k in g.examples]
        return {"name": name, "error": None, "segments": result, "examples": examples,
                "join_key": project.entities[project.scores[name].entity].join_key}

    def explain_context(self, score: str, key: str, at: str | None = None) -> dict[str, Any]:
        if not NAME.match(score):
            raise LookupFailedError(f"no score named {score!r}")
        project = self.loaded().project
        if score in project.scores:
            entity = project.entities[project.scores[score].entity]
            if entity.value_type != "string" and not key.strip().lstrip("-").isdigit():
                raise LookupFailedError(f"no {entity.name} {key!r}: {entity.join_key} values "
                                        "are integers")
        result = explain(project, score, key, parse_moment(at, "at"))
        return {"explanation": result, "waterfall": waterfall_svg(result),
                "score_href": entry_href("score", score)}

    def entity_keys(self, score: str, limit: int) -> list[str | int]:
        """Keys with a score at its newest snapshot (the static build explains each)."""
        return newest_keys(self.loaded().project, score, limit)

    # -- reports -----------------------------------------------------------------------

    def reuse_context(self) -> dict[str, Any]:
        report = reuse_report(self.loaded().project)
        return {"report": report, "unused": report.unused}

    def portfolio_context(self) -> dict[str, Any]:
        """The portfolio over the last 90 days (docs/portfolio.md), as `tally portfolio`."""
        return {"report": portfolio(self.loaded().project)}


def freshness(card: dict[str, Any]) -> dict[str, Any] | None:
    """How current the entry's data is: the newest computed snapshot (and its age), the
    contract's freshness rule and when the source was last checked."""
    table = card.get("table") or {}
    contract = card.get("contract") or {}
    last = contract.get("last_check") or {}
    rules = contract.get("rules") or {}
    newest = table.get("newest_snapshot") if table.get("computed") else None
    if not (newest or last or rules.get("freshness")):
        return None
    age = None
    if newest:
        try:
            stamp = datetime.fromisoformat(str(newest))
            age = (datetime.now(UTC) - stamp.astimezone(UTC)).days
        except ValueError:
            age = None
    return {"newest_snapshot": newest, "age_days": age, "rule": rules.get("freshness"),
            "checked_at": last.get("checked_at"), "as_of": last.get("as_of"),
            "computed": bool(table.get("computed")), "table": table.get("table")}
