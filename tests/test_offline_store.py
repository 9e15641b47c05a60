"""Differential tests: Tally's offline store against Feast's stock DuckDB store, on the
same generated data and the same registered feature views."""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("feast")

T0 = pd.Timestamp("2024-03-01", tz="UTC")
DAY = pd.Timedelta(days=1)
KEYS = list(range(1, 41))  # features exist for 1..40; entity rows also ask for 41..45


def _write_data(root: Path) -> None:
    rng = np.random.default_rng(7)
    data = root / "data"
    data.mkdir(parents=True)
    # Tally-like daily table: aligned snapshots, gaps, and repeated (key, day) rows whose
    # created timestamp decides (created ties on the event timestamp).
    rows = []
    for key in KEYS:
        for day in range(20):
            if rng.random() < 0.25:
                continue
            ts = T0 + day * DAY
            rows.append((key, ts, ts, int(rng.integers(0, 1000)), float(rng.random())))
            if rng.random() < 0.15:
                rows.append((key, ts, ts + pd.Timedelta(hours=3), int(rng.integers(0, 1000)),
                             float(rng.random())))
    daily = pd.DataFrame(rows, columns=["driver_id", "event_timestamp", "created_timestamp",
                                        "trips", "rating"])
    daily.sample(frac=1, random_state=1).to_parquet(data / "daily.parquet", index=False)
    # raw events: unaligned timestamps, time zone naive (read as UTC), no created column
    n = 600
    raw = pd.DataFrame({
        "driver_id": rng.integers(1, 31, n),
        "ts": (T0 + pd.to_timedelta(rng.integers(0, 20 * 86400, n), unit="s")).tz_localize(None),
        "speed": rng.random(n),
    })
    raw.to_parquet(data / "raw.parquet", index=False)
    # column view with a field mapping and ttl 0 (no lower bound)
    lic = pd.DataFrame({
        "driver_id": np.repeat(np.arange(1, 21), 3),
        "ts": T0 + pd.to_timedelta(rng.integers(0, 20 * 24, 60), unit="h"),
        "seats_raw": rng.integers(1, 50, 60),
    })
    lic.to_parquet(data / "licenses.parquet", index=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    root = tmp_path_factory.mktemp("offline_repo")
    _write_data(root)
    (root / "feature_store.yaml").write_text(
        "project: offline_test\nprovider: local\nregistry: data/registry.db\n"
        "offline_store:\n  type: tally.feature_repo.offline_store.TallyDuckDBOfflineStore\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "entity_key_serialization_version: 3\n")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    views = [
        FeatureView(name="daily", entities=[driver], ttl=timedelta(days=2),
                    schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float64)],
                    source=FileSource(name="daily_src", path="data/daily.parquet",
                                      timestamp_field="event_timestamp",
                                      created_timestamp_column="created_timestamp")),
        FeatureView(name="raw", entities=[driver], ttl=timedelta(hours=6),
                    schema=[Field(name="speed", dtype=Float64)],
                    source=FileSource(name="raw_src", path=str(root / "data/raw.parquet"),
                                      timestamp_field="ts")),
        FeatureView(name="licenses", entities=[driver], ttl=timedelta(0),
                    schema=[Field(name="seats", dtype=Int64)],
                    source=FileSource(name="lic_src", path=str(root / "data/licenses.parquet"),
                                      timestamp_field="ts",
                                      field_mapping={"seats_raw": "seats"})),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = FeatureStore(repo_path=str(root))
        store.apply([driver, *views])
    return root, store


REFS = ["daily:trips", "daily:rating", "raw:speed", "licenses:seats"]


