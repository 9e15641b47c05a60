"""A chunk's partial columns scattered into the dense layout (catalog/compute/windows.py),
and the occurrences a count_distinct metric counts over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tally.catalog.compute.windows import Layout, Windows


def validity(array: pa.Array) -> np.ndarray | None:
    """Where a primitive array is valid, from its bitmap (None: no nulls)."""
    if not array.null_count:
        return None
    bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    start = array.offset
    return np.unpackbits(bits, count=start + len(array), bitorder="little")[start:].view(bool)


def buffer_values(array: pa.Array) -> np.ndarray:
    """A primitive array's numbers, its own buffer without a copy (whatever lies under its
    nulls: readers mask them with `validity`)."""
    dtype = np.dtype(array.type.to_pandas_dtype())
    return np.frombuffer(array.buffers()[1], dtype=dtype,
                         count=array.offset + len(array))[array.offset:]


class DenseColumns:
    """Partial columns scattered into the dense layout (`size` slots), each made once."""

    def __init__(self, cells: pa.Table, lay: Layout, size: int):
        self.cells, self.lay, self.size = cells, lay, size
        self._made: dict[tuple[str, str], np.ndarray] = {}
        self._ops: dict[tuple[str, str], np.ufunc] = {}

    def _array(self, name: str) -> pa.Array:
        column = self.cells.column(name)  # a chunk's cells usually lie in one batch
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """A partial as numbers (timestamps as microseconds, decimals as floats) and its
        validity (None: no nulls). The numbers are the column's own buffer, whatever lies
        under its nulls: every reader masks them with the validity."""
        column = self._array(name)
        kind = column.type
        if pa.types.is_timestamp(kind):
            column = column.cast(pa.int64())
        elif pa.types.is_decimal(kind):  # sums of integers arrive as HUGEINT (decimal)
            column = column.cast(pa.float64())
        return buffer_values(column), validity(column)

    def _scatter(self, data: np.ndarray, valid: np.ndarray | None, fill: Any) -> np.ndarray:
        dense = np.full(self.size, fill, dtype=data.dtype) if fill else np.zeros(
            self.size, dtype=data.dtype)
        if valid is None:
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
            if finite is not None and valid is not None and not finite.all():
                finite |= ~valid  # what lies under a null is never read
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
            valid = validity(self._array(name))
            dense = np.zeros(self.size, dtype=np.int64)
            dense[self.lay.cell_slot if valid is None else self.lay.cell_slot[valid]] = 1
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


def distinct_counts(occ: Occurrences, cells_b: np.ndarray, lay: Layout, w: int) -> np.ndarray:
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
