"""The DuckDB SQL of Tally's point-in-time join, one feature view at a time.

Feast's rule, which the stock DuckDB store implements: for an entity row at time t, the
newest feature row of the same key with ``t - ttl <= event_timestamp <= t`` (no lower
bound when ttl is 0), ties on event_timestamp broken by the newest created timestamp;
else null.

One plan, a hash join on the key with the ttl range predicate, reduced to one row per
entity row by ``arg_max`` over ``(event_timestamp, created_timestamp)`` (a hash aggregate;
cheaper than sorting for ``row_number()``). On one parquet file the join carries file row
numbers and the winners' features are read by a second query (``rows_sql`` then
``fetch_sql``). A folder (a computed table's parts) or a glob of up to ``MAX_ROW_FILES``
files takes the same plan, each file's row numbers offset by its place in the list
(``parquet_files``); beyond that, the join carries the features (``range_sql``).
docs/offline_store.md says why (an equality plan for grain-aligned tables measured slower).

Every identifier is quoted; paths and literals go through ``literal``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from datetime import timedelta

ROW = "__tally_row"
FILE_SHIFT = 40  # a row id is (file index << FILE_SHIFT) + the file's row number
MAX_ROW_FILES = 512  # more files than this: the join carries the features instead


def q(name: str) -> str:
    """A quoted DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def reader(path: str) -> str:
    """A read_parquet call over a file, a glob or a folder of parquet files."""
    if os.path.isdir(path):
        path = os.path.join(path, "**", "*.parquet")
    return f"read_parquet({literal(path)})"


def parquet_files(path: str) -> list[str] | None:
    """The files a path reads, in a fixed order (a file; a folder's parquet files; a
    glob's matches), or None when there are none or more than MAX_ROW_FILES."""
    if os.path.isfile(path):
        return [path]
    pattern = os.path.join(path, "**", "*.parquet") if os.path.isdir(path) else path
    files = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    return files if 0 < len(files) <= MAX_ROW_FILES else None


@dataclass(frozen=True)
class ViewPlan:
    """What the SQL needs to know about one feature view."""

    path: str
    keys: list[tuple[str, str]]  # (column in the source, column in the entity frame)
    timestamp: str
    created: str | None
    features: list[tuple[str, str]]  # (column in the source, output name)
    ttl: timedelta | None
    filter_created: bool = False
    name: str = ""  # the feature view's name, as the job's `plans` reports it


def _source(plan: ViewPlan, files: list[str] | None = None) -> str:
    """The table's keys and times as `__k0.., __ts, __c`, then its features `__f0..` or,
    given its `files`, a row id `__r` instead (file index and row number, FILE_SHIFT)."""
    cols = [f"{q(src)} AS {q(f'__k{i}')}" for i, (src, _) in enumerate(plan.keys)]
    cols.append(f"{q(plan.timestamp)}::TIMESTAMPTZ AS __ts")
    cols.append(f"{q(plan.created)}::TIMESTAMPTZ AS __c" if plan.created else
                "NULL::TIMESTAMPTZ AS __c")
    if files:
        return "(" + " UNION ALL ".join(
            f"SELECT {', '.join(cols)}, file_row_number + {i << FILE_SHIFT} AS __r "
            f"FROM read_parquet({literal(file)}, file_row_number = true)"
            for i, file in enumerate(files)) + ")"
    cols += [f"{q(src)} AS {q(f'__f{i}')}" for i, (src, _) in enumerate(plan.features)]
    return f"(SELECT {', '.join(cols)} FROM {reader(plan.path)})"


def _entity(plan: ViewPlan, relation: str, ts_col: str) -> str:
    cols = [q(ROW)] + [f"{q(ent)} AS {q(f'__k{i}')}" for i, (_, ent) in enumerate(plan.keys)]
    cols.append(f"{q(ts_col)}::TIMESTAMPTZ AS __t")
    return f"(SELECT {', '.join(cols)} FROM {relation})"


def _key_match(plan: ViewPlan) -> list[str]:
    return [f"f.{q(f'__k{i}')} = e.{q(f'__k{i}')}" for i in range(len(plan.keys))]


def ttl_us(plan: ViewPlan) -> int | None:
    """The view's ttl in microseconds; None for no lower bound (ttl 0 or none)."""
    return plan.ttl // timedelta(microseconds=1) if plan.ttl else None


def bounds(plan: ViewPlan, lo: str | None, hi: str | None, column: str = "f.__ts") -> str:
    """Row-group pruning: only feature rows (event time `column`) that some entity row,
    from `lo` to `hi`, could see."""
    parts = [f"{column} <= {hi}"] if hi else []
    if lo and plan.ttl:
        parts.append(f"{column} >= {lo} - INTERVAL {ttl_us(plan)} MICROSECOND")
    return " AND ".join(parts) or "TRUE"


