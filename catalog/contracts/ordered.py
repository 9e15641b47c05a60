"""Unique keys of data stored in key order.

Counting distinct keys needs a hash table over every row: most of a check's time. Data is
often stored in the order of one key column (events by time); then rows sharing that
column's value are neighbours, a row whose value differs from both neighbours has a key no
other row has, and only the few rows with a tied value need counting. Parquet row-group
statistics say which key column may be in order (metadata only); streaming that one
column then proves it, and any disorder falls back to the hash count."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tally.catalog.contracts.results import ident, literal
from tally.catalog.contracts.rules import INT_TYPES, TIMESTAMP_TYPES, Rule
from tally.catalog.spec.models import Source

_ORDERED_TYPES = {**{t: "CAST({} AS BIGINT)" for t in (*INT_TYPES, "BIGINT", "UINTEGER")},
                  **{t: "epoch_us({})" for t in TIMESTAMP_TYPES
                     if not t.startswith("TIMESTAMPTZ_")},
                  **{t: "epoch_us(CAST({} AS TIMESTAMPTZ))" for t in TIMESTAMP_TYPES
                     if t.startswith("TIMESTAMPTZ_")}}
_MAX_TIES = 10_000  # more tied values than this: the hash count is as cheap
_IN_ONE_ARRAY = 16_000_000  # up to this many rows (128 MB) the column is fetched at once


def _ordered_key(con: Any, source: Source, path: str, found: dict[str, str],
                 rules: list[Rule]) -> tuple[Rule, str] | None:
    """The unique rule and a key column whose row groups are in order, when there is one."""
    import duckdb

    rule = next((r for r in rules if r.result.rule == "unique" and r.count_sql), None)
    if (rule is None or source.file_format != "parquet"
            or not isinstance(con, duckdb.DuckDBPyConnection)):
        return None
    for column in rule.key:
        duck_type = found[column]
        if duck_type not in _ORDERED_TYPES:
            continue
        bounds = (f"SELECT TRY_CAST(stats_min_value AS {duck_type}) AS lo, "
                  f"TRY_CAST(stats_max_value AS {duck_type}) AS hi, file_name, row_group_id "
                  f"FROM parquet_metadata({literal(path)}) "
                  f"WHERE path_in_schema = {literal(column)}")
        bad = con.sql(
            f"SELECT count(*) FILTER (WHERE lo IS NULL OR hi IS NULL OR lo < prev), count(*) "
            f"FROM (SELECT lo, hi, lag(hi) OVER (ORDER BY file_name, row_group_id) AS prev "
            f"FROM ({bounds}))").fetchall()[0]
        if bad[1] and not bad[0]:
            return rule, column
    return None


def _ordered_duplicates(con: Any, scan: str, rule: Rule, column: str,
                        duck_type: str, rows: int
                        ) -> tuple[int | None, int | None, int | None]:
    """(rows repeating a key, counted exactly, rows with a value in `column`, its last
    value) if `column` is in order; (None, None, None) if it is not."""
    import numpy as np

    value = _ORDERED_TYPES[duck_type].format(ident(column))
    # every row with a value, not only those with a whole key: reads one column, and the
    # order of the column over all its values is the order over any subset of them
    query = con.sql(f"SELECT {value} AS v FROM {scan} WHERE {ident(column)} IS NOT NULL")
    if rows <= _IN_ONE_ARRAY:  # one array: spares importing pyarrow (a fifth of a second)
        batches: Iterable[Any] = [query.fetchnumpy()["v"]]
    else:
        batches = (batch.column(0).to_numpy() for batch in query.to_arrow_reader(1 << 20))
    tied: set[int] = set()
    last: int | None = None
    present = 0
    for values in batches:
        present += len(values)
        if not len(values):
            continue
        if last is not None:
            values = np.concatenate(([last], values))
        before, after = values[:-1], values[1:]
        if (after < before).any():
            return None, None, None
        same = np.flatnonzero(after == before)
        if len(same):
            tied.update(values[same].tolist())
            if len(tied) > _MAX_TIES:
                return None, None, None
        last = int(values[-1])
    if not tied:
        return 0, present, last
    listed = ", ".join(str(v) for v in sorted(tied))
    key = ", ".join(ident(c) for c in rule.key)
    return int(con.sql(
        f"SELECT count(*) - count(DISTINCT row({key})) FROM {scan} "
        f"WHERE {rule.where_key_sql} AND {value} IN ({listed})").fetchall()[0][0] or 0
        ), present, last


@dataclass
class OrderedPass:
    """The unique rule counted by streaming a key column in order (see _ordered_key), the
    hash count it replaces, and the not_null rules of that column it answers too."""
    rule: Rule
    column: str
    unique_sql: str | None
    newest_by_order: bool
    by_order: list[Rule]


def ordered_pass(con: Any, source: Source, path: str, found: dict[str, str],
                  rules: list[Rule]) -> OrderedPass | None:
    ordered = _ordered_key(con, source, path, found, rules)
    if ordered is None:
        return None
    rule, column = ordered
    unique_sql, rule.count_sql = rule.count_sql, None
    # the ordered column, read anyway, gives its own null count and (last) newest value:
    # the aggregate pass then skips it - exact for microsecond timestamps (epoch_us)
    newest_by_order = (column == source.timestamp_field
                       and found[column] in ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"))
    by_order = [r for r in rules if newest_by_order and r.result.rule == "not_null"
                and r.result.column == source.timestamp_field]
    for r in by_order:
        r.count_sql = None
    return OrderedPass(rule, column, unique_sql, newest_by_order, by_order)


def settle_ordered(con: Any, scan: str, ordered: OrderedPass, found: dict[str, str],
                    rows: int, newest: Any) -> Any:
    """Count the unique rule in key order (the hash count when the data is not in order
    after all); returns the newest timestamp, from that column when it is the time field."""
    rule, column = ordered.rule, ordered.column
    count, present, last = _ordered_duplicates(con, scan, rule, column, found[column], rows)
    if count is None:  # not in order after all: the hash count, as in the single pass
        count = con.sql(f"SELECT {ordered.unique_sql} FROM {scan}").fetchall()[0][0]
        if count and rule.recount_sql:
            count = con.sql(f"SELECT {rule.recount_sql} FROM {scan}").fetchall()[0][0]
    rule.result.offending_rows = int(count or 0)
    rule.result.ok = rule.result.offending_rows == 0
    if not ordered.newest_by_order:
        return newest
    if present is None:  # the fetch stopped early: ask the file
        present, newest = con.sql(f"SELECT count({ident(column)}), "
                                  f"max({ident(column)}) FROM {scan}").fetchall()[0]
    elif last is not None:
        newest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=last)
        if found[column] == "TIMESTAMP":
            newest = newest.replace(tzinfo=None)
    else:
        newest = None
    for r in ordered.by_order:
        r.result.offending_rows = rows - int(present)
        r.result.ok = r.result.offending_rows == 0
    return newest
