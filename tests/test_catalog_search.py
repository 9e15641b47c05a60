"""The catalog index and `tally search` / `tally show` on a copy of the example project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tally
from tally.catalog.search.index import INDEX_DIR, open_current

from tests.helpers import invoke, run_tally

RANKING_FIXTURE = """\
metrics:
  - name: zeta_widget_old
    description: Widgets counted the old way.
    owner: widgets@example.com
    source: commerce_orders
    aggregation: count
    expression: order_id
    window: 30d
    status: deprecated
  - name: zeta_widget_count
    description: Widgets counted.
    owner: widgets@example.com
    source: commerce_orders
    aggregation: count
    expression: order_id
    window: 7d
  - name: zeta_widget_total
    description: Widgets in total.
    owner: widgets@example.com
    source: commerce_orders
    aggregation: count
    expression: order_id
    window: 14d
    status: certified
  - name: zeta_misc
    description: Anything about a widget.
    owner: widgets@example.com
    source: commerce_orders
    aggregation: count
    expression: order_id
    window: 21d
"""


def search(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    result = invoke(["--project", str(root), "search", *args, "--json"], capsys)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def names(hits: list[dict]) -> list[str]:
    return [h["name"] for h in hits]


def test_exact_name_first_and_json_shape(example_project: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    hits = search(example_project, capsys, "crm_logins")
    assert hits[0]["name"] == "crm_logins" and hits[0]["kind"] == "source"
    # the other entries named crm_logins_* follow before entries matching one word only
    assert {"crm_logins_30d", "crm_logins_1d"} <= set(names(hits[1:4]))
    for hit in hits:
        assert {"kind", "name", "owner", "description", "tags", "status", "score",
                "model_count"} <= set(hit)
    gmv = search(example_project, capsys, "commerce gmv 30d")[0]
    assert gmv["name"] == "commerce_gmv_30d" and gmv["model_count"] == 2
    assert gmv["tags"] == ["adoption", "commerce", "revenue"]


def test_typos_tolerated(example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert names(search(example_project, capsys, "actve usres"))[0] == "crm_monthly_active_users"
    assert "commerce_refunds_30d" in names(search(example_project, capsys, "refnds"))


def test_certified_over_draft_and_deprecated_last(example_project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "metrics" / "zeta.yaml").write_text(RANKING_FIXTURE)
    ranked = names(search(example_project, capsys, "zeta widget", "--kind", "metric"))
    assert ranked == ["zeta_widget_total", "zeta_widget_count", "zeta_misc", "zeta_widget_old"]
    # named exactly, a deprecated entry still comes first
    assert names(search(example_project, capsys, "zeta_widget_old"))[0] == "zeta_widget_old"


def test_facets_filter(example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    billing = search(example_project, capsys, "", "--owner", "billing@example.com")
    assert billing and all("billing@example.com" in h["owner"] for h in billing)
    assert {"crm_seat_count", "crm_licenses", "marketing_contracts"} <= set(names(billing))
    # the part before @ works too, and facets combine with words
    assert names(search(example_project, capsys, "seats", "--owner", "billing")) [0] == \
        "crm_seat_count"
    revenue = search(example_project, capsys, "", "--tag", "revenue", "--kind", "metric")
    assert set(names(revenue)) == {"commerce_gmv_30d", "commerce_avg_order_value_90d",
                                   "last_contract_value"}
    drafts = search(example_project, capsys, "crm", "--status", "draft")
    assert drafts and all(h["status"] == "draft" for h in drafts)
    models = search(example_project, capsys, "", "--kind", "model")
    assert set(names(models)) == {"churn_risk", "expansion_forecast"}
    assert len(search(example_project, capsys, "", "--limit", "3")) == 3
    bad = invoke(["--project", str(example_project), "search", "x", "--kind", "table"], capsys)
    assert bad.code == 2 and "choose from" in bad.stderr


def test_state_files_feed_contract_facet_and_statistics(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert search(example_project, capsys, "", "--contract", "failing") == []
    state = example_project / ".tally"
    (state / "contracts.json").write_text(json.dumps({
        "crm_logins": {"ok": False, "checked_at": "2024-03-01T00:00:00+00:00",
                       "allowed_violation": True, "failures": ["seconds: 3 rows below 0"]},
        "commerce_orders": {"ok": False, "checked_at": "2024-03-01T00:00:00+00:00",
                            "allowed_violation": False, "failures": ["stale"]},
        "marketing_sends": {"ok": True, "checked_at": "2024-03-01T00:00:00+00:00",
                            "allowed_violation": False, "failures": []},
    }))
    (state / "tables.json").write_text(json.dumps({"crm_logins_1d": {
        "rows": 1234, "newest_snapshot": "2024-03-01T00:00:00",
        "null_fraction": {"crm_monthly_active_users": 0.25}}}))
    failing = search(example_project, capsys, "", "--contract", "failing")
    assert set(names(failing)) == {"crm_logins", "commerce_orders"}
    assert names(search(example_project, capsys, "", "--contract", "violated")) == ["crm_logins"]
    assert names(search(example_project, capsys, "", "--contract", "passing")) == \
        ["marketing_sends"]
    assert set(names(search(example_project, capsys, "", "--contract", "unchecked"))) == {
        "crm_licenses", "marketing_contracts", "renewals", "crm_events", "billing_events"}
    card = json.loads(invoke(["--project", str(example_project), "show",
                              "crm_monthly_active_users", "--json"], capsys).stdout)
    assert card["table"]["rows"] == 1234 and card["table"]["null_fraction"] == 0.25
    assert card["contract"]["state"] == "violated"
    assert card["contract"]["last_check"]["failures"] == ["seconds: 3 rows below 0"]
    text = invoke(["--project", str(example_project), "show", "crm_logins"], capsys).stdout
    assert "violated" in text and "seconds: 3 rows below 0" in text


def test_show_card(example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(["--project", str(example_project), "show", "crm_monthly_active_users",
                     "--json"], capsys)
    card = json.loads(result.stdout)
    assert card["kind"] == "metric" and card["owner"] == "crm-analytics@example.com"
    assert card["file"] == "metrics/crm.yaml" and card["definition"]["window"] == "30d"
    assert card["upstream"] == [{"kind": "source", "name": "crm_logins"}]
    downstream = {(d["kind"], d["name"]) for d in card["downstream"]}
    assert {("metric", "crm_active_user_ratio"), ("feature_view", "crm_logins_1d"),
            ("model", "churn_risk"), ("model", "expansion_forecast")} <= downstream
    assert card["feast"] == {"feature_view": "crm_logins_1d",
                             "feature_services": ["churn_risk", "expansion_forecast"]}
    assert card["columns"] == ["seconds", "user_id"] and card["status"] == "certified"
    view = json.loads(invoke(["--project", str(example_project), "show", "crm_logins_1d",
                              "--json"], capsys).stdout)
    assert view["kind"] == "feature_view" and view["definition"]["ttl"] == "31d"
    assert set(view["columns"]) == {"crm_logins_30d", "crm_monthly_active_users",
                                    "crm_session_hours_7d"}
    text = invoke(["--project", str(example_project), "show", "churn_risk"], capsys)
    assert text.code == 0 and "feature service churn_risk" in text.stdout
    missing = invoke(["--project", str(example_project), "show", "crm_monthly_actve_users"],
                     capsys)
    assert missing.code == 1 and "crm_monthly_active_users" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_edited_definition_found_without_rebuild(example_project: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert "crm_session_hours_7d" not in names(search(example_project, capsys, "zebra"))
    first = open_current(example_project)
    assert first is not None
    path = example_project / "metrics" / "crm.yaml"
    path.write_text(path.read_text().replace(
        "Hours spent in CRM sessions in the trailing 7 days.",
        "Zebra stripes, hours in CRM sessions, trailing 7 days."))
    assert names(search(example_project, capsys, "zebra"))[0] == "crm_session_hours_7d"
    second = open_current(example_project)
    assert second is not None and second.folder != first.folder
    # incremental: only the edited card was re-indexed
    assert second.manifest["changed"] == 1 and second.manifest["removed"] == 1
    # a just-registered metric is found at once
    (example_project / "metrics" / "new.yaml").write_text(RANKING_FIXTURE)
    assert names(search(example_project, capsys, "zeta_misc"))[0] == "zeta_misc"
    # an invalid edit is reported, never answered from the stale index
    path.write_text(path.read_text().replace("source: crm_logins\n", "source: nowhere\n", 1))
    broken = invoke(["--project", str(example_project), "search", "zebra"], capsys)
    assert broken.code == 1 and "nowhere" in broken.stderr and broken.stdout == ""


def test_index_generations_are_swapped_atomically(example_project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    search(example_project, capsys, "crm")
    base = example_project / INDEX_DIR
    (base / ".tally-tmp-killed").mkdir()  # what a killed builder leaves behind
    for n in range(3):
        (example_project / "metrics" / "extra.yaml").write_text(
            RANKING_FIXTURE.replace("zeta_misc", f"zeta_misc_{n}"))
        assert names(search(example_project, capsys, f"zeta_misc_{n}"))[0] == f"zeta_misc_{n}"
    generations = sorted(p.name for p in base.iterdir() if p.name.startswith("gen-"))
    assert len(generations) <= 2
    assert not (base / ".tally-tmp-killed").exists()
    live = (base / "CURRENT").read_text().strip()
    assert live in generations and (base / live / "manifest.json").exists()


def test_fast_path_does_not_load_the_project(example_project: Path) -> None:
    assert run_tally(["--project", str(example_project), "search", "crm"]).code == 0
    code = ("import sys; from tally.catalog.search.query import search, show; "
            "r = search(sys.argv[1], 'actve usres'); c = show(sys.argv[1], 'churn_risk'); "
            "print(r.names()[0], c.kind, 'tally.catalog.spec.models' in sys.modules, "
            "'pandas' in sys.modules, 'feast' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(example_project)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["crm_monthly_active_users", "model", "False", "False", "False"]


def test_cli_process_output(example_project: Path) -> None:
    result = run_tally(["--project", str(example_project), "search", "active", "--limit", "2"])
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["kind", "name"] and len(lines) == 3
    assert "more" in result.stderr  # the hint about --limit is a diagnostic, not data
    missing = run_tally(["--project", str(example_project), "show", "no_such_thing"])
    assert missing.code == 1 and "no definition named" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_notebook_api(example_project: Path) -> None:
    project = tally.load(str(example_project))
    results = project.search("gmv", kind=["metric"])
    assert results[0].name == "commerce_gmv_30d" and results[0].status == "certified"
    frame = results.to_frame()
    assert list(frame.columns[:2]) == ["kind", "name"] and frame.iloc[0]["name"] == \
        "commerce_gmv_30d"
    card = project.show("net_adoption_score")
    assert card.kind == "score" and card.feast["feature_view"] == "score_net_adoption_score"
    assert card.to_dict()["upstream"][0] == {"kind": "entity", "name": "account"}


NUMBERED_FIXTURE = RANKING_FIXTURE + """\
  - name: zeta_widget_2024
    description: Widgets counted in the year.
    owner: widgets@example.com
    source: commerce_orders
    aggregation: count
    expression: order_id
    window: 28d
