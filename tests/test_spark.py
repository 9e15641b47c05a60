"""Differential test: one project's definitions and data on DuckDB and on Spark (pyspark in
local mode) give identical metric tables, contract results and training frames.

One SparkSession serves the module (local[2], 4 shuffle partitions, UTC); Tally's engine and
Feast's Spark offline store both pick up the active session."""

from __future__ import annotations

import random
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tally.catalog.compute.runner import ComputeOptions, compute
from tally.catalog.spec.loading import load_project

from tests.helpers import REPO
from tests.test_compute_semantics import DEFINITIONS, EPOCH, write_semantics_data

DAY = timedelta(days=1)
SPARK_STORE = "tally.feature_repo.spark_store.TallySparkOfflineStore"
AS_OF = "2025-03-25T00:00:00Z"

CONTRACTS = """
  - name: events
    description: Events.
    owner: p@x.com
    path: data/events.parquet
    entity: shop
    timestamp_field: ts
    contract:
      freshness: 2d
      columns:
        shop_id: {type: int64, nullable: false}
        ts: {type: timestamp, nullable: false}
        value: {type: float64, min: 0, max: 3}
        kind: {type: string, values: [a, b]}
        user_id: {type: string}
      unique: [shop_id, ts, user_id]
"""
MODELS = """
models:
  - {name: shop_model, description: d, owner: o@x.com,
     features: [ev_count_3d, ev_users_3d, ev_avg_7d, visits_2d, level, ev_per_visit]}
"""
SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.memory": "1g",
}


def _definitions() -> str:
    head, rest = DEFINITIONS.split("  - name: visits", 1)
    before, _ = head.split("  - name: events", 1)
    text = before + CONTRACTS.lstrip("\n") + "  - name: visits" + rest
    text = text.replace("metrics:\n", "metrics:\n  - {name: ev_max_value_7d, description: d, "
                        "owner: o@x.com, source: events, aggregation: max, expression: value,"
                        " window: 7d, expect: {max: 3, max_null_fraction: 0.1}}\n", 1)
    return text + MODELS


def _data(root: Path) -> None:
    write_semantics_data(root)


def _feature_store_yaml(engine: str) -> str:
    if engine == "duckdb":
        return (REPO / "feature_repo" / "feature_store.yaml").read_text()
    conf = "".join(f"    {k}: \"{v}\"\n" for k, v in SPARK_CONF.items())
    return ("project: tally_spark_test\nprovider: local\nregistry: data/registry.db\n"
            f"offline_store:\n  type: {SPARK_STORE}\n  spark_conf:\n{conf}"
            "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
            "entity_key_serialization_version: 3\n")


def _project(base: Path, engine: str) -> Path:
    root = base / engine
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "defs.yaml").write_text(_definitions())
    _data(root)
    (root / "feature_repo").mkdir()
    (root / "feature_repo" / "feature_store.yaml").write_text(_feature_store_yaml(engine))
    if engine == "spark":
        conf = "".join(f"  {k}: \"{v}\"\n" for k, v in SPARK_CONF.items())
        (root / "tally.yaml").write_text(f"engine: spark\nspark_conf:\n{conf}")
    return root


@pytest.fixture(scope="module")
def spark():
    import pyspark  # noqa: F401 - the spark extra is part of the test install
    from tally.catalog.sql.engines import check_spark_available

    check_spark_available()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("tally-tests")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def projects(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("engines")
    roots = {engine: _project(base, engine) for engine in ("duckdb", "spark")}
    compute(load_project(roots["duckdb"]))
    # Spark: a first run up to day 8, then an incremental run to the end
    spark_project = load_project(roots["spark"])
    compute(spark_project, ComputeOptions(end=(EPOCH + 8 * DAY).date()))
    results = compute(spark_project)
    assert {r.name: r.mode for r in results}["events_1d"] == "incremental"
    return roots


def _loose(table: pa.Table) -> pa.Table:
    """Nullability flags aside (DuckDB infers some NOT NULLs, Spark others), rows in key and
    time order (a table of parts holds them by span, then key)."""
    table = table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))
    if "event_timestamp" not in table.column_names:
        return table
    return table.sort_by([(table.column_names[0], "ascending"),
                          ("event_timestamp", "ascending")])


def test_metric_tables_identical(projects: dict[str, Path]) -> None:
    duck_dir = projects["duckdb"] / "data" / "tables"
    spark_dir = projects["spark"] / "data" / "tables"
    names = sorted(p.name for p in duck_dir.glob("*.parquet"))
    assert names == ["derived_shop_1d.parquet", "events_1d.parquet", "visits_1d.parquet"]
    assert sorted(p.name for p in spark_dir.iterdir()) == names  # one file each, no temp
    for name in names:
        duck, sparked = pq.read_table(duck_dir / name), pq.read_table(spark_dir / name)
        assert _loose(sparked).schema == _loose(duck).schema, name
        assert sparked.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
        assert _loose(sparked).equals(_loose(duck)), name
        assert duck.num_rows > 50


