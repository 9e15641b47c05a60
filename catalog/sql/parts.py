"""How a computed table lies on disk: the one module that knows (docs/compute.md#layout).

A table `data/tables/<name>.parquet` is a folder of parquet parts, each sorted by key and
event_timestamp and holding a range of snapshots:

* `part-<start>.parquet`, `start` the first snapshot (microseconds since the epoch, zero
  padded so that name order is time order); a part holds the snapshots from its start to
  the next part's start;
* the first part (the *base*, start 0) holds everything before the first *span part*;
  every other part starts on a multiple of the table's span (`part_span_us`) and holds at
  most one span.

A full write puts the snapshots before the newest span in the base and the newest span in
one span part; an incremental write replaces the parts its snapshots reach (usually the
newest span part, plus a new one) and keeps every other part as it is (a hard link), so
it costs what it adds. Every write builds the new folder beside the table and swaps it
in whole (`store.fsutil.swap_in_folder`), so readers see the old table or the new one.

Every reader that takes a folder reads the table as it is: DuckDB's and Spark's
`read_parquet`, pyarrow datasets, pandas, Feast's FileSource (the folder's name ends in
`.parquet`). Readers of one file's metadata use `table_files` / `table_schema`. A table
written before this layout (one file) still reads as a base part alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.catalog.errors import DataError
from tally.catalog.store.fsutil import swap_in_folder, temp_path_beside

PART_PREFIX = "part-"
ROW_GROUP_SIZE = 122_880
DAY_US = 86_400_000_000
MIN_SPAN_SNAPSHOTS = 16  # a span part holds at least this many snapshots ...
MIN_SPAN_US = 7 * DAY_US  # ... and at least a week
ALL_IN_BASE = 1 << 62  # a base end past every snapshot


def part_span_us(grain_us: int) -> int:
    """The span of a table's parts: what an append rewrites at most (plus the new rows)."""
    grain_us = max(int(grain_us), 1)
    snapshots = max(MIN_SPAN_SNAPSHOTS, -(-MIN_SPAN_US // grain_us))
    return snapshots * grain_us


def part_name(start: int) -> str:
    return f"{PART_PREFIX}{int(start):020d}.parquet"


@dataclass(frozen=True)
class Part:
    start: int  # first snapshot (us); 0 for the base
    path: Path


def parts_of(table: Path) -> list[Part]:
    """The parts of a table in time order ([] when it is not computed)."""
    if table.is_file():
        return [Part(0, table)]
    if not table.is_dir():
        return []
    parts = []
    for entry in os.scandir(table):
        name = entry.name
        if name.startswith(PART_PREFIX) and name.endswith(".parquet"):
            digits = name[len(PART_PREFIX):-len(".parquet")]
            if digits.isdigit():
                parts.append(Part(int(digits), Path(entry.path)))
    return sorted(parts, key=lambda p: p.start)


def table_files(table: Path) -> list[Path]:
    """The parquet files of a table, in time order."""
    return [p.path for p in parts_of(table)]


def table_exists(table: Path) -> bool:
    return bool(parts_of(table))


def table_schema(table: Path) -> Any:
    """The table's Arrow schema (its parts share one); OSError when not computed."""
    import pyarrow.parquet as pq

    files = table_files(table)
    if not files:
        raise FileNotFoundError(f"{table} is not computed")
    return pq.read_schema(files[0])


@dataclass(frozen=True)
class TableStatistics:
    rows: int
    newest_us: int | None
    nulls: dict[str, int]  # per column


def table_statistics(table: Path, columns: list[str]) -> TableStatistics:
    """Rows, newest event_timestamp and nulls per column from the parts' footers (no data
    read; a part whose writer left out a statistic is read for it)."""
    import pyarrow.parquet as pq

    rows, newest, nulls = 0, None, dict.fromkeys(columns, 0)
    for path in table_files(table):
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        index = {n: i for i, n in enumerate(names)}
        rows += meta.num_rows
        missing: set[str] = set()
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for column in columns:
                stats = group.column(index[column]).statistics if column in index else None
                if stats is None or not stats.has_null_count:
                    missing.add(column)
                else:
                    nulls[column] += stats.null_count
            ts = group.column(index["event_timestamp"]).statistics
            if ts is not None and ts.has_min_max and group.num_rows:
                top = _statistic_us(ts.max)
                newest = top if newest is None else max(newest, top)
        if missing:
            _count_nulls(path, sorted(missing), nulls)
    return TableStatistics(rows, newest, nulls)


def _statistic_us(value: Any) -> int:
    """A footer's timestamp statistic (an int or a datetime, zoned or not) as epoch us."""
    from datetime import UTC, datetime, timedelta

    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int((value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))


def _count_nulls(path: Path, columns: list[str], nulls: dict[str, int]) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns)
    for column in columns:
        nulls[column] += table.column(column).null_count


# -- writing ----------------------------------------------------------------------------
@contextmanager
def rewriting(table: Path, keep: list[Part]) -> Iterator[Path]:
    """A new folder for the table, holding the parts in `keep` (hard links); the writer
    adds part files, and the folder replaces the table when the block ends normally."""
    import shutil

    folder = temp_path_beside(table)
    folder.unlink()
    folder.mkdir()
    try:
        for part in keep:
            try:
                os.link(part.path, folder / part_name(part.start))
            except OSError:  # a file system without hard links
                shutil.copy2(part.path, folder / part_name(part.start))
        yield folder
        if not parts_of(folder):
            raise DataError(f"{table}: nothing to write")
        swap_in_folder(folder, table, crash_name="compute-")
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


def _nullable(table: Any) -> Any:
    import pyarrow as pa

    return table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))


