"""A new user's first hour (issue 14): the demo works on the day it is made, materialize
loads the newest values whatever their age, derived values expire with their inputs, plan
after materialize is quiet, and every documented command runs in the demo project."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, invoke, run_tally

PINNED = date(2026, 1, 1)
AS_OF = ["--as-of", "2026-01-01"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tally demo` as a user runs it: today's date, the real entry point, a small size."""
    here = tmp_path_factory.mktemp("first_hour")
    made = run_tally(["demo", "demo", "--accounts", "40"], cwd=here)
    assert made.code == 0, made.stderr
    return here / "demo"


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project on data that ended on PINNED, long before today."""
    from tally.feature_repo.demo_data import generate

    root = tmp_path_factory.mktemp("pinned")
    shutil.copytree(REPO / "metrics", root / "metrics")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    generate(root / "data", accounts=60, seed=3, end=PINNED)
    for args in (["compute", *AS_OF], ["apply", *AS_OF]):
        result = run_tally(["--project", str(root), *args])
        assert result.code == 0, result.stderr
    return root


def test_demo_data_ends_on_the_given_day_and_is_deterministic(tmp_path: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from tally.feature_repo.demo_data import generate

    one = generate(tmp_path / "a", accounts=30, seed=5, end=date(2026, 12, 1))
    two = generate(tmp_path / "b", accounts=30, seed=5, end=date(2026, 12, 1))
    assert one.end.isoformat() == "2026-12-01T00:00:00+00:00"
    for name, path in one.files.items():
        assert pq.read_table(path).equals(pq.read_table(two.files[name])), name
    logins = pq.read_table(one.files["crm_logins"])
    newest = pc.max(logins["event_ts"]).as_py()
    assert date(2026, 11, 29) <= newest.date() < date(2026, 12, 1)
    seats = pq.read_table(one.files["crm_licenses"])
    assert pc.max(seats["reported_ts"]).as_py().date() >= date(2026, 11, 1)
    events = pq.read_table(one.files["crm_events"])  # the sales job, within its freshness
    assert pc.max(events["event_ts"]).as_py().date() >= date(2026, 11, 28)
    billing = pq.read_table(one.files["billing_events"])
    assert pc.max(billing["recorded_ts"]).as_py() < one.end
    assert set(pc.unique(billing["status"]).to_pylist()) == {"closed_won", "closed_lost",
                                                              "invoiced", "paid"}


def test_every_documented_command_works_in_the_demo_project(
        demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(demo)
    entities = tmp_path / "entities.csv"
    pd.DataFrame({"account_id": [1, 2, 3],
                  "event_timestamp": [pd.Timestamp.now(tz="UTC").floor("D")] * 3}).to_csv(
        entities, index=False)
    score = json.loads(invoke(["segments", "net_adoption_score", "--json"], capsys).stdout)
    key = str(score["groups"][0]["examples"][0]) if score["groups"] else "1"
    extra = tmp_path / "extra_metrics.yaml"
    extra.write_text(
        "metrics:\n  - name: crm_long_sessions_30d\n    description: Long CRM sessions.\n"
        "    owner: crm-analytics@example.com\n    source: crm_logins\n    aggregation: count\n"
        "    expression: '*'\n    filter: seconds > 600\n    window: 30d\n")
    contract = tmp_path / "logins.odcs.yaml"
    commands = [
        ["validate"], ["validate", "--json"], ["search", "active users"],
        ["search", "", "--kind", "model", "--json"], ["show", "crm_monthly_active_users"],
        ["show", "crm_logins_1d", "--json"], ["impact", "crm_logins"], ["reuse"],
        ["reuse", "--json"], ["check"], ["check", "--json"], ["compute"], ["plan"],
        ["apply"], ["materialize"], ["plan", "--json"],
        ["training-frame", "--entities", str(entities), "--model", "churn_risk", "--out",
         str(tmp_path / "frame.parquet")],
        ["training-frame", "--entities", str(entities), "--features",
         "net_adoption_score,net_adoption_score_band", "--out", str(tmp_path / "frame.csv")],
        ["explain", "net_adoption_score", "--entity", key],
        ["explain", "net_adoption_score", "--entity", key, "--plot", str(tmp_path / "s.png")],
        ["segments", "net_adoption_score"], ["show", "quote_to_close_30d"],
        ["funnel", "quote_to_close_30d"], ["funnel", "quote_to_close_30d", "--segment-by",
                                            "crm_seat_count", "--json"],
        ["funnel", "quote_to_close_30d", "--plot", str(tmp_path / "funnel.png")],
        ["contract", "export", "crm_logins"],
        ["contract", "export", "crm_logins", "--out", str(contract)],
        ["contract", "import", str(contract), "--replace"],
        ["register", str(extra)],
        ["metric", "new", "--name", "crm_short_sessions_30d", "--source", "crm_logins",
         "--aggregation", "count", "--expression", "*", "--window", "30d", "--owner",
         "crm-analytics@example.com", "--description", "Short CRM sessions."],
        ["validate"], ["compute"], ["apply"], ["init", str(tmp_path / "scaffold")],
    ]
    outputs = {}
    for args in commands:
        result = invoke(args, capsys)
        assert result.code == 0, f"tally {' '.join(args)}: {result.stderr}"
        outputs[" ".join(args)] = result.stdout
    assert [c for c in json.loads(outputs["plan --json"])["feast"] if c["action"] != "keep"] == []
    band = pd.read_csv(tmp_path / "frame.csv")["net_adoption_score_band"]
    assert band.notna().any() and set(band.dropna()) <= {"at_risk", "watch", "healthy"}
    assert pd.read_parquet(tmp_path / "frame.parquet")["crm_monthly_active_users"].notna().any()


def test_the_demo_computes_the_job_funnel_and_the_score_reads_it(
        demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = demo / "data" / "tables"
    funnel = pd.read_parquet(tables / "funnel_quote_to_close_30d.parquet")
    newest = funnel[funnel["event_timestamp"] == funnel["event_timestamp"].max()]
    starts, quoted, won = (int(newest[f"quote_to_close_30d__step_{i}"].sum()) for i in (1, 2, 3))
    assert starts > quoted > won > 0  # most opportunities get a quote, fewer close in time
    score = pd.read_parquet(tables / "score_net_adoption_score.parquet")
    values = score["net_adoption_score__quote_to_close_30d_value"]
    assert values.notna().any() and values.dropna().between(0, 1).all()
    key = int(newest.loc[newest["quote_to_close_30d__step_1"] > 0, "account_id"].iloc[0])
    explained = json.loads(invoke(["--project", str(demo), "explain", "net_adoption_score",
                                   "--entity", str(key), "--json"], capsys).stdout)
    steps = next(c["funnel_steps"] for c in explained["components"]
                 if c["metric"] == "quote_to_close_30d")
    at = pd.Timestamp(explained["snapshot"])
    row = funnel[(funnel["account_id"] == key) & (funnel["event_timestamp"] == at)].iloc[0]
    assert steps == [int(row[f"quote_to_close_30d__step_{i}"]) for i in (1, 2, 3)]
    report = json.loads(invoke(["--project", str(demo), "funnel", "quote_to_close_30d",
                                "--json"], capsys).stdout)
    assert [s["reached"] for s in report["steps"]] == [starts, quoted, won]


def test_materialize_without_start_loads_the_newest_values_of_old_data(pinned: Path) -> None:
    result = run_tally(["--project", str(pinned), "materialize", *AS_OF])
    assert result.code == 0, result.stderr
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(pinned / "feature_repo"))
    table = pd.read_parquet(pinned / "data" / "tables" / "crm_logins_1d.parquet")
    keys = sorted(table["account_id"].unique().tolist())
    online = store.get_online_features(features=["crm_logins_1d:crm_logins_30d"],
                                       entity_rows=[{"account_id": k} for k in keys]).to_dict()
    newest = (table.sort_values("event_timestamp").groupby("account_id").tail(1)
              .set_index("account_id")["crm_logins_30d"])
    assert online["crm_logins_30d"] == [newest[k] for k in keys]


def test_plan_after_materialize_reports_no_change(pinned: Path) -> None:
    result = run_tally(["--project", str(pinned), "materialize", *AS_OF])
    assert result.code == 0, result.stderr
    plan = run_tally(["--project", str(pinned), "plan", "--json"])
    assert plan.code == 0, plan.stderr
    assert [(c["action"], c["name"]) for c in json.loads(plan.stdout)["feast"]
            if c["action"] != "keep"] == []


def test_a_derived_value_is_never_served_beside_an_expired_input(pinned: Path) -> None:
    """Account 184 at 2025-12-15 in the issue: the ratio's input had expired (null) but a
    months-old ratio was served under the largest input ttl (400d)."""
    from tally.feature_repo.serving import training_frame

    times = pd.date_range("2025-02-01", "2026-06-01", freq="19D", tz="UTC")
    entities = pd.DataFrame([(k, t) for k in range(1, 61) for t in times],
                            columns=["account_id", "event_timestamp"])
    frame = training_frame(entities, features=["crm_monthly_active_users",
                                               "crm_active_user_ratio"], project=pinned)
    expired = frame["crm_monthly_active_users"].isna()
    derived = pd.read_parquet(pinned / "data" / "tables" / "derived_account_1d.parquet")
    first_ratio = derived.dropna(subset=["crm_active_user_ratio"]).groupby("account_id")[
        "event_timestamp"].min()
    had_a_ratio = frame["event_timestamp"] > frame["account_id"].map(first_ratio)
    assert (expired & had_a_ratio).sum() > 20  # the case exists in the data
    assert frame.loc[expired, "crm_active_user_ratio"].isna().all()


def test_derived_and_score_ttl_is_the_smallest_input_ttl_unless_set(
        example_project: Path) -> None:
    from tally.catalog.spec.loading import load_project
    from tally.catalog.spec.tables import table_of

    project = load_project(example_project)
    # crm_seat_count 90d, crm_monthly_active_users 30d + 1d; marketing contracts 400d
    assert project.ttl_of("crm_active_user_ratio").days == 31
    assert project.ttl_of("marketing_send_utilisation").days == 31
    assert project.ttl_of("net_adoption_score").days == 31
    assert table_of(project, "crm_active_user_ratio").ttl(project).days == 31
    (example_project / "metrics" / "set_ttls.yaml").write_text(
        "metrics:\n  - name: crm_ratio_kept\n    description: The ratio, kept longer.\n"
        "    owner: crm-analytics@example.com\n    type: derived\n    ttl: 60d\n"
        "    expression: crm_monthly_active_users / nullif(crm_seat_count, 0)\n"
        "scores:\n  - name: short_score\n    entity: account\n    description: Short.\n"
        "    owner: ds-apps@example.com\n    ttl: 3d\n"
        "    components:\n      - {metric: commerce_gmv_30d, weight: 1}\n")
    project = load_project(example_project)
    assert project.ttl_of("crm_ratio_kept").days == 60
    assert project.ttl_of("short_score").days == 3


def test_one_owner_per_view_and_one_model_count(demo: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from feast import FeatureStore

    base = ["--project", str(demo)]
    store = FeatureStore(repo_path=str(demo / "feature_repo"))
    for view in store.list_feature_views():
        card = json.loads(invoke([*base, "show", view.name, "--json"], capsys).stdout)
        assert isinstance(card["owners"], list) and card["owners"]
        assert view.owner == card["owner"] == ", ".join(card["owners"]), view.name
    derived = json.loads(invoke([*base, "show", "derived_account_1d", "--json"],
                                capsys).stdout)
    assert len(derived["owners"]) > 1  # several owners: a list
    hits = json.loads(invoke([*base, "search", "crm_seat_count", "--json"], capsys).stdout)
    searched = next(h for h in hits if h["name"] == "crm_seat_count")["model_count"]
    reuse = json.loads(invoke([*base, "reuse", "--json"], capsys).stdout)
    reused = next(f for f in reuse["features"] if f["name"] == "crm_seat_count")
    shown = json.loads(invoke([*base, "show", "crm_seat_count", "--json"], capsys).stdout)
    assert searched == reused["model_count"] == shown["model_count"] == 2


def test_init_keeps_the_users_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "theirs"
    (target / "feature_repo").mkdir(parents=True)
    (target / ".gitignore").write_text("*.pyc\nnotes/\ndata/")  # no final newline
    (target / "feature_repo" / "definitions.py").write_text("# mine\n")
    result = invoke(["init", str(target)], capsys)
    assert result.code == 0, result.stderr
    lines = (target / ".gitignore").read_text().splitlines()
    assert lines[:3] == ["*.pyc", "notes/", "data/"]
    assert ".tally/" in lines and lines.count("data/") == 1
    assert (target / "feature_repo" / "definitions.py").read_text() == "# mine\n"
    assert "kept your" in result.stderr and "definitions.py" in result.stderr
    assert (target / "metrics" / "example.yaml").is_file()
    again = invoke(["init", str(target)], capsys)
    assert again.code == 1 and (target / ".gitignore").read_text().count(".tally/") == 1


def test_init_scaffold_works_end_to_end_as_made(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fresh"
    assert invoke(["init", str(target)], capsys).code == 0
    for command in (["validate"], ["check"], ["compute"], ["apply"]):
        result = invoke(["--project", str(target), *command], capsys)
        assert result.code == 0, f"{command}: {result.stderr}"
    table = pd.read_parquet(target / "data" / "tables" / "logins_1d.parquet")
    assert table["monthly_active_users"].max() > 0


def test_feast_ui_and_feature_server_build_on_a_tally_repo(demo: Path) -> None:
    """`feast -c feature_repo ui` / `serve` crashed with `No module named 'grpc'`."""
    import tomllib

    from feast import FeatureStore
    from feast.feature_server import get_app as feature_server_app
    from feast.infra.contrib.grpc_server import get_grpc_server  # noqa: F401 - `feast listen`
    from feast.ui_server import get_app as ui_app

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    feast = next(d for d in declared if d.startswith("feast["))
    assert "grpcio" in feast.split("]")[0]
    store = FeatureStore(repo_path=str(demo / "feature_repo"))
    served = {getattr(r, "path", "") for r in feature_server_app(store).routes}
    assert {"/get-online-features", "/health"} <= served
    assert ui_app(store, store.project).routes