def _entities(seed: int = 3, n: int = 400, naive: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = T0 + pd.to_timedelta(rng.integers(-86400, 23 * 86400, n), unit="s")
    frame = pd.DataFrame({"driver_id": rng.integers(1, 46, n), "event_timestamp": ts,
                          "label": rng.integers(0, 2, n)})
    # exact edges of the daily view's ttl (2 days) and of its snapshots
    edges = [T0 + 5 * DAY, T0 + 7 * DAY, T0 + 7 * DAY + pd.Timedelta(seconds=1),
             T0 + 3 * DAY - pd.Timedelta(microseconds=1)]
    extra = pd.DataFrame({"driver_id": [k for k in (1, 2, 3) for _ in edges],
                          "event_timestamp": edges * 3, "label": 9})
    frame = pd.concat([frame, extra, frame.iloc[:25], extra], ignore_index=True)  # duplicates
    frame["rid"] = np.arange(len(frame))
    if naive:
        frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize(None)
    return frame


def _stock(root: Path, store, entity_df: pd.DataFrame, refs: list[str] = REFS,
           **kwargs) -> pd.DataFrame:
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    views = [store.get_feature_view(n) for n in dict.fromkeys(r.split(":")[0] for r in refs)]
    cwd = os.getcwd()
    os.chdir(root)  # the stock store reads relative paths against the current folder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = DuckDBOfflineStore.get_historical_features(
                store.config, views, refs, entity_df.copy(), store.registry, store.project,
                **kwargs).to_df()
    finally:
        os.chdir(cwd)
    return out.sort_values("rid", kind="stable").reset_index(drop=True)


def _tally(store, entity_df, refs: list[str] = REFS, **kwargs) -> pd.DataFrame:
    return store.get_historical_features(entity_df=entity_df, features=refs,
                                         **kwargs).to_df()


def _same(ours: pd.DataFrame, stock: pd.DataFrame) -> None:
    assert list(ours.columns) == list(stock.columns)
    assert ours["rid"].tolist() == list(range(len(ours)))  # entity order kept
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)


def test_matches_stock_store(repo, tmp_path, monkeypatch):
    root, store = repo
    frame = _entities()
    monkeypatch.chdir(tmp_path)  # another folder: relative paths resolve against the repo
    ours = _tally(store, frame)
    stock = _stock(root, store, frame)
    _same(ours, stock)
    # the data exercises what it claims to: hits, misses, ties, expiry
    assert ours["trips"].notna().sum() > 100 and ours["trips"].isna().sum() > 20
    assert ours["speed"].notna().sum() > 10 and ours["seats"].notna().sum() > 50
    assert ours[ours["driver_id"] > 40][["trips", "speed", "seats"]].isna().all().all()


def test_ttl_edge_and_created_ties(repo):
    root, store = repo
    daily = pd.read_parquet(root / "data" / "daily.parquet")
    ttl = pd.Timedelta(days=2)
    dup = daily[daily.duplicated(["driver_id", "event_timestamp"], keep=False)]

    def alone_after(row) -> bool:  # no newer row of that key until a second past the ttl
        later = daily[(daily.driver_id == row.driver_id)
                      & (daily.event_timestamp > row.event_timestamp)
                      & (daily.event_timestamp <= row.event_timestamp + ttl
                         + pd.Timedelta(seconds=1))]
        return later.empty

    candidates = [row for row in dup.itertuples() if alone_after(row)]
    assert candidates, "the generated data must hold a tied row with nothing after it"
    key, ts = candidates[0].driver_id, candidates[0].event_timestamp
    newest = dup[(dup.driver_id == key) & (dup.event_timestamp == ts)].sort_values(
        "created_timestamp").iloc[-1]
    frame = pd.DataFrame({"driver_id": [key] * 3,
                          "event_timestamp": [ts, ts + ttl, ts + ttl + pd.Timedelta(seconds=1)],
                          "rid": [0, 1, 2]})
    ours = _tally(store, frame, ["daily:trips"])
    _same(ours, _stock(root, store, frame, ["daily:trips"]))
    assert ours["trips"].iloc[0] == newest["trips"]  # created timestamp breaks the tie
    # the row at ts is still valid exactly at ts + ttl, and not a second later
    assert ours["trips"].iloc[1] == newest["trips"]
    assert pd.isna(ours["trips"].iloc[2])


def test_naive_timestamps_full_names_and_created_filter(repo):
    root, store = repo
    naive = _entities(seed=5, naive=True)
    _same(_tally(store, naive), _stock(root, store, naive))
    aware = _entities(seed=5)
    pd.testing.assert_frame_equal(_tally(store, naive).drop(columns="event_timestamp"),
                                  _tally(store, aware).drop(columns="event_timestamp"))
    _same(_tally(store, aware, full_feature_names=True),
          _stock(root, store, aware, full_feature_names=True))
    from tally.feature_repo.offline_store import TallyDuckDBOfflineStore

    refs = ["daily:trips", "daily:rating"]
    ours = TallyDuckDBOfflineStore.get_historical_features(
        store.config, [store.get_feature_view("daily")], refs, aware, store.registry,
        store.project, filter_by_created_timestamp=True).to_df()
    _same(ours, _stock(root, store, aware, refs, filter_by_created_timestamp=True))


