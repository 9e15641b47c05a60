"""Computed tables against a plainly written reference of the design's semantics."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tally.catalog.compute.runner import ComputeOptions, compute
from tally.catalog.spec.loading import load_project

DEFINITIONS = """
entities:
  - {name: shop, join_key: shop_id, description: A shop., owner: o@x.com}
sources:
  - name: events
    description: Events.
    owner: p@x.com
    path: data/events.parquet
    entity: shop
    timestamp_field: ts
  - name: visits
    description: Visits.
    owner: p@x.com
    path: data/visits.parquet
    entity: shop
    timestamp_field: ts
  - name: levels
    description: Levels.
    owner: p@x.com
    path: data/levels.parquet
    entity: shop
    timestamp_field: ts
    created_timestamp_field: created
metrics:
  - {name: ev_count_3d, description: d, owner: o@x.com, source: events, aggregation: count,
     expression: "*", window: 3d}
  - {name: ev_values_7d, description: d, owner: o@x.com, source: events, aggregation: count,
     expression: value, window: 7d}
  - {name: ev_sum_a_3d, description: d, owner: o@x.com, source: events, aggregation: sum,
     expression: value * 2, filter: "kind = 'a'", window: 3d}
  - {name: ev_avg_7d, description: d, owner: o@x.com, source: events, aggregation: avg,
     expression: value, window: 7d}
  - {name: ev_min_3d, description: d, owner: o@x.com, source: events, aggregation: min,
     expression: value, window: 3d}
  - {name: ev_max_7d, description: d, owner: o@x.com, source: events, aggregation: max,
     expression: value, window: 7d}
  - {name: ev_users_3d, description: d, owner: o@x.com, source: events,
     aggregation: count_distinct, expression: user_id, window: 3d}
  - {name: ev_users_b_7d, description: d, owner: o@x.com, source: events,
     aggregation: count_distinct, expression: user_id, filter: "kind = 'b'", window: 7d}
  - {name: ev_none_3d, description: d, owner: o@x.com, source: events, aggregation: sum,
     expression: value, filter: "kind = 'zzz'", window: 3d}
  - {name: visits_2d, description: d, owner: o@x.com, source: visits, aggregation: count,
     expression: "*", window: 2d}
  - {name: level, description: d, owner: o@x.com, type: column, source: levels,
     expression: level, ttl: 5d}
  - {name: ev_per_visit, description: d, owner: o@x.com, type: derived,
     expression: "ev_count_3d / nullif(visits_2d, 0)"}
  - {name: ev_times_level, description: d, owner: o@x.com, type: derived,
     expression: ev_per_visit * level}
