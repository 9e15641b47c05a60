"""The columnar kernel (catalog/compute/kernel.py) against the SQL plan it replaces on DuckDB (the
plan Spark still runs), on data built to hit every edge: several islands per entity, text
and integer keys, nulls, NaN, negative values, integer and timestamp extremes, empty
filters, count_distinct runs, windows finer than the grain and narrowed snapshot ranges.
Values are multiples of 1/4, so sums are exact in any order and tables must be equal."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tally.catalog.compute.kernel import CHUNK_CELLS, group_table, prepare_group, stream_group
from tally.catalog.compute.plans import group_query, partial_plan, plan_group
from tally.catalog.compute.rounding import round_like_duckdb
from tally.catalog.compute.windows import Windows
from tally.catalog.spec.loading import load_project

METRICS = [
    ("n_rows", "count", "*", None, "3d"),
    ("n_values", "count", "value", None, "7d"),
    ("total_a", "sum", "value * 2", "kind = 'a'", "3d"),
    ("total_int", "sum", "qty", None, "7d"),
    ("mean", "avg", "value", None, "7d"),
    ("mean_b", "avg", "value", "kind = 'b'", "36h"),
    ("low", "min", "value", None, "3d"),
    ("high", "max", "value", "kind <> 'c'", "7d"),
    ("low_int", "min", "qty", None, "7d"),
    ("high_int", "max", "qty", "kind = 'a'", "3d"),
    ("last_seen", "max", "seen", None, "7d"),
    ("users", "count_distinct", "user_id", None, "3d"),
    ("users_b", "count_distinct", "user_id", "kind = 'b'", "7d"),
    ("nothing", "sum", "value", "kind = 'zzz'", "3d"),
    ("nothing_min", "min", "value", "kind = 'zzz'", "36h"),
    # same definitions as n_rows and mean under other names: shared, but only per window
    ("n_rows_again", "count", "*", None, "3d"),
    ("n_rows_week", "count", "*", None, "7d"),
    ("mean_3d", "avg", "value", None, "3d"),
]
EPOCH = datetime(2025, 3, 1, tzinfo=UTC)


def _definitions(key_type: str) -> str:
    metrics = "\n".join(
        f"  - {{name: {name}, description: d, owner: o@x.com, source: events, "
        f"aggregation: {agg}, expression: \"{expr}\", window: {window}"
        + (f", filter: \"{flt}\"" if flt else "") + "}"
        for name, agg, expr, flt, window in METRICS)
    return f"""
entities:
  - {{name: shop, join_key: shop_id, description: A shop ({key_type} keys)., owner: o@x.com}}
sources:
  - name: events
    description: Events.
    owner: p@x.com
    path: data/events.parquet
    entity: shop
    timestamp_field: ts
