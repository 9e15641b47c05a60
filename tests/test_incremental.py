"""Incremental compute against a full recompute: random appends, late files in a glob,
rewritten and removed files; after each change the incremental tables (groups, derived,
score, a funnel) equal a `--full` recompute of the same data, table for table, on DuckDB and on
Spark. And a run with nothing changed reads no data."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tally.catalog.compute.runner import ComputeOptions, compute
from tally.catalog.spec.loading import load_project
from tally.catalog.sql import parts

from tests.helpers import REPO, invoke

DEFINITIONS = """
entities:
  - {name: shop, join_key: shop_id, description: A shop., owner: o@x.com}
sources:
  - {name: events, description: Events., owner: p@x.com, path: "data/events/*.parquet",
     entity: shop, timestamp_field: ts}
  - {name: visits, description: Visits., owner: p@x.com, path: data/visits.parquet,
     entity: shop, timestamp_field: ts}
  - {name: levels, description: Levels., owner: p@x.com, path: data/levels.parquet,
     entity: shop, timestamp_field: ts}
metrics:
  - {name: ev_count_3d, description: d, owner: o@x.com, source: events, aggregation: count,
     expression: "*", window: 3d}
  - {name: ev_sum_7d, description: d, owner: o@x.com, source: events, aggregation: sum,
     expression: value, filter: "kind = 'a'", window: 7d}
  - {name: ev_max_2d, description: d, owner: o@x.com, source: events, aggregation: max,
     expression: value, window: 2d}
  - {name: ev_users_5d, description: d, owner: o@x.com, source: events,
     aggregation: count_distinct, expression: user_id, window: 5d}
  - {name: visits_4d, description: d, owner: o@x.com, source: visits, aggregation: count,
     expression: "*", window: 4d}
  - {name: level, description: d, owner: o@x.com, type: column, source: levels,
     expression: level, ttl: 6d}
  - {name: ev_per_visit, description: d, owner: o@x.com, type: derived,
     expression: "ev_count_3d / nullif(visits_4d, 0)"}
  - {name: ev_times_level, description: d, owner: o@x.com, type: derived,
     expression: ev_per_visit * level}
  - name: a_visit_b
    description: d
    owner: o@x.com
    type: funnel
    entity: shop
    steps:
      - {source: events, filter: "kind = 'a'"}
      - {source: visits, filter: "true"}
      - {source: events, filter: "kind = 'b'"}
    within: 2d
    window: 4d
scores:
  - name: shop_score
    entity: shop
    description: d
    owner: o@x.com
    components:
      - {metric: ev_per_visit, weight: 0.6}
      - {metric: ev_sum_7d, weight: 0.3, normalize: minmax}
      - {metric: visits_4d, weight: 0.1, direction: lower_is_better}
      - {metric: a_visit_b, weight: 0.2}
    bands: {low: [0, 50], high: [50, 100]}
