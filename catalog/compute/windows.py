"""Where cells and output rows sit in the kernel's dense per-island layout, and the window
reads over it (catalog/compute/kernel.py runs them).

* islands: an entity's cells closer than `reach` buckets form one island; it has a row at
  each snapshot K (a multiple of G) with first < K <= last + reach, within low..high;
* each island is laid out densely, one slot per bucket from first to last + reach; its
  empty tail of `reach` slots keeps a window of the next island from seeing it;
* window totals are read from running sums restarted every SEGMENT slots (so a sum only
  grows over one segment), with NaN and infinities counted apart; minimums and maximums
  come from doubling tables; each (partial, width) is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # annotations only: the offline store reads key_changes without the plans
    from tally.catalog.compute.plans import GroupPlan


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


def islands(key_change: np.ndarray, b: np.ndarray, plan: GroupPlan, low: int, high: int
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
    new_island, starts, first, last, k_start, count = islands(key_change, b, plan, low, high)
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

    Totals are running sums restarted every `segment` slots (a power of two), each
    segment's sums after a zero of its own: a window spans at most two segments, so its
    total is `tail - head`, plus the first segment's total when it crosses (each sum only
    grows over one segment, so its rounding stays small); a window starting a segment
    reads its head from that segment's zero. Minimums and maximums come from doubling
    tables: level k holds op over 2**k slots, and a window is op of two overlapping
    power-of-two spans. Results are cached per (column, width), so metrics that differ
    only by name cost nothing more."""

    def __init__(self, slots: np.ndarray, size: int, widest: int):
        self.slots = slots
        self.segment = max(SEGMENT, 1 << int(widest - 1).bit_length())
        self.shift = self.segment.bit_length() - 1
        self.size = size + (-size) % self.segment
        self.segments = self.size // self.segment
        self._reads: dict[int, tuple[np.ndarray, ...]] = {}
        self._running: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._levels: dict[tuple[int, int], np.ndarray] = {}
        self._results: dict[tuple[int, int], np.ndarray] = {}

    def _read(self, w: int) -> tuple[np.ndarray, ...]:
        """Flat indexes of head and tail in the running sums (slot s sits at
        s + s // segment + 1, after its segment's zero), and the rows whose window crosses
        into a second segment with the segment they start in (a few: w << segment)."""
        if w not in self._reads:
            start, last = self.slots - w, self.slots - 1  # the window is start .. last
            start_seg, last_seg = start >> self.shift, last >> self.shift
            head = start + start_seg
            tail = last + last_seg
            tail += 1
            crossing = np.flatnonzero(start_seg != last_seg)
            self._reads[w] = (head, tail, crossing, start_seg[crossing])
        return self._reads[w]

    def _running_sums(self, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The running sums of each segment after a zero, flat, and each segment's total."""
        if id(dense) not in self._running:
            running = np.zeros((self.segments, self.segment + 1), dtype=dense.dtype)
            np.cumsum(dense.reshape(self.segments, self.segment), axis=1, out=running[:, 1:])
            self._running[id(dense)] = (running.reshape(-1), running[:, -1].copy())
        return self._running[id(dense)]

    def total(self, dense: np.ndarray, w: int) -> np.ndarray:
        """sum(dense[s - w : s]) for every output slot s (`dense` has `size` slots);
        read-only, since it is cached and shared."""
        key = (id(dense), w)
        if key in self._results:
            return self._results[key]
        running, totals = self._running_sums(dense)
        head, tail, crossing, crossed = self._read(w)
        out: np.ndarray = running[tail]
        out -= running[head]
        if len(crossing):
            out[crossing] += totals[crossed]
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
