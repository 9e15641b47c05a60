"""Issue 14, the smaller things a new user notices in the CLI's messages and output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO, invoke, run_tally

ONE_FILE = """\
entities:
  - name: account
    join_key: account_id
    description: An account.
    owner: a@example.com
sources:
  - name: logins
    description: Logins.
    owner: a@example.com
    path: data/logins.csv
    entity: account
    timestamp_field: ts
metrics:
  - name: logins_7d
    description: Logins in 7 days.
    owner: a@example.com
    source: logins
    aggregation: count
    expression: "*"
    window: 7d
"""


def _project(root: Path, text: str = ONE_FILE) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "m.yaml").write_text(text)
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    (root / "data").mkdir()
    (root / "data" / "logins.csv").write_text(
        "account_id,ts\n1,2025-12-01 10:00:00\n2,2025-12-02 00:00:00\n1,2025-12-03 08:00:00\n")
    return root


def test_metric_new_requires_owner_and_description(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--project", str(example_project), "metric", "new", "--name", "crm_x_30d",
            "--source", "crm_logins", "--aggregation", "count", "--expression", "user_id",
            "--window", "30d"]
    shown = invoke(["metric", "new", "--help"], capsys)
    assert shown.stdout.count("[required]") == 7
    missing = invoke([*args, "--owner", "o@example.com"], capsys)
    assert missing.code == 2 and "--description" in missing.stderr
    missing = invoke([*args, "--description", "Something."], capsys)
    assert missing.code == 2 and "--owner" in missing.stderr
    assert not (example_project / "metrics" / "crm_x_30d.yaml").exists()


def test_window_without_a_unit_says_a_unit_is_needed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p", ONE_FILE.replace("window: 7d", "window: 30"))
    result = invoke(["--project", str(root), "validate"], capsys)
    assert result.code == 1
    assert "metrics/m.yaml:20: metrics[0].window: 30 has no unit" in result.stderr
    assert "30d" in result.stderr and "valid string" not in result.stderr


def test_validate_counts_one_file_in_the_singular(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(["--project", str(_project(tmp_path / "p")), "validate"], capsys)
    assert result.code == 0
    assert result.stderr.strip().endswith("in 1 file")


def test_show_formats_null_fractions_and_contract_failures(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    assert run_tally(["--project", str(root), "compute", "--as-of", "2025-12-04"]).code == 0
    view = run_tally(["--project", str(root), "show", "logins_1d"])
    assert view.code == 0, view.stderr
    assert "null fraction logins_7d 0.0%" in view.stdout and "{'" not in view.stdout
    (root / "data" / "logins.csv").write_text("account_id,ts\n1,2025-12-01\n2,soon\n")
    assert run_tally(["--project", str(root), "check"]).code == 1
    source = run_tally(["--project", str(root), "show", "logins"])
    assert "  - column_type on ts: 1 rows; column ts is VARCHAR" in source.stdout
    assert "{'" not in source.stdout


def test_unknown_reference_offers_did_you_mean(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crm = example_project / "metrics" / "crm.yaml"
    crm.write_text(crm.read_text().replace("source: crm_logins\n", "source: crm_loginz\n", 1))
    result = invoke(["--project", str(example_project), "validate"], capsys)
    assert result.code == 1
    assert "unknown source 'crm_loginz' (did you mean 'crm_logins'" in result.stderr


def test_a_misspelt_source_key_is_reported_once(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crm = example_project / "metrics" / "crm.yaml"
    crm.write_text(crm.read_text().replace("timestamp_field: event_ts",
                                           "timestamp_feild: event_ts", 1))
    result = invoke(["--project", str(example_project), "validate"], capsys)
    assert result.code == 1
    assert "1 problem in the definitions" in result.stderr
    assert "timestamp_feild: unknown key (did you mean 'timestamp_field'?)" in result.stderr
    assert "unknown source" not in result.stderr


def test_search_matches_plural_and_singular(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    result = invoke(["--project", str(REPO), "search", "active users", "--json"], capsys)
    names = [hit["name"] for hit in json.loads(result.stdout)]
    assert "crm_logins_per_active_user" in names[:5]


def test_an_alias_is_indexed_ranked_as_a_name_and_shown(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    models = example_project / "metrics" / "models.yaml"
    models.write_text(models.read_text().replace(
        "  - name: churn_risk\n", "  - name: churn_risk\n    aliases: [Churn model, CR-1]\n"))
    for query, name in (("mau", "crm_monthly_active_users"), ("MAU", "crm_monthly_active_users"),
                        ("churn model", "churn_risk"), ("cr-1", "churn_risk")):
        result = invoke(["--project", str(example_project), "search", query, "--json"], capsys)
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)[0]["name"] == name, query
    shown = invoke(["--project", str(example_project), "show", "churn_risk"], capsys)
    assert "  aliases: Churn model, CR-1" in shown.stdout
    card = invoke(["--project", str(example_project), "show", "churn_risk", "--json"], capsys)
    assert json.loads(card.stdout)["aliases"] == ["Churn model", "CR-1"]


def test_an_alias_is_validated(example_project: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    models = example_project / "metrics" / "models.yaml"
    models.write_text(models.read_text().replace(
        "  - name: churn_risk\n", "  - name: churn_risk\n    aliases: ['<script>']\n"))
    result = invoke(["--project", str(example_project), "validate"], capsys)
    assert result.code == 1 and "metrics/models.yaml:3: models[0].aliases[0]" in result.stderr


def test_narrow_tables_never_cut_names(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    long_source = "product_usage_events_from_the_data_warehouse"
    root = _project(tmp_path / "p", ONE_FILE.replace("logins", long_source).replace(
        f"data/{long_source}.csv", "data/logins.csv"))
    env = {**os.environ, "COLUMNS": "60"}
    shown = subprocess.run([sys.executable, "-m", "tally.cli.main", "--project", str(root),
                            "compute", "--as-of", "2025-12-04"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert f"{long_source}_1d" in shown.stdout and "…" not in shown.stdout
    assert all(len(line) <= 60 or f"{long_source}_1d" in line
               for line in shown.stdout.splitlines())