def dictionary_columns(table: Any, key: str) -> list[str]:
    """Dictionaries only where values repeat (keys, snapshot times): on metric columns they
    double the write time for a file a fifth smaller."""
    return [c for c in (key, "event_timestamp", "created_timestamp") if c in table.column_names]


class _PartFile:
    """One part being written: chunks in key order, row groups of ROW_GROUP_SIZE."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.writer: Any = None
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.rows = 0

    def add(self, chunk: Any) -> None:
        if chunk.num_rows:
            self.pending.append(chunk)
            self.pending_rows += chunk.num_rows
            if self.pending_rows >= ROW_GROUP_SIZE:
                self.flush(whole_groups=True)

    def flush(self, whole_groups: bool = False) -> None:
        """Write what is pending; with `whole_groups`, only full row groups, the rest kept
        for the next (chunks rarely end on a row group's edge, and a short group costs a
        footer entry and a worse read for every reader)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        chunk = _nullable(pa.concat_tables(self.pending))
        rows = chunk.num_rows - chunk.num_rows % ROW_GROUP_SIZE if whole_groups else \
            chunk.num_rows
        rest = chunk.slice(rows)
        chunk = chunk.slice(0, rows)
        self.pending, self.pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, chunk.schema, coerce_timestamps="us",
                                           use_dictionary=dictionary_columns(chunk, self.key))
        self.writer.write_table(chunk, row_group_size=ROW_GROUP_SIZE)
        self.rows += chunk.num_rows

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _epoch_us(column: Any) -> Any:
    """A timestamp column as microseconds since the epoch (int64), whatever its unit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type) and column.type.unit != "us":
        column = pc.cast(column, pa.timestamp("us", tz=column.type.tz))
    return pc.cast(column, pa.int64())


def _stamps(table: Any) -> Any:
    return _epoch_us(table.column("event_timestamp")).to_numpy(zero_copy_only=False)


class PartsWriter:
    """Routes chunks (whole entities, in key order) to the parts of `folder`: snapshots
    before `base_end` to the base, later ones to their span part."""

    def __init__(self, folder: Path, key: str, span: int, base_end: int | None):
        self.folder, self.key, self.span, self.base_end = folder, key, span, base_end
        self.files: dict[int, _PartFile] = {}
        self.first: Any = None  # the first chunk, for an empty table's schema

    def add(self, chunk: Any) -> None:
        import numpy as np
        import pyarrow as pa

        if self.first is None:
            self.first = chunk.slice(0, 0)
        if not chunk.num_rows:
            return
        stamps = _stamps(chunk)
        starts = (stamps // self.span) * self.span
        if self.base_end is not None:
            starts = np.where(stamps < self.base_end, 0, starts)
        if (starts[1:] >= starts[:-1]).all():  # runs in part order: slices, no copies
            cuts = np.flatnonzero(starts[1:] != starts[:-1]) + 1
            for first, end in zip(np.r_[0, cuts], np.r_[cuts, len(starts)], strict=True):
                self._file(int(starts[first])).add(chunk.slice(first, end - first))
            return
        for start in np.unique(starts):
            self._file(int(start)).add(chunk.filter(pa.array(starts == start)))

    def _file(self, start: int) -> _PartFile:
        if start not in self.files:
            self.files[start] = _PartFile(self.folder / part_name(start), self.key)
        return self.files[start]

    def close(self, *, empty_base: bool = True) -> int:
        """Finish every part; with no rows at all, an empty base keeps the table's schema
        (unless `empty_base` is False: other parts hold it)."""
        import pyarrow.parquet as pq

        for part in self.files.values():
            part.close()
        if not self.files and empty_base and self.first is not None:
            pq.write_table(_nullable(self.first), self.folder / part_name(0),
                           coerce_timestamps="us")
        return sum(p.rows for p in self.files.values())


def newest_span_start(newest_us: int | None, span: int) -> int | None:
    """Where a full write's base ends: the start of the newest snapshot's span."""
    return None if newest_us is None else (int(newest_us) // span) * span


def write_full(chunks: Iterator[Any], table: Path, key: str, span: int,
               newest_us: int | None) -> int:
    """Write a whole table from chunks of whole entities in key and event_timestamp order:
    the base, and the newest span's part. Returns the row count."""
    base_end = newest_span_start(newest_us, span)
    with rewriting(table, []) as folder:
        writer = PartsWriter(folder, key, span, ALL_IN_BASE if base_end is None else base_end)
        try:
            for chunk in chunks:
                writer.add(chunk)
        finally:
            rows = writer.close()
    return rows