def test_contract_results_identical(projects: dict[str, Path]) -> None:
    from tally.catalog.contracts.checks import check

    reports = {e: check(load_project(root), as_of=AS_OF).to_dict()
               for e, root in projects.items()}
    duck, sparked = reports["duckdb"], reports["spark"]
    assert not duck["ok"]  # value max, kind values? user_id type and unique fail
    failing = {(r["rule"], r["column"]) for s in duck["sources"] for r in s["rules"]
               if not r["ok"]}
    assert ("max", "value") in failing and ("column_type", "user_id") in failing
    assert ("unique", "shop_id, ts, user_id") in failing
    assert ("freshness", "ts") in failing
    assert duck["metrics"] and duck["metrics"][0]["rules"]
    assert sparked == duck


def _entity_rows() -> pd.DataFrame:
    rng = random.Random(5)
    rows = [{"shop_id": rng.randint(1, 8),
             "event_timestamp": EPOCH + timedelta(hours=rng.randint(0, 24 * 24)),
             "label": rng.randint(0, 1)} for _ in range(120)]
    rows += [{"shop_id": 1, "event_timestamp": EPOCH + 10 * DAY, "label": 0},  # on a snapshot
             {"shop_id": 7, "event_timestamp": EPOCH + 11 * DAY, "label": 1}]
    rows += rows[:3]  # duplicated entity rows stay duplicated, not multiplied
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def test_training_frames_and_online_features_identical(projects: dict[str, Path]) -> None:
    from tally.catalog.pipeline import Gate
    from tally.feature_repo.registry import apply
    from tally.feature_repo.serving import materialize, training_frame

    allowed = Gate(as_of=AS_OF, allow_violations=True)  # its contracts fail on purpose
    frames = {}
    online = {}
    for engine, root in projects.items():
        project = load_project(root)
        apply(project, allowed)
        frame = training_frame(_entity_rows(), model="shop_model", project=project)
        frames[engine] = frame  # in entity-frame order on both engines
        materialize(project, start=EPOCH - 30 * DAY, end=EPOCH + 40 * DAY, run_gate=allowed)
        from tally.feature_repo.registry import open_store

        online[engine] = open_store(project).get_online_features(
            features=["events_1d:ev_count_3d", "visits_1d:visits_2d", "levels_columns:level"],
            entity_rows=[{"shop_id": i} for i in range(1, 9)]).to_dict()
    duck, sparked = frames["duckdb"], frames["spark"]
    assert list(sparked.columns) == list(duck.columns)
    assert len(duck) == len(sparked) == len(_entity_rows())
    assert duck["ev_count_3d"].notna().sum() > 20
    for column in duck.columns:
        if column == "event_timestamp":
            assert (pd.to_datetime(sparked[column], utc=True)
                    == pd.to_datetime(duck[column], utc=True)).all()
            continue
        pd.testing.assert_series_equal(sparked[column].astype("float64"),
                                       duck[column].astype("float64"), check_names=True)
    assert online["spark"] == online["duckdb"]


def _direct_frame(root: Path, entity_df: object) -> pd.DataFrame:
    """Feast's own get_historical_features on the project's store, no Tally code above it."""
    from tally.feature_repo.registry import open_store
    from tally.feature_repo.serving import feature_refs

    project = load_project(root)
    store = open_store(project)
    refs = feature_refs(project, "shop_model", None)
    frame: pd.DataFrame = store.get_historical_features(entity_df=entity_df,
                                                        features=refs).to_df()
    return frame


def _comparable(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame[columns].reset_index(drop=True)
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]")
    return out.astype({c: "float64" for c in columns if c not in ("event_timestamp",)})


def test_direct_feast_call_keeps_entity_order_and_duplicates(
        projects: dict[str, Path], spark) -> None:
    """FeatureStore.get_historical_features itself, on a Spark project: one row per entity
    row, in the entity frame's order, as the DuckDB store gives (Feast's stock Spark store
    returns them in no order and repeats entity rows that tie)."""
    from tally.catalog.pipeline import Gate
    from tally.feature_repo.registry import apply

    for root in projects.values():
        apply(load_project(root), Gate(as_of=AS_OF, allow_violations=True))
    rows = _entity_rows()
    rows = pd.concat([rows, rows.iloc[10:40]]).sample(frac=1, random_state=3)
    rows = rows.reset_index(drop=True)  # shuffled, with 33 repeated (key, time) rows
    assert rows.duplicated(["shop_id", "event_timestamp"]).sum() >= 33
    duck = _direct_frame(projects["duckdb"], rows)
    assert len(duck) == len(rows) and duck["ev_count_3d"].notna().sum() > 20
    columns = list(duck.columns)
    assert (duck[["shop_id", "label"]].to_numpy() == rows[["shop_id", "label"]].to_numpy()
            ).all()
    spark.createDataFrame(rows).createOrReplaceTempView("tally_test_entities")
    entity_frames = {"pandas": rows, "spark": spark.createDataFrame(rows),
                     "spark sql": "SELECT * FROM tally_test_entities"}
    for kind, entity_df in entity_frames.items():
        sparked = _direct_frame(projects["spark"], entity_df)
        assert sorted(sparked.columns) == sorted(columns), kind
        pd.testing.assert_frame_equal(_comparable(sparked, columns),
                                      _comparable(duck, columns), obj=kind)
    assert list(rows.columns) == ["shop_id", "event_timestamp", "label"]  # not modified


