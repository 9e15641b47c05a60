"""The windows of a metric group, computed column-wise (the DuckDB engine's path).

DuckDB does the one scan of the source: the partial aggregates per (entity, bucket) of
`plans.partial_plan`, sorted by entity and bucket. The windows over those cells are then
whole-array numpy passes instead of SQL window functions (DuckDB's window operator was
about three times slower on the compute bench). The semantics are those of
`plans.group_query`, which the Spark engine still runs and which tests compare against
this path. The layout and the window reads are in `windows.py`, the dense partial columns
and count_distinct in `dense.py`, DuckDB's rounding in `rounding.py`.

The cells are computed a chunk of whole entities at a time and the table is written chunk
by chunk. A full run streams the cells from DuckDB (`stream_group`), so they are never all
held in Arrow; an incremental run holds its cells (`prepare_group`) and merges its rows
with the kept ones in memory; when that would not fit in half the memory, or when a
partial has a type the kernel does not handle (text, dates, decimals as min or max), the
SQL plan (which DuckDB can spill to disk) runs instead. Both paths cut chunks at the same
cells (`chunk_bounds`), so their sums agree to the last bit.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tally.catalog.compute.dense import DenseColumns, Occurrences, distinct_counts
from tally.catalog.compute.plans import GroupPlan, Partials, occurrences
from tally.catalog.compute.rounding import round_like_duckdb
from tally.catalog.compute.windows import (
    Layout,
    Windows,
    islands,
    key_changes,
    layout,
    rows_split_at,
)

_NUMERIC = (pa.types.is_integer, pa.types.is_floating)


def kernel_types_ok(schema: pa.Schema, parts: Partials) -> bool:
    """The kernel handles numeric partials (decimal sums and counts as floats) and
    timestamp minimums and maximums; anything else (text, dates, decimal extremes) goes
    through the SQL plan."""
    extremes = {use[k] for use in parts.uses.values() for k in ("min", "max") if k in use}
    for name in parts.names:
        kind = schema.field(name).type
        if any(test(kind) for test in _NUMERIC):
            continue
        if name in extremes and not pa.types.is_timestamp(kind):
            return False
        if name not in extremes and not pa.types.is_decimal(kind):
            return False
    return True


def memory_budget() -> int:
    """Half the machine's memory (what a merged incremental table may take)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


CHUNK_CELLS = 1 << 16  # cells per chunk: whole entities, so windows never cross a chunk


def chunk_bounds(key_starts: np.ndarray, n: int, chunk_cells: int) -> np.ndarray:
    """Where chunks of whole entities start (and the last ends): at the first key start at
    or after each multiple of `chunk_cells`. A window's running sums restart with each
    chunk, so every path that chunks cells cuts them here (their sums then agree to the
    last bit)."""
    if not n:
        return np.array([0, 0])
    at = np.searchsorted(key_starts, np.arange(chunk_cells, n, chunk_cells))
    return np.unique(np.r_[0, key_starts[at[at < len(key_starts)]], n])


