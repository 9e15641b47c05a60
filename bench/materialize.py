"""Materialize: rows per second into Feast's SQLite online store, through Feast's
`materialize`, with Tally's offline store (the pull runs as Tally's SQL) vs Feast's default
(stock DuckDB offline store). Same tables as the training_frame benchmark.

    python -m bench materialize [--size small|large]

small: the 3 small training-frame tables (13 features; the newest row per key of each);
large: the large ones. Fresh repo and online store per run; medians of 3 (1 at large).
"""

from __future__ import annotations

import shutil
import statistics

from .common import DATA, run_in_subprocess, table, write_section
from .training_frame import VIEWS

CODE = """
import sys, time, warnings
warnings.filterwarnings("ignore")
from datetime import datetime, timedelta, timezone
from pathlib import Path
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64
D, repo, store_type = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
repo.mkdir(parents=True)
(repo / "feature_store.yaml").write_text(
    "project: bench_mat\\nprovider: local\\nregistry: data/registry.db\\n"
    f"offline_store:\\n  type: {store_type}\\n"
    "online_store:\\n  type: sqlite\\n  path: data/online.db\\n"
    "entity_key_serialization_version: 3\\n")
acc = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
views = [FeatureView(name=v, entities=[acc], ttl=timedelta(days=30),
    schema=[Field(name=f"{v}_f{j}", dtype=Int64 if j == 1 else Float64) for j in range(1, n + 1)],
    source=FileSource(name=v + "_src", path=f"{D}/{v}.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp"))
    for v, n in [("t1", 5), ("t2", 4), ("t3", 4)]]
store = FeatureStore(repo_path=str(repo))
store.apply([acc, *views])
t = time.perf_counter()
store.materialize(start_date=datetime(2023, 12, 1, tzinfo=timezone.utc),
                  end_date=datetime(2024, 3, 1, tzinfo=timezone.utc))
s = time.perf_counter() - t
import sqlite3
con = sqlite3.connect(repo / "data" / "online.db")
rows = sum(con.execute(f"SELECT count(DISTINCT entity_key) FROM bench_mat_{v}").fetchone()[0]
           for v in ("t1", "t2", "t3"))
OUT = {"s": s, "rows": rows}
"""

STORES = {"Tally offline store": "tally.feature_repo.offline_store.TallyDuckDBOfflineStore",
          "Feast default (stock DuckDB store)": "duckdb"}


def run(size: str) -> None:
    data = DATA / f"tf_{size}"
    run_in_subprocess("from bench.training_frame import generate\ngenerate(sys.argv[1])", size)
    work = DATA / f"materialize_{size}"
    repeat = 3 if size == "small" else 1
    results: dict[str, list] = {k: [] for k in STORES}
    for i in range(repeat):
        for label, kind in STORES.items():
            repo = work / f"{i}_{kind.rsplit('.', 1)[-1]}"
            shutil.rmtree(repo, ignore_errors=True)
            run = run_in_subprocess(CODE, str(data), str(repo), kind)
            results[label].append(run)
            print(label, run.output, f"{run.peak_mb:.0f} MB", flush=True)
    rows = []
    for label, runs in results.items():
        s = statistics.median(r.output["s"] for r in runs)
        n = runs[0].output["rows"]
        rows.append([label, f"{n:,}", f"{s:.2f}", f"{n / s:,.0f}",
                     f"{max(r.peak_mb for r in runs):.0f}"])
    features = sum(n for _, n in VIEWS)
    text = (f"### {size}: the newest row per key of 3 tables ({features} features) into "
            "SQLite\n\n"
            + table(["offline store", "entity rows written", "seconds (median)", "rows/s",
                     "peak MB"], rows)
            + "\n\nMost of the time is Feast's own SQLite writer (row-by-row protobuf "
              "serialisation); the offline store only changes the pull.\n")
    write_section(f"materialize --size {size}", text)
    print(text)
