"""The candidate plan of Tally's point-in-time join: the table joined to the entity
frame's distinct keys, not to its rows, and the winners picked in numpy.

Per frame, `EntityKeys` writes the entity frame's distinct keys into a DuckDB table, each
with its entity rows' earliest and latest time, their count and where they start in the
frame sorted by key. Joined on the key alone to that table (one row per key, with column
statistics, so DuckDB can use its perfect hash join on integer keys), a table row is a
*candidate* when its event time lies in ``[earliest - ttl, latest]``: the time test is a
filter after the join, kept out of the join condition, where DuckDB would evaluate it
pair by pair on a slower path. On raw tables about one row in eight is a candidate.

The candidates stream out with their features; each is paired with its key's entity rows
(a repeat over the count) and the winner per entity row is Feast's: the newest event
time in ``[t - ttl, t]``, ties broken by the newest created timestamp (a missing one
sorts first), kept batch by batch. The table is read once and no second read fetches
the winners' features.

Where most of a table is a candidate (a snapshot table whose rows all fall in every entity
row's window), carrying the features costs more than the row-id plan
(offline_store_sql.py): `scan_view` returns None when more than MAX_SHARE of the table's
first rows are candidates, or when the stream passes CANDIDATES_PER_ENTITY_ROW candidates
per entity row (and MIN_CANDIDATES in all: a table whose first rows misled the sample).
docs/offline_store.md has the figures.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
from tally.catalog.compute.dense import buffer_values, validity
from tally.catalog.compute.windows import key_changes
from tally.feature_repo.offline_store_sql import ROW, ViewPlan, bounds, q, reader, ttl_us

INT64_MIN = np.iinfo(np.int64).min
LEAST = f"({INT64_MIN + 1}::BIGINT - 1)"  # the literal INT64_MIN would parse as a HUGEINT
BATCH_ROWS = 1 << 17
SAMPLE_ROWS = 1 << 17  # the table's first rows, to judge the share of candidates
MAX_SHARE = 0.3  # more candidates than this share of the sample: the row-id plan
CANDIDATES_PER_ENTITY_ROW = 2  # past this many candidates per entity row (and past
MIN_CANDIDATES = 1 << 20  # this many in all) the stream stops: the row-id plan answers
_NAMES = itertools.count()


class EntityKeys:
    """The entity frame's distinct values of some key columns, in a DuckDB table."""

    def __init__(self, con: Any, entities: str, columns: list[str], ts_col: str,
                 rows: int):
        self.table = f"__tally_keys_{next(_NAMES)}"
        keys = ", ".join(f"{q(c)} AS {q(f'__k{i}')}" for i, c in enumerate(columns))
        names = ", ".join(q(f"__k{i}") for i in range(len(columns)))
        valid = " AND ".join(f"{q(c)} IS NOT NULL" for c in [*columns, ts_col])
        sorted_rows = (f"SELECT {keys}, epoch_us({q(ts_col)}) AS __t, {q(ROW)} FROM "
                       f"{entities} WHERE {valid} ORDER BY {names}, {q(ROW)}")
        ordered = con.sql(sorted_rows).to_arrow_table().combine_chunks()
        self.order = ordered.column(ROW).to_numpy()
        times = ordered.column("__t").to_numpy()
        self.times = np.zeros(rows, dtype=np.int64)
        self.times[self.order] = times
        starts = _run_starts([ordered.column(f"__k{i}") for i in range(len(columns))])
        stats = ordered.select([f"__k{i}" for i in range(len(columns))]).take(starts)
        stats = stats.append_column("__tmin", pa.array(np.minimum.reduceat(times, starts)))
        stats = stats.append_column("__tmax", pa.array(np.maximum.reduceat(times, starts)))
        stats = stats.append_column("__n", pa.array(np.diff(np.r_[starts, len(times)])))
        stats = stats.append_column("__start", pa.array(starts))
        con.register("__tally_stats", stats)
        try:
            con.execute(f"CREATE TABLE {self.table} AS SELECT * FROM __tally_stats")
        finally:
            con.unregister("__tally_stats")

    def drop(self, con: Any) -> None:
        con.execute(f"DROP TABLE IF EXISTS {self.table}")


