"""Differential test: Tally's offline store against Feast's stock DuckDB store on small
versions of both benchmark shapes (bench/training_frame.py): Tally-aligned daily
snapshots, and irregular raw tables with every edge case of issue 15 (unknown keys, entity
rows exactly at a feature row's time, at exactly +ttl and at +ttl+1s, restated rows tied
on event time, nulls, int32/int64/float32/float64 features)."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("feast")

from bench.training_frame import VIEWS, generate, generate_irregular  # noqa: E402


def _views(data: Path, irregular: bool, keys: str = "int"):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int32, Int64, String

    types = ([Int32, Int64, Float32, Float64, Float64] if irregular else
             [Int64, Float64, Float64, Float64, Float64])
    if keys == "string":
        entities = [Entity(name="account", join_keys=["account_id"],
                           value_type=ValueType.STRING)]
        key_fields = [Field(name="account_id", dtype=String)]
    else:
        entities = [Entity(name="account", join_keys=["account_id"],
                           value_type=ValueType.INT64)]
        key_fields = [Field(name="account_id", dtype=Int64)]
    if keys == "two":
        entities.append(Entity(name="region", join_keys=["region"],
                               value_type=ValueType.INT64))
        key_fields.append(Field(name="region", dtype=Int64))
    return [FeatureView(
        name=v, entities=entities, ttl=timedelta(days=30),
        schema=key_fields + [
            Field(name=f"{v}_f{j}", dtype=types[j - 1]) for j in range(1, n + 1)],
        source=FileSource(name=f"{v}_src", path=str(data / f"{v}.parquet"),
                          timestamp_field="event_timestamp",
                          created_timestamp_column="created_timestamp"))
        for v, n in VIEWS]


class _NoOnDemandViews:
    def list_on_demand_feature_views(self, *args, **kwargs):
        return []


def _jobs(data: Path, irregular: bool, keys: str = "int") -> tuple[pd.DataFrame, list]:
    """The entity frame, and the training-frame jobs of Tally's store and the stock one."""
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
    from feast.repo_config import RepoConfig
    from tally.feature_repo.offline_store import TallyDuckDBOfflineStore

    entities = pq.read_table(data / "entities.parquet").to_pandas()
    views = _views(data, irregular, keys)
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    config = RepoConfig(project="shapes", provider="local", registry=str(data / "reg.db"),
                        offline_store={"type": "duckdb"},
                        online_store={"type": "sqlite", "path": str(data / "o.db")},
                        entity_key_serialization_version=3, repo_path=str(data))
    return entities, [store.get_historical_features(config, views, refs, entities.copy(),
                                                    _NoOnDemandViews(), "shapes")
                      for store in (TallyDuckDBOfflineStore, DuckDBOfflineStore)]


def _both(data: Path, irregular: bool, plans: dict[str, str] | None = None,
          keys: str = "int") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The entity frame, Tally's frame and the stock store's (in entity order); `plans`
    gets the plan that answered each of Tally's views."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entities, jobs = _jobs(data, irregular, keys)
        out = [job.to_df() for job in jobs]
    if plans is not None:
        plans.update(jobs[0].plans)
    ours = out[0]
    stock = out[1].sort_values("rid", kind="stable").reset_index(drop=True)[ours.columns]
    return entities, ours, stock


@pytest.mark.parametrize(("entity_rows", "plan"), [(6_000, "candidates"),
                                                   (30_000, "row ids")])
