"""Training frame: Tally's offline store vs Feast's stock DuckDB store vs hand-written
DuckDB queries (hash join + QUALIFY, ASOF join), and the floor (reading the needed
columns once), on two shapes of 3 feature tables (30-day ttl, 122880-row groups):

* aligned: shaped like Tally's own (daily snapshots sorted by key and timestamp), entity
  rows at random times;
* irregular: raw tables as a Feast user points a FileSource at (see generate_irregular):
  event times to the second over a year in no order, ~10 rows per key, 2% restated rows,
  1% nulls, int32/int64/float32/float64; entity rows hitting every ttl edge.

    python -m bench training_frame [--size tiny|small|large]

tiny: a few thousand rows (seconds); small: 3 x ~1M rows, 100k entity rows; large:
3 x ~10M rows, 1M entity rows.
Each variant runs in its own subprocess (peak RSS is the whole process, Python and
imports included); the time is the join alone, to Arrow, median of the repeats, the
variants interleaved so machine load hits them alike.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import cast

from .common import DATA, Run, run_in_subprocess, table, write_section

SIZES = {"tiny": (500, 1_000), "small": (65_000, 100_000),
         "large": (650_000, 1_000_000)}  # aligned: keys, entity rows
IRREGULAR = {"tiny": (10_000, 1_000), "small": (1_000_000, 100_000),
             "large": (10_000_000, 1_000_000)}  # irregular: rows per table, entity rows
YEAR_S = 365 * 86400
DAYS = 20
VIEWS = [("t1", 5), ("t2", 4), ("t3", 4)]
VIEWS_N = [(1, 5), (2, 4), (3, 4)]
GEN_VERSION = "3"
IRREGULAR_VERSION = "1"


def _h(expr: str, salt: int) -> str:
    """A deterministic integer hash in [0, 2^31 - 1)."""
    return f"((({expr}) * 2654435761 + {salt} * 40503 + 12345) % 2147483647)"


def generate(size: str, out: Path | None = None) -> Path:
    import duckdb

    keys, n = SIZES[size]
    out = out or DATA / f"tf_{size}"
    marker = out / "VERSION"
    if marker.exists() and marker.read_text() == GEN_VERSION:
        return out
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for ti, nf in [(1, 5), (2, 4), (3, 4)]:
        k = keys if ti != 3 else int(keys * 0.8)  # some keys absent from t3
        feats = ", ".join(
            f"({_h('k * 131 + d', ti * 10 + j)} % 1000)::BIGINT AS t{ti}_f{j}" if j == 1 else
            f"({_h('k * 131 + d', ti * 10 + j)} % 10000) / 10.0 AS t{ti}_f{j}"
            for j in range(1, nf + 1))
        # each key: a contiguous span of daily snapshots, with rare gaps (quiet days)
        con.execute(f"""COPY (
          WITH spans AS (SELECT k, {_h('k', ti)} % 5 AS s, 12 + {_h('k', ti + 7)} % 9 AS len
                         FROM range({k}) t(k)),
          g AS (SELECT k, d FROM spans, range(0, {DAYS}) r(d) WHERE d >= s AND d < s + len
                AND {_h('k * 131 + d', ti + 3)} % 40 <> 0)
          SELECT k AS account_id, TIMESTAMPTZ '2024-01-01' + to_days(d::INT) AS event_timestamp,
                 TIMESTAMPTZ '2024-01-01' + to_days(d::INT) AS created_timestamp, {feats}
          FROM g ORDER BY account_id, event_timestamp
        ) TO '{out}/t{ti}.parquet' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
    con.execute(f"""COPY (SELECT i AS rid, {_h('i', 99)} % {int(keys * 1.05)} AS account_id,
       TIMESTAMPTZ '2024-01-01' + to_microseconds(
           ({_h('i', 98)} % ({DAYS + 2} * 86400))::BIGINT * 1000000) AS event_timestamp,
       i % 2 AS label FROM range({n}) t(i)) TO '{out}/entities.parquet' (FORMAT parquet)""")
    marker.write_text(GEN_VERSION)
    return out


