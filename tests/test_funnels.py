"""Funnel tables against a brute-force reference of DESIGN.md "Funnel metrics": every start
checked against every later row of every step, at every snapshot."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tally.catalog.compute.runner import ComputeOptions, compute
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.tables import funnel_columns, table_of

EPOCH = datetime(2025, 3, 1, tzinfo=UTC)
EPOCH_0 = datetime(1970, 1, 1, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)

SOURCES = """
entities:
  - {name: shop, join_key: shop_id, description: A shop., owner: o@x.com}
sources:
  - name: crm
    description: CRM events.
    owner: p@x.com
    path: data/crm.parquet
    entity: shop
    timestamp_field: ts
  - name: billing
    description: Billing events.
    owner: p@x.com
    path: data/billing.parquet
    entity: shop
    timestamp_field: ts
"""
STEPS = """
    steps:
      - {source: crm, filter: "event = 'opp'"}
      - {source: crm, filter: "event = 'quote'"}
      - {source: billing, filter: "status = 'won'"}
"""


def funnel_yaml(name: str, *, order: str = "sequential", same: str | None = None,
                measure: str = "rate", within: str = "2d", window: str = "5d",
                grain: str = "1d") -> str:
    extra = f"\n    same: {same}" if same else ""
    return (f"  - name: {name}\n    description: d\n    owner: o@x.com\n    type: funnel\n"
            f"    entity: shop{STEPS}    within: {within}\n    window: {window}\n"
            f"    grain: {grain}\n    order: {order}\n    measure: {measure}{extra}\n")


@dataclass(frozen=True)
class Variant:
    order: str
    same: bool
    measure: str
    within: timedelta
    window: timedelta
    grain: timedelta


VARIANTS = {
    "f_seq": Variant("sequential", False, "rate", 2 * DAY, 5 * DAY, DAY),
    "f_any": Variant("any", False, "completions", 2 * DAY, 5 * DAY, DAY),
    "f_seq_same": Variant("sequential", True, "starts", 2 * DAY, 5 * DAY, DAY),
    "f_any_same": Variant("any", True, "rate", 36 * HOUR, 3 * DAY, 12 * HOUR),
    "f_long": Variant("sequential", True, "rate", 6 * DAY, 4 * DAY, DAY),
}


def _duration(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def definitions() -> str:
    metrics = "".join(funnel_yaml(
        name, order=v.order, same="user_id" if v.same else None, measure=v.measure,
        within=_duration(v.within), window=_duration(v.window), grain=_duration(v.grain))
        for name, v in VARIANTS.items())
    return SOURCES + "metrics:\n" + metrics


def _moment(rng: random.Random) -> datetime:
    """Times on a coarse grid, so ties, rows at s + within and rows at snapshots abound."""
    return EPOCH + rng.randint(0, 14) * DAY + rng.choice([0, 0, 0, 6, 12, 12, 23]) * HOUR


def generate(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    crm, billing = [], []
    for shop in range(1, 6):
        for _ in range(rng.randint(3, 25)):
            crm.append({"shop_id": shop, "ts": _moment(rng),
                        "event": rng.choice(["opp", "opp", "quote", "quote", "other"]),
                        "user_id": rng.choice([1, 2, 2, None])})
        for _ in range(rng.randint(0, 10)):
            billing.append({"shop_id": shop, "ts": _moment(rng),
                            "status": rng.choice(["won", "won", "lost"]),
                            "user_id": rng.choice([1, 2, None])})
    crm.append({"shop_id": 9, "ts": EPOCH + 20 * DAY, "event": "opp", "user_id": 1})  # alone
    return crm, billing


def write_data(root: Path, crm: list[dict[str, Any]], billing: list[dict[str, Any]]) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    ts = pa.timestamp("us", tz="UTC")
    pq.write_table(pa.Table.from_pylist(crm, schema=pa.schema([
        ("shop_id", pa.int64()), ("ts", ts), ("event", pa.string()),
        ("user_id", pa.int64())])), root / "data" / "crm.parquet")
    pq.write_table(pa.Table.from_pylist(billing, schema=pa.schema([
        ("shop_id", pa.int64()), ("ts", ts), ("status", pa.string()),
        ("user_id", pa.int64())])), root / "data" / "billing.parquet")


STEP_TESTS: list[Callable[[dict[str, Any]], bool]] = [
    lambda r: r.get("event") == "opp", lambda r: r.get("event") == "quote",
    lambda r: r.get("status") == "won"]
STEP_ROWS = ("crm", "crm", "billing")


def _reached(start: dict[str, Any], step_rows: list[list[dict[str, Any]]], v: Variant,
             until: datetime) -> int:
    """How many steps a start reached, every time before `until`, by trying every row."""
    s = start["ts"]
    end = min(s + v.within, until)

    def fits(row: dict[str, Any]) -> bool:
        return row["shop_id"] == start["shop_id"] and s <= row["ts"] < end and (
            not v.same or (start["user_id"] is not None and row["user_id"] == start["user_id"]))

    if v.order == "any":
        reached = 1
        for rows in step_rows[1:]:
            if not any(fits(r) for r in rows):
                break
            reached += 1
        return reached

    def chain(step: int, after: datetime) -> int:
        if step == len(step_rows):
            return step
        deepest = step
        for row in step_rows[step]:
            if fits(row) and row["ts"] >= after:
                deepest = max(deepest, chain(step + 1, row["ts"]))
        return deepest

    return chain(1, s)


def reference(name: str, crm: list[dict[str, Any]], billing: list[dict[str, Any]]
              ) -> dict[tuple[int, datetime], dict[str, Any]]:
    v = VARIANTS[name]
    by_source = {"crm": crm, "billing": billing}
    step_rows = [[r for r in by_source[src] if test(r)]
                 for src, test in zip(STEP_ROWS, STEP_TESTS, strict=True)]
    every = crm + billing
    reach = v.window + v.within + v.grain

    def after(ts: datetime) -> datetime:
        return EPOCH_0 + ((ts - EPOCH_0) // v.grain + 1) * v.grain

    out: dict[tuple[int, datetime], dict[str, Any]] = {}
    snapshot = after(min(r["ts"] for r in every))
    while snapshot <= after(max(r["ts"] for r in every)):
        for shop in sorted({r["shop_id"] for r in every}):
            if not any(r["shop_id"] == shop and snapshot - reach <= r["ts"] < snapshot
                       for r in every):
                continue
            starts = [r for r in step_rows[0]
                      if r["shop_id"] == shop and snapshot - v.window <= r["ts"] < snapshot]
            reached = [_reached(s, step_rows, v, snapshot) for s in starts]
            counts = [sum(1 for x in reached if x >= i) for i in range(1, 4)]
            measure = {"starts": counts[0], "completions": counts[2],
                       "rate": counts[2] / counts[0] if counts[0] else None}[v.measure]
            out[(shop, snapshot)] = dict(zip(funnel_columns_of(name), [measure, *counts],
                                             strict=True))
        snapshot += v.grain
    return out


def funnel_columns_of(name: str) -> list[str]:
    return [name, *(f"{name}__step_{i}" for i in range(1, 4))]


def read_table(path: Path, key: str) -> dict[tuple[int, datetime], dict[str, Any]]:
    rows = pq.read_table(path).to_pylist()
    return {(r.pop(key), r.pop("event_timestamp")): r for r in rows
            if r.pop("created_timestamp") is not None}


@pytest.fixture
def funnel_project(tmp_path: Path) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(definitions())
    crm, billing = generate(random.Random(7))
    write_data(tmp_path, crm, billing)
    return tmp_path, crm, billing


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_funnel_table_matches_brute_force_reference(funnel_project: Any, name: str) -> None:
    root, crm, billing = funnel_project
    project = load_project(root)
    compute(project, ComputeOptions(metrics=[name]))
    spec = table_of(project, name)
    assert spec is not None and spec.kind == "funnel"
    assert spec.columns == funnel_columns(name, project.metrics[name])
    got = read_table(spec.path(project), "shop_id")
    expected = reference(name, crm, billing)
    assert set(got) == set(expected)
    assert got == expected
    assert any(row[f"{name}__step_3"] for row in expected.values())  # the data completes
    assert any(row[f"{name}__step_3"] < row[f"{name}__step_2"] for row in expected.values())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_funnel_from_any_first_snapshot_matches_the_reference(funnel_project: Any,
                                                              name: str) -> None:
    """What an incremental run computes: the snapshots from `low` on, with the counts
    before `low` summed there (starts before it still counted after it, journeys that
    ended before it adding nothing), for every `low` the data spans and past its end."""
    from tally.catalog.compute.funnels import funnel_query, plan_funnel
    from tally.catalog.sql.duck import connect_unrestricted

    root, crm, billing = funnel_project
    project = load_project(root)
    plan = plan_funnel(project, name)
    paths = {s: str(root / "data" / f"{s}.parquet") for s in plan.sources}
    expected = reference(name, crm, billing)
    con = connect_unrestricted()
    grains = sorted({int((t - EPOCH_0) / VARIANTS[name].grain) for _, t in expected})
    for low in range(grains[0] - 1, grains[-1] + 2):
        rows = con.sql(funnel_query(project, plan, paths=paths, low=low).sql(
            "duckdb")).to_arrow_table().to_pylist()
        got = {(r.pop("shop_id"), r.pop("event_timestamp")): r for r in rows
               if r.pop("created_timestamp") is not None}
        first = EPOCH_0 + low * VARIANTS[name].grain
        assert got == {k: v for k, v in expected.items() if k[1] >= first}, low
        assert low > grains[-1] or got  # every low in range has rows to compare


READERS = """
  - {name: crm_rows_5d, description: d, owner: o@x.com, source: crm, aggregation: count,
     expression: "*", window: 5d}
  - {name: f_seq_pct, description: d, owner: o@x.com, type: derived,
     expression: "100 * f_seq + 0 * crm_rows_5d"}
  - {name: f_only_pct, description: d, owner: o@x.com, type: derived, expression: 100 * f_any}
