"""The windows of a metric group, computed column-wise (the DuckDB engine's path).

DuckDB does the one scan of the source: the partial aggregates per (entity, bucket) of
`plans.partial_plan`, sorted by entity and bucket. The windows over those cells are then
whole-array numpy passes instead of SQL window functions (DuckDB's window operator was
about three times slower on the compute bench). The semantics are those of
`plans.group_query`, which the Spark engine still runs and which tests compare against
this path:

* islands: an entity's cells closer than `reach` buckets form one island; it has a row at
  each snapshot K (a multiple of G) with first < K <= last + reach, within low..high;
* each island is laid out densely, one slot per bucket from first to last + reach; its
  empty tail of `reach` slots keeps a window of the next island from seeing it;
* window totals are read from running sums restarted every SEGMENT slots (so a sum only
  grows over one segment), with NaN and infinities counted apart; minimums and maximums
  come from doubling tables; each (partial, width) is computed once;
* the cells are taken a chunk of whole entities at a time and the table is written chunk
  by chunk, so memory stays bounded whatever the source's size. An incremental run merges
  its rows with the kept ones in memory; when that would not fit in half the memory, or
  when a partial has a type the kernel does not handle (text, dates, decimals as min or
  max), the SQL plan (which DuckDB can spill to disk) runs instead.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tally.catalog.compute.plans import ROUND_DIGITS, GroupPlan, Partials, occurrences

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


@dataclass
class Layout:
    """Where every cell and every output row sits in the dense per-island layout."""
    size: int  # dense slots
    cell_slot: np.ndarray  # per cell
    row_slot: np.ndarray  # per output row: the slot of its snapshot K
    row_pos: np.ndarray  # per output row: K (bucket position)
    row_key: np.ndarray  # per output row: index into the distinct keys
    key_of_cell: np.ndarray  # per cell: index into the distinct keys
    distinct_keys: pa.Array


def key_changes(keys: pa.Array) -> np.ndarray:
    """True where a sorted run of keys starts a new key."""
    n = len(keys)
    change = np.ones(n, dtype=bool)
    if n > 1:
        change[1:] = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(
            zero_copy_only=False)
    return change


def _islands(key_change: np.ndarray, b: np.ndarray, plan: GroupPlan, low: int, high: int
             ) -> tuple[np.ndarray, ...]:
    """Where each island starts, its first and last bucket, the first and last snapshot it
    has a row at, and how many rows (snapshots) that is."""
    n, g, reach = len(b), plan.grain_buckets, plan.reach
    new_island = key_change.copy()
    new_island[1:] |= (b[1:] - b[:-1]) > reach
    starts = np.flatnonzero(new_island)
    ends = np.r_[starts[1:], n].astype(np.int64) - 1 if n else starts
    first, last = b[starts], b[ends]
    k_start = np.maximum((first // g + 1) * g, low)
    k_end = np.minimum(((last + reach) // g) * g, high)
    count = np.maximum(0, (k_end - k_start) // g + 1)
    return new_island, starts, first, last, k_start, count


def layout(keys: pa.Array, key_change: np.ndarray, b: np.ndarray, plan: GroupPlan, low: int,
           high: int) -> Layout:
    g, reach = plan.grain_buckets, plan.reach
    new_island, starts, first, last, k_start, count = _islands(key_change, b, plan, low, high)
    island_of_cell = np.cumsum(new_island) - 1
    key_of_cell = np.cumsum(key_change) - 1
    # slots first .. last + reach of each island in turn, after `reach` empty ones: a
    # window (at most reach - G wide) read at K > first never gets past the empty tail of
    # the island before
    length = last + reach - first + 1
    offset = np.cumsum(length) - length + reach  # slot of `first`
    cell_slot = offset[island_of_cell] + (b - first[island_of_cell])
    row_island = np.repeat(np.arange(len(starts)), count)
    within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    row_pos = k_start[row_island] + g * within
    row_slot = offset[row_island] + (row_pos - first[row_island])
    distinct_keys = keys.take(pa.array(np.flatnonzero(key_change)))
    return Layout(reach + int(length.sum()), cell_slot, row_slot, row_pos,
                  key_of_cell[starts][row_island], key_of_cell, distinct_keys)


def rows_split_at(lay: Layout, split_us: int, bucket_us: int) -> Layout:
    """The output rows with snapshots before `split_us` first, then the others, each in key
    and snapshot order: a writer then routes the two runs to their parts by slicing."""
    later = lay.row_pos * bucket_us >= split_us
    if later.all() or not later.any():
        return lay
    order = np.argsort(later, kind="stable")
    return replace(lay, row_slot=lay.row_slot[order], row_pos=lay.row_pos[order],
                   row_key=lay.row_key[order])


SEGMENT = 1024  # slots per running-total segment (at least the widest window)


class Windows:
    """Window reads at the output rows' slots, with what each window width and each dense
    column needs computed once.

    Totals are running sums restarted every `segment` slots: a window spans at most two
    segments, so its total is `tail - head`, plus the first segment's total when it
    crosses (each sum only grows over one segment, so its rounding stays small); a window
    starting a segment reads its head from a zero kept after the last slot. Minimums and
    maximums come from doubling tables: level k holds op over 2**k slots, and a window is
    op of two overlapping power-of-two spans. Results are cached per (column, width), so
    metrics that differ only by name cost nothing more."""

    def __init__(self, slots: np.ndarray, size: int, widest: int):
        self.slots = slots
        self.segment = max(SEGMENT, 1 << int(widest - 1).bit_length())
        self.size = size + (-size) % self.segment
        self.segments = self.size // self.segment
        self._reads: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._running: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._levels: dict[tuple[int, int], np.ndarray] = {}
        self._results: dict[tuple[int, int], np.ndarray] = {}

    def _read(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat indexes of head and tail in the running sums (head: the zero after the last
        slot when the window starts a segment) and of the crossed segment's total (a zero
        when the window stays in one segment)."""
        if w not in self._reads:
            seg = self.segment
            start, last = self.slots - w, self.slots - 1  # the window is start .. last
            start_seg = start // seg
            head = np.where(start % seg == 0, self.size, start - 1)
            crossed = np.where(start_seg == last // seg, self.segments, start_seg)
            self._reads[w] = (head, last, crossed)
        return self._reads[w]

    def total(self, dense: np.ndarray, w: int) -> np.ndarray:
        """sum(dense[s - w : s]) for every output slot s (`dense` has `size` slots);
        read-only, since it is cached and shared."""
        key = (id(dense), w)
        if key in self._results:
            return self._results[key]
        if id(dense) not in self._running:
            running = np.empty(self.size + 1, dtype=dense.dtype)
            np.cumsum(dense.reshape(self.segments, self.segment), axis=1,
                      out=running[:-1].reshape(self.segments, self.segment))
            running[-1] = 0
            totals = np.zeros(self.segments + 1, dtype=dense.dtype)
            totals[:-1] = running[self.segment - 1:-1:self.segment]
            self._running[id(dense)] = (running, totals)
        running, totals = self._running[id(dense)]
        head, tail, crossed = self._read(w)
        out: np.ndarray = running[tail]
        out -= running[head]
        out += totals[crossed]
        out.flags.writeable = False
        self._results[key] = out
        return out

    def extreme(self, dense: np.ndarray, w: int, op: np.ufunc) -> np.ndarray:
        """op.reduce(dense[s - w : s]) for every output slot s (op: fmin or maximum)."""
        k = int(w).bit_length() - 1
        level = self._level(dense, k, op)
        span = 1 << k
        extremes: np.ndarray = op(level[self.slots - w], level[self.slots - span])
        return extremes

    def _level(self, dense: np.ndarray, k: int, op: np.ufunc) -> np.ndarray:
        """level[i] = op over dense[i : i + 2**k] (shorter at the end)."""
        if k == 0:
            return dense
        key = (id(dense), k)
        if key not in self._levels:
            below = self._level(dense, k - 1, op)
            half = 1 << (k - 1)
            level = np.empty_like(below)
            op(below[:-half], below[half:], out=level[:-half])
            level[-half:] = below[-half:]
            self._levels[key] = level
        return self._levels[key]


def _product_error(a: np.ndarray, b: float) -> np.ndarray:
    """The exact rounding error of a * b (Dekker's two-product, no FMA needed)."""
    split = 134217729.0  # 2**27 + 1

    def halves(x: np.ndarray | float) -> tuple[Any, Any]:
        c = split * x
        high = c - (c - x)
        return high, x - high

    a_hi, a_lo = halves(a)
    b_hi, b_lo = halves(b)
    product = a * b
    error: np.ndarray = ((a_hi * b_hi - product) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return error


def round_like_duckdb(values: np.ndarray) -> np.ndarray:
    """round(x, ROUND_DIGITS) exactly as DuckDB gives it: x * 10^d rounded to the nearest
    whole number as if computed exactly (halves away from zero), then / 10^d; the input
    itself where that is not finite. Where the rounded product lands on a half, the sign of
    its exact error decides. One comparison finds both rare cases: the distance to the
    nearest whole number is 0.5 on a half and NaN where the product is not finite."""
    modifier = 10.0 ** ROUND_DIGITS
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = values * modifier
        whole = np.rint(scaled)  # halves to even: the only place it differs from DuckDB
        np.subtract(scaled, whole, out=scaled)
        np.abs(scaled, out=scaled)  # now the distance, <= 0.5, or NaN
        ordinary = scaled < 0.5
        special = np.flatnonzero(~ordinary) if not ordinary.all() else None
        if special is not None:
            half = special[scaled[special] == 0.5]
            product = values[half] * modifier
            sign = np.sign(product)
            error = _product_error(values[half], modifier) * sign
            whole[half] = np.trunc(product) + sign * (error >= 0)  # on or above it: away
        whole /= modifier
    if special is not None:
        bad = special[np.isnan(scaled[special])]
        whole[bad] = values[bad]
    return whole


class _Dense:
    """Partial columns scattered into the dense layout (`size` slots), each made once."""

    def __init__(self, cells: pa.Table, lay: Layout, size: int):
        self.cells, self.lay, self.size = cells, lay, size
        self._made: dict[tuple[str, str], np.ndarray] = {}
        self._ops: dict[tuple[str, str], np.ufunc] = {}

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A partial as numbers (timestamps as microseconds, decimals as floats) and its
        validity; nulls become 0 so integers keep their type."""
        column = self.cells.column(name).combine_chunks()
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        kind = column.type
        if pa.types.is_timestamp(kind):
            column = column.cast(pa.int64())
        elif pa.types.is_decimal(kind):  # sums of integers arrive as HUGEINT (decimal)
            column = column.cast(pa.float64())
        return column.fill_null(0).to_numpy(zero_copy_only=False), valid

    def _scatter(self, data: np.ndarray, valid: np.ndarray, fill: Any) -> np.ndarray:
        dense = np.full(self.size, fill, dtype=data.dtype) if fill else np.zeros(
            self.size, dtype=data.dtype)
        if valid.all():
            dense[self.lay.cell_slot] = data
        else:
            dense[self.lay.cell_slot[valid]] = data[valid]
        return dense

    def summed(self, name: str) -> np.ndarray:
        """Null partials count as 0; integers stay exact. Non-finite floats are kept out
        of the running sums (see `total`)."""
        key = ("sum", name)
        if key not in self._made:
            data, valid = self.values(name)
            if data.dtype.kind not in "iuf":
                data = data.astype(np.int64)
            finite = np.isfinite(data) if data.dtype.kind == "f" else None
            if finite is not None and not finite.all():
                for label, hit in (("nan", np.isnan(data)), ("+inf", data == np.inf),
                                   ("-inf", data == -np.inf)):
                    self._made[(label, name)] = self._scatter(hit.astype(np.int64), valid, 0)
                data = np.where(finite, data, 0.0)
            self._made[key] = self._scatter(data, valid, 0)
        return self._made[key]

    def total(self, windows: Windows, name: str, w: int) -> np.ndarray:
        """The window sums of a partial. A running sum that met a NaN or an infinity would
        stay NaN for every later window (even of other entities), so those values are
        counted apart and a window that holds any gets what IEEE addition gives it: NaN,
        or the infinity's sign when all of them agree."""
        total = windows.total(self.summed(name), w)
        if ("nan", name) not in self._made:
            return total
        total = total.copy()
        nan, pos, neg = (windows.total(self._made[(label, name)], w)
                         for label in ("nan", "+inf", "-inf"))
        total[pos > 0] = np.inf
        total[neg > 0] = -np.inf
        total[(nan > 0) | ((pos > 0) & (neg > 0))] = np.nan
        return total

    def present(self, name: str) -> np.ndarray:
        """1 where the partial is not null (the bucket has a value), as int64."""
        key = ("present", name)
        if key not in self._made:
            valid = self.cells.column(name).is_valid().to_numpy(zero_copy_only=False)
            dense = np.zeros(self.size, dtype=np.int64)
            dense[self.lay.cell_slot[valid]] = 1
            self._made[key] = dense
        return self._made[key]

    def extreme(self, name: str, kind: str) -> tuple[np.ndarray, np.ufunc]:
        """Empty slots hold op's neutral value; fmin skips NaN as DuckDB's min does, and
        maximum keeps it (NaN sorts last there). Made once: Windows caches by the array."""
        key = (kind, name)
        if key not in self._made:
            data, valid = self.values(name)
            fill: Any
            if data.dtype.kind == "f":
                fill, self._ops[key] = (np.nan, np.fmin) if kind == "min" else (-np.inf,
                                                                                np.maximum)
            else:
                info = np.iinfo(data.dtype)
                fill, self._ops[key] = (info.max, np.minimum) if kind == "min" else (
                    info.min, np.maximum)
            self._made[key] = self._scatter(data, valid, fill)
        return self._made[key], self._ops[key]


@dataclass
class Occurrences:
    """Distinct (key, value, bucket) occurrences of a count_distinct metric, sorted, with
    each key's index among the group's distinct keys and where a new (key, value) starts."""
    key_index: np.ndarray
    b: np.ndarray
    new_value: np.ndarray

    @classmethod
    def read(cls, table: pa.Table, distinct_keys: pa.Array) -> Occurrences:
        keys = table.column("__key").combine_chunks()
        values = table.column("__v").combine_chunks()
        n = table.num_rows
        new_value = np.ones(n, dtype=bool)
        if n > 1:
            same = pc.and_(pc.equal(keys.slice(1), keys.slice(0, n - 1)),
                           pc.equal(values.slice(1), values.slice(0, n - 1)))
            new_value[1:] = ~same.to_numpy(zero_copy_only=False)
        key_index = pc.index_in(keys, value_set=distinct_keys).to_numpy(zero_copy_only=False)
        return cls(key_index.astype(np.int64), table.column("__b").to_numpy().astype(np.int64),
                   new_value)

    def of_keys(self, first: int, last: int) -> Occurrences:
        """The occurrences of keys first..last, re-indexed from 0."""
        lo = int(np.searchsorted(self.key_index, first, "left"))
        hi = int(np.searchsorted(self.key_index, last, "right"))
        new_value = self.new_value[lo:hi].copy()
        if len(new_value):
            new_value[0] = True
        return Occurrences(self.key_index[lo:hi] - first, self.b[lo:hi], new_value)


def _distinct_counts(occ: Occurrences, cells_b: np.ndarray, lay: Layout, w: int) -> np.ndarray:
    """count_distinct at every output row: each run of a value's occurrences closer than W
    buckets covers the snapshots after its first occurrence up to W after its last; the
    count is the number of runs covering K (+1 where one starts, -1 after it ends)."""
    n = len(occ.b)
    if n == 0:
        return np.zeros(len(lay.row_slot), dtype=np.int64)
    base = int(cells_b.min())
    span = int(cells_b.max()) - base + 1
    cell_code = lay.key_of_cell.astype(np.int64) * span + (cells_b - base)
    slot = lay.cell_slot[np.searchsorted(cell_code, occ.key_index * span + (occ.b - base))]
    change = occ.new_value.copy()
    change[1:] |= (occ.b[1:] - occ.b[:-1]) > w
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], n] - 1
    delta = np.bincount(slot[starts] + 1, minlength=lay.size + 1)[: lay.size + 1]
    delta = delta - np.bincount(slot[ends] + w + 1, minlength=lay.size + 1)[: lay.size + 1]
    counts: np.ndarray = np.cumsum(delta)[lay.row_slot]
    return counts