def test_stock_spark_type_is_refused_with_file_line_and_the_new_type(
        projects: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import invoke

    root = tmp_path / "old"
    shutil.copytree(projects["spark"] / "metrics", root / "metrics")
    shutil.copy(projects["spark"] / "tally.yaml", root / "tally.yaml")
    (root / "feature_repo").mkdir()
    text = (projects["spark"] / "feature_repo" / "feature_store.yaml").read_text()
    (root / "feature_repo" / "feature_store.yaml").write_text(
        text.replace(f"type: {SPARK_STORE}", "type: spark"))
    line = text.splitlines().index(f"  type: {SPARK_STORE}") + 1
    result = invoke(["--project", str(root), "plan"], capsys)
    assert result.code == 1 and "Traceback" not in result.stderr
    assert f"feature_store.yaml, line {line}, key offline_store.type" in result.stderr
    assert f"change `spark` to {SPARK_STORE}" in result.stderr


def test_spark_without_pyspark_or_java_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    from tally.catalog.sql.engines import EngineUnavailableError, check_spark_available

    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(EngineUnavailableError, match=r"tally\[spark\].*Java"):
        check_spark_available()
    monkeypatch.delitem(sys.modules, "pyspark")
    import pyspark  # noqa: F401 - the spark extra is part of the test install
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EngineUnavailableError, match=r"Java 17.*tally\[spark\]"):
        check_spark_available()


def test_engine_setting_is_validated_with_file_and_line(tmp_path: Path) -> None:
    from tally.catalog.errors import DefinitionError
    from tally.catalog.spec.config import load_config

    (tmp_path / "tally.yaml").write_text("engine: spark\nspark_conf:\n  spark.master: local[1]\n"
                                         "  spark.executor.instances: 2\n")
    config = load_config(tmp_path).config
    assert config.engine == "spark"
    assert config.spark_conf == {"spark.master": "local[1]", "spark.executor.instances": "2"}
    (tmp_path / "tally.yaml").write_text("allowed_data_dirs: []\nengine: postgres\n")
    with pytest.raises(DefinitionError, match=r"tally.yaml:2: engine"):
        load_config(tmp_path)


def test_funnel_tables_identical_and_as_the_reference(spark, tmp_path: Path) -> None:
    """Every funnel variant of tests/test_funnels.py on Spark: the same table as DuckDB's,
    both held to the brute-force reference; then a ranged rerun keeps the rows outside."""
    from tests.test_funnels import (
        VARIANTS,
        definitions,
        generate,
        read_table,
        reference,
        write_data,
    )

    crm, billing = generate(random.Random(7))
    roots = {}
    for engine in ("duckdb", "spark"):
        root = tmp_path / engine
        (root / "metrics").mkdir(parents=True)
        (root / "metrics" / "defs.yaml").write_text(definitions())
        write_data(root, crm, billing)
        if engine == "spark":
            conf = "".join(f"  {k}: \"{v}\"\n" for k, v in SPARK_CONF.items())
            (root / "tally.yaml").write_text(f"engine: spark\nspark_conf:\n{conf}")
        compute(load_project(root))
        roots[engine] = root
    for name in VARIANTS:
        table = f"funnel_{name}.parquet"
        duck = pq.read_table(roots["duckdb"] / "data" / "tables" / table)
        sparked = pq.read_table(roots["spark"] / "data" / "tables" / table)
        assert _loose(sparked).equals(_loose(duck)), name
        expected = reference(name, crm, billing)
        assert read_table(roots["spark"] / "data" / "tables" / table, "shop_id") == expected
    spark_project = load_project(roots["spark"])
    before = pq.read_table(roots["spark"] / "data" / "tables" / "funnel_f_seq.parquet")
    results = compute(spark_project, ComputeOptions(start=(EPOCH + 6 * DAY).date(),
                                                    end=(EPOCH + 9 * DAY).date()))
    assert {r.name: r.mode for r in results}["funnel_f_seq"] == "incremental"
    after = pq.read_table(roots["spark"] / "data" / "tables" / "funnel_f_seq.parquet")
    assert _loose(after).equals(_loose(before))