""" + funnel_yaml("f_ver", within="1d").replace("    order:", "    version: 1\n    status: "
                                                 "certified\n    order:") + funnel_yaml(
    "f_ver", within="3d").replace("    order:", "    version: 2\n    status: certified\n"
                                  "    order:") + """
scores:
  - name: shop_score
    entity: shop
    description: d
    owner: o@x.com
    components:
      - {metric: f_seq, weight: 2}
      - {metric: crm_rows_5d, weight: 1}
"""


def _as_of(frame: Any, table: Path, key: str, column: str, ttl: timedelta) -> list[Any]:
    """Feast's point-in-time rule spelled out: the newest row with t - ttl <= ts <= t."""
    rows = read_table(table, key)
    out = []
    for shop, t in zip(frame[key], frame["event_timestamp"], strict=True):
        seen = [ts for (k, ts) in rows if k == shop and t - ttl <= ts <= t]
        out.append(rows[(shop, max(seen))][column] if seen else None)
    return out


def test_funnel_served_point_in_time_read_by_derived_score_and_versions(
        funnel_project: Any) -> None:
    import pandas as pd
    from tally.catalog.pipeline import Gate
    from tally.feature_repo.registry import apply
    from tally.feature_repo.serving import training_frame

    from tests.helpers import REPO

    root, crm, billing = funnel_project
    (root / "metrics" / "defs.yaml").write_text(definitions() + READERS)
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    project = load_project(root)
    assert project.ttl_of("f_seq") == 5 * DAY + 2 * DAY + DAY
    compute(project)
    apply(project, Gate(as_of="2025-03-25"))
    tables = root / "data" / "tables"
    derived = read_table(tables / "derived_shop_1d.parquet", "shop_id")
    funnel = read_table(tables / "funnel_f_seq.parquet", "shop_id")
    assert {k: v["f_seq_pct"] for k, v in derived.items() if (k in funnel)} == {
        k: (None if v["f_seq"] is None else 100 * v["f_seq"]) for k, v in funnel.items()}
    scored = read_table(tables / "score_shop_score.parquet", "shop_id")
    assert scored and all(0 <= r["shop_score"] <= 100 for r in scored.values())
    assert read_table(tables / "funnel_f_ver__v1.parquet", "shop_id") != read_table(
        tables / "funnel_f_ver__v2.parquet", "shop_id")

    rng = random.Random(3)
    entities = pd.DataFrame({"shop_id": [rng.randint(1, 6) for _ in range(80)] + [1, 2],
                             "event_timestamp": [EPOCH + rng.randint(0, 24 * 24) * HOUR
                                                 for _ in range(80)]
                             + [EPOCH + 6 * DAY, EPOCH + 9 * DAY]})
    features = ["f_seq", "f_seq__step_2", "f_seq_pct", "f_ver@1", "shop_score"]
    frame = training_frame(entities, features=features, project=project)
    assert list(frame.columns) == ["shop_id", "event_timestamp", "f_seq", "f_seq__step_2",
                                   "f_seq_pct", "f_ver__v1", "shop_score"]
    ttl = project.ttl_of("f_seq")
    assert ttl is not None
    for column, table in (("f_seq", "funnel_f_seq"), ("f_seq__step_2", "funnel_f_seq"),
                          ("f_ver__v1", "funnel_f_ver__v1")):
        want = _as_of(entities, tables / f"{table}.parquet", "shop_id", column, ttl)
        got = [None if pd.isna(x) else x for x in frame[column]]
        assert got == want, column
    assert frame["f_seq"].notna().sum() > 20 and frame["shop_score"].notna().any()


