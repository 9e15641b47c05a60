"""Candidate plans for the irregular shape's point-in-time join, side by side:

    python -m bench tf_candidates [--size tiny|small|large]

Each candidate finds, for every entity row of the irregular shape (bench/training_frame's
generate_irregular: 3 tables, ttl 30 d), the file row number of its winning feature row,
for all 3 tables, in a fresh subprocess (median of the repeats, interleaved); the two
"with features" rows add reading the winners' 13 features (the whole range plan). Sizes:
tiny 10k rows x 1k entity rows, small 3M x 300k (between the training_frame bench's small
and large), large 10M x 1M. The checksum column says whether a candidate picked the same
winners as the shipped plan (`rows, timestamps`).
"""

from __future__ import annotations

import json
import os
import statistics
from typing import cast

from .common import DATA, Run, run_in_subprocess, table, write_section

SIZES = {"tiny": (10_000, 1_000), "small": (3_000_000, 300_000),
         "large": (10_000_000, 1_000_000)}
TTL_US = 30 * 86_400 * 1_000_000

_SETUP = """
import sys, time
import duckdb, numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
D = sys.argv[1]
ent = pq.read_table(f"{D}/entities.parquet")
ent = ent.append_column("__tally_row", pa.array(np.arange(ent.num_rows)))
con = duckdb.connect(); con.execute("SET TimeZone = 'UTC'"); con.register("e", ent)
VIEWS = ["t1", "t2", "t3"]
def checksum(rows, r):
    rows, r = np.asarray(rows, dtype=np.int64), np.asarray(r, dtype=np.int64)
    return [int(len(rows)), int(((rows * 1_000_003 + r) % 2_147_483_647).sum())]
"""

# the shipped plan's query, from the store's own SQL builder
_SHIPPED = """
from datetime import timedelta
from tally.feature_repo.offline_store_sql import ViewPlan, rows_sql
def winners(v):
    plan = ViewPlan(f"{D}/{v}.parquet", [("account_id", "account_id")], "event_timestamp",
                    "created_timestamp", [], timedelta(days=30))
    sql = rows_sql(plan, [plan.path], "e", "event_timestamp", None, None)
    t = con.sql(sql).to_arrow_table()
    return t.column("__tally_row").to_numpy(), t.column("__r").to_numpy()
"""

_SQL = """
def winners(v):
    t = con.sql(QUERY.replace("FILE", f"{D}/{v}.parquet")).to_arrow_table()
    return t.column(0).to_numpy(), t.column(1).to_numpy()
"""

_ROW_ORDER = f"f.ts::HUGEINT * {2**64} + coalesce(f.c, {-(2**63)})"
_TABLE = ("(SELECT account_id AS k, epoch_us(event_timestamp) AS ts, "
          "epoch_us(created_timestamp) AS c, file_row_number AS r "
          "FROM read_parquet('FILE', file_row_number = true))")
_ENTITY = (f"(SELECT __tally_row AS row, account_id AS k, epoch_us(event_timestamp) AS t, "
           f"epoch_us(event_timestamp) - {TTL_US} AS lo FROM e)")
QUERIES = {
    "integers": f"SELECT e.row, arg_max(f.r, {_ROW_ORDER}) FROM {_ENTITY} e JOIN {_TABLE} f "
                "ON f.k = e.k AND f.ts <= e.t AND f.ts >= e.lo GROUP BY e.row",
    "bucketed": f"WITH x AS {_ENTITY}, e AS (SELECT *, t // {TTL_US} AS b FROM x UNION ALL "
                f"SELECT *, t // {TTL_US} - 1 FROM x) SELECT e.row, arg_max(f.r, {_ROW_ORDER}) "
                f"FROM e JOIN (SELECT *, ts // {TTL_US} AS b FROM {_TABLE}) f ON f.k = e.k AND "
                "f.b = e.b AND f.ts <= e.t AND f.ts >= e.lo GROUP BY e.row",
    "asof": f"SELECT e.row, f.r FROM {_ENTITY} e ASOF JOIN {_TABLE} f ON f.k = e.k AND "
            "f.ts <= e.t WHERE f.ts >= e.lo",
}

# packed (key, time) int64 sorted once; a binary search per entity row
_NUMPY = """
def index(v):
    t = con.sql(f"SELECT account_id AS k, epoch_us(event_timestamp) // 1000000 AS s, "
                f"coalesce(epoch_us(created_timestamp), {-(2**63)}) AS c, file_row_number AS r "
                f"FROM read_parquet('{D}/{v}.parquet', file_row_number = true)").fetchnumpy()
    k, s, c, r = (np.asarray(t[n]) for n in ("k", "s", "c", "r"))
    kmin, smin = int(k.min()), int(s.min())
    bits = int(s.max() - smin).bit_length()
    packed = ((k - kmin) << bits) | (s - smin)
    order = np.lexsort((c, packed))  # by pair, then created: the last of a run wins
    packed = packed[order]
    keep = np.ones(len(packed), dtype=bool)
    keep[:-1] = packed[1:] != packed[:-1]
    return packed[keep], r[order][keep], kmin, smin, bits
def lookup(ix):
    packed, r, kmin, smin, bits = ix
    key = ent.column("account_id").to_numpy() - kmin
    t_us = ent.column("event_timestamp").cast(pa.int64()).to_numpy()
    rel = t_us // 1000000 - smin
    ok = (key >= 0) & (rel >= 0)
    q = (np.where(ok, key, 0) << bits) | np.clip(rel, 0, (1 << bits) - 1)
    at = np.searchsorted(packed, q, side="right") - 1
    found = packed[np.maximum(at, 0)]
    ok &= (at >= 0) & ((found >> bits) == key)
    ok &= ((found & ((1 << bits) - 1)) + smin) * 1000000 >= t_us - TTL
    m = np.flatnonzero(ok)
    return m, r[at[m]]
def winners(v):
    return lookup(index(v))
"""

