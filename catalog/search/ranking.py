"""How catalog search ranks, as tantivy queries (the rules users see: tally.catalog.search.query).

Within a tier an entry scores, per query word, the best clause the word finds in it (a name
token 1000, a prefix of one 950, one within the typo budget 900; in the description and
tags bm25, or 0.5 for a typo) plus a hundredth of the word's other bm25 clauses; plus 500
when certified. The tiers, in order: the exact name; current entries by how many query
words their name holds, all of them first; deprecated entries the same way. Up to four
words the constants alone would order entries so; the tiers make it exact and, above all,
cheap. Each tier (up to four words, each set of name words) is its own search requiring
those words in the name, whose posting lists are short, and the others in the description
and tags; the walk stops at the first tier that fills the limit. In a small vocabulary most
descriptions hold most words, so a query whose words are names never scores the thousands
of entries whose descriptions merely mention them, and a typo's automaton is built only in
the tiers reached. Longer queries: every word in the name, then the rest in one search.

One search serves a tier's current and deprecated entries: deprecated ones score DEPRECATED
less (below zero) and wait until every current tier is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import combinations

import tantivy

Query, Occur = tantivy.Query, tantivy.Occur
Hit = tuple[float, tantivy.DocAddress]
Clause = tuple[tantivy.Occur, tantivy.Query]

# Score layers; the exact name, the current and the deprecated entries are separate tiers.
EXACT = 1_000_000.0  # the query is the entry's name
CURRENT = 100_000.0  # not deprecated
DEPRECATED = 20_000.0  # inside tantivy deprecated entries score this much less (below zero)
NAME_WORD, NAME_PREFIX, NAME_TYPO = 1_000.0, 950.0, 900.0  # per query word found in the name
CERTIFIED = 500.0
TEXT_TYPO = 0.5  # per word found only with a typo in description/tags (else bm25)
TIE = 0.01  # a word's other clauses count a hundredth
SUBSET_WORDS = 4  # up to this many words every combination of name words is its own search
BM25_K1 = 1.2  # tantivy's
BOUND_SLACK = 0.01  # score bounds are computed in float64, tantivy scores in float32


def typo_budget(word: str) -> int:
    return 0 if len(word) < 4 else (1 if len(word) < 8 else 2)


def _const(query: tantivy.Query, score: float) -> tantivy.Query:
    return Query.const_score_query(query, score)


def _variants(searcher: tantivy.Searcher, field_name: str, word: str) -> list[tuple[str, int]]:
    """Indexed terms of `field_name` that `word` stands for, with their document counts:
    itself, and the words it is a prefix of (`act` -> `active`, `user` -> `users`), at most
    eight."""
    if len(word) < 2:
        count = searcher.doc_freq(field_name, word)
        return [(word, count)] if count else []
    found = searcher.terms_with_prefix(field_name, word, limit=9)
    stem = singular(word)
    if stem != word and (count := searcher.doc_freq(field_name, stem)):
        found.append((stem, count))  # `users` finds `user`; `user` finds `users` by prefix
    return sorted(found, key=lambda t: (t[0] not in (word, stem), len(t[0]), t[0]))[:8]


def singular(word: str) -> str:
    """A light English stemmer for plurals: users -> user, activities -> activity,
    boxes -> box; other words as they are."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _bm25_bound(doc_freq: int, docs: int) -> float:
    """The most a term can score in bm25 as tantivy computes it: idf * (k1 + 1)."""
    return math.log(1.0 + (docs - doc_freq + 0.5) / (doc_freq + 0.5)) * (1.0 + BM25_K1)


def _dismax_bound(bounds: list[float], tie: float = TIE) -> float:
    return max(bounds) + tie * (sum(bounds) - max(bounds)) if bounds else 0.0


def _dismax(parts: list[tantivy.Query], tie: float = TIE) -> tantivy.Query:
    return parts[0] if len(parts) == 1 else Query.disjunction_max_query(parts, tie)