def test_sql_entity_frame(repo, tmp_path):
    root, store = repo
    frame = _entities(seed=11)
    path = tmp_path / "entities.parquet"
    frame.to_parquet(path, index=False)
    ours = _tally(store, f"SELECT * FROM read_parquet('{path}')")
    _same(ours, _stock(root, store, frame))


def test_pull_latest_and_materialize_match_stock(repo):
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
    from tally.feature_repo.offline_store import TallyDuckDBOfflineStore

    root, store = repo
    view = store.get_feature_view("daily")
    args = (store.config, view.batch_source, ["driver_id"], ["trips", "rating"],
            "event_timestamp", "created_timestamp", datetime(2024, 3, 2, tzinfo=UTC),
            datetime(2024, 3, 12, tzinfo=UTC))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stock = DuckDBOfflineStore.pull_latest_from_table_or_query(*args).to_arrow()
            stock_every = DuckDBOfflineStore.pull_all_from_table_or_query(*args).to_arrow()
    finally:
        os.chdir(cwd)
    ours = TallyDuckDBOfflineStore.pull_latest_from_table_or_query(*args).to_arrow()
    assert ours.column_names == stock.column_names
    # same rows; the stock store returns this file's timestamps as strings, Tally as
    # timestamps, so compare them as instants
    def rows(table):
        order = [(c, "ascending") for c in ("driver_id", "event_timestamp",
                                            "created_timestamp") if c in table.column_names]
        return [{k: pd.Timestamp(v) if k.endswith("timestamp") else v for k, v in r.items()}
                for r in table.sort_by(order).to_pylist()]

    assert rows(ours) == rows(stock) and len(rows(ours)) > 20
    a = ours.sort_by("driver_id").to_pandas()
    every = TallyDuckDBOfflineStore.pull_all_from_table_or_query(*args).to_arrow()
    assert every.num_rows > ours.num_rows
    assert every.column_names == stock_every.column_names
    assert rows(every) == rows(stock_every)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.materialize(start_date=args[6], end_date=args[7], feature_views=["daily"])
        online = store.get_online_features(
            features=["daily:trips", "daily:rating"],
            entity_rows=[{"driver_id": int(k)} for k in a["driver_id"]]).to_df()
    assert online["trips"].tolist() == a["trips"].tolist()
    assert online["rating"].tolist() == pytest.approx(a["rating"].tolist())


# -- the rest of the OfflineStore interface, each against the stock store ------------------
def _stock_store(root: Path):
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(project="offline_test", provider="local", registry="data/registry.db",
                        offline_store={"type": "duckdb"},
                        online_store={"type": "sqlite", "path": "data/online.db"},
                        entity_key_serialization_version=3, repo_path=root)
    return FeatureStore(repo_path=str(root), config=config)


def _in(root: Path):
    """The stock store reads relative paths against the current folder."""
    class Chdir:
        def __enter__(self):
            self.cwd = os.getcwd()
            os.chdir(root)
            warnings.simplefilter("ignore")

        def __exit__(self, *exc):
            os.chdir(self.cwd)

    return Chdir()


@pytest.mark.parametrize("suffix", [".parquet", ""])
def test_saved_dataset_round_trip_matches_stock(repo, tmp_path, suffix):
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    root, store = repo
    frame = _entities(seed=13, n=120)
    results = {}
    for name, fs in (("tally", store), ("stock", _stock_store(root))):
        with _in(root):
            job = fs.get_historical_features(entity_df=frame, features=REFS)
            fs.create_saved_dataset(from_=job, name=f"ds_{name}{suffix[1:]}",
                                    storage=SavedDatasetFileStorage(
                                        path=str(tmp_path / f"{name}{suffix}")))
            back = fs.get_saved_dataset(f"ds_{name}{suffix[1:]}").to_df()
        results[name] = back
    ours, stock = results["tally"], results["stock"]
    assert sorted(ours.columns) == sorted(stock.columns)
    order = sorted(stock.columns)  # a saved dataset reads back in no particular order
    ours, stock = (f[order].sort_values(order).reset_index(drop=True) for f in (ours, stock))
    assert len(ours) == len(frame) and ours["trips"].notna().sum() > 20
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)


