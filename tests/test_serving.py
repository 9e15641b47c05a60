"""Compute -> apply -> training frames and online features through a real Feast repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import REPO, run_tally

ACCOUNTS = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project on small generated data, computed and applied once."""
    from tally.feature_repo.demo_data import generate

    root = tmp_path_factory.mktemp("served")
    shutil.copytree(REPO / "metrics", root / "metrics")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    shutil.copy(REPO / "feature_repo" / "definitions.py", root / "feature_repo")
    generate(root / "data", accounts=ACCOUNTS, seed=3, end=date(2026, 1, 1))
    for args in (["compute", "--as-of", "2026-01-01"], ["apply", "--as-of", "2026-01-01"]):
        result = run_tally(["--project", str(root), *args])
        assert result.code == 0, result.stderr
    return root


def _entity_rows(root: Path, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 300
    frame = pd.DataFrame({
        "account_id": rng.integers(1, ACCOUNTS + 12, n),  # some accounts absent everywhere
        "event_timestamp": pd.Timestamp("2025-01-01", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 400 * 24, n), unit="h"),
        "label": rng.integers(0, 2, n),
    })
    # exact ttl edges of the 31-day views and exact snapshot times; duplicated rows
    edges = pd.DataFrame({"account_id": [1, 1, 2, 2], "label": [0, 1, 0, 1],
                          "event_timestamp": pd.to_datetime(
                              ["2025-03-01", "2025-04-01", "2025-06-10", "2025-06-10"],
                              utc=True)})
    return pd.concat([frame, edges, frame.head(5)], ignore_index=True)


def _reference(root: Path, entities: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Feast's point-in-time rule spelled out: newest row with t - ttl <= ts <= t."""
    from tally.catalog.spec.loading import load_project
    from tally.catalog.spec.tables import table_of

    project = load_project(root)
    out = entities.copy()
    for feature in features:
        spec = table_of(project, feature)
        table = pd.read_parquet(spec.path(project))
        if spec.kind == "column":
            source = project.sources[spec.source]
            table = table.rename(columns={source.timestamp_field: "event_timestamp",
                                          project.metrics[feature].expression: feature})
            table["created_timestamp"] = (table[source.created_timestamp_field]
                                          if source.created_timestamp_field
                                          else table["event_timestamp"])
        ttl = spec.ttl(project)
        table["event_timestamp"] = table["event_timestamp"].astype("datetime64[ns, UTC]")
        latest = (table.sort_values(["event_timestamp", "created_timestamp"])
                  .drop_duplicates(["account_id", "event_timestamp"], keep="last")
                  [["account_id", "event_timestamp", feature]]
                  .rename(columns={"event_timestamp": "__feature_ts"}))
        left = out[["account_id", "event_timestamp"]].assign(__row=range(len(out)))
        left["event_timestamp"] = left["event_timestamp"].astype("datetime64[ns, UTC]")
        joined = pd.merge_asof(left.sort_values("event_timestamp"), latest.sort_values(
            "__feature_ts"), left_on="event_timestamp", right_on="__feature_ts",
            by="account_id", direction="backward", allow_exact_matches=True)
        joined = joined.sort_values("__row")
        values = joined[feature].where(
            joined["__feature_ts"] >= joined["event_timestamp"] - ttl if ttl is not None
            else joined["__feature_ts"].notna()).tolist()
        out[feature] = values
    return out


FEATURES = ["crm_monthly_active_users", "crm_logins_30d", "crm_seat_count",
            "crm_active_user_ratio", "commerce_gmv_30d", "commerce_avg_order_value_90d"]


def test_training_frame_matches_the_point_in_time_rule(served: Path) -> None:
    from tally.feature_repo.serving import training_frame

    entities = _entity_rows(served, seed=1)
    frame = training_frame(entities, features=FEATURES, project=served)
    assert list(frame.columns) == ["account_id", "event_timestamp", "label", *FEATURES]
    assert frame["account_id"].tolist() == entities["account_id"].tolist()
    assert frame["label"].tolist() == entities["label"].tolist()
    expected = _reference(served, entities, FEATURES)
    for feature in FEATURES:
        got = pd.to_numeric(frame[feature], errors="coerce").to_numpy(dtype=float)
        want = pd.to_numeric(expected[feature], errors="coerce").to_numpy(dtype=float)
        np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True, err_msg=feature)
    assert frame["crm_logins_30d"].notna().any() and frame["crm_logins_30d"].isna().any()