@dataclass
class Word:
    """One query word's clauses: in the name (a token, a prefix, within the typo budget) and
    in the description and tags (bm25, a prefix, within the typo budget). Only terms the
    index holds become clauses, and a field is searched for typos only when none of its
    terms is the word or starts with it. Numbers are matched in the name's numbers, exactly
    or as a prefix."""

    word: str
    name_parts: list[tantivy.Query] = field(default_factory=list)
    text_parts: list[tantivy.Query] = field(default_factory=list)
    text_terms: list[tantivy.Query] = field(default_factory=list)  # without the typo
    name_bounds: list[float] = field(default_factory=list)  # the most each part scores
    text_bounds: list[float] = field(default_factory=list)

    @classmethod
    def build(cls, searcher: tantivy.Searcher, schema: tantivy.Schema, word: str) -> Word:
        number = word.isdigit()
        budget = 0 if number else typo_budget(word)
        name_field = "name_numbers" if number else "name_tokens"
        names, texts = _variants(searcher, name_field, word), _variants(searcher, "text", word)
        out = cls(word)
        stem = singular(word)
        out.name_bounds = [NAME_WORD if t in (word, stem) else NAME_PREFIX for t, _ in names]
        out.name_parts = [_const(Query.term_query(schema, name_field, t), bound)
                          for (t, _), bound in zip(names, out.name_bounds, strict=True)]
        out.text_terms = [Query.term_query(schema, "text", t) for t, _ in texts]  # bm25
        out.text_parts = list(out.text_terms)
        out.text_bounds = [_bm25_bound(n, searcher.num_docs) for _, n in texts]
        if budget and not names:  # no term is the word or starts with it: look for typos
            typo = _const(Query.fuzzy_term_query(schema, name_field, word, budget, True,
                                                 False), NAME_TYPO)
            # A word of the descriptions rarely has a name within a typo; when none has, a
            # look now spares every tier that would need it in the name.
            if not texts or searcher.search(typo, 1, count=False).hits:
                out.name_parts.append(typo)
                out.name_bounds.append(NAME_TYPO)
        if budget and not texts:
            out.text_parts.append(_const(Query.fuzzy_term_query(
                schema, "text", word, budget, True, False), TEXT_TYPO))
            out.text_bounds.append(TEXT_TYPO)
        return out

    def bound(self, in_name: bool) -> float:
        """The most this word adds to an entry's score when required in the name (the
        text adds a hundredth of its bm25 terms) or in the text."""
        if in_name:
            terms = self.text_bounds[:len(self.text_terms)]
            return _dismax_bound(self.name_bounds) + TIE * sum(terms)
        return _dismax_bound(self.text_bounds)

    @property
    def matchable(self) -> bool:
        return bool(self.name_parts or self.text_parts)

    def name(self) -> tantivy.Query:
        return _dismax(self.name_parts)

    def text(self) -> tantivy.Query:
        return _dismax(self.text_parts)

    def text_tie(self) -> tantivy.Query | None:
        """What the text adds when the word is in the name: a hundredth of each bm25 clause
        (a typo in the text adds nothing then: its automaton would cost more than the
        whole search)."""
        if not self.text_terms:
            return None
        return Query.boost_query(_dismax(self.text_terms, 1.0), TIE)

    def anywhere(self) -> tantivy.Query:
        return _dismax(self.name_parts + self.text_parts)


@dataclass
class Ranker:
    """Collects hits tier by tier into `ranked` (final order) until `limit` are found."""

    searcher: tantivy.Searcher
    schema: tantivy.Schema
    facets: list[Clause]
    limit: int
    ranked: list[Hit] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)
    held: list[list[Hit]] = field(default_factory=list)  # deprecated hits, tier by tier

    @property
    def needed(self) -> int:
        return self.limit - len(self.ranked)

    def search(self, clauses: list[Clause], optional: list[tantivy.Query]) -> list[Hit]:
        """Top hits of one search, enough to fill the limit after dropping those already
        ranked. Each optional clause nests as the only optional clause of its own boolean
        query: tantivy then seeks it document by document, where several optional clauses
        side by side form a union that walks their whole posting lists."""
        if not any(occur == Occur.Must for occur, _ in clauses):
            clauses = [*clauses, (Occur.Must, Query.all_query())]
        query = Query.boolean_query(clauses)
        for extra in optional:
            query = Query.boolean_query([(Occur.Must, query), (Occur.Should, extra)])
        found = self.searcher.search(query, self.needed + len(self.seen), count=False)
        return [(s, a) for s, a in found.hits if (a.segment_ord, a.doc) not in self.seen]

    def take(self, hits: list[Hit], offset: float) -> None:
        """Rank hits by score (ties in index order) after those already ranked."""
        hits.sort(key=lambda h: (-h[0], h[1].segment_ord, h[1].doc))
        for score, address in hits:
            key = (address.segment_ord, address.doc)
            if self.needed > 0 and key not in self.seen:
                self.seen.add(key)
                self.ranked.append((offset + score, address))

    def take_tier(self, hits: list[Hit]) -> None:
        """Current hits now; deprecated ones (scored below zero) held for after every
        current tier. One search serves both: while current entries do not fill the limit,
        the search returned all of them and the best deprecated ones, enough for later."""
        self.take([h for h in hits if h[0] >= 0.0], CURRENT)
        self.held.append([(s + DEPRECATED, a) for s, a in hits if s < 0.0])

    def take_held(self) -> None:
        for hits in self.held:
            self.take(hits, 0.0)

    def exact(self, name: str) -> None:
        if self.searcher.doc_freq("name", name):  # a dictionary lookup skips most searches
            self.take(self.search([(Occur.Must, Query.term_query(self.schema, "name", name)),
                                   *self.facets], []), EXACT)

    def every_word(self, query_words: list[Word]) -> None:
        """Entries matching every word, by tiers: current ones, then deprecated ones. The
        searches of one tier run in order of the most they can score; once the hits found
        fill the limit with scores above that, the remaining searches are skipped."""
        for tier in _tiers(query_words):
            for clauses, optional in self._splits(tier):
                if self.needed <= 0:
                    return
                planned = []
                for in_name in tier:
                    words, ties = self._tier_clauses(query_words, in_name)
                    if words is not None:
                        planned.append((_bound(query_words, in_name), words, ties))
                planned.sort(key=lambda plan: -plan[0])
                hits: list[Hit] = []
                for bound, words, ties in planned:
                    if _nth_best(hits, self.needed) > bound + BOUND_SLACK:
                        break
                    hits += self.search([*words, *self.facets, *clauses], [*optional, *ties])
                self.take_tier(hits)
        self.take_held()

    def _splits(self, tier: list[tuple[int, ...] | None]
                ) -> list[tuple[list[Clause], list[tantivy.Query]]]:
        """Extra clauses of a tier's searches: certified entries score CERTIFIED more,
        deprecated ones DEPRECATED less. Where no word need be in the name (the longest
        posting lists) certified entries are a search of their own first, so the others are
        scored only when the certified ones do not fill the limit (certified outranks any
        difference in bm25)."""
        certified = Query.term_query(self.schema, "status", "certified")
        deprecated = _const(Query.term_query(self.schema, "status", "deprecated"), -DEPRECATED)
        if tier == [()]:
            return [([(Occur.Must, _const(certified, CERTIFIED))], []),
                    ([(Occur.MustNot, certified)], [deprecated])]
        return [([], [_const(certified, CERTIFIED), deprecated])]

    def _tier_clauses(self, query_words: list[Word], in_name: tuple[int, ...] | None
                      ) -> tuple[list[Clause] | None, list[tantivy.Query]]:
        """The words at `in_name` must be in the name, the others in the text; None: every
        word anywhere (the rest after the all-in-name tier, for long queries)."""
        if in_name is None:
            return [(Occur.Must, w.anywhere()) for w in query_words], []
        clauses: list[Clause] = []
        ties: list[tantivy.Query] = []
        for i, word in enumerate(query_words):
            if i in in_name:
                if not word.name_parts:
                    return None, []
                clauses.append((Occur.Must, word.name()))
                tie = word.text_tie()
                if tie is not None:
                    ties.append(tie)
            elif word.text_parts:
                clauses.append((Occur.Must, word.text()))
            else:
                return None, []
        return clauses, ties

    def any_word(self, query_words: list[Word]) -> None:
        """The fallback when no entry matches every word: entries matching any of them."""
        anyof = Query.boolean_query([(Occur.Should, w.anywhere()) for w in query_words])
        for clauses, optional in self._splits([None]):
            self.take_tier(self.search([(Occur.Must, anyof), *self.facets, *clauses],
                                       optional))
        self.take_held()

    def counter(self, matching: list[Clause]) -> Callable[[], int]:
        """How many entries match, counted when asked (another pass over every match)."""
        clauses = [*matching, *self.facets]
        if not any(occur == Occur.Must for occur, _ in clauses):
            clauses.append((Occur.Must, Query.all_query()))
        query = _const(Query.boolean_query(clauses), 0.0)  # counted, not scored

        def count() -> int:
            found = self.searcher.search(query, 1, count=True)
            return int(getattr(found, "count", None) or 0)
        return count