def memory_budget() -> int:
    """Half the machine's memory (what a merged incremental table may take)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


CHUNK_CELLS = 1 << 18  # cells per chunk: whole entities, so windows never cross a chunk


class GroupRun:
    """A group's cells, read once from DuckDB, computed a chunk of whole entities at a time
    so memory stays bounded by the chunk, whatever the source's size."""

    def __init__(self, con: Any, parts: Partials, plan: GroupPlan, cells: pa.Table, *,
                 low: int, high: int, chunk_cells: int):
        self.con, self.parts, self.plan, self.cells = con, parts, plan, cells
        self.low, self.high = low, high
        self.keys = cells.column("__key").combine_chunks()
        self.b = cells.column("__b").to_numpy().astype(np.int64)
        self.key_change = key_changes(self.keys)
        self.key_of_cell = np.cumsum(self.key_change) - 1
        key_starts = np.flatnonzero(self.key_change)
        wanted = np.arange(chunk_cells, len(self.b), chunk_cells)
        cuts = key_starts[np.minimum(np.searchsorted(key_starts, wanted), len(key_starts) - 1)]
        self.bounds = np.unique(np.r_[0, cuts[cuts > 0], len(self.b)]) if len(self.b) else \
            np.array([0, 0])
        self._distinct_keys = self.keys.take(pa.array(key_starts))
        self._occurrences: dict[int, Occurrences] = {}

    def output_rows(self) -> int:
        """How many rows the table will have (from the islands alone)."""
        return int(_islands(self.key_change, self.b, self.plan, self.low, self.high)[-1].sum())

    def _occ(self, i: int) -> Occurrences:
        if i not in self._occurrences:
            sql = occurrences(i).with_("src", as_=self.parts.src).order_by(
                "__key", "__v", "__b").sql("duckdb")
            self._occurrences[i] = Occurrences.read(self.con.sql(sql).to_arrow_table(),
                                                    self._distinct_keys)
        return self._occurrences[i]

    def tables(self, key_name: str, workers: int | None = None, split_us: int | None = None
               ) -> Iterator[pa.Table]:
        """The table for snapshots low..high, sorted by key and snapshot, chunk by chunk
        (with `split_us`, each chunk's rows before it come first, see `rows_split_at`).
        Chunks are computed on `workers` threads (numpy and Arrow release the GIL), at most
        that many ahead of the one being consumed, so memory stays bounded."""
        workers = workers or min(4, os.cpu_count() or 1)
        for i, metric in enumerate(self.parts.metrics):  # DuckDB reads stay on this thread
            if metric.aggregation == "count_distinct":
                self._occ(i)
        spans = [(int(lo), int(hi)) for lo, hi in zip(self.bounds[:-1], self.bounds[1:],
                                                      strict=True)]
        if workers == 1 or len(spans) == 1:
            for lo, hi in spans:
                yield self._chunk(lo, hi, key_name, split_us)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: deque[Future[pa.Table]] = deque()
            for lo, hi in spans:
                pending.append(pool.submit(self._chunk, lo, hi, key_name, split_us))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _chunk(self, lo: int, hi: int, key_name: str, split_us: int | None) -> pa.Table:
        plan, parts = self.plan, self.parts
        lay = layout(self.keys.slice(lo, hi - lo), self.key_change[lo:hi], self.b[lo:hi],
                     plan, self.low, self.high)
        if split_us is not None:
            lay = rows_split_at(lay, split_us, plan.bucket_us)
        windows = Windows(lay.row_slot, lay.size, max(plan.windows.values()))
        dense = _Dense(self.cells.slice(lo, hi - lo), lay, windows.size)
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

    def _column(self, i: int, w: int, dense: _Dense, windows: Windows, lay: Layout, lo: int,
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
        first_key = int(self.key_of_cell[lo]) if hi > lo else 0  # count_distinct
        last_key = int(self.key_of_cell[hi - 1]) if hi > lo else -1
        occ = self._occ(i).of_keys(first_key, last_key)
        return _distinct_counts(occ, self.b[lo:hi], lay, w)


def prepare_group(con: Any, parts: Partials, plan: GroupPlan, *, low: int, high: int,
                  chunk_cells: int = CHUNK_CELLS) -> GroupRun | None:
    """Run the scan into partial aggregates; None when they have types the kernel does
    not handle (the caller then runs the SQL plan)."""
    cells_sql = (parts.buckets.with_("src", as_=parts.src)
                 .order_by("__key", "__b").sql("duckdb"))
    cells = con.sql(cells_sql).to_arrow_table()
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