"""
EPOCH = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
EVENTS = pa.schema([("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
                    ("value", pa.float64()), ("kind", pa.string()), ("user_id", pa.int64())])
VISITS = pa.schema([("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))])
LEVELS = pa.schema([("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
                    ("level", pa.float64())])


def _events(rng: random.Random, days: range, n: int) -> list[dict]:
    return [{"shop_id": rng.randint(1, 6),
             "ts": EPOCH + rng.choice(days) * DAY + timedelta(minutes=rng.randint(0, 1439)),
             "value": rng.choice([None, 0.5, 1.0, 2.5, 4.0]), "kind": rng.choice("ab"),
             "user_id": rng.randint(1, 4)} for _ in range(n)]


def _visits(rng: random.Random, days: range, n: int) -> list[dict]:
    return [{"shop_id": rng.randint(1, 6),
             "ts": EPOCH + rng.choice(days) * DAY + timedelta(hours=rng.randint(0, 23))}
            for _ in range(n)]


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _project(root: Path, rng: random.Random, spark: bool = False) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "defs.yaml").write_text(DEFINITIONS)
    _write(root / "data" / "events" / "p0.parquet", _events(rng, range(0, 12), 150), EVENTS)
    _write(root / "data" / "visits.parquet", _visits(rng, range(0, 12), 60), VISITS)
    _write(root / "data" / "levels.parquet",
           [{"shop_id": s, "ts": EPOCH + d * DAY, "level": float(s + d)}
            for s in range(1, 7) for d in range(0, 20, 3)], LEVELS)
    if spark:
        from tests.test_spark import SPARK_CONF

        conf = "".join(f"  {k}: \"{v}\"\n" for k, v in SPARK_CONF.items())
        (root / "tally.yaml").write_text(f"engine: spark\nspark_conf:\n{conf}")
    return root


def _append_day(root: Path, rng: random.Random, step: int) -> None:
    """New rows after the newest ones: a new file in the glob, and the visits file
    rewritten with more rows (as most producers append: a new, re-sorted file)."""
    newest = 12 + step
    _write(root / "data" / "events" / f"new{step}.parquet",
           _events(rng, range(newest - 1, newest + 1), 25), EVENTS)
    visits = pq.read_table(root / "data" / "visits.parquet").to_pylist()
    visits += _visits(rng, range(newest - 1, newest + 1), 10)
    rng.shuffle(visits)
    _write(root / "data" / "visits.parquet", visits, VISITS)


def _late_file(root: Path, rng: random.Random, step: int) -> None:
    """A new file in the glob whose rows are days old."""
    day = rng.randint(2, 9)
    _write(root / "data" / "events" / f"late{step}.parquet",
           _events(rng, range(day, day + 2), 12), EVENTS)


def _rewrite_old_rows(root: Path, rng: random.Random, step: int) -> None:
    """The first events file rewritten: some old rows changed, some dropped."""
    path = root / "data" / "events" / "p0.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rng.sample(rows, 5):
        row["value"] = 9.0
    _write(path, [r for i, r in enumerate(rows) if i % 17 != step % 17], EVENTS)


def _remove_file(root: Path, rng: random.Random, step: int) -> None:
    """One of the files added since (the first one stays, so the tables stay large)."""
    files = sorted(f for f in (root / "data" / "events").glob("*.parquet")
                   if f.name != "p0.parquet")
    if files:
        rng.choice(files).unlink()


def _restate_level(root: Path, rng: random.Random, step: int) -> None:
    """A column metric's source rewritten: one old level restated, one new level."""
    path = root / "data" / "levels.parquet"
    rows = pq.read_table(path).to_pylist()
    rng.choice(rows)["level"] = float(rng.randint(20, 30))
    rows.append({"shop_id": rng.randint(1, 6), "ts": EPOCH + rng.randint(3, 15) * DAY,
                 "level": 0.5})
    _write(path, rows, LEVELS)


CHANGES = [_append_day, _late_file, _rewrite_old_rows, _remove_file, _restate_level]


def _tables(root: Path) -> dict[str, pa.Table]:
    """Every table's rows in key and time order (whatever the parts they are stored in)."""
    return {p.name: pq.read_table(p).sort_by([("shop_id", "ascending"),
                                              ("event_timestamp", "ascending")])
            for p in sorted((root / "data" / "tables").glob("*.parquet"))}


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of two days, so a few weeks of data lie in many parts and every change
    reaches some of them and not others."""
    monkeypatch.setattr(parts, "MIN_SPAN_SNAPSHOTS", 2)
    monkeypatch.setattr(parts, "MIN_SPAN_US", parts.DAY_US)


def _part_inodes(root: Path) -> dict[str, dict[int, int]]:
    return {t.name: {p.start: p.path.stat().st_ino for p in parts.parts_of(t)}
            for t in sorted((root / "data" / "tables").glob("*.parquet"))}


def _full_copy(root: Path, target: Path) -> dict[str, pa.Table]:
    """The same definitions and data, computed from scratch with --full."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("tables", ".tally"))
    compute(load_project(target), ComputeOptions(full=True))
    return _tables(target)


def _assert_same(incremental: dict[str, pa.Table], full: dict[str, pa.Table], what: str
                 ) -> None:
    assert sorted(incremental) == sorted(full) == [
        "derived_shop_1d.parquet", "events_1d.parquet", "funnel_a_visit_b.parquet",
        "score_shop_score.parquet", "visits_1d.parquet"], what
    for name, table in full.items():
        assert incremental[name].num_rows > 20, (what, name)
        assert _loose(incremental[name]).equals(_loose(table)), (what, name)