def test_irregular_shape_matches_stock(tmp_path, entity_rows, plan):
    """One entity row per key (the benchmark's shape): about 1 table row in 8 is a
    candidate, and the candidate plan answers. Five per key, at times spread over the
    year: each key's window covers most of its rows, and the row-id plan answers."""
    data = generate_irregular(tmp_path / "irregular", 60_000, entity_rows)
    plans: dict[str, str] = {}
    entities, ours, stock = _both(data, irregular=True, plans=plans)
    assert plans == {v: plan for v, _ in VIEWS}
    assert ours["rid"].tolist() == entities["rid"].tolist()  # entity order kept
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)
    kind = entities["rid"] % 100
    features = [c for c in ours.columns if c.startswith("t")]
    assert ours[kind == 0][features].isna().all().all()  # unknown keys
    # a row exactly at a feature row's time, or exactly ttl after it, sees that row
    t1_edge = (kind.between(1, 7)) & ((entities["rid"] // 100) % 3 == 0)
    assert t1_edge.sum() > 10 and ours[t1_edge]["t1_f1"].notna().all()
    assert ours["t1_f4"].isna().sum() > ours["t1_f1"].isna().sum()  # the null feature
    t1 = pq.read_table(data / "t1.parquet").to_pandas()
    restated = t1[t1.duplicated(["account_id", "event_timestamp"], keep=False)]
    newest = restated.sort_values("created_timestamp").drop_duplicates(
        ["account_id", "event_timestamp"], keep="last")
    hits = entities.merge(newest, on=["account_id", "event_timestamp"])
    assert len(hits) > 0  # some entity rows land exactly on a restated row
    served = ours.set_index("rid").loc[hits["rid"], "t1_f2"].to_numpy()
    assert (served == hits["t1_f2"].to_numpy()).all()  # the later created_timestamp wins


def test_aligned_shape_matches_stock(tmp_path):
    data = generate("tiny", tmp_path / "aligned")
    plans: dict[str, str] = {}
    entities, ours, stock = _both(data, irregular=False, plans=plans)
    assert plans == {v: "row ids" for v, _ in VIEWS}  # every row is in some window
    assert ours["rid"].tolist() == entities["rid"].tolist()
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)
    assert ours["t1_f1"].notna().mean() > 0.5


@pytest.mark.parametrize(("max_files", "entity_rows", "plan"), [
    (512, 10_000, "row ids"), (1, 10_000, "payload"), (512, 2_000, "candidates")])
def test_tables_of_several_files_match_stock(tmp_path, monkeypatch, max_files, entity_rows,
                                             plan):
    """A table that is a folder of files (a computed table's parts, or a producer's
    folder): the candidate plan reads it as one table; the row-id plan finds rows by file
    and row number across the files (or, past MAX_ROW_FILES files, by the join that
    carries the features); so a restated row in one file beats its older twin in another,
    exactly as the stock store decides."""
    import numpy as np
    from tally.feature_repo import offline_store_sql

    monkeypatch.setattr(offline_store_sql, "MAX_ROW_FILES", max_files)

    data = generate_irregular(tmp_path / "irregular", 20_000, entity_rows)
    _, single, _ = _both(data, irregular=True)
    for v, _n in VIEWS:
        table = pq.read_table(data / f"{v}.parquet")
        order = np.random.default_rng(5).permutation(table.num_rows)
        (data / f"{v}.parquet").unlink()
        folder = data / f"{v}.parquet"
        folder.mkdir()
        for i, rows in enumerate(np.array_split(order, 3)):
            pq.write_table(table.take(rows), folder / f"part-{i}.parquet")
    plans: dict[str, str] = {}
    entities, ours, stock = _both(data, irregular=True, plans=plans)
    assert plans == {v: plan for v, _ in VIEWS}
    assert ours["rid"].tolist() == entities["rid"].tolist()
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)
    pd.testing.assert_frame_equal(ours, single)


def test_row_ids_name_each_file_of_a_folder(tmp_path):
    from tally.feature_repo.offline_store_sql import parquet_files

    folder = tmp_path / "t.parquet"
    folder.mkdir()
    for name in ("part-2.parquet", "part-1.parquet", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert parquet_files(str(folder)) == [str(folder / "part-1.parquet"),
                                          str(folder / "part-2.parquet")]
    assert parquet_files(str(tmp_path / "none*.parquet")) is None


def _split_by_key(data: Path, parts: int) -> None:
    """Each table as a folder of `parts` files, file i holding the keys = i mod parts."""
    import pyarrow.compute as pc

    for v, _n in VIEWS:
        table = pq.read_table(data / f"{v}.parquet")
        (data / f"{v}.parquet").unlink()
        (data / f"{v}.parquet").mkdir()
        for i in range(parts):
            keep = pc.equal(pc.bit_wise_and(table.column("account_id"), parts - 1), i)
            pq.write_table(table.filter(keep), data / f"{v}.parquet" / f"part-{i}.parquet")


def test_files_without_winners_and_frames_without_any_match_stock(tmp_path):
    """The winners' features are read file by file: files holding no winner are skipped,
    and a frame with no winner at all still gets every column, typed as in the table."""
    import pyarrow as pa

    data = generate_irregular(tmp_path / "irregular", 20_000, 10_000)
    _split_by_key(data, 4)
    entities = pq.read_table(data / "entities.parquet")
    one_file = entities.filter(pa.compute.equal(pa.compute.bit_wise_and(
        entities.column("account_id"), 3), 1))
    pq.write_table(one_file, data / "entities.parquet")
    frame, ours, stock = _both(data, irregular=True)
    assert ours["rid"].tolist() == frame["rid"].tolist()
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)
    assert ours["t1_f1"].notna().mean() > 0.3

    nobody = one_file.set_column(1, "account_id", pa.array(
        [-1 - i for i in range(one_file.num_rows)], pa.int64()))
    pq.write_table(nobody, data / "entities.parquet")
    frame, ours, stock = _both(data, irregular=True)
    features = [c for c in ours.columns if c.startswith("t")]
    assert ours[features].isna().all().all() and len(ours) == len(frame)
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)
    table_types = pq.read_schema(data / "t1.parquet" / "part-0.parquet")
    _, (job, _) = _jobs(data, irregular=True)
    served = job.to_arrow().schema
    assert [served.field(f"t1_f{j}").type for j in range(1, 6)] == [
        table_types.field(f"t1_f{j}").type for j in range(1, 6)]  # int32 stays int32


