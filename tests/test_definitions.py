"""Loading, validation rules and the definition commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tally.catalog.errors import DefinitionError
from tally.catalog.spec.loading import load_project

from tests.helpers import REPO, invoke, run_tally, tree_digest


def test_example_project_validates_without_importing_feast() -> None:
    code = (
        "import sys; from tally.catalog.spec.loading import load_project; "
        "p = load_project(sys.argv[1]); "
        "print(len(p.metrics), 'feast' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert int(out[0]) >= 12
    assert out[1:] == ["False", "False"]


def test_example_project_covers_the_domain() -> None:
    project = load_project(REPO)
    types = {m.type for m in project.metrics.values()}
    assert types == {"aggregate", "column", "derived", "funnel"}
    assert {"churn_risk", "expansion_forecast"} <= set(project.models)
    shared = set(project.models["churn_risk"].features) & set(
        project.models["expansion_forecast"].features)
    assert len(shared) >= 2
    assert "net_adoption_score" in project.scores
    assert all(m.owner and m.description for m in project.metrics.values())


def test_semantics_helpers() -> None:
    project = load_project(REPO)
    assert project.entity_of("crm_active_user_ratio") == "account"
    assert project.grain_of("crm_active_user_ratio").days == 1
    # derived ttl is the smallest of its inputs' ttls: 30d + 1d under seat count's 90d
    assert project.ttl_of("crm_active_user_ratio").days == 31
    assert project.ttl_of("crm_logins_30d").days == 31
    crm = next(g for g in project.groups() if g.source == "crm_logins")
    assert set(crm.metrics) == {"crm_logins_30d", "crm_monthly_active_users",
                                "crm_session_hours_7d"}


def test_all_issues_collected_and_sorted(example_project: Path) -> None:
    (example_project / "metrics" / "b.yaml").write_text(
        "metrics:\n  - name: b1\n    description: d\n    owner: o@x.com\n"
        "    source: nowhere\n    aggregation: sum\n    expression: x\n    window: 1d\n"
        "  - name: b2\n    description: d\n    owner: o@x.com\n    source: crm_logins\n"
        "    aggregation: sum\n    expression: seconds\n    window: 5q\n")
    (example_project / "metrics" / "a.yaml").write_text("models:\n  - name: a1\n"
                                                        "    description: d\n    owner: o\n"
                                                        "    features: [nope]\n    extra: 1\n")
    with pytest.raises(DefinitionError) as caught:
        load_project(example_project)
    located = [(i.file, i.line, i.key) for i in caught.value.issues]
    assert located == sorted(located)
    assert ("metrics/a.yaml", 6, "models[0].extra") in located
    assert ("metrics/b.yaml", 5, "metrics[0].source") in located
    assert ("metrics/b.yaml", 15, "metrics[1].window") in located
    # a file with a phase-one error still contributes nothing else but its own problems
    assert len(caught.value.issues) == 3


def test_duplicate_names_across_files(example_project: Path) -> None:
    (example_project / "metrics" / "zz.yaml").write_text(
        "entities:\n  - name: crm_logins\n    join_key: x\n    description: d\n    owner: o\n")
    with pytest.raises(DefinitionError) as caught:
        load_project(example_project)
    (issue,) = caught.value.issues
    assert issue.file == "metrics/zz.yaml" and issue.line == 2 and issue.key == "entities[0].name"
    assert "already used by the source at metrics/crm.yaml" in issue.message


def test_derived_inputs_must_share_entity(example_project: Path) -> None:
    (example_project / "metrics" / "users.yaml").write_text(
        "entities:\n  - name: user\n    join_key: user_id\n    description: d\n    owner: o\n"
        "sources:\n  - name: user_events\n    description: d\n    owner: o\n"
        "    path: data/u.parquet\n    entity: user\n    timestamp_field: ts\n"
        "metrics:\n  - name: user_events_7d\n    description: d\n    owner: o\n"
        "    source: user_events\n    aggregation: count\n    expression: '*'\n    window: 7d\n"
        "  - name: bad_mix\n    description: d\n    owner: o\n    type: derived\n"
        "    expression: user_events_7d / crm_logins_30d\n")
    with pytest.raises(DefinitionError) as caught:
        load_project(example_project)
    messages = [i.render() for i in caught.value.issues]
    assert any("different entities" in m and "metrics/users.yaml:25" in m for m in messages)


def test_init_scaffolds_a_project_that_validates(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fresh"
    assert invoke(["init", str(target)], capsys).code == 0
    assert (target / "feature_repo" / "feature_store.yaml").is_file()
    assert invoke(["--project", str(target), "validate"], capsys).code == 0
    again = invoke(["init", str(target)], capsys)
    assert again.code == 1 and "already holds a Tally project" in again.stderr


def test_register_adds_and_replaces(example_project: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "extra.yaml"
    new.write_text("metrics:\n  - name: crm_logins_7d\n    description: Logins, 7 days.\n"
                   "    owner: a@x.com\n    source: crm_logins\n    aggregation: count\n"
                   "    expression: '*'\n    window: 7d\n")
    result = invoke(["--project", str(example_project), "register", str(new)], capsys)
    assert result.code == 0, result.stderr
    assert (example_project / "metrics" / "extra.yaml").read_text() == new.read_text()
    assert "crm_logins_7d" in load_project(example_project).metrics
    # same file again: refused without --replace
    again = invoke(["--project", str(example_project), "register", str(new)], capsys)
    assert again.code == 1 and "--replace" in again.stderr
    # a file redefining a metric of crm.yaml replaces it there, comments elsewhere kept
    moved = tmp_path / "logins.yaml"
    moved.write_text("metrics:\n  - name: crm_logins_30d\n    description: Logins, 30 days v2.\n"
                     "    owner: a@x.com\n    source: crm_logins\n    aggregation: count\n"
                     "    expression: '*'\n    window: 30d\n")
    refused = invoke(["--project", str(example_project), "register", str(moved)], capsys)
    assert refused.code == 1 and "already exists in metrics/crm.yaml" in refused.stderr
    assert "logins.yaml:2: metrics[0].name" in refused.stderr
    ok = invoke(["--project", str(example_project), "register", str(moved), "--replace"], capsys)
    assert ok.code == 0, ok.stderr
    project = load_project(example_project)
    assert project.metrics["crm_logins_30d"].description == "Logins, 30 days v2."
    assert project.get("crm_logins_30d").file == "metrics/logins.yaml"
    assert "crm_monthly_active_users" in project.metrics
    assert not list((example_project / "metrics").glob(".tally-tmp-*"))


def test_register_refuses_a_file_breaking_the_project(example_project: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # replacing a metric that others use with a derived metric that reads itself (a cycle)
    # must fail on the cross-file rules, and write nothing
    bad = tmp_path / "breaking.yaml"
    bad.write_text("metrics:\n  - name: crm_seat_count\n    description: d\n    owner: o\n"
                   "    type: derived\n    expression: crm_seat_count + 1\n")
    before = tree_digest(example_project)
    result = invoke(["--project", str(example_project), "register", str(bad), "--replace"],
                    capsys)
    assert result.code == 1 and "cycle" in result.stderr
    assert tree_digest(example_project) == before


def test_metric_new_writes_a_valid_definition(example_project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--project", str(example_project), "metric", "new", "--name", "crm_max_seconds_7d",
            "--source", "crm_logins", "--aggregation", "max", "--expression", "seconds",
            "--window", "7d", "--owner", "me@x.com", "--description", "Longest login.",
            "--tag", "crm", "--tag", "engagement"]
    assert invoke(args, capsys).code == 0
    metric = load_project(example_project).metrics["crm_max_seconds_7d"]
    assert metric.tags == ["crm", "engagement"] and metric.aggregation == "max"
    dup = invoke(args, capsys)
    assert dup.code == 1 and "already exists" in dup.stderr


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--window", "7days", "--window"),
    ("--aggregation", "median", "--aggregation"),
    ("--expression", "getenv('HOME')", "getenv"),
    ("--source", "nope", "unknown source"),
    ("--filter", "(select 1) = 1", "subquery"),
])
def test_metric_new_errors_name_the_flag(flag: str, value: str, message: str,
                                         example_project: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = {"--name": "m_new", "--source": "crm_logins", "--aggregation": "sum",
            "--expression": "seconds", "--window": "7d", "--owner": "o@x.com",
            "--description": "d"}
    args[flag] = value
    flat = [part for pair in args.items() for part in pair]
    before = tree_digest(example_project)
    result = invoke(["--project", str(example_project), "metric", "new", *flat], capsys)
    assert result.code == 1
    assert message in result.stderr
    assert tree_digest(example_project) == before


def test_metric_new_bad_name_is_usage_error(example_project: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(["--project", str(example_project), "metric", "new", "--name", "Bad Name",
                     "--source", "crm_logins", "--aggregation", "sum", "--expression", "x",
                     "--window", "7d", "--owner", "o@example.com", "--description", "X."],
                    capsys)
    assert result.code == 2 and "lower snake case" in result.stderr


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(["--project", str(REPO), "show", "crm_monthly_active_users", "--json"],
                    capsys)
    card = json.loads(result.stdout)
    assert card["kind"] == "metric" and card["file"] == "metrics/crm.yaml"
    assert card["line"] > 1 and card["definition"]["window"] == "30d"
    missing = invoke(["--project", str(REPO), "show", "no_such_thing"], capsys)
    assert missing.code == 1 and "no definition named" in missing.stderr


def test_cli_process_exit_codes(tmp_path: Path) -> None:
    assert run_tally(["--help"]).code == 0
    usage = run_tally(["validate", "--no-such-flag"])
    assert usage.code == 2 and "Traceback" not in usage.stderr
    missing = run_tally(["--project", str(tmp_path), "validate"])
    assert missing.code == 1 and "not a Tally project" in missing.stderr
    assert "Traceback" not in missing.stderr
    ok = run_tally(["validate"], cwd=REPO)
    assert ok.code == 0, ok.stderr
