"""Catalog queries over the index: ranked search with facets, one card, downstream impact.

Ranking: an exact name first; deprecated entries last; in between, the more query words
found in an entry's name (as a token, a prefix, or within a typo) the higher; at equal name
matches certified entries before drafts, then bm25 over descriptions and tags (prefixes and
typos too). Every query word must match somewhere; when no entry matches them all, entries
matching any of them are returned. Tantivy ranks with layered constant scores (EXACT,
CURRENT, NAME_WORD, CERTIFIED); the exact name, the current entries and the deprecated ones
are three small searches, so a query reads only the documents it returns. Results are plain
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

from .errors import LookupFailedError, UsageError
from .index import OpenIndex, ensure_index

if TYPE_CHECKING:
    from .project import Project

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


# Score layers (tantivy ranks within each tier, so only the documents returned are read):
EXACT = 1_000_000.0  # the query is the entry's name
CURRENT = 100_000.0  # not deprecated
NAME_WORD, NAME_PREFIX, NAME_TYPO = 1_000.0, 950.0, 900.0  # per query word found in the name
CERTIFIED = 500.0
TEXT_TYPO = 0.5  # per word found only with a typo in description/tags (else bm25)


def _const(query: tantivy.Query, score: float) -> tantivy.Query:
    return tantivy.Query.const_score_query(query, score)


def _variants(searcher: tantivy.Searcher, field_name: str, word: str) -> list[str]:
    """Indexed terms of `field_name` that `word` stands for: itself, and the words it is a
    prefix of (`act` -> `active`, `user` -> `users`), at most eight."""
    if len(word) < 2:
        return [word] if searcher.doc_freq(field_name, word) else []
    found = [t for t, _ in searcher.terms_with_prefix(field_name, word, limit=9)]
    return sorted(found, key=lambda t: (t != word, len(t), t))[:8]


def _word_query(opened: OpenIndex, searcher: tantivy.Searcher, word: str
                ) -> tantivy.Query | None:
    """One query word: found in the name (as a token, a prefix, or within the typo budget),
    else in the description and tags (bm25, as a prefix, or within the typo budget). Only
    terms the index holds become clauses (typos are looked for only when the word itself is
    missing), so a correctly spelt query costs a few term lookups. None: matches nothing."""
    schema = opened.schema
    budget = typo_budget(word)
    parts: list[tantivy.Query] = []
    for field_name, exact, prefix, typo in (("name_tokens", NAME_WORD, NAME_PREFIX, NAME_TYPO),
                                            ("text", None, None, TEXT_TYPO)):
        variants = _variants(searcher, field_name, word)
        for term in variants:
            query = tantivy.Query.term_query(schema, field_name, term)
            score = exact if term == word else prefix
            parts.append(_const(query, score) if score else query)  # text terms: bm25
        if budget and word not in variants:
            parts.append(_const(tantivy.Query.fuzzy_term_query(
                schema, field_name, word, budget, True, False), typo))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else tantivy.Query.disjunction_max_query(parts, 0.01)


def _word_clauses(opened: OpenIndex, searcher: tantivy.Searcher, query_words: list[str],
                  every_word: bool) -> list[tuple[tantivy.Occur, tantivy.Query]] | None:
    """With `every_word` each word must match somewhere, else any word may (the fallback when
    no entry matches them all). None when nothing can match."""
    per_word = [_word_query(opened, searcher, w) for w in query_words]
    if every_word:
        if any(q is None for q in per_word):
            return None
        return [(tantivy.Occur.Must, q) for q in per_word if q is not None]
    anyof = [(tantivy.Occur.Should, q) for q in per_word if q is not None]
    return [(tantivy.Occur.Must, tantivy.Query.boolean_query(anyof))] if anyof else None


def _filter_clauses(schema: tantivy.Schema, filters: dict[str, list[str]]
                    ) -> list[tuple[tantivy.Occur, tantivy.Query]]:
    must, should = tantivy.Occur.Must, tantivy.Occur.Should
    clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
    for facet, values in filters.items():
        terms = [tantivy.Query.term_query(schema, facet, v) for v in values]
        if facet == "tag" or len(terms) == 1:  # tags: all of them; others: any of them
            clauses.extend((must, t) for t in terms)
        elif terms:
            clauses.append((must, tantivy.Query.boolean_query([(should, t) for t in terms])))
    return clauses


def _top(searcher: tantivy.Searcher, clauses: list[tuple[tantivy.Occur, tantivy.Query]],
         limit: int) -> tuple[list[tuple[float, tantivy.DocAddress]], int]:
    if not any(occur == tantivy.Occur.Must for occur, _ in clauses):
        clauses = [*clauses, (tantivy.Occur.Must, tantivy.Query.all_query())]
    found = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=True)
    return list(found.hits), getattr(found, "count", None) or 0


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
    searcher, schema = opened.searcher, opened.schema
    must, must_not = tantivy.Occur.Must, tantivy.Occur.MustNot
    query_words = words(text)
    facets = _filter_clauses(schema, filters)
    # Each tier is its own search with one optional clause at most: several optional clauses
    # make tantivy walk their whole posting lists, which costs milliseconds at 100k entries.
    ranked: list[tuple[float, tantivy.DocAddress]] = []
    exact_name = "_".join(query_words)
    # 1. the entry named exactly; a term-dictionary lookup skips the search for most queries
    if query_words and searcher.doc_freq("name", exact_name):
        ranked += [(EXACT + score, a) for score, a in _top(searcher, [
            (must, tantivy.Query.term_query(schema, "name", exact_name)), *facets], limit)[0]]
    total = 0
    for every_word in (True, False) if len(query_words) > 1 else (True,):
        matching = _word_clauses(opened, searcher, query_words, every_word) if query_words \
            else []
        if matching is None:
            continue
        # 2. current entries, certified first at equal name matches
        hits, count = _top(searcher, [*matching, *facets, (must_not, tantivy.Query.term_query(
            schema, "status", "deprecated")), (tantivy.Occur.Should, _const(
                tantivy.Query.term_query(schema, "status", "certified"), CERTIFIED))], limit)
        ranked += [(CURRENT + score, a) for score, a in hits]
        total += count
        if len(hits) < limit:  # 3. deprecated entries last
            hits, count = _top(searcher, [*matching, *facets, (must, tantivy.Query.term_query(
                schema, "status", "deprecated"))], limit - len(hits))
            ranked += hits
            total += count
        if total:
            break  # the any-word fallback only when no entry matches every word
    # Only the hits shown are read and decoded (the stored summary, not the whole card).
    results: list[SearchHit] = []
    seen: set[tuple[int, int]] = set()
    decode, doc = _DECODE, searcher.doc
    for score, address in ranked:
        key = (address.segment_ord, address.doc)
        if key in seen:
            continue
        seen.add(key)
        raw = doc(address).get_first("hit")
        results.append(SearchHit(score=round(float(score), 3),
                                 **(decode(raw.decode()) if raw else {})))
        if len(results) == limit:
            break
    return SearchResults(text, results, max(total, len(results)))


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
