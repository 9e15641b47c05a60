"""What a source looked like when its tables were computed, so a rerun can tell what changed.

Two layers, cheapest first:

* the file fingerprint: every file the source's `path` (or glob) names, with its size and
  modification time. Equal fingerprints mean nothing changed, and no data is read.
* the day digest: per UTC day of the timestamp field, the row count, the earliest and
  latest timestamp and an order-free hash (the XOR of a hash of each row's key, timestamp
  and every column the group's metrics read). One scan of the source gives it, together
  with the time bounds that scan was needed for anyway. The earliest day whose digest
  differs from the recorded one is the earliest time a change can affect: appended rows,
  a new file in a glob with old timestamps, a rewritten or removed file all show there.

Row-group statistics would date an append without reading the data, but only when the
producer writes new row groups after the old ones; a rewritten, re-sorted file (what most
producers write) changes every row group, so the digest is the one rule that holds.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from sqlglot import exp
from tally.catalog.compute.plans import epoch_us
from tally.catalog.spec.models import Metric, Source
from tally.catalog.spec.project import Project
from tally.catalog.spec.sqlcheck import check_expression
from tally.catalog.sql.relations import source_relation
from tally.catalog.sql.trees import col, fn, num, op

DAY_US = 86_400 * 1_000_000
Digest = dict[str, list[int]]  # str(day) -> [rows, first_us, last_us, hash]
_HASH = {"duckdb": "hash", "spark": "xxhash64"}


def source_files(project: Project, source: Source) -> list[Path]:
    """The files a source's path names (several for a glob), sorted."""
    pattern = project.root / source.path
    if glob.has_magic(source.path):
        return sorted(Path(p) for p in glob.glob(str(pattern), recursive=True)
                      if Path(p).is_file())
    return [pattern] if pattern.exists() else []


def file_fingerprint(project: Project, source: Source) -> list[list[Any]]:
    """[relative path, size, mtime in ns] of every file of the source (no data read)."""
    out: list[list[Any]] = []
    for path in source_files(project, source):
        try:
            stat = path.stat()
        except OSError:
            continue
        name = path.relative_to(project.root).as_posix() if path.is_relative_to(
            project.root) else str(path)
        out.append([name, stat.st_size, stat.st_mtime_ns])
    return out


def _columns_read(metrics: list[Metric]) -> list[str]:
    names: set[str] = set()
    for metric in metrics:
        for text in (metric.expression, metric.filter):
            if text and text.strip() != "*":
                tree = check_expression(text, allow_star=True).tree
                names |= {c.name for c in tree.find_all(exp.Column)}
    return sorted(names)


def digest_query(source: Source, key: str, metrics: list[Metric], path: str,
                 dialect: str, columns: list[str] | None = None) -> exp.Select:
    """The day digest of a source (module docstring), one row per day with rows; over the
    columns the metrics read, or the `columns` given."""
    ts = epoch_us(col(source.timestamp_field), dialect)
    read = _columns_read(metrics) if columns is None else sorted(set(columns))
    hashed = [col(key), col(source.timestamp_field), *map(col, read)]
    return (exp.select(
        exp.Alias(this=op(exp.IntDiv, ts, num(DAY_US)), alias="__day"),
        exp.Count(this=exp.Star()), exp.Min(this=ts.copy()), exp.Max(this=ts.copy()),
        fn("bit_xor", fn(_HASH[dialect], *hashed)))
        .from_(source_relation(source, path, dialect))
        .where(exp.Not(this=exp.Is(this=col(source.timestamp_field), expression=exp.Null())))
        .group_by(col("__day")))


def digest_of(rows: list[tuple[Any, ...]]) -> Digest:
    return {str(int(day)): [int(n), int(lo), int(hi), int(h)] for day, n, lo, hi, h in rows}


def time_bounds(digest: Digest) -> tuple[int, int] | None:
    """The earliest and latest timestamp (microseconds) of the source, None when empty."""
    if not digest:
        return None
    return min(v[1] for v in digest.values()), max(v[2] for v in digest.values())


def earliest_change(old: Digest, new: Digest) -> int | None:
    """The start (microseconds) of the earliest day whose rows differ, None when none do."""
    changed = [int(day) for day in old.keys() | new.keys() if old.get(day) != new.get(day)]
    return min(changed) * DAY_US if changed else None