def test_funnel_never_stale_and_ranged_runs_keep_the_rest(funnel_project: Any) -> None:
    root, crm, billing = funnel_project
    project = load_project(root)
    path = root / "data" / "tables" / "funnel_f_seq.parquet"
    modes = {r.name: r.mode for r in compute(project)}
    assert modes["funnel_f_seq"] == "full"
    assert {r.name: r.mode for r in compute(project)}["funnel_f_seq"] == "up to date"
    billing = [*billing, {"shop_id": 2, "ts": EPOCH + 3 * DAY, "status": "won", "user_id": 1},
               {"shop_id": 4, "ts": EPOCH + 16 * DAY, "status": "won", "user_id": 2}]
    write_data(root, crm, billing)  # one step's source changed, in the middle and at the end
    changed = {r.name: r for r in compute(project)}["funnel_f_seq"]
    assert changed.mode == "incremental"  # from the snapshot after the earliest changed day
    assert changed.since_us == int((EPOCH + 4 * DAY).timestamp()) * 1_000_000
    assert read_table(path, "shop_id") == reference("f_seq", crm, billing)
    assert read_table(path, "shop_id") == _full_recompute(root, "f_seq")
    order = [("shop_id", "ascending"), ("event_timestamp", "ascending")]
    whole = pq.read_table(path).sort_by(order)  # parts: rows in span, then key order
    ranged = compute(project, ComputeOptions(start=(EPOCH + 5 * DAY).date(),
                                             end=(EPOCH + 8 * DAY).date()))
    assert {r.name: r.mode for r in ranged}["funnel_f_seq"] == "incremental"
    assert pq.read_table(path).sort_by(order).equals(whole)
    assert {r.name: r.mode for r in compute(project)}["funnel_f_seq"] == "full"  # after a range


def test_funnel_grain_longer_than_window_warns_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "defs.yaml").write_text(
        SOURCES + "metrics:\n" + funnel_yaml("f_sparse", window="2d", grain="1w"))
    project = load_project(tmp_path)
    rendered = [w.render() for w in project.warnings]
    assert any("metrics/defs.yaml:29: metrics[0].grain: grain 1w is longer than window 2d"
               in w for w in rendered), rendered


def _full_recompute(root: Path, name: str) -> Any:
    """The funnel's table as `--full` computes it, in a copy of the project."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".tally", "tables"))
        compute(load_project(copy), ComputeOptions(full=True))
        return read_table(copy / "data" / "tables" / f"funnel_{name}.parquet", "shop_id")