def test_offline_write_batch_matches_stock(repo, tmp_path, monkeypatch):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    root, store = repo
    base = pd.read_parquet(root / "data" / "daily.parquet").head(30)
    new = base.head(5).assign(trips=lambda d: d.trips + 10_000)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    files = {}
    for name, fs in (("tally", store), ("stock", _stock_store(root))):
        files[name] = root / "data" / f"written_{name}.parquet"
        base.to_parquet(files[name], index=False)
        view = FeatureView(name=f"written_{name}", entities=[driver], ttl=timedelta(days=2),
                           schema=[Field(name="trips", dtype=Int64),
                                   Field(name="rating", dtype=Float64)],
                           source=FileSource(name=f"written_{name}_src",
                                             path=f"data/written_{name}.parquet",
                                             timestamp_field="event_timestamp",
                                             created_timestamp_column="created_timestamp"))
        with _in(root):
            fs.apply([driver, view])
            fs.write_to_offline_store(f"written_{name}", new[list(base.columns)])
    monkeypatch.chdir(tmp_path)
    cols = list(base.columns)  # the stock writer's row order varies with its threads
    ours, stock = (pd.read_parquet(files[n]).sort_values(cols).reset_index(drop=True)
                   for n in ("tally", "stock"))
    assert len(ours) == 35 and (ours["trips"] >= 10_000).sum() == 5
    # the stock writer turns the timestamps into strings; Tally keeps the file's types
    assert str(ours["event_timestamp"].dtype).startswith("datetime64")
    stock = stock.assign(**{c: pd.to_datetime(stock[c], utc=True)
                            for c in ("event_timestamp", "created_timestamp")})
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)


def test_write_logged_features_matches_stock(repo, tmp_path):
    import pyarrow as pa
    from feast import FeatureService
    from feast.feature_logging import LoggingConfig
    from feast.infra.offline_stores.file_source import FileLoggingDestination
    from tally.feature_repo.offline_store import TallyDuckDBOfflineStore

    root, store = repo
    logs = pa.table({"driver_id": [1, 2, 3], "trips": [4, 5, 6],
                     "__log_timestamp": pd.date_range("2024-03-01", periods=3, tz="UTC")})
    service = FeatureService(name="svc", features=[store.get_feature_view("daily")])
    out = {}
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

    for name, cls in (("tally", TallyDuckDBOfflineStore), ("stock", DuckDBOfflineStore)):
        out[name] = tmp_path / name
        out[name].mkdir()  # the stock writer needs the folder to exist
        config = LoggingConfig(destination=FileLoggingDestination(path=str(out[name])))
        cls.write_logged_features(store.config, logs, service, config, store.registry)
        cls.write_logged_features(store.config, logs.slice(1), service, config, store.registry)
    ours, stock = (pd.read_parquet(out[n]).sort_values(["driver_id"]).reset_index(drop=True)
                   for n in ("tally", "stock"))
    assert len(list(out["tally"].iterdir())) == 2 and len(ours) == 5
    pd.testing.assert_frame_equal(ours, stock, check_dtype=False)


@pytest.mark.parametrize("bounds", [(None, None), ("2024-03-04", None), (None, "2024-03-09"),
                                    ("2024-03-04", "2024-03-04")])
def test_pull_all_time_bounds_match_stock(repo, bounds):
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
    from tally.feature_repo.offline_store import TallyDuckDBOfflineStore

    root, store = repo
    start, end = (pd.Timestamp(b, tz="UTC").to_pydatetime() if b else None for b in bounds)
    args = (store.config, store.get_feature_view("daily").batch_source, ["driver_id"],
            ["trips", "rating"], "event_timestamp", "created_timestamp", start, end)
    with _in(root):
        stock = DuckDBOfflineStore.pull_all_from_table_or_query(*args).to_df()
    ours = TallyDuckDBOfflineStore.pull_all_from_table_or_query(*args).to_df()
    order = ["driver_id", "event_timestamp", "created_timestamp"]
    stock = stock.assign(**{c: pd.to_datetime(stock[c], utc=True) for c in order[1:]})
    assert list(ours.columns) == list(stock.columns) and len(ours) > 0
    pd.testing.assert_frame_equal(ours.sort_values(order).reset_index(drop=True),
                                  stock.sort_values(order).reset_index(drop=True),
                                  check_dtype=False)