metrics:
{metrics}
"""


def _events(rng: random.Random, text_keys: bool) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in ("shop_id", "ts", "value", "qty", "kind",
                                            "user_id", "seen")}
    for shop in range(12):
        # several islands: bursts of activity separated by silences longer than any reach
        for burst_start in rng.sample(range(0, 60, 15), rng.randint(1, 3)):
            for _ in range(rng.randint(1, 25)):
                ts = EPOCH + timedelta(days=burst_start + rng.randint(0, 5),
                                       hours=rng.choice([0, 0, 1, 11, 12, 23]),
                                       minutes=rng.choice([0, 59]))
                value = rng.choice([None, float("nan"), float("inf"), -float("inf"), -2.5, 0.0,
                                    0.25, 1.5, 7.75, 100.0, 100.0, 1.5])
                rows["shop_id"].append(f"s{shop:02d}" if text_keys else shop * 1000)
                rows["ts"].append(ts)
                rows["value"].append(value)
                rows["qty"].append(rng.choice([None, -3, 0, 1, 2, 40]))
                rows["kind"].append(rng.choice(["a", "b", "c", None]))
                rows["user_id"].append(rng.choice([None, 1, 2, 3, 4, 5]))
                rows["seen"].append(ts - timedelta(minutes=rng.randint(0, 5000)))
    rows["shop_id"].append(None)  # a row without an entity counts nowhere
    for column in ("ts", "value", "qty", "kind", "user_id", "seen"):
        rows[column].append(rows[column][0])
    return pa.table({
        "shop_id": pa.array(rows["shop_id"], pa.string() if text_keys else pa.int64()),
        "ts": pa.array(rows["ts"], pa.timestamp("us", tz="UTC")),
        "value": pa.array(rows["value"], pa.float64()),
        "qty": pa.array(rows["qty"], pa.int32()),
        "kind": pa.array(rows["kind"], pa.string()),
        "user_id": pa.array(rows["user_id"], pa.int64()),
        "seen": pa.array(rows["seen"], pa.timestamp("us", tz="UTC")),
    })


def _same(kernel: pa.Table, sql: pa.Table) -> None:
    assert kernel.column_names == sql.column_names
    for name in kernel.column_names:
        k_type, s_type = kernel.schema.field(name).type, sql.schema.field(name).type
        assert k_type == s_type, (name, k_type, s_type)
        left, right = kernel.column(name).to_pylist(), sql.column(name).to_pylist()
        for row, (a, b) in enumerate(zip(left, right, strict=True)):
            both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) \
                and math.isnan(b)
            assert a == b or both_nan, (name, row, a, b, kernel.slice(row, 1).to_pylist())


@pytest.mark.parametrize("text_keys", [True, False], ids=["text-keys", "integer-keys"])
@pytest.mark.parametrize("seed", [1, 2, 0])  # 0: every key null, so no cells at all
@pytest.mark.parametrize("chunk_cells", [CHUNK_CELLS, 7, 1],
                         ids=["one-chunk", "chunks-of-7", "chunks-of-1"])
def test_kernel_equals_sql_plan(tmp_path: Path, text_keys: bool, seed: int,
                                chunk_cells: int) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(_definitions("text" if text_keys else "int"))
    path = tmp_path / "data" / "events.parquet"
    events = _events(random.Random(seed), text_keys)
    if seed == 0:
        events = events.set_column(0, "shop_id", pa.nulls(events.num_rows,
                                                          events.schema.field(0).type))
    pq.write_table(events, path)
    project = load_project(tmp_path)
    (group,) = project.groups()
    plan = plan_group(project, group)
    assert plan.bucket_us == 12 * 3600 * 1_000_000  # 36h windows: half-day buckets, G = 2
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lo, hi = con.sql(f"SELECT min(epoch_us(ts)), max(epoch_us(ts)) FROM '{path}'").fetchall()[0]
    full_low, full_high = plan.snapshot_bounds(lo, hi)
    g = plan.grain_buckets
    ranges = [(full_low, full_high), (full_low + 10 * g, full_low + 30 * g),
              (full_high - 4 * g, full_high), (full_high, full_high)]
    for low, high in ranges:
        parts = partial_plan(project, plan, path=str(path), low=low, high=high)
        kernel = group_table(con, parts, plan, key_name="shop_id", low=low, high=high,
                             chunk_cells=chunk_cells)
        assert kernel is not None
        sql = con.sql(group_query(project, plan, path=str(path), low=low, high=high
                                  ).sql("duckdb")).to_arrow_table()
        assert kernel.num_rows == sql.num_rows
        assert (kernel.num_rows > 0) == (seed != 0)
        _same(kernel, sql)
        _same_as_streamed(con, project, plan, str(path), (low, high), chunk_cells, kernel)


def _same_as_streamed(con: duckdb.DuckDBPyConnection, project, plan, path: str,
                      span: tuple[int, int], chunk_cells: int, kernel: pa.Table) -> None:
    """A full run's stream gives the same chunks, cut at the same cells (a window's
    running sums restart with each chunk), and the same rows, as the cells held whole."""
    low, high = span
    parts = partial_plan(project, plan, path=path, low=low, high=high)
    held = prepare_group(con, parts, plan, low=low, high=high, chunk_cells=chunk_cells)
    stream = stream_group(con, parts, plan, low=low, high=high, chunk_cells=chunk_cells)
    assert held is not None and stream is not None
    chunks = list(stream.tables("shop_id"))
    assert [c.num_rows for c in chunks] == [c.num_rows for c in held.tables("shop_id")]
    assert chunks[0].schema == kernel.schema  # one empty chunk when there are no cells
    _same(pa.concat_tables(chunks), kernel)


@pytest.mark.parametrize("chunk_cells", [CHUNK_CELLS, 7], ids=["one-chunk", "chunks-of-7"])
def test_split_chunks_put_rows_before_the_split_first(tmp_path: Path, chunk_cells: int
                                                      ) -> None:
    """With split_us (where a full write's base part ends), each chunk holds its rows
    before it first, then the rest, each run in key and snapshot order; the rows are the
    same as without it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(_definitions("text"))
    path = tmp_path / "data" / "events.parquet"
    pq.write_table(_events(random.Random(1), True), path)
    project = load_project(tmp_path)
    plan = plan_group(project, project.groups()[0])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lo, hi = con.sql(f"SELECT min(epoch_us(ts)), max(epoch_us(ts)) FROM '{path}'").fetchall()[0]
    low, high = plan.snapshot_bounds(lo, hi)
    split_us = (low + high) // 2 * plan.bucket_us
    parts = partial_plan(project, plan, path=str(path), low=low, high=high)
    run = prepare_group(con, parts, plan, low=low, high=high, chunk_cells=chunk_cells)
    assert run is not None
    plain = list(run.tables("shop_id"))
    split = list(run.tables("shop_id", split_us=split_us))
    order = [("shop_id", "ascending"), ("event_timestamp", "ascending")]
    crossed = 0
    for before, after in zip(plain, split, strict=True):
        stamps = after.column("event_timestamp").cast(pa.int64()).to_numpy()
        later = stamps >= split_us
        assert not (later[:-1] & ~later[1:]).any()  # never an earlier row after a later one
        crossed += int(later.any() and not later.all())
        first = after.slice(0, int((~later).sum()))
        rest = after.slice(first.num_rows)
        for run_rows in (first, rest):
            stamp_keys = run_rows.select(["shop_id", "event_timestamp"])
            assert stamp_keys.equals(stamp_keys.sort_by(order))
        _same(after.sort_by(order), before)
    assert crossed > 0


def test_kernel_hands_text_extremes_to_the_sql_plan(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(_definitions("text").replace(
        'aggregation: min, expression: "qty"', 'aggregation: min, expression: "kind"'))
    path = tmp_path / "data" / "events.parquet"
    pq.write_table(_events(random.Random(3), True), path)
    project = load_project(tmp_path)
    plan = plan_group(project, project.groups()[0])
    con = duckdb.connect()
    parts = partial_plan(project, plan, path=str(path), low=plan.grain_buckets * 10**5,
                         high=plan.grain_buckets * 10**6)
    assert group_table(con, parts, plan, key_name="shop_id", low=0, high=1) is None


@pytest.mark.parametrize("width", [1, 2, 3, 7, 30, 1500])
def test_window_reads_match_brute_force(width: int) -> None:
    rng = np.random.default_rng(width)
    size = 5000
    ints = rng.integers(-50, 50, size)
    floats = rng.choice([np.nan, -1.5, 0.25, 3.0, 8.5], size)
    slots = np.sort(rng.choice(np.arange(width, size), 700, replace=False))
    windows = Windows(slots, size, width)
    assert windows.size % windows.segment == 0 and windows.segment >= width
    padded_ints = np.zeros(windows.size, dtype=np.int64)
    padded_ints[:size] = ints
    padded_floats = np.full(windows.size, np.nan)
    padded_floats[:size] = floats
    totals = windows.total(padded_ints, width)
    lows = windows.extreme(padded_floats, width, np.fmin)
    highs = windows.extreme(padded_ints, width, np.maximum)
    for row, s in enumerate(slots):
        assert totals[row] == ints[s - width:s].sum()
        assert highs[row] == ints[s - width:s].max()
        expected = np.fmin.reduce(floats[s - width:s])
        assert lows[row] == expected or (np.isnan(lows[row]) and np.isnan(expected))


def test_rounding_matches_duckdb() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([
        rng.normal(0, 1e3, 2000), rng.normal(0, 1e-6, 2000),
        rng.integers(-5000, 5000, 2000) / 1024.0**2,  # many land exactly on a half
        np.array([0.0, -0.0, 0.5e-9, -0.5e-9, 1.5e-9, -2.5e-9, 2.0000000005, 2.0**-10,
                  -(2.0**-10), 1e300, -1e300, np.inf, -np.inf, np.nan, 123456.1234567895]),
    ])
    con = duckdb.connect()
    expected = con.execute("SELECT round(v, 9) FROM (SELECT unnest($1::DOUBLE[]) AS v)",
                           [values.tolist()]).fetchall()
    ours = round_like_duckdb(values.copy())
    for value, mine, (theirs,) in zip(values, ours, expected, strict=True):
        if math.isnan(theirs):
            assert math.isnan(mine), value
        else:
            assert mine == theirs and math.copysign(1, mine) == math.copysign(1, theirs), \
                (value, mine, theirs)


def test_incremental_run_falls_back_to_the_sql_plan_when_memory_is_short(
        tmp_path: Path, monkeypatch) -> None:
    """A full run streams chunk by chunk; an incremental one holds its new rows in
    memory, so when they would not fit the SQL plan (which DuckDB can spill) runs instead,
    and the table is the same."""
    from tally.catalog.compute import kernel
    from tally.catalog.compute.runner import ComputeOptions, compute

    (tmp_path / "data").mkdir()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(_definitions("text"))
    pq.write_table(_events(random.Random(4), True), tmp_path / "data" / "events.parquet")
    table = tmp_path / "data" / "tables" / "events_1d.parquet"
    compute(load_project(tmp_path), ComputeOptions(full=True))
    through_kernel = pq.read_table(table)
    compute(load_project(tmp_path), ComputeOptions(full=True, end=(EPOCH + timedelta(
        days=20)).date()))
    calls: list[int] = []
    monkeypatch.setattr(kernel, "memory_budget", lambda: calls.append(1) or 0)
    results = compute(load_project(tmp_path))
    assert {r.name: r.mode for r in results}["events_1d"] == "incremental"
    assert calls  # the kernel was asked, and declined
    through_sql = pq.read_table(table)
    assert through_sql.schema == through_kernel.schema
    order = [("shop_id", "ascending"), ("event_timestamp", "ascending")]  # parts aside
    _same(through_kernel.sort_by(order), through_sql.sort_by(order))


def test_occurrences_out_of_the_cells_key_order_fail_loudly() -> None:
    """A full run hands each piece of cells the next run of count_distinct occurrences by
    key; were the two ever sorted differently, every later piece's counts would shift, so
    the cursor refuses instead."""
    from tally.catalog.compute.kernel import OccurrenceCursor

    occ = pa.table({"__key": ["c", "a"], "__v": [1, 1], "__b": [0, 0]})
    with pytest.raises(RuntimeError, match="key order"):
        OccurrenceCursor(occ).take(pa.array(["a", "b"]))
    in_order = OccurrenceCursor(pa.table({"__key": ["a", "c"], "__v": [1, 1], "__b": [0, 0]}))
    assert len(in_order.take(pa.array(["a", "b"])).b) == 1  # a's occurrence; c's waits
    assert len(in_order.take(pa.array(["c"])).b) == 1
