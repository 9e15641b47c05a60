"""Compute: N metrics over one source in one scan (tally.catalog.compute.runner) vs N separate
(one single-metric project each, same source file) vs one bare scan of the file reading
every column the metrics use (the physical floor), for N = 1, 5, 20. Two more floors put
the ratio in context: the scan grouped into (account, day) partial aggregates with no
windows at all, and writing the 20-metric output table alone (through the runner's own
parts writer, so with its settings). They are measured for two shapes of 20 metrics: 10
definitions under two names each (which share computed columns) and 20 distinct ones
(DISTINCT); the section reports the worse ratio.

    python -m bench compute [--size tiny|small|large]

tiny: 200k source rows, 2k accounts (runs in seconds); small: 2M source rows, 20k
accounts, 60 days; large: 20M rows, 200k accounts, 60 days.
Metrics: daily grain, 7- and 30-day windows (1d-30d for the distinct shape), a mix of
count / sum / avg / min / max with filters (count_distinct is costlier by nature and has
its own row). Each measurement is a fresh
subprocess; medians of 3.

Funnels: a 3-step funnel (kind 0 -> 1 -> 2 within 7d, counted over 30d windows, daily)
over the same source, sequential, any order and with `same: user_id`, each timed beside
a 30-day count over the same rows (its own section, `compute funnels --size SIZE`).

Incremental runs on a year of demo-shaped data (the example project: four sources,
derived metrics, a score; 300 / 3,000 / 30,000 accounts): a full run, a rerun with nothing
changed (the whole `tally compute` command in a fresh process), and a rerun after one
new day of data (every source file rewritten with one more day, as producers write them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import common
from .common import DATA, median_runs, run_in_subprocess, table, write_section

SIZES = {"tiny": (20_000, 200), "small": (2_000_000, 20_000),
         "large": (20_000_000, 200_000)}
DEMO_ACCOUNTS = {"tiny": 300, "small": 3_000, "large": 30_000}
DAYS = 60
GEN_VERSION = "1"
AGGS = [("count", "*", None), ("sum", "amount", None), ("avg", "amount", None),
        ("min", "amount", None), ("max", "seconds", None), ("sum", "seconds", "amount > 50"),
        ("count", "*", "kind = 2"), ("avg", "seconds", "kind = 1"), ("max", "amount", None),
        ("sum", "amount * seconds", None)]
# 20 distinct metrics: no two share an (aggregation, expression, filter, window), so none
# shares a computed column with another (the AGGS shape is 10 definitions under two names)
DISTINCT = [("count", "*", None, "30d"), ("count", "*", "kind = 0", "7d"),
            ("count", "*", "kind = 1", "14d"), ("count", "*", "kind = 2", "3d"),
            ("sum", "amount", None, "30d"), ("sum", "seconds", None, "7d"),
            ("sum", "amount", "kind = 1", "14d"), ("sum", "amount * seconds", None, "30d"),
            ("sum", "seconds", "amount > 50", "1d"), ("avg", "amount", None, "7d"),
            ("avg", "seconds", None, "30d"), ("avg", "amount", "kind = 2", "14d"),
            ("avg", "seconds / 60", "amount < 20", "3d"), ("min", "amount", None, "30d"),
            ("min", "seconds", "kind = 0", "7d"), ("max", "seconds", None, "14d"),
            ("max", "amount", "kind = 1", "30d"), ("max", "amount - seconds / 100", None, "3d"),
            ("count", "amount", "amount > 90", "30d"), ("sum", "kind", None, "7d")]


def _source(size: str) -> Path:
    import duckdb

    rows, keys = SIZES[size]
    out = DATA / f"compute_{size}"
    path = out / "events.parquet"
    marker = out / "VERSION"
    if marker.exists() and marker.read_text() == GEN_VERSION:
        return path
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"""COPY (SELECT (i * 7919) % {keys} AS account_id, (i * 104729) % 500 AS user_id,
        TIMESTAMPTZ '2024-01-01' + to_microseconds(((i * 2654435761) % ({DAYS} * 86400))::BIGINT
            * 1000000) AS ts,
        ((i * 40503) % 10000) / 100.0 AS amount, ((i * 9973) % 3600)::DOUBLE AS seconds,
        (i % 3)::BIGINT AS kind FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet)""")
    marker.write_text(GEN_VERSION)
    return path


def _metric(i: int, agg: str, expr: str, flt: str | None, window: str) -> dict[str, Any]:
    m = {"name": f"m{i:02d}", "description": f"Metric {i}.", "owner": "bench@example.com",
         "source": "events", "aggregation": agg, "expression": expr, "window": window,
         "grain": "1d"}
    if flt:
        m["filter"] = flt
    return m


def _metrics(n: int, distinct: bool = False) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        agg, expr, flt = AGGS[i % len(AGGS)]
        if distinct and i == 0:
            agg, expr, flt = "count_distinct", "user_id", None
        out.append(_metric(i, agg, expr, flt, "30d" if i % 2 == 0 else "7d"))
    return out


def distinct_metrics() -> list[dict[str, Any]]:
    """The 20 metrics of DISTINCT (every computed column its own)."""
    return [_metric(i, *spec) for i, spec in enumerate(DISTINCT)]


def make_project(root: Path, source: Path, metrics: list[dict[str, Any]]) -> Path:
    import yaml

    if root.exists():
        shutil.rmtree(root)
    (root / "metrics").mkdir(parents=True)
    (root / "data").mkdir()
    os.link(source, root / "data" / "events.parquet")  # a hard link: inside the project
    doc = {
        "entities": [{"name": "account", "join_key": "account_id", "description": "An account.",
                      "owner": "bench@example.com"}],
        "sources": [{"name": "events", "description": "Usage events.",
                     "owner": "bench@example.com", "path": "data/events.parquet",
                     "entity": "account", "timestamp_field": "ts"}],
        "metrics": metrics,
    }
    (root / "metrics" / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


COMPUTE = """
import sys, time
import duckdb, numpy, pandas, pyarrow, pyarrow.parquet  # first use of the libraries, untimed
import tally.catalog.compute.kernel, tally.catalog.scores.plans, tally.catalog.sql.engines
from tally.catalog.spec.loading import load_project
from tally.catalog.compute.runner import compute, ComputeOptions
projects = [load_project(p) for p in sys.argv[1:]]
t = time.perf_counter()
for p in projects:
    compute(p, ComputeOptions(full=True))