def test_tally_store_equals_feast_stock_duckdb_store(served: Path, tmp_path: Path) -> None:
    """The same frame through Feast's stock DuckDB store, on the same registry objects."""
    from feast import FeatureStore
    from tally.catalog.pipeline import Gate
    from tally.catalog.spec.loading import load_project
    from tally.feature_repo.registry import apply
    from tally.feature_repo.serving import feature_refs, training_frame

    stock = tmp_path / "stock"
    shutil.copytree(served / "metrics", stock / "metrics")
    shutil.copytree(served / "data", stock / "data")
    (stock / "feature_repo").mkdir()
    (stock / "feature_repo" / "feature_store.yaml").write_text(
        (served / "feature_repo" / "feature_store.yaml").read_text().replace(
            "type: tally.feature_repo.offline_store.TallyDuckDBOfflineStore", "type: duckdb"))
    project = load_project(stock)
    apply(project, Gate(as_of="2026-01-01"))  # the generated data ends there
    entities = _entity_rows(served, seed=2)
    ours = training_frame(entities, model="expansion_forecast", project=served)
    store = FeatureStore(repo_path=str(stock / "feature_repo"))
    refs = feature_refs(project, "expansion_forecast", None)
    keyed = entities.assign(__row=range(len(entities)))
    theirs = store.get_historical_features(entity_df=keyed, features=refs).to_df()
    theirs = theirs.sort_values("__row").drop(columns="__row").reset_index(drop=True)
    theirs = theirs[list(ours.columns)]
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)


def test_apply_expands_variables_in_feature_store_yaml(served: Path, tmp_path: Path,
                                                       monkeypatch) -> None:
    """Feast's own loader expands ${VAR}s; apply's staged registry must read the same."""
    from tally.catalog.pipeline import Gate
    from tally.catalog.spec.loading import load_project
    from tally.feature_repo.registry import apply

    copy = tmp_path / "vars"
    shutil.copytree(served / "metrics", copy / "metrics")
    shutil.copytree(served / "data", copy / "data")
    (copy / "feature_repo").mkdir()
    registries = tmp_path / "registries"
    monkeypatch.setenv("TALLY_TEST_REGISTRIES", str(registries))
    (copy / "feature_repo" / "feature_store.yaml").write_text(
        (served / "feature_repo" / "feature_store.yaml").read_text().replace(
            "registry: data/registry.db", "registry: ${TALLY_TEST_REGISTRIES}/registry.db"))
    apply(load_project(copy), Gate(as_of="2026-01-01"))
    assert (registries / "registry.db").is_file()
    assert not list((copy / "feature_repo").glob("$*"))


def test_frame_from_another_folder_and_sql_entities(served: Path, tmp_path: Path) -> None:
    from tally.feature_repo.serving import training_frame

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        frame = training_frame(
            "SELECT 5 AS account_id, TIMESTAMPTZ '2025-06-01 00:00:00+00' AS event_timestamp",
            features=["crm_logins_30d"], project=served)
    finally:
        os.chdir(here)
    assert frame["account_id"].tolist() == [5]
    assert frame["crm_logins_30d"].notna().all()