def _bound(query_words: list[Word], in_name: tuple[int, ...] | None) -> float:
    """The most an entry of one tier search can score (certified included)."""
    if in_name is None:
        return math.inf
    return CERTIFIED + sum(w.bound(i in in_name) for i, w in enumerate(query_words))


def _nth_best(hits: list[Hit], n: int) -> float:
    """The n-th best score among current hits (those at or above zero), or -inf."""
    scores = sorted((s for s, _ in hits if s >= 0.0), reverse=True)
    return scores[n - 1] if n >= 1 and len(scores) >= n else -math.inf


def _tiers(query_words: list[Word]) -> Iterator[list[tuple[int, ...] | None]]:
    """Which words must be in the name, tier by tier (most first). Beyond SUBSET_WORDS
    words: all of them, then the rest in one search."""
    n = len(query_words)
    if n <= SUBSET_WORDS:
        for k in range(n, -1, -1):
            yield list(combinations(range(n), k))
    else:
        yield [tuple(range(n))]
        yield [None]


def rank(searcher: tantivy.Searcher, schema: tantivy.Schema, query_words: list[str],
         facets: list[Clause], limit: int) -> tuple[list[Hit], Callable[[], int]]:
    """The ranked hits (at most `limit`) and a function counting every match."""
    ranker = Ranker(searcher, schema, facets, limit)
    if query_words:
        ranker.exact("_".join(query_words))
    built = [Word.build(searcher, schema, w) for w in query_words]
    usable = [w for w in built if w.matchable]
    if len(usable) == len(built):
        ranker.every_word(built)
        if ranker.ranked or len(built) < 2:
            return ranker.ranked, ranker.counter(
                [(Occur.Must, w.anywhere()) for w in built])
    if not usable:
        return ranker.ranked, lambda: len(ranker.ranked)
    if len(usable) == 1:  # any of one word is that word
        ranker.every_word(usable)
        return ranker.ranked, ranker.counter([(Occur.Must, usable[0].anywhere())])
    ranker.any_word(usable)
    return ranker.ranked, ranker.counter([(Occur.Must, Query.boolean_query(
        [(Occur.Should, w.anywhere()) for w in usable]))])