_TIMED = """
t0 = time.perf_counter()
found = [winners(v) for v in VIEWS]
OUT = {"s": time.perf_counter() - t0, "sum": [checksum(*w) for w in found]}
"""

_WARM = """
built = {v: index(v) for v in VIEWS}
t0 = time.perf_counter()
found = [lookup(built[v]) for v in VIEWS]
OUT = {"s": time.perf_counter() - t0, "sum": [checksum(*w) for w in found],
       "index_mb": sum(a.nbytes + b.nbytes for a, b, *_ in built.values()) / 2**20}
"""

_FEATURES = """
from tally.feature_repo.offline_store_sql import fetch_sql
def plan(v):
    names = [c for c in pq.read_schema(f"{D}/{v}.parquet").names if c.startswith(v + "_f")]
    return ViewPlan(f"{D}/{v}.parquet", [("account_id", "account_id")], "event_timestamp",
                    "created_timestamp", [(c, c) for c in names], timedelta(days=30)), names
def read_rows(path, names, rows):  # the previous plan's step 2: pyarrow, row group by row group
    file = pq.ParquetFile(path)
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    starts = np.cumsum([0] + [file.metadata.row_group(i).num_rows
                              for i in range(file.num_row_groups)])
    parts = []
    for g in range(file.num_row_groups):
        lo, hi = np.searchsorted(wanted, starts[g:g + 2])
        if lo < hi:
            parts.append(file.read_row_group(g, columns=names).take(
                pa.array(wanted[lo:hi] - starts[g])))
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return pa.concat_tables(parts).take(pa.array(back))
def previous(v):
    p, names = plan(v)
    sql = rows_sql(p, [p.path], "e", "event_timestamp", None, None)
    found = con.sql(sql).to_arrow_table()
    return found.column("__tally_row"), read_rows(p.path, names, found.column("__r").to_numpy())
def shipped(v):
    p, _ = plan(v)
    sql = rows_sql(p, [p.path], "e", "event_timestamp", None, None)
    con.register("w", con.sql(sql).to_arrow_table())
    return con.sql(fetch_sql(p, [p.path], "w")).to_arrow_table()
t0 = time.perf_counter()
found = [FETCH(v) for v in VIEWS]
OUT = {"s": time.perf_counter() - t0, "sum": None}
"""

CODE = {"rows, timestamps (shipped, step 1)": _SETUP + _SHIPPED + _TIMED,
        "numpy sorted index, cold (build + lookup)": _SETUP + f"TTL = {TTL_US}\n" + _NUMPY
        + _TIMED,
        "numpy sorted index, warm (lookup only)": _SETUP + f"TTL = {TTL_US}\n" + _NUMPY
        + _WARM,
        "with features: rows, then pyarrow reads them by row group (previous)":
            _SETUP + _SHIPPED + _FEATURES.replace("FETCH(", "previous("),
        "with features: rows, then joined back to the file on the row number in DuckDB (shipped)":
            _SETUP + _SHIPPED + _FEATURES.replace("FETCH(", "shipped(")}
LABELS = {"integers": "rows, integer epochs, lower bound precomputed",
          "bucketed": "rows, equality on (key, ttl bucket), entity rows doubled",
          "asof": "DuckDB ASOF JOIN (ties on time unresolved)"}
for _name, _query in QUERIES.items():
    CODE[LABELS[_name]] = _SETUP + f"QUERY = {json.dumps(_query)}\n" + _SQL + _TIMED


def run(size: str) -> None:
    from .training_frame import generate_irregular

    rows, entity_rows = SIZES[size]
    data = generate_irregular(DATA / f"tf_candidates_{size}", rows, entity_rows)
    repeat = 1 if size == "tiny" else 2
    runs: dict[str, list[Run]] = {k: [] for k in CODE}
    for i in range(repeat):
        for name, code in CODE.items():
            run_ = run_in_subprocess(code, str(data))
            runs[name].append(run_)
            print(f"{name}: run {i + 1}: {run_.output['s']:.2f} s, {run_.peak_mb:.0f} MB",
                  flush=True)
    shipped = runs["rows, timestamps (shipped, step 1)"][0].output["sum"]
    out = []
    for name, done in runs.items():
        med = statistics.median(cast(float, r.output["s"]) for r in done)
        total = done[0].output["sum"]
        same = "n/a" if total is None else "yes" if total == shipped else "no"
        extra = done[0].output.get("index_mb")
        note = f"index {cast(float, extra):.0f} MB kept" if extra else ""
        out.append([name, f"{med:.2f}", f"{max(r.peak_mb for r in done):.0f}", same, note])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (f"### {size}: 3 irregular tables of {rows:,} rows, {entity_rows:,} entity rows\n\n"
            + table(["candidate (3 tables)", "s (median)", "peak MB", "same winners", "note"],
                    out)
            + f"\n\nLoad average at the end (1/5/15 min): {load}.\n")
    print(text)
    write_section(f"tf_candidates --size {size}", text)
