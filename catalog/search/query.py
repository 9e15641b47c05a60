"""Catalog queries over the index: ranked search with facets, one card, downstream impact.

Ranking: an exact name first; deprecated entries last; in between, the more query words
found in an entry's name (as a token, a prefix, or within a typo) the higher; at equal name
matches certified entries before drafts, then bm25 over descriptions and tags (prefixes and
typos too). Every query word must match somewhere; when no entry matches them all, entries
matching any of them are returned. A field is searched for typos of a word only when none of
its terms is the word or starts with it; numbers match exactly or as a prefix, never as a
typo. Facets filter without scoring. tally.catalog.search.ranking turns this into tantivy
searches, tier by tier, stopping at the first tier that fills the limit. Results are plain
dataclasses; `to_frame()` gives a pandas DataFrame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tantivy
from tally.catalog.errors import LookupFailedError, UsageError
from tally.catalog.search.index import OpenIndex, ensure_index
from tally.catalog.search.ranking import rank

if TYPE_CHECKING:
    from tally.catalog.spec.project import Project

KINDS = ("entity", "source", "metric", "feature_view", "model", "score")
STATUSES = ("certified", "draft", "deprecated", "none")
CONTRACT_FACETS = ("passing", "failing", "violated", "unchecked", "none")
MAX_QUERY_WORDS = 12
_WORD = re.compile(r"[a-z0-9]+")
_DECODE = json.JSONDecoder().decode  # skips json.loads' bytes sniffing
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
    version_count: int  # how many versions the metric has (1 for anything else)
    score: float


@dataclass
class SearchResults(Sequence[SearchHit]):
    """The hits shown (at most the limit) and `total`: how many entries match the query and
    the facets, deprecated ones included (those matching every word; when none does, those
    matching any word). When the hits fill the limit, counting them all costs another pass
    over every match, so it runs the first time `total` is read (the CLI reads it to say
    "20 of N"; `--json` and ranking do not)."""

    query: str
    hits: list[SearchHit] = field(default_factory=list)
    counted: int | Callable[[], int] = field(default=0, repr=False, compare=False)

    @property
    def total(self) -> int:
        if callable(self.counted):
            self.counted = max(self.counted(), len(self.hits))
        return self.counted

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
    """Everything the catalog knows about one entry (see tally.catalog.search.cards)."""

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
    version_count: int = 1
    versions: list[dict[str, Any]] = field(default_factory=list)  # a metric's, oldest first
    owners: list[str] = field(default_factory=list)  # `owner`, split: a view may have several
    aliases: list[str] = field(default_factory=list)
    funnel: dict[str, Any] | None = None  # a funnel metric's steps and fields, defaults given

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


def _filter_clauses(schema: tantivy.Schema, filters: dict[str, list[str]]
                    ) -> list[tuple[tantivy.Occur, tantivy.Query]]:
    """Facets filter and do not score (a constant zero)."""
    must, should = tantivy.Occur.Must, tantivy.Occur.Should
    clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []

    def zero(query: tantivy.Query) -> tantivy.Query:
        return tantivy.Query.const_score_query(query, 0.0)

    for facet, values in filters.items():
        terms = [tantivy.Query.term_query(schema, facet, v) for v in values]
        if facet == "tag" or len(terms) == 1:  # tags: all of them; others: any of them
            clauses.extend((must, zero(t)) for t in terms)
        elif terms:
            clauses.append((must, zero(tantivy.Query.boolean_query(
                [(should, t) for t in terms]))))
    return clauses


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
        raise UsageError("must be at least 1", option="limit")
    filters = {k: [x.strip().lower() for x in v if x.strip()] for k, v in
               (("owner", owner), ("tag", tag), ("kind", kind), ("status", status),
                ("contract", contract)) if v}
    _check_facets(filters)
    searcher, schema = opened.searcher, opened.schema
    ranked, count = rank(searcher, schema, words(text), _filter_clauses(schema, filters),
                         limit)
    # Only the hits shown are read and decoded (the stored summary, not the whole card).
    results: list[SearchHit] = []
    decode, doc = _DECODE, searcher.doc
    for score, address in ranked:
        raw = doc(address).get_first("hit") or b"[]"
        summary: list[Any] = decode(raw.decode())  # HIT_FIELDS, in order
        results.append(SearchHit(*summary, round(float(score), 3)))  # type: ignore[call-arg]
    # a short list holds every match; a full one is counted only if `total` is read
    return SearchResults(text, results, count if len(results) == limit else len(results))


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
    """The card of `name`; `name@N` and `name__vN` (a version) give their metric's card."""
    card = find_card(opened, name)
    if card is None:
        base = re.sub(r"(@|__v)[1-9][0-9]*$", "", name)
        card = find_card(opened, base) if base != name else None
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
