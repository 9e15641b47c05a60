"""The point-in-time join of Tally's offline store, view by view: which plan answers
each view (the candidate plan of offline_store_scan.py, else the row-id or payload plan of
offline_store_sql.py), the views run two at a time, and the columns put in entity order.
docs/offline_store.md says when each plan runs and why."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tally.feature_repo.offline_store_scan import EntityKeys, in_entity_order, scan_view
from tally.feature_repo.offline_store_sql import (
    ROW,
    ViewPlan,
    fetch_sql,
    literal,
    parquet_files,
    range_sql,
    rows_sql,
)


def connect() -> Any:
    from tally.catalog.sql.duck import connect_unrestricted

    return connect_unrestricted()


def arrow_table(result: Any) -> pa.Table:
    table = result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.arrow()
    return table.read_all() if isinstance(table, pa.RecordBatchReader) else table


def stamp_sql(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return literal(value.astimezone(UTC).isoformat()) + "::TIMESTAMPTZ"


def _scatter(n: int, rows: np.ndarray, values: pa.Table) -> pa.Table:
    """Put `values` (one row per entity row number in `rows`) in entity order, nulls where
    an entity row has no match."""
    position = np.full(n, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows), dtype=np.int64)
    return in_entity_order(values, position)


def time_range(entities: pa.Table, ts_col: str) -> tuple[str | None, str | None]:
    """The entity frame's earliest and latest time as SQL literals (None when empty)."""
    if not entities.num_rows:
        return None, None
    stamps = entities.column(ts_col)
    return stamp_sql(pc.min(stamps).as_py()), stamp_sql(pc.max(stamps).as_py())


def run_view(con: Any, plan: ViewPlan, entities: pa.Table, ts_col: str,
             span: tuple[str | None, str | None], keys: EntityKeys | None = None
             ) -> tuple[pa.Table, str]:
    """One feature view's columns, in entity order (`__f0`, `__f1`, ...), and the plan that
    found them (PLANS), for entity times in `span` (time_range). The candidate plan
    (offline_store_scan.py) answers unless the table has too many candidates; then the
    range join finds each entity row's winning row id (file and row number) and a second
    query reads the winners' features; past MAX_ROW_FILES files the join carries them."""
    lo, hi = span
    if keys is not None:
        scanned = scan_view(con, plan, keys, lo, hi)
        if scanned is not None:
            return scanned, "candidates"
    con.register("__tally_entities", entities)
    names = [f"__f{i}" for i in range(len(plan.features))]
    files = parquet_files(plan.path)
    if files:
        winners = arrow_table(con.sql(rows_sql(plan, files, "__tally_entities", ts_col, lo, hi)))
        con.register("__tally_winners", winners)
        found = arrow_table(con.sql(fetch_sql(plan, files, "__tally_winners"))).select(
            [ROW, *names])
        con.unregister("__tally_winners")
    else:
        found = arrow_table(con.sql(range_sql(plan, "__tally_entities", ts_col, lo, hi))).select(
            [ROW, *names])
    con.unregister("__tally_entities")
    found = _scatter(entities.num_rows, found.column(ROW).to_numpy(), found.select(names))
    return found, "row ids" if files else "payload"


def _key_columns(plan: ViewPlan) -> tuple[str, ...]:
    """The entity frame's columns a view joins on."""
    return tuple(ent for _, ent in plan.keys)


def _entity_keys(con: Any, plans: list[ViewPlan], entities: pa.Table, ts_col: str,
                 keys: dict[tuple[str, ...], EntityKeys]) -> None:
    """Into `keys`, a table of distinct keys per set of entity key columns the views join
    on (filled one by one, so that the caller drops those made before a failure)."""
    con.register("__tally_frame", entities)
    try:
        for cols in dict.fromkeys(map(_key_columns, plans)):
            if cols:
                keys[cols] = EntityKeys(con, "__tally_frame", list(cols), ts_col,
                                        entities.num_rows)
    finally:
        con.unregister("__tally_frame")


def point_in_time(con: Any, plans: list[ViewPlan], entities: pa.Table, ts_col: str,
                  chosen: dict[str, str] | None = None) -> pa.Table:
    """The entity frame with every plan's features; `chosen` gets the plan that answered
    each view. Views run two at a time, each on a cursor of its own, so that one's Arrow
    and numpy work overlaps the other's scan."""
    keys: dict[tuple[str, ...], EntityKeys] = {}
    span = time_range(entities, ts_col)

    def view(plan: ViewPlan) -> tuple[pa.Table, str]:
        cols = _key_columns(plan)
        with con.cursor() as cursor:
            return run_view(cursor, plan, entities.select([ROW, ts_col, *dict.fromkeys(cols)]),
                            ts_col, span, keys.get(cols))

    try:
        _entity_keys(con, plans, entities, ts_col, keys)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(view, plans))
    finally:
        for table in keys.values():
            table.drop(con)
    out = entities.drop_columns([ROW])
    for plan, (columns, used) in zip(plans, results, strict=True):
        if chosen is not None:
            chosen[plan.name] = used
        for i, (_, name) in enumerate(plan.features):
            out = out.append_column(name, columns.column(f"__f{i}"))
    return out