OUT = {"s": time.perf_counter() - t}
"""

SCAN = """
import sys, time, duckdb
con = duckdb.connect(); con.execute("SET TimeZone = 'UTC'")
t = time.perf_counter()
con.sql("SELECT sum(account_id), sum(user_id), sum(epoch_us(ts)::DOUBLE), sum(amount), "
        "sum(seconds), sum(kind) FROM read_parquet('" + sys.argv[1] + "')").fetchall()
OUT = {"s": time.perf_counter() - t}
"""


CELLS = """
import sys, time
from tally.catalog.spec.loading import load_project
from tally.catalog.compute.plans import partial_plan, plan_group
from tally.catalog.sql.duck import connect_unrestricted
project = load_project(sys.argv[1])
plan = plan_group(project, project.groups()[0])
parts = partial_plan(project, plan, path=sys.argv[2], low=0, high=10**6)  # every day
con = connect_unrestricted()
sql = parts.buckets.with_("src", as_=parts.src).sql("duckdb")
t = time.perf_counter()
con.sql(sql).to_arrow_table()
OUT = {"s": time.perf_counter() - t}
"""

WRITE = """
import sys, time
import pyarrow.compute as pc, pyarrow.parquet as pq
from pathlib import Path
from tally.catalog.sql.parts import part_span_us, write_full
table = pq.read_table(sys.argv[1])  # base part, then the newest span's: the runner's order
newest = pc.max(table.column("event_timestamp").cast("int64")).as_py()
t = time.perf_counter()
write_full(iter([table]), Path(sys.argv[2]), "account_id", part_span_us(86_400_000_000), newest)
OUT = {"s": time.perf_counter() - t}
"""


def _median(code: str, *args: str, repeat: int = 3) -> tuple[float, float]:
    seconds, peak, _ = median_runs(code, *args, repeat=repeat, timer="s")
    return seconds, peak


FUNNEL_VARIANTS = {"sequential": {}, "any order": {"order": "any"},
                   "sequential, same: user_id": {"same": "user_id"}}


def _funnel(extra: dict[str, str]) -> dict[str, Any]:
    return {"name": "job_30d", "description": "Kind 0, then 1, then 2 within 7 days.",
            "owner": "bench@example.com", "type": "funnel", "entity": "account",
            "steps": [{"source": "events", "filter": f"kind = {k}"} for k in range(3)],
            "within": "7d", "window": "30d", "grain": "1d", **extra}


def run_funnels(size: str, source: Path) -> str:
    """A 3-step funnel beside a 30-day count over the same rows, each in a fresh process;
    three rounds, each running every table once, so a shared machine's load falls on all
    of them alike; medians per table."""
    work = DATA / f"compute_{size}" / "projects"
    load_before = os.getloadavg()[0]
    projects = {"aggregate: count(*) over 30d": make_project(work / "funnel_count", source, [
        {"name": "rows_30d", "description": "Rows.", "owner": "bench@example.com",
         "source": "events", "aggregation": "count", "expression": "*", "window": "30d"}])}
    for i, (label, extra) in enumerate(FUNNEL_VARIANTS.items()):
        projects[f"funnel, 3 steps, {label}"] = make_project(work / f"funnel_{i}", source,
                                                             [_funnel(extra)])
    runs: dict[str, list[Any]] = {label: [] for label in projects}
    for _ in range(3):
        for label, project in projects.items():
            runs[label].append(run_in_subprocess(COMPUTE, str(project)))
    seconds = {label: sorted(float(str(r.output["s"])) for r in rs)[1]
               for label, rs in runs.items()}
    base = seconds["aggregate: count(*) over 30d"]
    rows: list[list[object]] = [
        [label, f"{seconds[label]:.2f}", f"{max(r.peak_mb for r in runs[label]):.0f}",
         f"{seconds[label] / base:.2f}x"] for label in projects]
    total, keys = SIZES[size]
    return (f"### funnels, {size}: {total:,} source rows, {keys:,} accounts, {DAYS} days; "
            "steps kind = 0, 1, 2 of one source, within 7d, window 30d, daily grain\n\n"
            + table(["table", "seconds (median of 3)", "peak MB", "vs the aggregate"], rows)
            + "\n\nEach run computes and writes one table (`full`), imports excluded; the "
              "plan is in docs/compute.md (funnels). Load average (1 min) "
              f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n")


def _against_floors(project: Path, source: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds (medians) and peak MB of the project's 20-metric run and of its two floors,
    run in interleaved rounds (each a fresh process) so the machine's load falls on all
    three alike: five when recorded (on a shared 2-core machine one process's time varies
    by a fifth, as much as the gap the ratio is judged by), three for a tiny run. The
    write floor writes the project's own output through the runner's parts writer (same
    settings, same parts; rows already in order, so no sort)."""
    rounds = 5 if common.RECORD else 3
    table = project / "data" / "tables" / "events_1d.parquet"
    codes = {"compute": (COMPUTE, str(project)), "cells": (CELLS, str(project), str(source)),
             "write": (WRITE, str(table), str(project.parent / "written.parquet"))}
    runs: dict[str, list[Any]] = {k: [] for k in codes}
    for _ in range(rounds):
        for k, (code, *args) in codes.items():  # compute first: the write floor reads its table
            runs[k].append(run_in_subprocess(code, *args))
    seconds = {k: sorted(float(str(r.output["s"])) for r in v)[len(v) // 2]
               for k, v in runs.items()}
    return seconds, {k: max(r.peak_mb for r in v) for k, v in runs.items()}


SHAPES = {"20 metrics, 10 definitions under two names each": "one_20",
          "20 distinct metrics (no shared column)": "distinct_20"}


def _shape_rows(work: Path, source: Path, scan_s: float) -> tuple[list[list[object]], str]:
    """Each shape's run beside its two floors, and the sentence on the worst ratio."""
    rows: list[list[object]] = []
    ratios: dict[str, tuple[float, float, float]] = {}
    make_project(work / "distinct_20", source, distinct_metrics())
    for label, name in SHAPES.items():
        seconds, peaks = _against_floors(work / name, source)
        floors = seconds["cells"] + seconds["write"]
        ratios[label] = (seconds["compute"] / floors, seconds["cells"], seconds["write"])
        for key, what in (("cells", "floor: the scan grouped into (account, day) partials"),
                          ("write", "floor: writing the output table alone"),
                          ("compute", "tally.catalog.compute.runner, one scan")):
            rows.append([f"{label}: {what}", 20, f"{seconds[key]:.2f}", f"{peaks[key]:.0f}",
                         f"{seconds[key] / scan_s:.2f}x"])
        rows[-1][-1] += f" (**{ratios[label][0]:.2f}x the floors**)"
    worst = max(ratios, key=lambda k: ratios[k][0])
    text = (f"20 metrics in one scan cost at worst **{ratios[worst][0]:.2f}x** the two "
            f"floors added ({worst}: {ratios[worst][1]:.2f} s + {ratios[worst][2]:.2f} s; "
            "target: at most 1.3x); " + "; ".join(
                f"{label}: {r[0]:.2f}x" for label, r in ratios.items()) + ". ")
    return rows, text


def run(size: str) -> None:
    # generated in a subprocess: Linux keeps peak RSS across fork+exec, so a parent that
    # grew would inflate every child's peak
    source = Path(str(run_in_subprocess(
        "from bench.compute import _source\nOUT = {'p': str(_source(sys.argv[1]))}", size
    ).output["p"]))
    work = DATA / f"compute_{size}" / "projects"
    scan_s, scan_mb = _median(SCAN, str(source))
    rows: list[list[object]] = [["bare scan of the file (floor)", "-", f"{scan_s:.2f}",
                                 f"{scan_mb:.0f}", "1.00x"]]
    for n in (1, 5, 20):
        one = make_project(work / f"one_{n}", source, _metrics(n))
        single = [make_project(work / f"single_{n}_{i}", source, [m])
                  for i, m in enumerate(_metrics(n))]
        s1, mb1 = _median(COMPUTE, str(one))
        sn, mbn = _median(COMPUTE, *map(str, single), repeat=1 if n == 20 else 3)
        rows.append(["tally.catalog.compute.runner, one scan", n, f"{s1:.2f}", f"{mb1:.0f}",
                     f"{s1 / scan_s:.2f}x"])
        rows.append([f"{n} separate single-metric queries", n, f"{sn:.2f}", f"{mbn:.0f}",
                     f"{sn / scan_s:.2f}x"])
        print(rows[-2], rows[-1], flush=True)
    shape_rows, floors_text = _shape_rows(work, source, scan_s)
    rows += shape_rows
    with_distinct = make_project(work / "count_distinct_20", source, _metrics(20, distinct=True))
    sd, mbd = _median(COMPUTE, str(with_distinct))
    rows.append(["tally.catalog.compute.runner, one scan, incl. 1 count_distinct", 20, f"{sd:.2f}",
                 f"{mbd:.0f}", f"{sd / scan_s:.2f}x"])
    total, keys = SIZES[size]
    text = (f"### {size}: {total:,} source rows, {keys:,} accounts, {DAYS} days; daily grain, "
            "1d-30d windows\n\n"
            + table(["plan", "metrics", "seconds (median)", "peak MB", "vs bare scan"], rows)
            + "\n\n" + floors_text + "Each shape's run and floors are medians of five "
              "interleaved rounds of fresh processes. The compute time includes reading the "
              "source's day digest (for later incremental runs) and writing the table (sorted "
              "by key and snapshot); like the floors, it leaves out the imports of a fresh "
              "process (see docs/compute.md).\n\n" + run_incremental(size))
    write_section(f"compute --size {size}", text)
    print(text)
    write_section(f"compute funnels --size {size}", run_funnels(size, source),
                  command=f"compute --size {size}")


INCREMENTAL_SETUP = """
import sys, shutil
from pathlib import Path
from typing import Any
import pyarrow.compute as pc, pyarrow.parquet as pq
from tally.feature_repo.demo_data import generate
root, accounts = Path(sys.argv[1]), int(sys.argv[2])
if root.exists():
    shutil.rmtree(root)
(root / "metrics").mkdir(parents=True)
for path in sorted(Path("metrics").glob("*.yaml")):
    shutil.copy(path, root / "metrics" / path.name)
data = generate(root / "data", accounts=accounts)
cut = data.end.timestamp() - 86400
for name, path in data.files.items():  # the year without its last day; the day kept apart
    table = pq.read_table(path)
    ts = [f.name for f in table.schema if str(f.type).startswith("timestamp")][0]
    newest = pc.less(pc.cast(table.column(ts), "int64"), int(cut * 1e6))
    pq.write_table(table, root / "data" / (name + ".full.parquet"), row_group_size=256_000)
    pq.write_table(table.filter(newest), path, row_group_size=256_000)
OUT = {"rows": sum(data.rows.values())}
"""

INCREMENTAL_FULL = """
import sys, time
import duckdb, numpy, pandas, pyarrow, pyarrow.parquet  # first use of the libraries, untimed
import tally.catalog.compute.kernel, tally.catalog.scores.plans, tally.catalog.sql.engines
from tally.catalog.spec.loading import load_project
from tally.catalog.compute.runner import compute, ComputeOptions
project = load_project(sys.argv[1])
t = time.perf_counter()
c = time.process_time()
results = compute(project, ComputeOptions(full=True))
OUT = {"s": time.perf_counter() - t, "cpu": time.process_time() - c, "tables": len(results)}
"""

NEW_DAY = """
import sys, os, time
import duckdb, numpy, pandas, pyarrow, pyarrow.parquet  # first use of the libraries, untimed
import tally.catalog.compute.kernel, tally.catalog.scores.plans, tally.catalog.sql.engines
from pathlib import Path
from typing import Any
from tally.catalog.spec.loading import load_project
from tally.catalog.compute.runner import compute
root = Path(sys.argv[1])
for full in sorted((root / "data").glob("*.full.parquet")):  # the producers' new files
    os.link(full, full.with_name("." + full.name))
    os.replace(full.with_name("." + full.name), full.with_name(full.name[:-13] + ".parquet"))
project = load_project(root)
t = time.perf_counter()
c = time.process_time()
results = compute(project)
OUT = {"s": time.perf_counter() - t, "cpu": time.process_time() - c,
       "modes": sorted({r.mode for r in results})}
"""

NO_CHANGE = """
import sys, time
from tally.cli.main import main
try:
    main(["--project", sys.argv[1], "compute"])
except SystemExit as exc:
    assert not exc.code, exc.code
OUT = {"cpu": time.process_time()}  # the whole process, imports included
"""


def _installed_env() -> dict[str, str]:
    """A process as an installed Tally runs: bytecode compiled once and kept (pip compiles
    it at install), here in a cache folder of the bench data, whatever the caller's
    PYTHONDONTWRITEBYTECODE."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(DATA / "pycache")
    return env


def _copy(root: Path, name: str) -> Path:
    """A copy of the computed project (sizes and modification times kept, so its state is
    as up to date as the original's): each one-new-day rerun starts from the same state."""
    import shutil

    copy = root.with_name(f"{root.name}_{name}")
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(root, copy)
    return copy


def run_incremental(size: str) -> str:
    """Full run, no-change rerun and one-new-day rerun on a year of demo-shaped data."""
    root = DATA / f"compute_{size}" / "demo_year"
    setup = run_in_subprocess(INCREMENTAL_SETUP, str(root), str(DEMO_ACCOUNTS[size]))
    full = [run_in_subprocess(INCREMENTAL_FULL, str(root)) for _ in range(3)]
    cold = run_in_subprocess(NO_CHANGE, str(root), env={
        k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"} | {
        "PYTHONDONTWRITEBYTECODE": "1"})
    run_in_subprocess(NO_CHANGE, str(root), env=_installed_env())  # compiles the bytecode
    same = [run_in_subprocess(NO_CHANGE, str(root), env=_installed_env()) for _ in range(3)]
    days = [run_in_subprocess(NEW_DAY, str(_copy(root, f"day{i}"))) for i in range(3)]

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    full_s, full_cpu = (median([float(str(r.output[k])) for r in full]) for k in ("s", "cpu"))
    same_s, same_cpu = median([r.seconds for r in same]), median(
        [float(str(r.output["cpu"])) for r in same])
    day_s, day_cpu = (median([float(str(r.output[k])) for r in days]) for k in ("s", "cpu"))
    day = days[0]
    rows: list[list[object]] = [
        ["full run (every table, --full)", f"{full_s:.2f}", f"{full_cpu:.2f}",
         f"{max(r.peak_mb for r in full):.0f}", "1.00x", "1.00x"],
        ["rerun, nothing changed (`tally compute`, whole command)", f"{same_s:.2f}",
         f"{same_cpu:.2f}", f"{max(r.peak_mb for r in same):.0f}", f"{same_s / full_s:.3f}x",
         f"{same_cpu / full_cpu:.3f}x"],
        ["the same, Tally's modules compiled afresh (no bytecode cache, as in an editable "
         "checkout with PYTHONDONTWRITEBYTECODE)",
         f"{cold.seconds:.2f}", f"{float(str(cold.output['cpu'])):.2f}", f"{cold.peak_mb:.0f}",
         f"{cold.seconds / full_s:.3f}x", f"{float(str(cold.output['cpu'])) / full_cpu:.3f}x"],
        ["rerun after one new day in every source (median of 3 copies of the project)",
         f"{day_s:.2f}", f"{day_cpu:.2f}", f"{max(r.peak_mb for r in days):.0f}",
         f"{day_s / full_s:.3f}x", f"{day_cpu / full_cpu:.3f}x"]]
    return (f"### incremental, {size}: a year of demo-shaped data, "
            f"{DEMO_ACCOUNTS[size]:,} accounts, {setup.output['rows']:,} source rows; "
            "4 groups, derived metrics, a score\n\n"
            + table(["run", "seconds", "CPU seconds", "peak MB", "vs full run",
                     "CPU vs full run"], rows)
            + f"\n\nNothing changed: **{same_s:.2f} s** ({same_cpu:.2f} CPU s; target < 1 s), "
              f"no data read. One new day: **{100 * day_s / full_s:.1f}%** of the full run "
              f"({100 * day_cpu / full_cpu:.1f}% of its CPU time; target <= 10%), "
              f"derived and score tables included (modes: {day.output['modes']})."
              "\n")