def _irregular_key_ts(ti: int, row: str, keys: int) -> tuple[str, str]:
    """Key and event time (seconds into 2024) of table ti's base row number `row`."""
    return f"{_h(row, ti * 10 + 1)} % {keys}", f"{_h(row, ti * 10 + 2)} % {YEAR_S}"


def _irregular_features(ti: int, n: int) -> str:
    kinds = [f"({_h('i', ti * 100 + 1)} % 100000)::INTEGER",
             f"({_h('i', ti * 100 + 2)} * 4099)::BIGINT",
             f"({_h('i', ti * 100 + 3)} % 100000 / 7.0)::FLOAT",
             f"CASE WHEN {_h('i', ti * 100 + 50)} % 100 = 0 THEN NULL "
             f"ELSE {_h('i', ti * 100 + 4)} % 1000000 / 13.0 END::DOUBLE",
             f"({_h('i', ti * 100 + 5)} % 1000 / 3.0)::DOUBLE"]
    return ", ".join(f"{kinds[j]} AS t{ti}_f{j + 1}" for j in range(n))


def generate_irregular(out: Path, rows: int, entity_rows: int) -> Path:
    """3 raw tables of `rows` rows over rows/10 keys, written in generation order (not
    sorted): the base 98% of rows at random seconds of 2024; the last 2% restate a base row
    (same key and event time, created 1 h later, other values). created_timestamp is
    unique per row. Entity rows: 1% unknown keys, 5% exactly at a feature row's time, 2%
    exactly ttl (30 d) after one, 2% ttl + 1 s after one, the rest random keys and times."""
    import duckdb

    marker = out / "VERSION"
    if marker.exists() and marker.read_text() == IRREGULAR_VERSION:
        return out
    out.mkdir(parents=True, exist_ok=True)
    keys, base = rows // 10, rows - rows // 50
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for ti, nf in VIEWS_N:
        key, sec = _irregular_key_ts(ti, "src", keys)
        con.execute(f"""COPY (
          WITH r AS (SELECT i, CASE WHEN i < {base} THEN i ELSE {_h('i', ti * 10 + 5)} % {base}
                               END AS src FROM range({rows}) t(i))
          SELECT ({key})::BIGINT AS account_id,
                 TIMESTAMPTZ '2024-01-01' + to_seconds(({sec})::BIGINT) AS event_timestamp,
                 TIMESTAMPTZ '2024-01-01' + to_seconds(({sec})::BIGINT + 60
                     + CASE WHEN i < {base} THEN 0 ELSE 3600 END) + to_microseconds(i)
                     AS created_timestamp, {_irregular_features(ti, nf)}
          FROM r) TO '{out}/t{ti}.parquet' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
    pick = {part: "CASE (i // 100) % 3 " + " ".join(
        f"WHEN {ti - 1} THEN {_irregular_key_ts(ti, 'r', keys)[part]}" for ti, _ in VIEWS_N)
        + " END" for part in (0, 1)}
    ttl = 30 * 86400
    con.execute(f"""COPY (
      WITH e AS (SELECT i, i % 100 AS m, {_h('i', 97)} % {base} AS r
                 FROM range({entity_rows}) t(i)),
      f AS (SELECT i, m, ({pick[0]})::BIGINT AS fk, ({pick[1]})::BIGINT AS fs FROM e)
      SELECT i AS rid,
        CASE WHEN m = 0 THEN {keys} + {_h('i', 96)} % {keys} WHEN m < 10 THEN fk
             ELSE {_h('i', 99)} % {keys} END::BIGINT AS account_id,
        TIMESTAMPTZ '2024-01-01' + to_seconds(CASE WHEN m BETWEEN 1 AND 5 THEN fs
             WHEN m IN (6, 7) THEN fs + {ttl} WHEN m IN (8, 9) THEN fs + {ttl} + 1
             ELSE {_h('i', 98)} % {YEAR_S + ttl} END) AS event_timestamp,
        i % 2 AS label FROM f) TO '{out}/entities.parquet' (FORMAT parquet)""")
    marker.write_text(IRREGULAR_VERSION)
    return out


_FEAST_SETUP = """
import sys, warnings
warnings.filterwarnings("ignore")
from datetime import timedelta
import pyarrow.parquet as pq
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int32, Int64, Float32, Float64
from feast.repo_config import RepoConfig
D = sys.argv[1]
TYPES = ([Int32, Int64, Float32, Float64, Float64] if sys.argv[2] == "irregular" else
         [Int64, Float64, Float64, Float64, Float64])
ent = pq.read_table(f"{D}/entities.parquet").to_pandas()
acc = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
views = [FeatureView(name=v, entities=[acc], ttl=timedelta(days=30),
    schema=[Field(name="account_id", dtype=Int64)] + [Field(name=f"{v}_f{j}",
            dtype=TYPES[j - 1]) for j in range(1, n + 1)],
    source=FileSource(name=v + "_src", path=f"{D}/{v}.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp"))
    for v, n in [("t1", 5), ("t2", 4), ("t3", 4)]]
refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
class Registry:  # no on-demand feature views
    def list_on_demand_feature_views(self, *a, **k): return []
config = RepoConfig(project="bench", provider="local", registry=f"{D}/registry.db",
    offline_store={"type": "duckdb"}, online_store={"type": "sqlite", "path": f"{D}/o.db"},
    entity_key_serialization_version=3, repo_path=D)
"""

_TIMED = """
import time
t = time.perf_counter()
res = STORE.get_historical_features(config, views, refs, ent, Registry(), "bench").to_arrow()
OUT = {"join_s": time.perf_counter() - t, "rows": res.num_rows}
if len(sys.argv) > 3:
    import pyarrow.parquet as pq
    pq.write_table(res.sort_by("rid"), sys.argv[3])
"""

CODE = {
    "tally": _FEAST_SETUP
    + "from tally.feature_repo.offline_store import TallyDuckDBOfflineStore as STORE\n" + _TIMED,
    "feast_duckdb": _FEAST_SETUP
    + "from feast.infra.offline_stores.duckdb import DuckDBOfflineStore as STORE\n" + _TIMED,
}


def _sql_variant(kind: str) -> str:
    feats = {v: [f"{v}_f{j}" for j in range(1, n + 1)] for v, n in VIEWS}
    ctes, sel, joins = [], [], []
    for v, cols in feats.items():
        fc = ", ".join(f'f."{c}"' for c in cols)
        src = f"read_parquet(D || '/{v}.parquet')"
        if kind == "hash_join":
            ctes.append(f"""r_{v} AS (SELECT e.__row, {fc} FROM e JOIN {src} f
              ON f.account_id = e.account_id AND f.event_timestamp <= e.event_timestamp
             AND f.event_timestamp >= e.event_timestamp - INTERVAL 30 DAY
             QUALIFY row_number() OVER (PARTITION BY e.__row
                     ORDER BY f.event_timestamp DESC, f.created_timestamp DESC) = 1)""")
        else:
            kept = ", ".join(f'CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 30 DAY'
                             f' THEN f."{c}" END AS "{c}"' for c in cols)
            ctes.append(f"""r_{v} AS (SELECT e.__row, {kept} FROM e ASOF LEFT JOIN {src} f
              ON f.account_id = e.account_id AND f.event_timestamp <= e.event_timestamp)""")
        sel.append(", ".join(f'r_{v}."{c}"' for c in cols))
        joins.append(f"LEFT JOIN r_{v} ON r_{v}.__row = e.__row")
    return ("WITH e AS (SELECT *, rid AS __row FROM ent), " + ", ".join(ctes)
            + f" SELECT e.* EXCLUDE (__row), {', '.join(sel)} FROM e {' '.join(joins)}"
            " ORDER BY e.__row")


_DUCK = """
import sys, time, duckdb, pyarrow.parquet as pq
D = sys.argv[1]
ent = pq.read_table(f"{D}/entities.parquet")
con = duckdb.connect(); con.execute("SET TimeZone = 'UTC'"); con.register("ent", ent)
t = time.perf_counter()
for statement in globals().get("SETUP", []):
    con.execute(statement)
res = con.sql(QUERY.replace("D || '", "'" + D)).to_arrow_table()
OUT = {"join_s": time.perf_counter() - t, "rows": res.num_rows}
"""

_FLOOR = ("SELECT " + ", ".join(
    "(SELECT sum(account_id::DOUBLE) + sum(epoch_us(event_timestamp)::DOUBLE)"
    " + sum(epoch_us(created_timestamp)::DOUBLE)"
    + "".join(f' + sum("{v}_f{j}"::DOUBLE)' for j in range(1, n + 1))
    + f" FROM read_parquet(D || '/{v}.parquet'))" for v, n in VIEWS))

# The least a plan that probes the table with the entity rows does (the row-id plan): the
# floor scan, plus an inner join of each table's key column to the entity rows' keys
# (counted, nothing carried, no time predicate, no reduction).
_JOIN_FLOOR = ("SELECT * FROM (" + _FLOOR + "), " + ", ".join(
    f"(SELECT count(*) FROM ent e JOIN read_parquet(D || '/{v}.parquet') f "
    "ON f.account_id = e.account_id)" for v, _ in VIEWS))
# The same against a table of the entity frame's distinct keys (the candidate plan's
# floor; DuckDB's perfect hash join applies), the table's creation included.
_KEYS_SETUP = ["CREATE TABLE keys AS SELECT DISTINCT account_id FROM ent"]
_KEYS_FLOOR = ("SELECT * FROM (" + _FLOOR + "), " + ", ".join(
    f"(SELECT count(*) FROM keys k JOIN read_parquet(D || '/{v}.parquet') f "
    "ON f.account_id = k.account_id)" for v, _ in VIEWS))

for _kind in ("hash_join", "asof_join"):
    CODE[_kind] = f"QUERY = {json.dumps(_sql_variant(_kind))}\n" + _DUCK
CODE["floor_scan"] = f"QUERY = {json.dumps(_FLOOR)}\n" + _DUCK
CODE["join_floor"] = f"QUERY = {json.dumps(_JOIN_FLOOR)}\n" + _DUCK
CODE["keys_floor"] = (f"QUERY = {json.dumps(_KEYS_FLOOR)}\nSETUP = {json.dumps(_KEYS_SETUP)}\n"
                      + _DUCK)

LABELS = {"tally": "Tally offline store", "feast_duckdb": "Feast stock DuckDB store",
          "hash_join": "hand-written hash join + QUALIFY", "asof_join": "hand-written ASOF join",
          "floor_scan": "read the needed columns (floor)",
          "join_floor": "floor of the row-id plan: the floor + a bare join on the entity "
                        "rows' keys",
          "keys_floor": "floor of the candidate plan: the floor + a bare join on the "
                        "distinct entity keys"}


def _identical(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    x, y = pq.read_table(a), pq.read_table(b)
    y = y.select(x.column_names)
    return x.num_rows == y.num_rows and all(
        x.column(c).cast(y.column(c).type).equals(y.column(c)) for c in x.column_names)


GENERATE = """
from bench.training_frame import generate, generate_irregular, VIEWS, IRREGULAR, DATA
import pyarrow.parquet as pq
size, shape = sys.argv[1], sys.argv[2]
data = (generate(size) if shape == "aligned" else
        generate_irregular(DATA / f"tf_irregular_{size}", *IRREGULAR[size]))
OUT = {"data": str(data), "sizes": [pq.ParquetFile(data / f"{v}.parquet").metadata.num_rows
                                    for v, _ in VIEWS]}
"""

IDENTICAL = """
from pathlib import Path
from bench.training_frame import _identical
OUT = {"same": _identical(Path(sys.argv[1]), Path(sys.argv[2]))}
"""


def run(size: str) -> None:
    texts = [run_shape(size, shape) for shape in ("aligned", "irregular")]
    write_section(f"training_frame --size {size}", "\n".join(texts))


def _describe(size: str, shape: str, sizes: list[int]) -> str:
    rows = ", ".join(f"{s:,}" for s in sizes)
    nfeat = sum(n for _, n in VIEWS)
    if shape == "aligned":
        keys, n = SIZES[size]
        return (f"### {size}, aligned: feature tables of {rows} rows ({nfeat} features, ttl "
                f"30d, daily snapshots over {DAYS} days sorted by key, {keys:,} keys), "
                f"{n:,} entity rows at random times")
    per_table, n = IRREGULAR[size]
    return (f"### {size}, irregular: feature tables of {rows} rows ({nfeat} features: int32, "
            f"int64, float32, float64 with 1% nulls; ttl 30d), {per_table // 10:,} keys, "
            "event times to the second over a year, rows in no order, 2% restated rows "
            f"(same key and time, later created_timestamp); {n:,} entity rows: 1% unknown "
            "keys, 5% exactly at a feature row's time, 2% at exactly +ttl, 2% at +ttl+1s")


def run_shape(size: str, shape: str) -> str:
    # Data generation and comparison run in subprocesses: Linux keeps a process's peak RSS
    # across fork+exec, so a parent that grew would inflate every child's peak.
    prepared = run_in_subprocess(GENERATE, size, shape).output
    data, sizes = Path(str(prepared["data"])), cast(list[int], prepared["sizes"])
    repeat = 1 if size == "tiny" else 3
    order = ["floor_scan", "join_floor", "keys_floor", "tally", "feast_duckdb", "hash_join",
             "asof_join"]
    runs: dict[str, list[Run]] = {k: [] for k in order}
    outs = {k: data / f"out_{k}.parquet" for k in ("tally", "feast_duckdb")}
    for i in range(repeat):
        for kind in order:
            if kind == "asof_join" and i > 0 and size == "large":
                continue  # one ASOF run at large: it sorts every table (minutes, GBs)
            args = [str(data), shape] + ([str(outs[kind])] if i == 0 and kind in outs else [])
            run = run_in_subprocess(CODE[kind], *args)
            runs[kind].append(run)
            print(f"{shape} {kind:13s} run {i + 1}: {run.output['join_s']:.2f} s, "
                  f"{run.peak_mb:.0f} MB", flush=True)
    same = run_in_subprocess(IDENTICAL, str(outs["tally"]), str(outs["feast_duckdb"])
                             ).output["same"]
    med = {k: statistics.median(cast(float, r.output["join_s"]) for r in v)
           for k, v in runs.items()}
    rows = []
    for kind in order:
        peak = max(r.peak_mb for r in runs[kind])
        rows.append([LABELS[kind], f"{med[kind]:.2f}", f"{peak:.0f}",
                     f"{med['feast_duckdb'] / med[kind]:.2f}x", len(runs[kind])])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (_describe(size, shape, sizes) + "\n\n"
            + table(["variant", "join s (median)", "peak MB", "vs Feast stock", "runs"], rows)
            + f"\n\nTally's result identical to Feast's stock store (sorted by entity row): "
              f"**{'yes' if same else 'NO'}**. Speed-up over Feast's stock store: "
              f"**{med['feast_duckdb'] / med['tally']:.2f}x**; Tally over the floor: "
              f"{med['tally'] / med['floor_scan']:.1f}x. Load average at the end (1/5/15 "
              f"min): {load}.\n")
    print(text)
    return text