def _window(plan: ViewPlan, t: str) -> list[str]:
    preds = []
    if plan.ttl:
        preds.append(f"f.__ts >= {t} - INTERVAL {ttl_us(plan)} MICROSECOND")
    if plan.filter_created and plan.created:
        preds.append(f"f.__c <= {t}")
    return preds


def range_sql(plan: ViewPlan, relation: str, ts_col: str, lo: str | None,
              hi: str | None) -> str:
    """The newest row in [t - ttl, t] per entity row, ties broken by created timestamp."""
    fields = ", ".join(f"{literal(f'f{i}')}: f.{q(f'__f{i}')}"
                       for i in range(len(plan.features)))
    on = " AND ".join([*_key_match(plan), "f.__ts <= e.__t", *_window(plan, "e.__t")])
    inner = (f"SELECT e.{q(ROW)}, arg_max({{{fields}}}, (f.__ts, f.__c)) AS __v "
             f"FROM {_entity(plan, relation, ts_col)} e "
             f"JOIN (SELECT * FROM {_source(plan)} f WHERE {bounds(plan, lo, hi)}) f ON {on} "
             f"GROUP BY e.{q(ROW)}")
    outs = ", ".join(f"__v.{q(f'f{i}')} AS {q(f'__f{i}')}" for i in range(len(plan.features)))
    return f"SELECT {q(ROW)}, {outs} FROM ({inner})"


def _order_key(plan: ViewPlan) -> str:
    """(event_timestamp, created_timestamp) packed into one HUGEINT, in the same order;
    a missing created timestamp sorts first, as NULLS LAST does in a descending sort."""
    created = f"coalesce(epoch_us(f.__c), {-(2**63)})"
    return f"epoch_us(f.__ts)::HUGEINT * {2**64} + {created}"


def rows_sql(plan: ViewPlan, files: list[str], relation: str, ts_col: str,
             lo: str | None, hi: str | None) -> str:
    """The range plan without the features: per entity row, the row id of the newest row
    in [t - ttl, t] (`__r`). The features are read afterwards by row id (fetch_sql), so
    the join carries 3 columns instead of all of them."""
    on = " AND ".join([*_key_match(plan), "f.__ts <= e.__t", *_window(plan, "e.__t")])
    return (f"SELECT e.{q(ROW)}, arg_max(f.__r, {_order_key(plan)}) AS __r "
            f"FROM {_entity(plan, relation, ts_col)} e "
            f"JOIN (SELECT * FROM {_source(plan, files)} f WHERE {bounds(plan, lo, hi)}) f "
            f"ON {on} GROUP BY e.{q(ROW)}")


def fetch_sql(plan: ViewPlan, files: list[str], winners: str) -> str:
    """The features of each winner (`ROW`, `__r` rows of `winners`), read by one parallel
    scan per file that probes a hash table of that file's winners only."""
    feats = ", ".join(f"f.{q(src)} AS {q(f'__f{i}')}" for i, (src, _) in
                      enumerate(plan.features))
    scans = []
    for i, file in enumerate(files):
        low, high = i << FILE_SHIFT, (i + 1) << FILE_SHIFT
        mine = (f"(SELECT {q(ROW)}, __r - {low} AS __r FROM {winners} "
                f"WHERE __r >= {low} AND __r < {high})")
        scans.append(f"SELECT w.{q(ROW)}{', ' + feats if feats else ''} FROM read_parquet("
                     f"{literal(file)}, file_row_number = true) f "
                     f"JOIN {mine} w ON f.file_row_number = w.__r")
    return " UNION ALL ".join(scans)


def latest_sql(path: str, keys: list[str], features: list[str], timestamp: str,
               created: str | None, start: str | None, end: str | None,
               latest: bool) -> str:
    """pull_latest / pull_all: rows with start <= timestamp <= end (the newest per key)."""
    cols = [*keys, *features, timestamp] + ([created] if created else [])
    where = []
    if start:
        where.append(f"{q(timestamp)}::TIMESTAMPTZ >= {start}")
    if end:
        where.append(f"{q(timestamp)}::TIMESTAMPTZ <= {end}")
    sql = (f"SELECT {', '.join(q(c) for c in dict.fromkeys(cols))} FROM {reader(path)}"
           + (f" WHERE {' AND '.join(where)}" if where else ""))
    if latest:
        order = [f"{q(timestamp)} DESC"] + ([f"{q(created)} DESC"] if created else [])
        part = ", ".join(q(k) for k in keys) or "NULL"
        sql += (f" QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY "
                f"{', '.join(order)}) = 1")
    return sql
