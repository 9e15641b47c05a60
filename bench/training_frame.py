"""Training frame: Tally's offline store vs Feast's stock DuckDB store vs hand-written
DuckDB queries (hash join + QUALIFY, ASOF join), and the floor (reading the needed
columns once). 3 feature tables shaped like Tally's own (daily snapshots sorted by key and
timestamp, 122880-row groups, 30-day ttl), entity rows at random times.

    python -m bench training_frame [--size small|large]

small: 3 x ~1M rows, 100k entity rows; large: 3 x ~10M rows, 1M entity rows.
Each variant runs in its own subprocess (peak RSS is the whole process, Python and
imports included); the time is the join alone, to Arrow, median of the repeats, the
variants interleaved so machine load hits them alike.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .common import DATA, run_in_subprocess, table, write_section

SIZES = {"tiny": (500, 1_000), "small": (65_000, 100_000),
         "large": (650_000, 1_000_000)}  # keys, entity rows
DAYS = 20
VIEWS = [("t1", 5), ("t2", 4), ("t3", 4)]
GEN_VERSION = "3"


def _h(expr: str, salt: int) -> str:
    """A deterministic integer hash in [0, 2^31 - 1)."""
    return f"((({expr}) * 2654435761 + {salt} * 40503 + 12345) % 2147483647)"


def generate(size: str) -> Path:
    import duckdb

    keys, n = SIZES[size]
    out = DATA / f"tf_{size}"
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


_FEAST_SETUP = """
import sys, warnings
warnings.filterwarnings("ignore")
from datetime import timedelta
import pyarrow.parquet as pq
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64, Float64
from feast.repo_config import RepoConfig
D = sys.argv[1]
ent = pq.read_table(f"{D}/entities.parquet").to_pandas()
acc = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
views = [FeatureView(name=v, entities=[acc], ttl=timedelta(days=30),
    schema=[Field(name="account_id", dtype=Int64)] + [Field(name=f"{v}_f{j}",
            dtype=Int64 if j == 1 else Float64) for j in range(1, n + 1)],
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
if len(sys.argv) > 2:
    import pyarrow.parquet as pq
    pq.write_table(res.sort_by("rid"), sys.argv[2])
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
res = con.sql(QUERY.replace("D || '", "'" + D)).to_arrow_table()
OUT = {"join_s": time.perf_counter() - t, "rows": res.num_rows}
"""

_FLOOR = ("SELECT " + ", ".join(
    "(SELECT sum(account_id::DOUBLE) + sum(epoch_us(event_timestamp)::DOUBLE)"
    " + sum(epoch_us(created_timestamp)::DOUBLE)"
    + "".join(f' + sum("{v}_f{j}"::DOUBLE)' for j in range(1, n + 1))
    + f" FROM read_parquet(D || '/{v}.parquet'))" for v, n in VIEWS))

for _kind in ("hash_join", "asof_join"):
    CODE[_kind] = f"QUERY = {json.dumps(_sql_variant(_kind))}\n" + _DUCK
CODE["floor_scan"] = f"QUERY = {json.dumps(_FLOOR)}\n" + _DUCK

LABELS = {"tally": "Tally offline store", "feast_duckdb": "Feast stock DuckDB store",
          "hash_join": "hand-written hash join + QUALIFY", "asof_join": "hand-written ASOF join",
          "floor_scan": "read the needed columns (floor)"}


def _identical(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    x, y = pq.read_table(a), pq.read_table(b)
    y = y.select(x.column_names)
    return x.num_rows == y.num_rows and all(
        x.column(c).cast(y.column(c).type).equals(y.column(c)) for c in x.column_names)


GENERATE = """
from bench.training_frame import generate, VIEWS
import pyarrow.parquet as pq
data = generate(sys.argv[1])
OUT = {"data": str(data), "sizes": [pq.ParquetFile(data / f"{v}.parquet").metadata.num_rows
                                    for v, _ in VIEWS]}
"""

IDENTICAL = """
from pathlib import Path
from bench.training_frame import _identical
OUT = {"same": _identical(Path(sys.argv[1]), Path(sys.argv[2]))}
"""


def run(size: str) -> None:
    # Data generation and comparison run in subprocesses: Linux keeps a process's peak RSS
    # across fork+exec, so a parent that grew would inflate every child's peak.
    prepared = run_in_subprocess(GENERATE, size).output
    data, sizes = Path(prepared["data"]), prepared["sizes"]
    repeat = 3
    order = ["floor_scan", "tally", "feast_duckdb", "hash_join", "asof_join"]
    runs: dict[str, list] = {k: [] for k in order}
    outs = {k: data / f"out_{k}.parquet" for k in ("tally", "feast_duckdb")}
    for i in range(repeat):
        for kind in order:
            if kind == "asof_join" and i > 0 and size == "large":
                continue  # one ASOF run at large: it sorts every table (minutes, GBs)
            args = [str(data)] + ([str(outs[kind])] if i == 0 and kind in outs else [])
            run = run_in_subprocess(CODE[kind], *args)
            runs[kind].append(run)
            print(f"{kind:13s} run {i + 1}: {run.output['join_s']:.2f} s, "
                  f"{run.peak_mb:.0f} MB", flush=True)
    same = run_in_subprocess(IDENTICAL, str(outs["tally"]), str(outs["feast_duckdb"])
                             ).output["same"]
    med = {k: statistics.median(r.output["join_s"] for r in v) for k, v in runs.items()}
    rows = []
    for kind in order:
        peak = max(r.peak_mb for r in runs[kind])
        rows.append([LABELS[kind], f"{med[kind]:.2f}", f"{peak:.0f}",
                     f"{med['feast_duckdb'] / med[kind]:.2f}x", len(runs[kind])])
    keys, n = SIZES[size]
    text = (f"### {size}: feature tables of {', '.join(f'{s:,}' for s in sizes)} rows "
            f"({sum(n for _, n in VIEWS)} features, ttl 30d, daily snapshots over {DAYS} days, "
            f"{keys:,} keys), {n:,} entity rows\n\n"
            + table(["variant", "join s (median)", "peak MB", "vs Feast stock", "runs"], rows)
            + f"\n\nTally's result identical to Feast's stock store (sorted by entity row): "
              f"**{'yes' if same else 'NO'}**. Speed-up over Feast's stock store: "
              f"**{med['feast_duckdb'] / med['tally']:.2f}x**; Tally over the floor: "
              f"{med['tally'] / med['floor_scan']:.1f}x.\n")
    write_section(f"training_frame --size {size}", text)
    print(text)