def test_candidate_plan_past_its_budget_hands_over_to_row_ids(tmp_path, monkeypatch):
    """A table whose first rows promise few candidates but that has many: the candidate
    stream stops at its budget and the row-id plan answers, with the same frame."""
    from tally.feature_repo import offline_store_scan

    data = generate_irregular(tmp_path / "irregular", 20_000, 2_000)
    _, expected, _ = _both(data, irregular=True)
    monkeypatch.setattr(offline_store_scan, "CANDIDATES_PER_ENTITY_ROW", 0)
    monkeypatch.setattr(offline_store_scan, "MIN_CANDIDATES", 100)
    plans: dict[str, str] = {}
    entities, ours, stock = _both(data, irregular=True, plans=plans)
    assert plans == {v: "row ids" for v, _ in VIEWS}
    pd.testing.assert_frame_equal(ours, expected)
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)


def test_an_empty_entity_frame_gets_every_column_and_no_row(tmp_path):
    """No entity row: no key table to group, no time range to bound the scan; the frame
    comes back empty with every feature column, as from the stock store."""
    data = generate_irregular(tmp_path / "irregular", 2_000, 200)
    pq.write_table(pq.read_table(data / "entities.parquet").slice(0, 0), data / "entities.parquet")
    plans: dict[str, str] = {}
    _, ours, stock = _both(data, irregular=True, plans=plans)
    assert len(ours) == 0 and list(ours.columns) == list(stock.columns)
    assert len(plans) == len(VIEWS)
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)


