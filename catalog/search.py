"""Catalog queries over the index: ranked search with facets, one card, downstream impact.

Ranking: an exact name first; then entries whose name tokens match the query's words (as
words, as prefixes, or within one or two typos), the more words the higher; then entries
that match only through descriptions and tags (bm25, typo-tolerant). Within each tier
certified entries come before drafts, and deprecated entries come last of all (unless named
exactly). Results are plain dataclasses; `to_frame()` gives a pandas DataFrame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tantivy

from .errors import LookupFailedError, UsageError
from .index import OpenIndex, ensure_index

if TYPE_CHECKING:
    from .project import Project

KINDS = ("entity", "source", "metric", "feature_view", "model", "score")
STATUSES = ("certified", "draft", "deprecated", "none")
CONTRACT_FACETS = ("passing", "failing", "violated", "unchecked", "none")
MAX_QUERY_WORDS = 12
_WORD = re.compile(r"[a-z0-9]+")
_SHOW_ORDER = ("metric", "score", "source", "entity", "model", "feature_view")


@dataclass
class SearchHit:
    kind: str
    name: str
    owner: str | None
    description: str
    tags: list[str]
    status: str | None
    version: int | None
    model_count: int
    score: float


@dataclass
class SearchResults(Sequence[SearchHit]):
    query: str
    hits: list[SearchHit] = field(default_factory=list)
    total: int = 0

    def __getitem__(self, item):  # type: ignore[no-untyped-def]
        return self.hits[item]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def names(self) -> list[str]:
        return [h.name for h in self.hits]

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(h) for h in self.hits]

    def to_frame(self) -> Any:
        import pandas as pd

        columns = [f.name for f in fields(SearchHit)]
        return pd.DataFrame(self.to_list(), columns=columns)


@dataclass
class Card:
    """Everything the catalog knows about one entry (see catalog.cards)."""

    kind: str
    name: str
    description: str
    owner: str | None
    tags: list[str]
    status: str | None
    version: int | None
    type: str | None
    entity: str | None
    source: str | None
    columns: list[str]
    file: str | None
    line: int | None
    definition: dict[str, Any]
    upstream: list[dict[str, str]]
    downstream: list[dict[str, str]]
    models: list[str]
    model_count: int
    feast: dict[str, Any]
    table: dict[str, Any] | None = None
    contract: dict[str, Any] | None = None
    id: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Card:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImpactItem:
    kind: str
    name: str
    owner: str | None
    distance: int  # 1 = directly downstream
    via: str  # the upstream entry it was reached from


@dataclass
class Impact:
    kind: str
    name: str
    owner: str | None
    items: list[ImpactItem] = field(default_factory=list)

    @property
    def by_kind(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for item in self.items:
            groups.setdefault(item.kind, []).append(item.name)
        return {k: sorted(groups[k]) for k in KINDS if k in groups}

    @property
    def owners(self) -> dict[str, list[str]]:
        """Who to notify, and for which entries."""
        out: dict[str, list[str]] = {}
        for item in self.items:
            for owner in (item.owner or "").split(","):
                if owner.strip():
                    out.setdefault(owner.strip(), []).append(item.name)
        return {k: sorted(set(v)) for k, v in sorted(out.items())}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "owner": self.owner,
                "downstream": self.by_kind, "owners": self.owners,
                "items": [asdict(i) for i in self.items]}

    def to_frame(self) -> Any:
        import pandas as pd

        columns = [f.name for f in fields(ImpactItem)]
        return pd.DataFrame([asdict(i) for i in self.items], columns=columns)


# -- ranking helpers ---------------------------------------------------------------------

def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())[:MAX_QUERY_WORDS]


def typo_budget(word: str) -> int:
    return 0 if len(word) < 4 else (1 if len(word) < 8 else 2)


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance with adjacent transpositions costing one; stops past `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def name_matches(query_words: list[str], name: str) -> int:
    """How many query words match a token of `name` exactly, as a prefix or within the
    typo budget."""
    tokens = name.split("_")
    count = 0
    for word in query_words:
        budget = typo_budget(word)
        if any(t == word or (len(word) >= 2 and t.startswith(word)) or
               (budget and edit_distance(word, t, budget) <= budget) for t in tokens):
            count += 1
    return count


def _boost(query: tantivy.Query, by: float) -> tantivy.Query:
    return tantivy.Query.boost_query(query, by)


def _any_of(schema: tantivy.Schema, name: str, values: list[str]) -> tantivy.Query:
    return tantivy.Query.term_set_query(schema, name, [v.lower() for v in values])


def build_query(opened: OpenIndex, text: str, filters: dict[str, list[str]]) -> tantivy.Query:
    schema, index = opened.schema, opened.index
    should = tantivy.Occur.Should
    must = tantivy.Occur.Must
    query_words = words(text)
    clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
    if query_words:
        per_word: list[tuple[tantivy.Occur, tantivy.Query]] = [
            (should, _boost(tantivy.Query.term_query(schema, "name", "_".join(query_words)),
                            100.0))]
        for word in query_words:
            budget = typo_budget(word)
            parts = [_boost(tantivy.Query.term_query(schema, "name_tokens", word), 6.0),
                     index.parse_query(word, ["stem"])]
            if len(word) >= 2:
                parts.append(_boost(tantivy.Query.fuzzy_term_query(
                    schema, "name_tokens", word, 0, True, True), 3.0))
            if budget:
                parts.append(_boost(tantivy.Query.fuzzy_term_query(
                    schema, "name_tokens", word, budget, True, False), 2.0))
                parts.append(_boost(tantivy.Query.fuzzy_term_query(
                    schema, "text", word, budget, True, False), 0.5))
            per_word.append((should, tantivy.Query.boolean_query([(should, p) for p in parts])))
        clauses.append((must, tantivy.Query.boolean_query(per_word)))
        clauses.append((should, _boost(tantivy.Query.term_query(schema, "status", "certified"),
                                       0.25)))
    for facet, values in filters.items():
        if facet == "tag":
            clauses.extend((must, tantivy.Query.term_query(schema, "tag", v.lower()))
                           for v in values)
        elif values:
            clauses.append((must, _any_of(schema, facet, values)))
    if not clauses:
        return tantivy.Query.all_query()
    if all(occur is must for occur, _ in clauses) and not query_words:
        clauses.append((should, tantivy.Query.all_query()))
    return tantivy.Query.boolean_query(clauses)


def _check_facets(filters: dict[str, list[str]]) -> None:
    allowed = {"kind": KINDS, "status": STATUSES, "contract": CONTRACT_FACETS}
    for facet, choices in allowed.items():
        for value in filters.get(facet, []):
            if value.lower() not in choices:
                raise UsageError(f"unknown {facet} {value!r}; choose from {', '.join(choices)}")


def run_search(opened: OpenIndex, text: str, *, owner: list[str] | None = None,
               tag: list[str] | None = None, kind: list[str] | None = None,
               status: list[str] | None = None, contract: list[str] | None = None,
               limit: int = 20) -> SearchResults:
    if limit < 1:
        raise UsageError("--limit must be at least 1")
    filters = {k: [x.strip().lower() for x in v if x.strip()] for k, v in
               (("owner", owner), ("tag", tag), ("kind", kind), ("status", status),
                ("contract", contract)) if v}
    _check_facets(filters)
    query = build_query(opened, text, filters)
    searcher = opened.searcher
    window = max(limit * 3, 50)
    found = searcher.search(query, window, count=True)
    query_words = words(text)
    exact = "_".join(query_words)
    ranked = []
    for score, address in found.hits:
        doc = searcher.doc(address)
        hit = json.loads(doc.get_first("hit") or b"{}")
        name, hit_status = hit["name"], hit.get("status")
        is_exact = bool(exact) and name == exact
        key = (0 if is_exact else 1, 1 if hit_status == "deprecated" and not is_exact else 0,
               -name_matches(query_words, name) if query_words else 0,
               0 if hit_status == "certified" else 1, -score, hit["kind"], name)
        ranked.append((key, SearchHit(score=round(float(score), 4), **hit)))
    ranked.sort(key=lambda pair: pair[0])
    total = getattr(found, "count", None) or len(ranked)
    return SearchResults(text, [h for _, h in ranked[:limit]], total)


def _lookup(opened: OpenIndex, field_name: str, values: list[str]) -> list[dict[str, Any]]:
    if not values:
        return []
    searcher = opened.searcher
    query = tantivy.Query.term_set_query(opened.schema, field_name, values)
    found = searcher.search(query, max(len(values) * 6, 10))
    return [json.loads(searcher.doc(a).get_first("card") or b"{}") for _, a in found.hits]


def find_card(opened: OpenIndex, name: str) -> dict[str, Any] | None:
    cards = _lookup(opened, "name", [name])
    cards.sort(key=lambda c: _SHOW_ORDER.index(c["kind"]) if c["kind"] in _SHOW_ORDER else 9)
    return cards[0] if cards else None


def not_found(opened: OpenIndex, name: str) -> LookupFailedError:
    close = run_search(opened, name.replace("_", " "), limit=3).names()
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return LookupFailedError(f"no definition named {name!r}{hint}; find names with "
                             f"`tally search {name.replace('_', ' ')}`")


def card_of(opened: OpenIndex, name: str) -> Card:
    card = find_card(opened, name)
    if card is None:
        raise not_found(opened, name)
    return Card.from_dict(card)


def impact_of(opened: OpenIndex, name: str) -> Impact:
    start = find_card(opened, name)
    if start is None:
        raise not_found(opened, name)
    seen = {start["id"]}
    items: list[ImpactItem] = []
    frontier = [start]
    distance = 0
    while frontier:
        distance += 1
        via: dict[str, str] = {}
        for card in frontier:
            if card["kind"] == "feature_view" and card is not start:
                continue  # see Lineage.transitive_down: views lead to models only from the start
            for ref in card.get("downstream", []):
                ident = f"{ref['kind']}:{ref['name']}"
                if ident not in seen:
                    seen.add(ident)
                    via[ident] = card["name"]
        frontier = _lookup(opened, "id", sorted(via))
        items.extend(ImpactItem(c["kind"], c["name"], c.get("owner"), distance, via[c["id"]])
                     for c in frontier)
    order = {k: i for i, k in enumerate(KINDS)}
    items.sort(key=lambda i: (order.get(i.kind, 9), i.distance, i.name))
    return Impact(start["kind"], start["name"], start.get("owner"), items)


# -- entry points (CLI and notebook) -------------------------------------------------------

def _open(root: Path | str, project: Project | None,
          on_wait: Callable[[str], None] | None) -> OpenIndex:
    return ensure_index(root, project=project, on_wait=on_wait)


def search(root: Path | str, text: str = "", *, project: Project | None = None,
           on_wait: Callable[[str], None] | None = None, **options: Any) -> SearchResults:
    return run_search(_open(root, project, on_wait), text, **options)


def show(root: Path | str, name: str, *, project: Project | None = None,
         on_wait: Callable[[str], None] | None = None) -> Card:
    return card_of(_open(root, project, on_wait), name)


def impact(root: Path | str, name: str, *, project: Project | None = None,
           on_wait: Callable[[str], None] | None = None) -> Impact:
    return impact_of(_open(root, project, on_wait), name)