"""


def test_total_counts_every_match(example_project: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "metrics" / "zeta.yaml").write_text(RANKING_FIXTURE)
    project = tally.load(str(example_project))
    # five entries have both words: the four metrics and the feature view whose columns
    # name them; the deprecated metric counts too, though it is listed last
    full = project.search("zeta widget", limit=2)
    assert len(full) == 2 and full.total == 5
    listed = project.search("zeta widget", limit=10)
    assert len(listed) == listed.total == 5 and listed.names()[-1] == "zeta_widget_old"
    assert project.search("zeta widget", status=["deprecated"], limit=1).total == 1
    # no entry has both words: the entries with either are listed and counted
    zeta, churn = project.search("zeta", limit=50), project.search("churn", limit=50)
    either = project.search("zeta churn", limit=2)
    assert len(either) == 2 and either.total == zeta.total + churn.total
    assert set(either.names()) <= set(zeta.names()) | set(churn.names())
    hint = invoke(["--project", str(example_project), "search", "zeta widget", "--limit", "2"],
                  capsys)
    assert hint.code == 0 and "2 of 5 matches" in hint.stderr


def test_numbers_match_exactly_or_as_prefix(example_project: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "metrics" / "zeta.yaml").write_text(NUMBERED_FIXTURE)
    assert names(search(example_project, capsys, "widget 2024"))[0] == "zeta_widget_2024"
    assert names(search(example_project, capsys, "widget 202"))[0] == "zeta_widget_2024"
    # a number is not a typo of another number (a word of four letters would be)
    assert search(example_project, capsys, "2025") == []
    assert names(search(example_project, capsys, "widgte"))[0].startswith("zeta_widget")


def test_long_query_ranks_name_words_then_deprecated(example_project: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "metrics" / "zeta.yaml").write_text(NUMBERED_FIXTURE)
    # four words: three in the name of zeta_widget_count, two in the others' names; every
    # word is somewhere in each (count as a prefix of "counted" in the description)
    ranked = names(search(example_project, capsys, "zeta widget count counted"))
    assert ranked == ["zeta_widget_count", "zeta_widget_2024", "zeta_widget_old"]
    # five words: all of them in the name first, then the rest in one search
    ranked = names(search(example_project, capsys, "zeta widget count counted widgets"))
    assert ranked == ["zeta_widget_count", "zeta_widget_2024", "zeta_widget_old"]


def test_facets_filter_without_changing_scores(example_project: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "metrics" / "zeta.yaml").write_text(RANKING_FIXTURE)
    plain = {h["name"]: h["score"] for h in search(example_project, capsys, "zeta widget")}
    owned = search(example_project, capsys, "zeta widget", "--owner", "widgets")
    assert len(owned) >= 4 and all(plain[h["name"]] == h["score"] for h in owned)


def test_index_compresses_small_store_blocks(example_project: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tally.catalog.search.index import STORE_BLOCK

    assert names(search(example_project, capsys, "crm_logins"))[0] == "crm_logins"
    live = open_current(example_project)
    assert live is not None and live.folder is not None
    meta = json.loads((live.folder / "meta.json").read_text())
    assert meta["index_settings"]["docstore_blocksize"] == STORE_BLOCK == 4096


def test_score_bounds_hold(example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tier's searches are skipped on the strength of score bounds: every hit of a tier
    search must score at most its bound, or a better entry could be skipped."""
    import tantivy
    from tally.catalog.search import ranking
    from tally.catalog.search.query import words

    (example_project / "metrics" / "zeta.yaml").write_text(NUMBERED_FIXTURE)
    search(example_project, capsys, "crm")
    opened = open_current(example_project)
    assert opened is not None
    searcher, schema = opened.searcher, opened.schema
    certified = ranking._const(tantivy.Query.term_query(schema, "status", "certified"),
                               ranking.CERTIFIED)
    checked = 0
    for text in ("crm logins", "actve usres", "zeta widget counted", "revenue gmv",
                 "session hours crm", "widgte 2024", "seats"):
        built = [ranking.Word.build(searcher, schema, w) for w in words(text)]
        ranker = ranking.Ranker(searcher, schema, [], 1000)
        for tier in ranking._tiers(built):
            for in_name in tier:
                clauses, ties = ranker._tier_clauses(built, in_name)
                if clauses is not None:
                    hits = ranker.search(clauses, [certified, *ties])
                    bound = ranking._bound(built, in_name)
                    assert all(score <= bound for score, _ in hits), (text, in_name)
                    checked += len(hits)
    assert checked > 20


def test_stored_hit_fields_follow_search_hit() -> None:
    from dataclasses import fields

    from tally.catalog.search.index import HIT_FIELDS
    from tally.catalog.search.query import SearchHit

    assert tuple(f.name for f in fields(SearchHit)) == (*HIT_FIELDS, "score")