def _run_starts(columns: list[pa.ChunkedArray]) -> np.ndarray:
    """Where each run of equal rows starts in sorted, null-free key columns."""
    changes = [key_changes(column.combine_chunks()) for column in columns]
    return np.flatnonzero(np.logical_or.reduce(changes))


def _source_sql(plan: ViewPlan, time_bounds: str) -> str:
    cols = [f"{q(src)} AS {q(f'__k{i}')}" for i, (src, _) in enumerate(plan.keys)]
    cols.append(f"epoch_us({q(plan.timestamp)}::TIMESTAMPTZ) AS __ts")
    cols.append(f"{q(plan.created)} AS __craw" if plan.created else "NULL AS __craw")
    cols += [f"{q(src)} AS {q(f'__f{i}')}" for i, (src, _) in enumerate(plan.features)]
    return f"SELECT {', '.join(cols)} FROM {reader(plan.path)} WHERE {time_bounds}"


def _window(plan: ViewPlan) -> str:
    """The candidate test on a joined row; `a - b >= 0`, not `a >= b`, which DuckDB would
    move into the join as a condition (evaluated pair by pair, on a slower path)."""
    window = ["__tmax - __ts >= 0"] + (["__ts - __lo >= 0"] if plan.ttl else [])
    if plan.filter_created and plan.created:
        window.append("__tmax - epoch_us(__craw::TIMESTAMPTZ) >= 0")
    return " AND ".join(window)


def _joined_sql(plan: ViewPlan, keys: EntityKeys, source: str, kind: str = "") -> str:
    on = " AND ".join(f"f.{q(f'__k{i}')} = k.{q(f'__k{i}')}" for i in range(len(plan.keys)))
    names = ", ".join(q(f"__k{i}") for i in range(len(plan.keys)))
    lower = f"__tmin - {ttl_us(plan) or 0}"  # on the keys side: once per key, not per row
    entity = f"SELECT {names}, __n, __start, __tmax, {lower} AS __lo FROM {keys.table}"
    return (f"SELECT k.__n, k.__start, k.__lo, k.__tmax, f.* FROM ({source}) f "
            f"{kind} JOIN ({entity}) k ON {on}")


def _candidates_sql(plan: ViewPlan, keys: EntityKeys, time_bounds: str) -> str:
    feats = "".join(f", {q(f'__f{i}')}" for i in range(len(plan.features)))
    created = f"coalesce(epoch_us(__craw::TIMESTAMPTZ), {LEAST})"
    joined = _joined_sql(plan, keys, _source_sql(plan, time_bounds))
    return (f"SELECT __n, __start, __ts, {created} AS __c{feats} FROM ({joined}) "
            f"WHERE {_window(plan)}")


def _candidate_share(con: Any, plan: ViewPlan, keys: EntityKeys, time_bounds: str) -> float:
    """The share of candidates among the table's first SAMPLE_ROWS rows."""
    source = f"{_source_sql(plan, time_bounds)} LIMIT {SAMPLE_ROWS}"
    joined = _joined_sql(plan, keys, source, "LEFT")
    (rows, hits), = con.sql(f"SELECT count(*), count(*) FILTER (__n IS NOT NULL AND "
                            f"{_window(plan)}) FROM ({joined})").fetchall()
    return float(hits) / rows if rows else 0.0