def _rekey(data: Path, keys: str) -> None:
    """The tables and entity frame keyed by a string (`a<id>`), or by two columns
    (account_id and region = account_id mod 3, a different region for 1 entity row in 5)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in [f"{v}.parquet" for v, _ in VIEWS] + ["entities.parquet"]:
        table = pq.read_table(data / name)
        key = table.column("account_id")
        if keys == "string":
            table = table.set_column(table.schema.get_field_index("account_id"), "account_id",
                                     pc.binary_join_element_wise("a", key.cast(pa.string()), ""))
        else:
            region = pc.bit_wise_and(key, 3)
            if name == "entities.parquet":
                shift = pc.equal(pc.bit_wise_and(table.column("rid"), 7), 0).cast(pa.int64())
                region = pc.bit_wise_and(pc.add(region, shift), 3)
            table = table.append_column("region", region)
        pq.write_table(table, data / name)


@pytest.mark.parametrize("keys", ["string", "two"])
def test_string_and_two_column_keys_match_stock(tmp_path, keys):
    """The candidate plan joins on the entity frame's distinct keys of any type, one
    column or several."""
    data = generate_irregular(tmp_path / "irregular", 20_000, 2_000)
    _rekey(data, keys)
    plans: dict[str, str] = {}
    entities, ours, stock = _both(data, irregular=True, plans=plans, keys=keys)
    assert plans == {v: "candidates" for v, _ in VIEWS}
    assert ours["rid"].tolist() == entities["rid"].tolist()
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)
    assert 0.2 < ours["t1_f1"].notna().mean() < 0.6


_LOCAL_TIME_FRAME = '''
import sys, warnings
from datetime import timedelta
from pathlib import Path
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
warnings.simplefilter("ignore")
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64
from feast.repo_config import RepoConfig
from tally.feature_repo import offline_store_scan
from tally.feature_repo.offline_store import TallyDuckDBOfflineStore

d = Path(sys.argv[1])
offline_store_scan.MAX_SHARE = float(sys.argv[2])  # 2.0: always candidates; -1: row ids
at = pd.to_datetime(["2024-01-10 12:00:00"])  # naive: UTC, whatever the machine's zone
pq.write_table(pa.table({"k": pa.array([1], pa.int64()),
                         "event_timestamp": pa.array(at, pa.timestamp("us")),
                         "f": [1.0]}), d / "t.parquet")
key = Entity(name="a", join_keys=["k"], value_type=ValueType.INT64)
view = FeatureView(name="v", entities=[key], ttl=timedelta(seconds=1, microseconds=500_000),
                   schema=[Field(name="k", dtype=Int64), Field(name="f", dtype=Float64)],
                   source=FileSource(name="s", path=str(d / "t.parquet"),
                                     timestamp_field="event_timestamp"))
config = RepoConfig(project="p", provider="local", registry=str(d / "r.db"),
                    offline_store={"type": "duckdb"},
                    online_store={"type": "sqlite", "path": str(d / "o.db")},
                    entity_key_serialization_version=3, repo_path=str(d))
times = ["2024-01-10 12:00:01.5", "2024-01-10 12:00:01.500001", "2024-01-10 11:59:59"]
frame = pd.DataFrame({"k": [1, 1, 1],
                      "event_timestamp": pd.to_datetime(times, utc=True, format="ISO8601")})

class Registry:
    def list_on_demand_feature_views(self, *args, **kwargs):
        return []

job = TallyDuckDBOfflineStore.get_historical_features(config, [view], ["v:f"], frame,
                                                       Registry(), "p")
print(list(job.to_df()["f"].fillna(-1)), job.plans["v"])
'''


@pytest.mark.parametrize(("share", "plan"), [(2.0, "candidates"), (-1.0, "row ids")])
def test_naive_times_are_utc_and_ttl_keeps_its_microseconds(tmp_path, share, plan):
    """On a machine whose zone is not UTC, a table's naive times are still UTC in every
    plan (the views' DuckDB cursors inherit the connection's zone), and a ttl of 1.5 s
    reaches exactly 1.5 s back (it was cut to whole seconds)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TZ": "America/New_York"}
    done = subprocess.run([sys.executable, "-c", _LOCAL_TIME_FRAME, str(tmp_path), str(share)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[1.0,", "-1.0,", "-1.0]", *plan.split()]


def test_a_failing_frame_leaves_no_key_table_behind():
    """Key tables are dropped even when building a later one fails."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    from tally.feature_repo.offline_store_join import connect, point_in_time
    from tally.feature_repo.offline_store_sql import ROW, ViewPlan

    con = connect()
    entities = pa.table({"k": [1, 2], "event_timestamp": pa.array(
        [0, 1], pa.timestamp("us", "UTC")), ROW: np.arange(2)})
    plans = [ViewPlan("unused.parquet", [(key, key)], "event_timestamp", None, [("f", "f")],
                      timedelta(days=1), name=name)
             for key, name in (("k", "good"), ("missing", "bad"))]
    with pytest.raises(duckdb.Error):
        point_in_time(con, plans, entities, "event_timestamp")
    assert con.sql("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]


def test_features_put_in_entity_order_keep_every_type_and_null():
    """The numpy gather for numbers and Arrow's take for the rest give what Arrow's take
    with a null-masked index gives: values, their nulls and the rows with no winner."""
    import numpy as np
    import pyarrow as pa
    from tally.feature_repo.offline_store_scan import in_entity_order

    columns = {
        "i32": pa.array([1, None, 3, 4], pa.int32()),
        "u8": pa.array([250, 1, 2, 3], pa.uint8()),
        "f32": pa.array([0.5, 1.5, None, float("nan")], pa.float32()),
        "f64": pa.array([1.0, 2.0, 3.0, 4.0]),
        "text": pa.array(["a", None, "c", "d"]),
        "flag": pa.array([True, False, None, True]),
        "when": pa.array([0, 1, None, 3], pa.timestamp("us", "UTC")),
    }
    values = pa.Table.from_batches([pa.table(columns).slice(0, 2).to_batches()[0],
                                    pa.table(columns).slice(2).to_batches()[0]])
    positions = np.array([3, -1, 0, 2, 1, 3, -1])
    expected = values.take(pa.array(positions, mask=positions < 0))
    got = in_entity_order(values, positions)
    assert got.schema == values.schema
    for name in columns:
        assert got.column(name).is_null().to_pylist() == expected.column(name).is_null(
            ).to_pylist(), name
    assert got.drop_columns(["f32"]).equals(expected.drop_columns(["f32"]))
    f32 = got.column("f32").to_pylist()
    assert f32[0] != f32[0] and f32[1] is None and f32[2] == 0.5  # NaN stays a value
    empty = in_entity_order(values.slice(0, 0), np.array([-1, -1]))
    assert empty.num_rows == 2 and all(c.null_count == 2 for c in empty.columns)
