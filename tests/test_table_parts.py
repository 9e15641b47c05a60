"""A computed table is a folder of parts (tally.catalog.sql.parts): Feast reads it through
its FileSource (the path ends in .parquet) with Tally's offline store and with the stock
DuckDB store alike, and both give the same training frame as the same rows in one file."""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tally.catalog.sql import parts

T0 = pd.Timestamp("2024-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)
DAY_US = 86_400_000_000


def _rows(rng: np.random.Generator, days: range, salt: int) -> pa.Table:
    keys, stamps = np.meshgrid(np.arange(1, 31), np.array(list(days)))
    keep = rng.random(keys.size) > 0.2
    ts = pd.DatetimeIndex(T0 + stamps.ravel()[keep] * DAY)
    frame = pd.DataFrame({"driver_id": keys.ravel()[keep], "event_timestamp": ts,
                          "created_timestamp": ts,
                          "trips": rng.integers(0, 1000, int(keep.sum())) + salt})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.cast(pa.schema([f.with_type(pa.timestamp("us", tz="UTC"))
                                 if pa.types.is_timestamp(f.type) else f for f in table.schema]))


def _write_parts(folder: Path, one_file: Path) -> None:
    """40 days in parts of 5: a full write of 30 days, then days 27..39 replaced."""
    rng = np.random.default_rng(11)
    span = 5 * DAY_US
    first = _rows(rng, range(0, 30), 0)
    newest = int(pa.compute.max(first.column("event_timestamp")).value)  # microseconds
    parts.write_full(iter([first.sort_by([("driver_id", "ascending"),
                                          ("event_timestamp", "ascending")])]),
                     folder, "driver_id", span, newest)
    since = int((T0 + 27 * DAY).value // 1000)
    again = _rows(rng, range(27, 40), 5000)
    parts.replace_range(again, folder, "driver_id", span, since)
    stamps = pa.compute.cast(first.column("event_timestamp"), pa.int64())
    whole = pa.concat_tables([first.filter(pa.compute.less(stamps, since)), again])
    pd.DataFrame(whole.to_pandas()).to_parquet(one_file, index=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64

    root = tmp_path_factory.mktemp("parts_repo")
    (root / "data").mkdir()
    _write_parts(root / "data" / "daily.parquet", root / "data" / "one.parquet")
    (root / "feature_store.yaml").write_text(
        "project: parts_test\nprovider: local\nregistry: data/registry.db\n"
        "offline_store:\n  type: tally.feature_repo.offline_store.TallyDuckDBOfflineStore\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    views = [FeatureView(name=name, entities=[driver], ttl=timedelta(days=2),
                         schema=[Field(name="trips", dtype=Int64)],
                         source=FileSource(name=f"{name}_src", path=str(root / "data" / path),
                                           timestamp_field="event_timestamp",
                                           created_timestamp_column="created_timestamp"))
             for name, path in (("parts", "daily.parquet"), ("one", "one.parquet"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = FeatureStore(repo_path=str(root))
        store.apply([driver, *views])
    return root, store


def _entities() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    ts = T0 + pd.to_timedelta(rng.integers(-86400, 42 * 86400, 500), unit="s")
    return pd.DataFrame({"driver_id": rng.integers(1, 34, 500), "event_timestamp": ts,
                         "rid": np.arange(500)})


def test_the_folder_has_parts_and_reads_whole(repo) -> None:
    root, _ = repo
    found = parts.parts_of(root / "data" / "daily.parquet")
    assert len(found) >= 3 and found[0].start == 0
    assert all(p.start % (5 * DAY_US) == 0 for p in found[1:])
    assert parts.table_statistics(root / "data" / "daily.parquet", ["trips"]).rows == len(
        pd.read_parquet(root / "data" / "one.parquet"))


def test_feast_reads_the_parts_as_one_table_in_both_stores(repo) -> None:
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    root, store = repo
    frame = _entities()
    ours = {name: store.get_historical_features(entity_df=frame, features=[f"{name}:trips"]
                                                ).to_df() for name in ("parts", "one")}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stock = DuckDBOfflineStore.get_historical_features(
                store.config, [store.get_feature_view("parts")], ["parts:trips"], frame.copy(),
                store.registry, store.project).to_df()
    finally:
        os.chdir(cwd)
    stock = stock.sort_values("rid", kind="stable").reset_index(drop=True)
    assert ours["parts"]["trips"].notna().sum() > 200
    pd.testing.assert_series_equal(ours["parts"]["trips"], ours["one"]["trips"])
    pd.testing.assert_frame_equal(ours["parts"], stock, check_dtype=False)


def test_a_part_written_chunk_by_chunk_has_whole_row_groups(tmp_path: Path) -> None:
    """The kernel hands the writer chunks that never end on a row group's edge; the part
    still has full row groups but for its last (not a short group after every flush),
    and holds every row in order."""
    import pyarrow.parquet as pq

    n = 3 * parts.ROW_GROUP_SIZE + 1000
    stamps = pa.array(np.full(n, DAY_US), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table({"driver_id": np.arange(n), "event_timestamp": stamps,
                      "created_timestamp": stamps, "trips": np.arange(n) * 0.5})
    chunk = 65_536
    chunks = (table.slice(i, chunk) for i in range(0, n, chunk))
    written = tmp_path / "t.parquet"
    assert parts.write_full(chunks, written, "driver_id", 5 * DAY_US, None) == n
    meta = pq.ParquetFile(parts.table_files(written)[0]).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [parts.ROW_GROUP_SIZE] * 3 + [1000]
    assert pq.read_table(written).column("driver_id").to_pylist() == list(range(n))