def _loose(table: pa.Table) -> pa.Table:
    """Nullability flags aside (DuckDB marks the key NOT NULL on some writes only)."""
    return table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_changes_incremental_equals_full(tmp_path: Path, seed: int,
                                                small_parts: None) -> None:
    rng = random.Random(seed)
    root = _project(tmp_path / "inc", rng)
    compute(load_project(root))
    for step in range(6):
        change = rng.choice(CHANGES) if step else _append_day
        change(root, rng, step)
        before = _part_inodes(root)
        results = {r.name: r for r in compute(load_project(root))}
        what = f"seed {seed}, step {step}: {change.__name__}"
        if change is _append_day:  # only the newest snapshots are recomputed and written
            assert results["events_1d"].mode == "incremental", what
            assert results["score_shop_score"].mode == "incremental", what
            for table, inodes in _part_inodes(root).items():
                kept = [s for s, ino in inodes.items() if before[table].get(s) == ino]
                assert 0 in kept and len(kept) >= len(inodes) - 2, (what, table)
        _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), what)


def test_a_failing_table_computed_side_by_side_leaves_the_others_recorded(
        tmp_path: Path) -> None:
    """An incremental run computes the groups and the funnel side by side; when one of
    them fails (an unreadable source), the others are still written and recorded, the
    error is raised, and the run after the fix equals a full recompute."""
    import json

    from tally.catalog.errors import DataError

    root = _project(tmp_path / "inc", random.Random(4))
    compute(load_project(root))
    state = root / ".tally" / "tables.json"
    before = json.loads(state.read_text())
    _append_day(root, random.Random(5), 0)
    visits = root / "data" / "visits.parquet"
    saved = visits.read_bytes()
    visits.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="visits"):
        compute(load_project(root))
    after = json.loads(state.read_text())
    assert after["events_1d"]["generation"] == before["events_1d"]["generation"] + 1
    assert after["visits_1d"]["generation"] == before["visits_1d"]["generation"]
    assert after["score_shop_score"] == before["score_shop_score"]  # its rank never ran
    visits.write_bytes(saved)
    results = {r.name: r.mode for r in compute(load_project(root))}
    assert results["events_1d"] == "up to date" and results["visits_1d"] != "up to date"
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "after the fix")


def test_appends_past_a_part_keep_the_old_parts_and_equal_full(tmp_path: Path,
                                                               small_parts: None) -> None:
    """Day after day: each run writes a new part or rewrites the newest one, never the
    base; a removed late file deletes rows from parts in the middle, a definition change
    rewrites the table whole; every state equals a full recompute."""
    rng = random.Random(5)
    root = _project(tmp_path / "inc", rng)
    compute(load_project(root))
    base = {t: i[0] for t, i in _part_inodes(root).items()}
    for step in range(4):
        _append_day(root, rng, step)
        compute(load_project(root))
        assert {t: i[0] for t, i in _part_inodes(root).items()} == base, step
    counts = {t: len(i) for t, i in _part_inodes(root).items()}
    assert min(counts.values()) >= 3, counts
    _late_file(root, rng, 9)
    compute(load_project(root))
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "late file")
    for name in ("new1.parquet", "late9.parquet"):
        (root / "data" / "events" / name).unlink()
    compute(load_project(root))
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "files removed")
    defs = root / "metrics" / "defs.yaml"
    defs.write_text(defs.read_text().replace("window: 3d}", "window: 4d}"))
    results = {r.name: r.mode for r in compute(load_project(root))}
    assert results["events_1d"] == results["score_shop_score"] == "full"
    assert results["visits_1d"] == "up to date"
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "definition change")


def test_a_ranged_run_replaces_only_its_snapshots(tmp_path: Path, small_parts: None) -> None:
    rng = random.Random(8)
    root = _project(tmp_path / "inc", rng)
    compute(load_project(root))
    _rewrite_old_rows(root, rng, 1)
    first = EPOCH.date() + timedelta(days=4)
    compute(load_project(root), ComputeOptions(start=first, end=first + timedelta(days=3)))
    compute(load_project(root))  # the rest of the change, outside the range
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "ranged, then plain")


def test_late_file_recomputes_from_its_oldest_row(tmp_path: Path) -> None:
    rng = random.Random(7)
    root = _project(tmp_path / "p", rng)
    compute(load_project(root))
    late = [{"shop_id": 2, "ts": EPOCH + 4 * DAY + timedelta(hours=5), "value": 1.0,
             "kind": "a", "user_id": 9}]
    _write(root / "data" / "events" / "late.parquet", late, EVENTS)
    results = {r.name: r for r in compute(load_project(root))}
    events = results["events_1d"]
    assert events.mode == "incremental"
    assert events.since_us == int((EPOCH + 5 * DAY).timestamp() * 1_000_000)
    assert results["visits_1d"].mode == "up to date"
    assert results["derived_shop_1d"].since_us == events.since_us
    assert results["score_shop_score"].since_us == events.since_us
    _restate_level(root, rng, 0)  # the derived table reads levels: from its changed day on
    results = {r.name: r for r in compute(load_project(root))}
    assert {r.mode for r in results.values()} == {"up to date", "incremental"}
    assert results["derived_shop_1d"].since_us > 0
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "late file")