class _Winners:
    """Per entity row, the best candidate so far under Feast's rule, updated batch by
    batch."""

    def __init__(self, plan: ViewPlan, keys: EntityKeys):
        self.keys = keys
        self.ttl = ttl_us(plan)
        self.filter_created = plan.filter_created and plan.created is not None
        rows = len(keys.times)
        self.newest = np.full(rows, INT64_MIN, dtype=np.int64)
        self.created = np.full(rows, INT64_MIN, dtype=np.int64)
        self.winner = np.full(rows, -1, dtype=np.int64)

    def _pairs(self, counts: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate, entity row) for every entity row of each candidate's key."""
        order = self.keys.order
        if not len(counts) or counts.max() == 1:
            return np.arange(len(counts)), order[starts]
        cand = np.repeat(np.arange(len(counts)), counts)
        first = np.cumsum(counts) - counts  # where each candidate's pairs begin
        return cand, order[np.arange(len(cand)) + np.repeat(starts - first, counts)]

    def add(self, batch: pa.RecordBatch, first: int) -> None:
        """A batch of candidates (count, start, event time, created time, ...), numbered
        from `first`."""
        counts, starts, ts, created = (batch.column(i).to_numpy() for i in range(4))
        cand, ent = self._pairs(counts, starts)
        pair_ts, t = ts[cand], self.keys.times[ent]
        keep = pair_ts <= t
        if self.ttl is not None:
            keep &= pair_ts >= t - self.ttl
        if self.filter_created:
            keep &= created[cand] <= t
        cand, ent, pair_ts = cand[keep], ent[keep], pair_ts[keep]
        before = self.newest[ent]
        np.maximum.at(self.newest, ent, pair_ts)
        self.created[ent[self.newest[ent] > before]] = INT64_MIN
        top = pair_ts == self.newest[ent]
        cand, ent = cand[top], ent[top]
        pair_c = created[cand]
        np.maximum.at(self.created, ent, pair_c)
        top = pair_c == self.created[ent]
        np.maximum.at(self.winner, ent[top], cand[top] + first)


def in_entity_order(values: pa.Table, positions: np.ndarray) -> pa.Table:
    """Per entity row, the row of `values` at its position; nulls where it is negative."""
    missing = positions < 0
    at = np.where(missing, 0, positions)
    columns = [_gathered(column, at, missing) for column in values.columns]
    return pa.table(columns, schema=values.schema)


def _gathered(column: pa.ChunkedArray, at: np.ndarray, missing: np.ndarray
              ) -> pa.Array | pa.ChunkedArray:
    """`column` at positions `at`, null where `missing`: a numpy gather from the column's
    buffer for numbers (half the time of Arrow's take with a null-masked index), Arrow's
    take for other types."""
    kind = column.type
    if not len(column) or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return column.take(pa.array(at, mask=missing))
    array = column.combine_chunks()
    valid = validity(array)
    if valid is not None:
        missing = missing | ~valid[at]
    return pa.array(buffer_values(array)[at], type=kind, mask=missing)


def scan_view(con: Any, plan: ViewPlan, keys: EntityKeys, lo: str | None, hi: str | None
              ) -> pa.Table | None:
    """The view's feature columns (`__f0`, ...) in entity order, for entity times from
    `lo` to `hi`; or None when the table has too many candidates (the row-id plan then
    answers)."""
    time_bounds = bounds(plan, lo, hi, f"{q(plan.timestamp)}::TIMESTAMPTZ")
    max_candidates = max(CANDIDATES_PER_ENTITY_ROW * len(keys.times), MIN_CANDIDATES)
    if _candidate_share(con, plan, keys, time_bounds) > MAX_SHARE:
        return None
    names = [f"__f{i}" for i in range(len(plan.features))]
    winners = _Winners(plan, keys)
    kept: list[pa.RecordBatch] = []
    found = 0
    stream = con.sql(_candidates_sql(plan, keys, time_bounds)).to_arrow_reader(BATCH_ROWS)
    for batch in stream:
        winners.add(batch, found)
        kept.append(batch.select(names))
        found += batch.num_rows
        if found > max_candidates:
            stream.close()
            return None
    schema = pa.schema([stream.schema.field(n) for n in names])
    table = pa.Table.from_batches(kept, schema=schema)  # take reads the chunks in place
    return in_entity_order(table, winners.winner)


__all__ = ["EntityKeys", "in_entity_order", "scan_view"]
