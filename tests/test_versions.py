"""Metric versions side by side, deprecation, and change plans (`tally diff`)."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest
from tally.catalog.compute.runner import compute
from tally.catalog.errors import DefinitionError
from tally.catalog.spec.loading import load_project

from tests.helpers import invoke
from tests.test_compute_semantics import (
    DAY,
    DEFINITIONS,
    EVENT_METRICS,
    _reference_group,
    _same,
    _table,
    write_semantics_data,
)

ADOPTION_V1 = """
  - {name: adoption, description: Kind a events., owner: growth@x.com, source: events,
     aggregation: count, expression: "*", filter: "kind = 'a'", window: 3d, version: 1,
     status: certified}
"""
ADOPTION_V2 = """
  - {name: adoption, description: Kind b events., owner: growth@x.com, source: events,
     aggregation: count, expression: "*", filter: "kind = 'b'", window: 3d, version: 2,
     status: certified}
"""
READERS = """
  - {name: adoption_doubled, description: d, owner: derived@x.com, type: derived,
     expression: adoption * 2}
models:
  - {name: legacy_model, description: d, owner: legacy@x.com, features: ["adoption@1"]}
  - {name: current_model, description: d, owner: current@x.com, features: [adoption]}
"""


def _project(root: Path, *metrics: str, readers: str = READERS) -> Path:
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "defs.yaml").write_text(DEFINITIONS + "".join(metrics) + readers)
    return root


def _adoption(kind: str) -> tuple:
    return ("count", 3 * DAY, lambda r: 1, lambda r: r["kind"] == kind)


def test_two_versions_are_computed_in_one_scan_each_to_the_reference(tmp_path: Path) -> None:
    root = _project(tmp_path, ADOPTION_V1, ADOPTION_V2)
    events, _, _ = write_semantics_data(root)
    project = load_project(root)
    group = next(g for g in project.groups() if g.source == "events")
    assert {"adoption", "adoption__v1", "adoption__v2"} <= set(group.metrics)
    results = compute(project)
    assert [r.name for r in results].count("events_1d") == 1  # one table, one scan
    got = _table(root / "data" / "tables" / "events_1d.parquet", "shop_id")
    expected = _reference_group(events, {**EVENT_METRICS, "adoption__v1": _adoption("a"),
                                         "adoption__v2": _adoption("b"),
                                         "adoption": _adoption("b")}, DAY)
    assert set(got) == set(expected)
    for key, values in expected.items():
        for name, value in values.items():
            assert _same(got[key][name], value), (key, name, got[key][name], value)
    assert any(v["adoption__v1"] != v["adoption__v2"] for v in got.values())


def test_references_resolve_to_the_version_they_name(tmp_path: Path) -> None:
    root = _project(tmp_path, ADOPTION_V1, ADOPTION_V2.replace("certified", "draft"))
    project = load_project(root)
    assert project.versions["adoption"].current == 1  # a draft is never the current one
    assert project.metrics["adoption"].filter == "kind = 'a'"
    assert project.models["legacy_model"].features == ["adoption__v1"]
    assert project.models["current_model"].features == ["adoption"]


def test_pin_of_an_undeclared_version_and_a_repeated_version_are_errors(
        tmp_path: Path) -> None:
    root = _project(tmp_path, ADOPTION_V1, ADOPTION_V1.replace("Kind a", "Again"),
                    readers=READERS.replace("adoption@1", "adoption@3"))
    with pytest.raises(DefinitionError) as caught:
        load_project(root)
    text = str(caught.value)
    assert "version 1 of metric 'adoption' is already defined at metrics/defs.yaml:" in text
    assert "features[0]: metric 'adoption' has no version 3 (its versions: 1)" in text


def test_a_pin_in_a_derived_expression_reads_that_version(tmp_path: Path) -> None:
    pinned = READERS.replace("expression: adoption * 2", "expression: adoption__v1 * 2")
    root = _project(tmp_path, ADOPTION_V1, ADOPTION_V2, readers=pinned)
    write_semantics_data(root)
    compute(load_project(root))
    derived = _table(root / "data" / "tables" / "derived_shop_1d.parquet", "shop_id")
    events = _table(root / "data" / "tables" / "events_1d.parquet", "shop_id")
    for key, row in derived.items():
        if key in events:
            assert row["adoption_doubled"] == 2 * events[key]["adoption__v1"]


DEPRECATED_V1 = ADOPTION_V1.replace("version: 1,", "version: 1, deprecated_on: 2026-03-01,")


def test_deprecation_warns_before_its_date_and_errors_on_and_after(tmp_path: Path) -> None:
    root = _project(tmp_path, DEPRECATED_V1, ADOPTION_V2)
    project = load_project(root, today=date(2026, 2, 20))
    messages = [w.render() for w in project.warnings]
    assert len(messages) == 1, messages
    assert "legacy_model" not in messages[0] and "features[0]" in messages[0]
    assert "adoption@1 (read as 'adoption__v1') is deprecated on 2026-03-01 (in 9 days); " \
           "move to adoption" in messages[0]
    for today in (date(2026, 3, 1), date(2027, 1, 1)):
        with pytest.raises(DefinitionError) as caught:
            load_project(root, today=today)
        assert "adoption@1 (read as 'adoption__v1') was deprecated on 2026-03-01; move to " \
               "adoption" in str(caught.value)
    unread = _project(tmp_path / "unread", DEPRECATED_V1, ADOPTION_V2,
                      readers=READERS.replace('"adoption@1"', "adoption"))
    assert load_project(unread, today=date(2027, 1, 1)).warnings == []


def test_validate_shows_deprecation_warnings_and_keeps_exit_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path, DEPRECATED_V1.replace("2026-03-01", "2999-01-01"), ADOPTION_V2)
    result = invoke(["--project", str(root), "validate"], capsys)
    assert result.code == 0, result.stderr
    assert "warning: metrics/defs.yaml:" in result.stderr
    assert "is deprecated on 2999-01-01" in result.stderr


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.email=t@x.com", "-c", "user.name=t",
                    *args], check=True, capture_output=True)


def test_diff_against_a_git_revision_classifies_each_change(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    root = _project(tmp_path, ADOPTION_V1, readers=READERS.replace('"adoption@1"',
                                                                     "ev_count_3d"))
    _git(root, "init", "-q")
    _git(root, "add", "metrics")
    _git(root, "commit", "-qm", "v1")
    changed = ADOPTION_V1.replace("kind = 'a'", "kind = 'b'")
    owner = DEFINITIONS.replace("{name: ev_count_3d, description: d, owner: o@x.com",
                                "{name: ev_count_3d, description: d, owner: new@x.com")
    draft_v2 = ADOPTION_V2.replace("certified", "draft")
    (root / "metrics" / "defs.yaml").write_text(owner + changed + draft_v2 + READERS.replace(
        '"adoption@1"', "ev_count_3d"))
    result = invoke(["--project", str(root), "diff", "--against", "HEAD", "--json"], capsys)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    by_label = {(c["name"], c["version"]): c for c in report["changes"]}
    breaking = by_label[("adoption", 1)]
    assert breaking["change"] == "breaking"
    assert breaking["fields"] == [{"field": "filter", "before": "kind = 'a'",
                                   "after": "kind = 'b'"}]
    readers = {(r["kind"], r["name"]): r for r in breaking["readers"]}
    assert readers[("model", "current_model")]["owner"] == "current@x.com"
    assert readers[("model", "current_model")]["pinned"] is False
    assert readers[("metric", "adoption_doubled")]["owner"] == "derived@x.com"
    assert ("model", "legacy_model") not in readers  # it reads ev_count_3d only
    assert by_label[("ev_count_3d", 1)]["change"] == "metadata"
    assert by_label[("ev_count_3d", 1)]["fields"][0]["field"] == "owner"
    assert by_label[("adoption", 2)]["change"] == "additive"
    assert len(report["changes"]) == 3 and report["breaking"] == 1
    failed = invoke(["--project", str(root), "diff", "--against", "HEAD", "--fail-on",
                     "breaking"], capsys)
    assert failed.code == 1
    assert "current_model" in failed.stdout and "current@x.com" in failed.stdout
    bad = invoke(["--project", str(root), "diff", "--against", "no-such-ref"], capsys)
    assert bad.code == 1 and "--against 'no-such-ref'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_new_current_version_is_additive_and_moves_the_unpinned_readers(
        tmp_path: Path) -> None:
    from tally.catalog.changes.classify import plan_changes
    from tally.catalog.changes.states import working_texts

    unpinned = READERS.replace('"adoption@1"', "adoption")
    before = working_texts(_project(tmp_path / "before", ADOPTION_V1, readers=unpinned))
    root = _project(tmp_path / "after", ADOPTION_V1, ADOPTION_V2)
    changes = plan_changes(load_project(root), before, working_texts(root))
    assert [(c.name, c.version, c.change) for c in changes] == [
        ("adoption", None, "breaking"), ("adoption", 2, "additive"),
        ("legacy_model", None, "metadata")]  # adoption -> adoption@1 while 1 was current
    moved = changes[0]
    assert [(f.field, f.before, f.after) for f in moved.fields] == [("current_version", 1, 2)]
    assert {r.name for r in moved.readers if r.kind == "model"} == {"current_model"}
    # unpinning legacy_model once version 2 is current changes what it reads
    moved_on = _project(tmp_path / "moved", ADOPTION_V1, ADOPTION_V2, readers=unpinned)
    later = plan_changes(load_project(moved_on), working_texts(root), working_texts(moved_on))
    assert [(c.name, c.change) for c in later] == [("legacy_model", "breaking")]


def _feast_project(root: Path) -> Path:
    import shutil

    from tests.helpers import REPO

    (root / "feature_repo").mkdir(parents=True)
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    return root


def test_pinned_and_unpinned_readers_get_their_own_values_in_one_frame(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd
    from tally.feature_repo.serving import training_frame

    root = _feast_project(_project(tmp_path, ADOPTION_V1, ADOPTION_V2))
    write_semantics_data(root)
    for command in (["compute"], ["apply", "--allow-violations"]):
        result = invoke(["--project", str(root), *command], capsys)
        assert result.code == 0, result.stderr
    table = _table(root / "data" / "tables" / "events_1d.parquet", "shop_id")
    keys = sorted(table)[::7]
    entities = pd.DataFrame({"shop_id": [k[0] for k in keys],
                             "event_timestamp": [k[1] for k in keys]})
    frame = training_frame(entities, features=["adoption@1", "adoption"], project=root)
    assert list(frame.columns) == ["shop_id", "event_timestamp", "adoption__v1", "adoption"]
    assert frame["adoption__v1"].tolist() == [table[k]["adoption__v1"] for k in keys]
    assert frame["adoption"].tolist() == [table[k]["adoption__v2"] for k in keys]
    assert frame["adoption__v1"].tolist() != frame["adoption"].tolist()
    legacy = training_frame(entities, model="legacy_model", project=root)
    assert legacy["adoption__v1"].tolist() == frame["adoption__v1"].tolist()

    # a breaking change to what current_model reads is refused until accepted
    text = (root / "metrics" / "defs.yaml").read_text()
    (root / "metrics" / "defs.yaml").write_text(text.replace(
        "filter: \"kind = 'b'\", window: 3d, version: 2", "filter: \"kind = 'b'\", "
        "window: 5d, version: 2"))
    refused = invoke(["--project", str(root), "apply"], capsys)
    assert refused.code == 1
    assert "metric adoption@2 (window) is read by model current_model (current@x.com)" in \
        refused.stderr
    assert "legacy_model" not in refused.stderr and "Traceback" not in refused.stderr
    assert "--accept-breaking" in refused.stderr
    plan = invoke(["--project", str(root), "plan", "--json"], capsys)
    import json

    assert json.loads(plan.stdout)["definitions"]["breaking"] == 1
    accepted = invoke(["--project", str(root), "apply", "--accept-breaking"], capsys)
    assert accepted.code == 0, accepted.stderr
    again = invoke(["--project", str(root), "diff", "--fail-on", "breaking"], capsys)
    assert again.code == 0 and "no definition changes since the last tally apply" in \
        again.stderr


def test_show_lists_every_version_and_search_counts_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tally.catalog.facade import load

    root = _project(tmp_path, DEPRECATED_V1.replace("2026-03-01", "2999-01-01"), ADOPTION_V2)
    card = load(root).show("adoption@1")
    assert card.name == "adoption" and card.version == 2 and card.version_count == 2
    first, second = card.versions
    assert (first["version"], first["deprecated_on"], first["models"]) == (
        1, "2999-01-01", ["legacy_model"])
    assert first["served_as"] == ["adoption__v1"] and first["changed"] == []
    assert second["current"] and second["models"] == ["current_model"]
    assert set(second["changed"]) == {"description", "filter", "deprecated_on"}
    shown = invoke(["--project", str(root), "show", "adoption"], capsys)
    assert "@1 (certified, deprecated on 2999-01-01) served as adoption__v1" in shown.stdout
    assert "models: legacy_model" in shown.stdout
    found = invoke(["--project", str(root), "search", "adoption", "--kind", "metric",
                    "--json"], capsys)
    hits = {h["name"]: h for h in json.loads(found.stdout)}
    assert "adoption__v1" not in hits  # a version is not an entry of its own
    assert (hits["adoption"]["version"], hits["adoption"]["version_count"]) == (2, 2)


def test_registering_a_new_version_keeps_the_old_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p", ADOPTION_V1)
    new_version = tmp_path / "adoption_v2.yaml"
    new_version.write_text("metrics:" + ADOPTION_V2)
    result = invoke(["--project", str(root), "register", str(new_version)], capsys)
    assert result.code == 0, result.stderr
    versions = load_project(root).versions["adoption"]
    assert versions.numbers == [1, 2] and versions.current == 2
    again = invoke(["--project", str(root), "register", str(new_version)], capsys)
    assert again.code == 1 and "already exists" in again.stderr