def test_nothing_changed_reads_no_data(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p", random.Random(3))
    compute(load_project(root))  # (the CLI's contract gate cannot read a glob yet)
    before = _tables(root)
    # a source the run would have to read is now unreadable: an up-to-date run never opens it
    visits = root / "data" / "visits.parquet"
    stat = visits.stat()
    saved = visits.read_bytes()
    visits.write_bytes(b"not parquet" + b"\0" * (stat.st_size - 11))
    os.utime(visits, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = invoke(["--project", str(root), "compute"], capsys)
    assert again.code == 0, again.stderr
    assert "every table is up to date" in again.stderr
    assert _tables(root).keys() == before.keys()
    # touched files whose rows are the same: read, found equal, nothing rewritten
    visits.write_bytes(saved)
    stamp = (root / "data" / "tables" / "visits_1d.parquet").stat().st_mtime_ns
    results = {r.name: r.mode for r in compute(load_project(root))}
    assert set(results.values()) == {"up to date"}
    assert (root / "data" / "tables" / "visits_1d.parquet").stat().st_mtime_ns == stamp
    assert compute(load_project(root), ComputeOptions(full=True))[0].mode == "full"


def test_without_an_atomic_exchange_the_two_renames_give_the_same_tables(
        tmp_path: Path, small_parts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tally.catalog.store import fsutil

    monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)  # as where renameat2 is not
    rng = random.Random(6)
    root = _project(tmp_path / "inc", rng)
    compute(load_project(root))
    _append_day(root, rng, 0)
    _late_file(root, rng, 1)
    compute(load_project(root))
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "two renames")
    assert not list((root / "data" / "tables").glob(".tally-tmp-*"))


CRASHING_RUN = """
import sys
from tally.catalog.compute.runner import compute
from tally.catalog.spec.loading import load_project
compute(load_project(sys.argv[1]))
"""


@pytest.mark.parametrize("point", ["compute-before-rename#2", "compute-after-rename#4"])
def test_an_incremental_run_killed_mid_way_leaves_whole_tables(tmp_path: Path, point: str
                                                                ) -> None:
    """Killed between its table swaps, an incremental run leaves every table whole (old or
    new); the next run gives what an uninterrupted one gives."""
    rng = random.Random(12)
    root = _project(tmp_path / "inc", rng)
    compute(load_project(root))
    _append_day(root, rng, 0)
    env = {**os.environ, "TALLY_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # killed where aimed
    for table in (root / "data" / "tables").glob("*.parquet"):
        assert pq.read_table(table).num_rows > 20, table.name
    compute(load_project(root))
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), point)
    assert not list((root / "data").rglob(".tally-tmp-*"))


NO_CHANGE_RUN = """
import sys
from tally.cli.main import main
try:
    main(["--project", sys.argv[1], "compute"])
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = ("duckdb", "pyarrow", "numpy", "pandas", "feast")
print("IMPORTED", sorted(m for m in heavy if m in sys.modules))
"""


def test_nothing_changed_imports_no_data_library(tmp_path: Path) -> None:
    """The whole `tally compute` command with nothing changed, in a fresh process: it
    says so and exits 0 without importing DuckDB, Arrow, numpy, pandas or Feast."""
    root = _project(tmp_path / "p", random.Random(4))
    compute(load_project(root))
    proc = subprocess.run([sys.executable, "-c", NO_CHANGE_RUN, str(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "every table is up to date" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "IMPORTED []"


@pytest.fixture(scope="module")
def spark_session():
    from tally.catalog.sql.engines import check_spark_available

    from tests.test_spark import SPARK_CONF

    check_spark_available()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("tally-incremental-tests")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_incremental_equals_full(spark_session: object, tmp_path: Path,
                                       small_parts: None) -> None:
    rng = random.Random(11)
    root = _project(tmp_path / "inc", rng, spark=True)
    compute(load_project(root))
    _append_day(root, rng, 0)
    _late_file(root, rng, 1)
    _rewrite_old_rows(root, rng, 2)
    results = {r.name: r.mode for r in compute(load_project(root))}
    assert results["events_1d"] == results["derived_shop_1d"] == "incremental"
    _assert_same(_tables(root), _full_copy(root, tmp_path / "full"), "spark")