"""

DAY = timedelta(days=1)
EPOCH = datetime(2025, 3, 1, tzinfo=UTC)


def _events(rng: random.Random) -> list[dict]:
    rows = []
    for shop in range(1, 7):
        for _ in range(rng.randint(0, 40)):
            day = rng.randint(0, 19)
            if shop == 3 and 5 <= day <= 14:  # silent longer than every window
                continue
            ts = EPOCH + day * DAY + timedelta(minutes=rng.choice([0, 0, 1, 719, 1439]))
            value = rng.choice([None, 0.5, 1.0, 2.5, 4.0])
            rows.append({"shop_id": shop, "ts": ts, "value": value,
                         "kind": rng.choice(["a", "b"]), "user_id": rng.randint(1, 5)})
    rows.append({"shop_id": 7, "ts": EPOCH + 10 * DAY, "value": None, "kind": "a",
                 "user_id": None})  # exactly on a boundary, null values
    return rows


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _reference_group(rows: list[dict], metrics: dict[str, tuple], grain: timedelta
                     ) -> dict[tuple[int, datetime], dict[str, object]]:
    """The design's semantics, spelled out row by row."""
    reach = max(m[1] for m in metrics.values()) + grain
    first = min(r["ts"] for r in rows)
    last = max(r["ts"] for r in rows)

    def after(ts: datetime) -> datetime:
        return EPOCH_0 + ((ts - EPOCH_0) // grain + 1) * grain

    out: dict[tuple[int, datetime], dict[str, object]] = {}
    snapshot = after(first)
    while snapshot <= after(last):
        for shop in sorted({r["shop_id"] for r in rows}):
            mine = [r for r in rows if r["shop_id"] == shop]
            if not any(snapshot - reach <= r["ts"] < snapshot for r in mine):
                continue
            values: dict[str, object] = {}
            for name, (agg, window, expr, keep) in metrics.items():
                seen = [r for r in mine if snapshot - window <= r["ts"] < snapshot and keep(r)]
                xs = [expr(r) for r in seen]
                present = [x for x in xs if x is not None]
                if agg == "count":
                    values[name] = len(present)
                elif agg == "count_distinct":
                    values[name] = len(set(present))
                elif agg == "sum":
                    values[name] = float(sum(present))
                elif agg == "avg":
                    values[name] = sum(present) / len(present) if present else None
                elif agg == "min":
                    values[name] = min(present) if present else None
                else:
                    values[name] = max(present) if present else None
            out[(shop, snapshot)] = values
        snapshot += grain
    return out


EPOCH_0 = datetime(1970, 1, 1, tzinfo=UTC)


def _table(path: Path, key: str) -> dict[tuple[int, datetime], dict[str, object]]:
    table = pq.read_table(path).to_pylist()
    return {(r.pop(key), r.pop("event_timestamp")): r for r in table
            if r.pop("created_timestamp") is not None}


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def write_semantics_data(root: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """The events, visits and levels sources of DEFINITIONS, generated under root/data."""
    rng = random.Random(11)
    events = _events(rng)
    _write(root / "data" / "events.parquet", events, pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("value", pa.float64()),
        ("kind", pa.string()), ("user_id", pa.int64())]))
    visits = [{"shop_id": rng.randint(1, 6),
               "ts": EPOCH + timedelta(hours=rng.randint(0, 20 * 24))} for _ in range(60)]
    _write(root / "data" / "visits.parquet", visits, pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))]))
    levels = []
    for shop in range(1, 7):
        for day in (0, 4, 4, 12):
            levels.append({"shop_id": shop, "ts": EPOCH + day * DAY,
                           "created": EPOCH + day * DAY + timedelta(minutes=rng.randint(0, 9)),
                           "level": float(rng.randint(1, 9))})
    _write(root / "data" / "levels.parquet", levels, pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")), ("level", pa.float64())]))
    return events, visits, levels


@pytest.fixture
def semantics_project(tmp_path: Path) -> tuple[Path, list[dict], list[dict], list[dict]]:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(DEFINITIONS)
    return (tmp_path, *write_semantics_data(tmp_path))


EVENT_METRICS = {
    "ev_count_3d": ("count", 3 * DAY, lambda r: 1, lambda r: True),
    "ev_values_7d": ("count", 7 * DAY, lambda r: r["value"], lambda r: True),
    "ev_sum_a_3d": ("sum", 3 * DAY, lambda r: None if r["value"] is None else r["value"] * 2,
                    lambda r: r["kind"] == "a"),
    "ev_avg_7d": ("avg", 7 * DAY, lambda r: r["value"], lambda r: True),
    "ev_min_3d": ("min", 3 * DAY, lambda r: r["value"], lambda r: True),
    "ev_max_7d": ("max", 7 * DAY, lambda r: r["value"], lambda r: True),
    "ev_users_3d": ("count_distinct", 3 * DAY, lambda r: r["user_id"], lambda r: True),
    "ev_users_b_7d": ("count_distinct", 7 * DAY, lambda r: r["user_id"],
                      lambda r: r["kind"] == "b"),
    "ev_none_3d": ("sum", 3 * DAY, lambda r: r["value"], lambda r: r["kind"] == "zzz"),
}


def test_group_table_matches_reference(semantics_project) -> None:
    root, events, visits, _ = semantics_project
    results = compute(load_project(root))
    assert {r.name for r in results} >= {"events_1d", "visits_1d", "derived_shop_1d"}
    got = _table(root / "data" / "tables" / "events_1d.parquet", "shop_id")
    expected = _reference_group(events, EVENT_METRICS, DAY)
    assert set(got) == set(expected)
    for key, values in expected.items():
        for name, value in values.items():
            assert _same(got[key][name], value), (key, name, got[key][name], value)
    # the silent shop's last row before its gap is an all-empty one, not a stale copy
    shop3 = sorted(t for s, t in got if s == 3)
    gap = [b for a, b in zip(shop3, shop3[1:], strict=False) if b - a > DAY]
    assert gap, "shop 3 should have a gap in its snapshots"
    before_gap = got[(3, shop3[shop3.index(gap[0]) - 1])]
    assert before_gap["ev_count_3d"] == 0 and before_gap["ev_values_7d"] == 0
    assert before_gap["ev_avg_7d"] is None
    # the filter that excludes every row gives 0, never null
    assert all(v["ev_none_3d"] == 0 for v in got.values())
    # shop 7's only row lies exactly on a boundary: first snapshot is the next midnight
    assert min(t for s, t in got if s == 7) == EPOCH + 11 * DAY


def test_derived_over_two_groups_and_a_column(semantics_project) -> None:
    root, events, visits, levels = semantics_project
    compute(load_project(root))
    ev = _table(root / "data" / "tables" / "events_1d.parquet", "shop_id")
    vi = _table(root / "data" / "tables" / "visits_1d.parquet", "shop_id")
    derived = _table(root / "data" / "tables" / "derived_shop_1d.parquet", "shop_id")
    assert set(derived) == set(ev) | set(vi)
    for (shop, snapshot), values in derived.items():
        count = ev.get((shop, snapshot), {}).get("ev_count_3d")
        n_visits = vi.get((shop, snapshot), {}).get("visits_2d")
        ratio = None if count is None or not n_visits else count / n_visits
        assert _same(values["ev_per_visit"], ratio), (shop, snapshot)
        # level: newest row strictly before the snapshot, ties by created, within 5d ttl
        candidates = [r for r in levels if r["shop_id"] == shop and r["ts"] < snapshot]
        latest = max(candidates, key=lambda r: (r["ts"], r["created"]), default=None)
        level = latest["level"] if latest and latest["ts"] >= snapshot - 5 * DAY else None
        product = None if ratio is None or level is None else ratio * level
        assert _same(values["ev_times_level"], product), (shop, snapshot)


def test_incremental_equals_full_and_start_end_narrow(semantics_project) -> None:
    root, events, _, _ = semantics_project
    project = load_project(root)
    table = root / "data" / "tables" / "events_1d.parquet"
    compute(project, ComputeOptions(end=(EPOCH + 8 * DAY).date()))
    partial = _table(table, "shop_id")
    assert max(t for _, t in partial) == EPOCH + 8 * DAY
    results = compute(project)
    assert next(r for r in results if r.name == "events_1d").mode == "incremental"
    incremental = _table(table, "shop_id")
    compute(project, ComputeOptions(full=True))
    assert _table(table, "shop_id") == incremental
    expected = _reference_group(events, EVENT_METRICS, DAY)
    assert set(incremental) == set(expected)


def test_sub_grain_windows_use_finer_buckets(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "d.yaml").write_text(
        "entities: [{name: shop, join_key: shop_id, description: d, owner: o}]\n"
        "sources: [{name: hits, description: d, owner: o, path: data/hits.parquet, "
        "entity: shop, timestamp_field: ts}]\n"
        "metrics: [{name: hits_90m, description: d, owner: o, source: hits, "
        "aggregation: count, expression: '*', window: 90m, grain: 1h}]\n")
    rng = random.Random(3)
    rows = [{"shop_id": rng.randint(1, 3),
             "ts": EPOCH + timedelta(minutes=rng.randint(0, 600))} for _ in range(200)]
    _write(tmp_path / "data" / "hits.parquet", rows, pa.schema([
        ("shop_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC"))]))
    compute(load_project(tmp_path))
    got = _table(tmp_path / "data" / "tables" / "hits_1h.parquet", "shop_id")
    expected = _reference_group(rows, {"hits_90m": ("count", timedelta(minutes=90),
                                                    lambda r: 1, lambda r: True)},
                                timedelta(hours=1))
    assert got == expected