def replace_range(new_rows: Any, table: Path, key: str, span: int, lo: int,
                  hi: int | None = None) -> int:
    """Replace the table's snapshots in lo..hi (None: every one from lo on) by `new_rows`
    (which hold only snapshots in that range): the parts lo..hi reaches are rewritten with
    their other rows kept, every other part is kept as it is. Returns the rows written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = parts_of(table)
    ends = [p.start for p in parts[1:]] + [None]
    keep: list[Part] = []
    touched: list[Part] = []
    for part, end in zip(parts, ends, strict=True):
        if end is None and part.start:
            end = part.start + span
        reaches = (end is None or end > lo) and (hi is None or part.start <= hi)
        (touched if reaches else keep).append(part)
    old = []
    for part in touched:
        rows = pq.read_table(part.path)
        stamps = _epoch_us(rows.column("event_timestamp"))
        outside = pc.less(stamps, lo)
        if hi is not None:
            outside = pc.or_(outside, pc.greater(stamps, hi))
        old.append(rows.filter(outside))
    new_rows = _nullable(new_rows)
    try:
        merged = pa.concat_tables([o.select(new_rows.column_names).cast(new_rows.schema)
                                   for o in old] + [new_rows])
    except (KeyError, ValueError, pa.ArrowInvalid) as exc:
        raise DataError(f"{table}: the existing table does not match the new rows "
                        f"({exc}); recompute it with `full`", mentions=("full",)) from None
    merged = merged.sort_by([(key, "ascending"), ("event_timestamp", "ascending")])
    base_rewritten = any(p.start == 0 for p in touched)
    base_end = (lo // span) * span if base_rewritten else None
    with rewriting(table, keep) as folder:
        writer = PartsWriter(folder, key, span, base_end)
        try:
            writer.add(merged)
        finally:
            writer.close(empty_base=not keep)
    return int(new_rows.num_rows)
