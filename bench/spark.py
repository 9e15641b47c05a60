"""`python -m bench spark [--size small|large]`: `tally compute` of the example project
(metrics/, demo data) on DuckDB and on Spark in local mode, side by side, each in a fresh
process. A fact about local mode on this machine, not a target: Spark earns its keep on
a cluster, over data one machine cannot hold (docs/spark.md).

Spark is timed twice per run: session start (JVM) and compute (every table, full run);
the tables of both engines are compared, so the timing is of identical results."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import common

ACCOUNTS = {"tiny": 20, "small": 300, "large": 3000}

COMPUTE = """
import sys, time
from pathlib import Path
root = Path(sys.argv[1])
started = time.perf_counter()
if (root / "tally.yaml").exists():
    from tally.catalog.sql.engines import spark_session
    from tally.catalog.spec.config import load_config
    spark_session(dict(load_config(root).config.spark_conf))
session = time.perf_counter() - started
from tally.catalog.compute.runner import ComputeOptions, compute
from tally.catalog.spec.loading import load_project
compute_start = time.perf_counter()
results = compute(load_project(root), ComputeOptions(full=True))
OUT = {"session_s": session, "compute_s": time.perf_counter() - compute_start,
       "tables": len(results), "rows": sum(r.rows for r in results)}
"""

SPARK_YAML = """engine: spark
spark_conf:
  spark.master: local[2]
  spark.sql.shuffle.partitions: "4"
  spark.sql.adaptive.enabled: "false"
  spark.ui.enabled: "false"
  spark.driver.memory: 2g
"""


def _project(base: Path, name: str, data: Path) -> Path:
    root = base / name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(common.REPO / "metrics", root / "metrics")
    shutil.copytree(data, root / "data")
    if name == "spark":
        (root / "tally.yaml").write_text(SPARK_YAML)
    return root


def _same_tables(a: Path, b: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def loose(t: pa.Table) -> pa.Table:
        return t.cast(pa.schema([f.with_nullable(True) for f in t.schema]))

    names = sorted(p.name for p in (a / "data" / "tables").glob("*.parquet"))
    return names == sorted(p.name for p in (b / "data" / "tables").glob("*.parquet")) and all(
        loose(pq.read_table(a / "data" / "tables" / n)).equals(
            loose(pq.read_table(b / "data" / "tables" / n))) for n in names)


def run(size: str) -> None:
    from tally.feature_repo.demo_data import generate

    base = common.DATA / "spark" / size
    data = base / "source_data"
    if not data.exists():
        generate(data, accounts=ACCOUNTS[size], seed=7)
    rows = sum(__import__("pyarrow.parquet").parquet.read_metadata(p).num_rows
               for p in data.glob("*.parquet"))
    runs = {}
    for name in ("duckdb", "spark"):
        root = _project(base, name, data)
        runs[name] = [common.run_in_subprocess(COMPUTE, str(root))
                      for _ in range(1 if size == "tiny" else 3)]
    same = _same_tables(base / "duckdb", base / "spark")

    def median(name: str, key: str) -> float:
        values = sorted(float(r.output[key]) for r in runs[name])  # type: ignore[arg-type]
        return values[len(values) // 2]

    duck_s, spark_s = median("duckdb", "compute_s"), median("spark", "compute_s")
    table = common.table(
        ["engine", "session start (s)", "compute, all tables (s)", "whole process (s)",
         "peak RSS of the Python process (MB)"],
        [["DuckDB", "-", f"{duck_s:.2f}",
          f"{sorted(r.seconds for r in runs['duckdb'])[len(runs['duckdb']) // 2]:.2f}",
          f"{max(r.peak_mb for r in runs['duckdb']):.0f}"],
         ["Spark local[2]", f"{median('spark', 'session_s'):.1f}", f"{spark_s:.2f}",
          f"{sorted(r.seconds for r in runs['spark'])[len(runs['spark']) // 2]:.2f}",
          f"{max(r.peak_mb for r in runs['spark']):.0f}"]])
    tables = runs["duckdb"][0].output["tables"]
    load = " / ".join(f"{v:.1f}" for v in __import__("os").getloadavg())
    common.write_section("spark", f"""
Size `{size}`: the example project (metrics/) on demo data for {ACCOUNTS[size]} accounts
({rows:,} source rows), {tables} tables computed in full; median of 3 fresh processes each.
Spark's JVM runs beside the Python process, so its memory is not in the RSS column.
Load average when written (1/5/15 min): {load}.
Tables identical on both engines: {'yes' if same else 'NO'}.

{table}

Spark local mode is {spark_s / duck_s:.0f}x DuckDB's compute time here, a fact rather than a
target: each table is one Spark SQL job of a few dozen stages, whose fixed cost dominates
at this size. The Spark engine is for data and clusters beyond one machine (docs/spark.md).
""")
    print(f"duckdb {duck_s:.2f}s  spark {spark_s:.2f}s  identical={same}")