def in_order(compute: Callable[[Any], pa.Table], items: Iterable[Any],
             workers: int | None = None) -> Iterator[pa.Table]:
    """compute(item) for each item, yielded in order. On `workers` threads (numpy and Arrow
    release the GIL) at most that many ahead of the one being consumed, so memory stays
    bounded; `items` is advanced on the calling thread (a DuckDB reader stays there)."""
    workers = workers or min(4, os.cpu_count() or 1)
    if workers == 1:
        yield from map(compute, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[pa.Table]] = deque()
        for item in items:
            pending.append(pool.submit(compute, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class GroupRun:
    """A group's cells, read once from DuckDB, computed a chunk of whole entities at a time
    so memory stays bounded by the chunk, whatever the source's size."""

    def __init__(self, con: Any, parts: Partials, plan: GroupPlan, cells: pa.Table, *,
                 low: int, high: int, chunk_cells: int):
        self.con, self.parts, self.plan, self.cells = con, parts, plan, cells
        self.low, self.high = low, high
        self.keys = cells.column("__key").combine_chunks()
        self.b = cells.column("__b").to_numpy().astype(np.int64, copy=False)
        self.key_change = key_changes(self.keys)
        self.key_starts = np.flatnonzero(self.key_change)
        self.bounds = chunk_bounds(self.key_starts, len(self.b), chunk_cells)
        self.distinct_keys = self.keys.take(pa.array(self.key_starts))
        self.occurrences: dict[int, Occurrences] = {}  # by metric index, read when needed

    def _key_index(self, cell: int) -> int:
        """Which distinct key cell `cell` belongs to."""
        return int(np.searchsorted(self.key_starts, cell, side="right")) - 1

    def output_rows(self) -> int:
        """How many rows the table will have (from the islands alone)."""
        return int(islands(self.key_change, self.b, self.plan, self.low, self.high)[-1].sum())

    def _occ(self, i: int) -> Occurrences:
        if i not in self.occurrences:
            self.occurrences[i] = Occurrences.read(read_occurrences(self.con, self.parts, i),
                                                    self.distinct_keys)
        return self.occurrences[i]

    def tables(self, key_name: str, workers: int | None = None, split_us: int | None = None
               ) -> Iterator[pa.Table]:
        """The table for snapshots low..high, sorted by key and snapshot, chunk by chunk
        (with `split_us`, each chunk's rows before it come first, see `rows_split_at`),
        computed on `workers` threads (see `in_order`)."""
        for i, metric in enumerate(self.parts.metrics):  # DuckDB reads stay on this thread
            if metric.aggregation == "count_distinct":
                self._occ(i)
        spans = [(int(lo), int(hi)) for lo, hi in zip(self.bounds[:-1], self.bounds[1:],
                                                      strict=True)]
        return in_order(lambda span: self._chunk(span[0], span[1], key_name, split_us), spans,
                        workers if len(spans) > 1 else 1)

    def whole(self, key_name: str, split_us: int | None) -> pa.Table:
        """The table of every cell, as one chunk (the run's cells are whole entities)."""
        return self._chunk(0, len(self.b), key_name, split_us)

    def _chunk(self, lo: int, hi: int, key_name: str, split_us: int | None) -> pa.Table:
        plan, parts = self.plan, self.parts
        lay = layout(self.keys.slice(lo, hi - lo), self.key_change[lo:hi], self.b[lo:hi],
                     plan, self.low, self.high)
        if split_us is not None:
            lay = rows_split_at(lay, split_us, plan.bucket_us)
        windows = Windows(lay.row_slot, lay.size, max(plan.windows.values()))
        dense = DenseColumns(self.cells.slice(lo, hi - lo), lay, windows.size)
        stamps = pa.array(lay.row_pos * plan.bucket_us, type=pa.int64()).cast(
            pa.timestamp("us", tz="UTC"))
        columns: dict[str, Any] = {key_name: lay.distinct_keys.take(pa.array(lay.row_key)),
                                   "event_timestamp": stamps, "created_timestamp": stamps}
        made: dict[tuple[Any, ...], Any] = {}  # metrics that differ only by name share
        for i, metric in enumerate(parts.metrics):
            w = plan.windows[metric.name]
            uses = parts.uses.get(i, {})
            same = (metric.aggregation, tuple(sorted(uses.items())), w)
            if metric.aggregation == "count_distinct" or same not in made:
                made[same] = self._column(i, w, dense, windows, lay, lo, hi)
            columns[metric.name] = made[same]
        return pa.table(columns)

    def _column(self, i: int, w: int, dense: DenseColumns, windows: Windows, lay: Layout, lo: int,
                hi: int) -> Any:
        """Metric i's values at the chunk's output rows (cells lo..hi)."""
        agg, uses = self.parts.metrics[i].aggregation, self.parts.uses.get(i, {})
        if agg in ("count", "sum"):
            total = dense.total(windows, uses["sum"], w)
            return (total.astype(np.int64) if agg == "count" else
                    round_like_duckdb(total.astype(np.float64, copy=False)))
        if agg == "avg":
            total = dense.total(windows, uses["sum"], w).astype(np.float64)
            count = dense.total(windows, uses["count"], w)
            with np.errstate(divide="ignore", invalid="ignore"):
                value = round_like_duckdb(total / np.maximum(count, 1))
            return pa.array(value, mask=count == 0)
        if agg in ("min", "max"):
            name = uses[agg]
            values, op = dense.extreme(name, agg)
            found = windows.total(dense.present(name), w)
            array = pa.array(windows.extreme(values, w, op), mask=found == 0)
            kind = self.cells.schema.field(name).type
            return array.cast(kind) if pa.types.is_timestamp(kind) else array
        first_key = self._key_index(lo) if hi > lo else 0  # count_distinct
        last_key = self._key_index(hi - 1) if hi > lo else -1
        occ = self._occ(i).of_keys(first_key, last_key)
        return distinct_counts(occ, self.b[lo:hi], lay, w)


def cells_sql(parts: Partials) -> str:
    """The scan into partial aggregates per (key, bucket), sorted as the kernel reads them."""
    return parts.buckets.with_("src", as_=parts.src).order_by("__key", "__b").sql("duckdb")


def read_occurrences(con: Any, parts: Partials, i: int) -> pa.Table:
    """count_distinct metric i's occurrences, sorted by key, value and bucket."""
    sql = occurrences(i).with_("src", as_=parts.src).order_by("__key", "__v", "__b")
    return con.sql(sql.sql("duckdb")).to_arrow_table()


class OccurrenceCursor:
    """A count_distinct metric's occurrences handed out a piece of cells at a time, in key
    order: each piece's keys are the next run of the occurrences' keys (their keys are
    among the cells', both sorted alike)."""

    def __init__(self, table: pa.Table):
        self.table = table
        change = key_changes(table.column("__key").combine_chunks())
        self.starts = np.r_[np.flatnonzero(change), table.num_rows]
        self.keys = table.column("__key").take(pa.array(self.starts[:-1])).combine_chunks()
        self.next = 0  # the first key not handed out yet

    def take(self, piece_keys: pa.Array) -> Occurrences:
        """The occurrences of the next piece, whose distinct keys are `piece_keys`."""
        ahead = self.keys.slice(self.next, len(piece_keys))
        inside = pc.is_in(ahead, value_set=piece_keys).to_numpy(zero_copy_only=False)
        count = len(inside) if inside.all() else int(np.argmin(inside))
        if inside[count:].any():  # both queries sort by key alike, so this never holds
            raise RuntimeError("count_distinct occurrences are not in the cells' key order")
        lo, hi = int(self.starts[self.next]), int(self.starts[self.next + count])
        self.next += count
        return Occurrences.read(self.table.slice(lo, hi - lo), piece_keys)


class GroupStream:
    """A full run's cells read from DuckDB a batch at a time, in key and bucket order, and
    cut into pieces of whole entities where `GroupRun` would cut its chunks: each piece is
    computed while DuckDB still hands out the next, and the cells are never all held."""

    def __init__(self, con: Any, parts: Partials, plan: GroupPlan, reader: Any, *, low: int,
                 high: int, chunk_cells: int, cursors: dict[int, OccurrenceCursor]):
        self.con, self.parts, self.plan, self.reader = con, parts, plan, reader
        self.low, self.high, self.chunk_cells, self.cursors = low, high, chunk_cells, cursors

    def _pieces(self) -> Iterator[pa.Table]:
        """The cells in pieces that end where `chunk_bounds` puts a chunk's end (it is asked
        about the cells held so far, whose last piece waits for the next batch); one empty
        piece when there are no cells at all (the writer still needs the table's schema)."""
        held = self.reader.schema.empty_table()
        start, given = 0, False  # the held cells' first index in the whole run
        for batch in self.reader:
            held = pa.concat_tables([held, pa.Table.from_batches([batch])])
            end = start + held.num_rows
            starts = start + np.flatnonzero(key_changes(held.column("__key").combine_chunks()))
            bounds = chunk_bounds(starts, end, self.chunk_cells)
            cuts = bounds[(bounds > start) & (bounds < end)] - start
            for lo, hi in itertools.pairwise(np.r_[0, cuts]):
                yield held.slice(lo, hi - lo)
            given = given or len(cuts) > 0
            cut = int(cuts[-1]) if len(cuts) else 0
            held, start = held.slice(cut), start + cut
        if held.num_rows or not given:
            yield held

    def _runs(self) -> Iterator[GroupRun]:
        """A run per piece, with its count_distinct occurrences."""
        for piece in self._pieces():
            run = GroupRun(self.con, self.parts, self.plan, piece, low=self.low,
                           high=self.high, chunk_cells=piece.num_rows)
            run.occurrences.update({i: cursor.take(run.distinct_keys)
                                    for i, cursor in self.cursors.items()})
            yield run

    def tables(self, key_name: str, workers: int | None = None, split_us: int | None = None
               ) -> Iterator[pa.Table]:
        """As `GroupRun.tables`, a piece at a time (the reader advanced on this thread)."""
        return in_order(lambda run: run.whole(key_name, split_us), self._runs(), workers)


def stream_group(con: Any, parts: Partials, plan: GroupPlan, *, low: int, high: int,
                 chunk_cells: int = CHUNK_CELLS) -> GroupStream | None:
    """Start the scan into partial aggregates for a full run; None when they have types the
    kernel does not handle (judged before any data is read). Occurrences of count_distinct
    metrics are read first: a connection runs one query at a time."""
    relation = con.sql(cells_sql(parts))
    if not kernel_types_ok(relation.limit(0).to_arrow_table().schema, parts):
        return None
    cursors = {i: OccurrenceCursor(read_occurrences(con, parts, i))
               for i, metric in enumerate(parts.metrics) if metric.aggregation == "count_distinct"}
    return GroupStream(con, parts, plan, relation.to_arrow_reader(4 * chunk_cells), low=low,
                       high=high, chunk_cells=chunk_cells, cursors=cursors)


def prepare_group(con: Any, parts: Partials, plan: GroupPlan, *, low: int, high: int,
                  chunk_cells: int = CHUNK_CELLS) -> GroupRun | None:
    """Run the scan into partial aggregates; None when they have types the kernel does
    not handle (the caller then runs the SQL plan)."""
    cells = con.sql(cells_sql(parts)).to_arrow_table()
    if not kernel_types_ok(cells.schema, parts):
        return None
    return GroupRun(con, parts, plan, cells, low=low, high=high, chunk_cells=chunk_cells)


def fits_in_memory(run: GroupRun) -> bool:
    """Whether the whole table fits in half the memory (needed when it is merged with the
    rows kept from the previous run; a full run streams chunk by chunk)."""
    return 8 * run.output_rows() * 2 * (len(run.parts.metrics) + 3) <= memory_budget()


def group_table(con: Any, parts: Partials, plan: GroupPlan, *, key_name: str, low: int,
                high: int, chunk_cells: int = CHUNK_CELLS) -> pa.Table | None:
    """The whole table at once (see GroupRun.tables)."""
    run = prepare_group(con, parts, plan, low=low, high=high, chunk_cells=chunk_cells)
    if run is None:
        return None
    return pa.concat_tables(list(run.tables(key_name)))