def test_cli_training_frame_csv_and_errors(served: Path, tmp_path: Path) -> None:
    entities = _entity_rows(served, seed=4).head(40)
    source = tmp_path / "entities.csv"
    entities.assign(event_timestamp=entities["event_timestamp"].dt.tz_localize(None)).to_csv(
        source, index=False)  # naive timestamps: read as UTC
    out = tmp_path / "frame.csv"
    ok = run_tally(["--project", str(served), "training-frame", "--entities", str(source),
                    "--model", "churn_risk", "--out", str(out)])
    assert ok.code == 0, ok.stderr
    frame = pd.read_csv(out)
    assert frame["account_id"].tolist() == entities["account_id"].tolist()
    assert "label" in frame.columns and "crm_monthly_active_users" in frame.columns
    bad = tmp_path / "bad.csv"
    entities.drop(columns=["account_id"]).to_csv(bad, index=False)
    missing = run_tally(["--project", str(served), "training-frame", "--entities", str(bad),
                         "--features", "crm_logins_30d", "--out", str(tmp_path / "x.parquet")])
    assert missing.code == 1 and "account_id" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "x.parquet").exists()
    unknown = run_tally(["--project", str(served), "training-frame", "--entities", str(source),
                         "--model", "no_such_model", "--out", str(tmp_path / "y.parquet")])
    assert unknown.code == 1 and "unknown model" in unknown.stderr
    both = run_tally(["--project", str(served), "training-frame", "--entities", str(source),
                      "--out", str(tmp_path / "z.parquet")])
    assert both.code == 2


def test_feast_cli_sees_tally_objects_and_agrees_with_tally_apply(served: Path) -> None:
    feast = Path(sys.executable).with_name("feast")
    repo = served / "feature_repo"
    views = subprocess.run([str(feast), "-c", str(repo), "feature-views", "list"],
                           capture_output=True, text=True, check=True).stdout
    assert "crm_logins_1d" in views and "derived_account_1d" in views
    services = subprocess.run([str(feast), "-c", str(repo), "feature-services", "list"],
                              capture_output=True, text=True, check=True).stdout
    assert "churn_risk" in services and "expansion_forecast" in services
    applied = subprocess.run([str(feast), "-c", str(repo), "apply"], capture_output=True,
                             text=True, cwd=served)
    assert applied.returncode == 0, applied.stderr
    plan = run_tally(["--project", str(served), "plan", "--json"])
    import json

    changes = [c for c in json.loads(plan.stdout)["feast"] if c["action"] != "keep"]
    assert changes == []


def test_shared_features_come_from_one_view(served: Path) -> None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(served / "feature_repo"))
    where: dict[str, set[str]] = {}
    for service in store.list_feature_services():
        for projection in service.feature_view_projections:
            for feature in projection.features:
                where.setdefault(feature.name, set()).add(projection.name)
    assert where["crm_monthly_active_users"] == {"crm_logins_1d"}
    assert where["commerce_gmv_30d"] == {"commerce_orders_1d"}
    view = store.get_feature_view("crm_logins_1d")
    assert view.owner == "crm-analytics@example.com"
    described = {f.name: f.description for f in view.features}
    assert described["crm_logins_30d"] == "CRM logins in the trailing 30 days."
    assert store.get_entity("account").owner == "cs-data@example.com"


def test_materialize_serves_latest_values(served: Path) -> None:
    result = run_tally(["--project", str(served), "materialize", "--start", "2024-12-01",
                        "--end", "2026-01-01", "--as-of", "2026-01-01"])
    assert result.code == 0, result.stderr
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(served / "feature_repo"))
    online = store.get_online_features(features=["crm_logins_1d:crm_logins_30d"],
                                       entity_rows=[{"account_id": 3}]).to_dict()
    table = pd.read_parquet(served / "data" / "tables" / "crm_logins_1d.parquet")
    latest = table[table["account_id"] == 3].sort_values("event_timestamp").iloc[-1]
    assert online["crm_logins_30d"] == [latest["crm_logins_30d"]]
