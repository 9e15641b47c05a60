"""The web catalog over HTTP (a real `tally ui` process) and its static build: the same
search as `tally search`, entry and score pages, and the safety rules (GET only, escaped
text, nothing outside the project served, clear errors, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pyarrow.parquet as pq
from tally.catalog.search.query import search

from tests.helpers import run_tally
from tests.web_support import HOSTILE, METRIC, OWNER, SCORE, Served, fetch


def test_search_api_ranks_as_the_cli_does(web_server: Served) -> None:
    reply = fetch(f"{web_server.base}/api/search?q=montly+activ+usrs")
    assert reply.status == 200
    hits = json.loads(reply.body)["hits"]
    expected = search(web_server.root, "montly activ usrs").names()
    assert [h["name"] for h in hits] == expected
    assert hits[0]["name"] == METRIC and hits[0]["href"] == f"metric/{METRIC}.html"
    views = json.loads(fetch(f"{web_server.base}/api/search?q=crm&kind=feature_view").body)
    assert views["hits"] and {h["kind"] for h in views["hits"]} == {"feature_view"}
    owned = json.loads(fetch(f"{web_server.base}/api/search?owner=billing").body)["hits"]
    assert owned and all(h["owner"].startswith("billing@") for h in owned)
    three = json.loads(fetch(f"{web_server.base}/api/search?q=&limit=3").body)
    assert len(three["hits"]) == 3 and three["total"] > 3


def test_search_page_renders_hits_without_script(web_server: Served) -> None:
    reply = fetch(f"{web_server.base}/?q=montly+activ")
    assert reply.status == 200
    first = reply.body.index('class="hit-name"')
    assert f'href="metric/{METRIC}.html">{METRIC}</a>' in reply.body[first:first + 200]


def test_entry_page_shows_owner_lineage_models_and_distribution(web_server: Served) -> None:
    body = fetch(f"{web_server.base}/metric/{METRIC}.html").body
    assert f'<dd id="owner">{OWNER}</dd>' in body
    lineage = body[body.index('<svg class="lineage"'):]
    lineage = lineage[:lineage.index("</svg>")]
    for node in ("source:crm_logins", f"metric:{METRIC}", "feature_view:crm_logins_1d",
                 "model:churn_risk"):
        assert f'data-id="{node}"' in lineage
    assert '<a href="../model/churn_risk.html"' in body
    assert '<svg class="distribution"' in body
    assert 'id="contract-state" class="badge contract-passing"' in body
    for shown in ("owners", "aliases", "version_count"):  # in the facts, not twice
        assert f'id="extra-{shown}"' not in body


def test_user_text_is_escaped_everywhere(web_server: Served) -> None:
    shown = "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror="
    for path in (f"/metric/{METRIC}.html", "/?q=distinct+users"):
        body = fetch(web_server.base + path).body
        assert shown in body, path
        assert "<script>window.__pwned" not in body and "<img src=x" not in body
    api = fetch(f"{web_server.base}/api/search?q=distinct+users").body
    assert HOSTILE not in api  # JSON escapes it; the page script sets it as text only
    reply = fetch(f"{web_server.base}/metric/{METRIC}.html")
    assert "script-src 'self'" in reply.headers["content-security-policy"]


def test_read_only_and_bad_routes(web_server: Served) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", f"/metric/{METRIC}.html", "/api/search", "/nowhere"):
            reply = fetch(web_server.base + path, method=method)
            assert reply.status == 405, (method, path)
            assert reply.headers["allow"] == "GET, HEAD"
    missing = fetch(f"{web_server.base}/no/such/page")
    assert missing.status == 404 and "no such page" in missing.body
    unknown = fetch(f"{web_server.base}/metric/no_such_metric.html")
    assert unknown.status == 404 and "no metric named &#39;no_such_metric&#39;" in unknown.body
    assert fetch(f"{web_server.base}/banana/{METRIC}.html").status == 404


def test_nothing_outside_the_package_assets_is_served(web_server: Served) -> None:
    secret = web_server.root / "metrics" / "crm.yaml"
    for path in ("/static/..%2F..%2F..%2Fpyproject.toml", "/static/%2e%2e/app.py",
                 "/static/../../metrics/crm.yaml", f"/metric/..%2F..%2F{quote(str(secret))}",
                 "/source/..%2Fmetrics%2Fcrm.yaml.html", "/static/tally.css%00.html"):
        reply = fetch(web_server.base + path)
        assert reply.status == 404, path
        assert "crm_logins" not in reply.body and "[build-system]" not in reply.body
    assert fetch(f"{web_server.base}/static/tally.js").status == 200


def test_bad_query_parameters_say_what_is_wrong(web_server: Served) -> None:
    kind = fetch(f"{web_server.base}/api/search?kind=bogus")
    assert kind.status == 400 and "unknown kind 'bogus'" in json.loads(kind.body)["error"]
    limit = fetch(f"{web_server.base}/api/search?limit=many")
    assert limit.status == 422 and "limit" in json.loads(limit.body)["error"]
    page = fetch(f"{web_server.base}/?status=shiny")
    assert page.status == 400 and "unknown status" in page.body
    at = fetch(f"{web_server.base}/score/{SCORE}/explain/1.html?at=yesterday-ish")
    assert at.status == 400 and "not a date or time" in at.body
    key = fetch(f"{web_server.base}/score/{SCORE}/explain/abc.html")
    assert key.status == 404 and "account_id values are integers" in key.body
    for reply in (kind, limit, page, at, key):
        assert "Traceback" not in reply.body and "This is a bug" not in reply.body


def test_foreign_host_header_is_refused(web_server: Served) -> None:
    reply = fetch(f"{web_server.base}/", headers={"Host": "attacker.example"})
    assert reply.status == 400
    assert fetch(f"{web_server.base}/", headers={"Host": "localhost"}).status == 200


def test_score_page_segments_and_explanation(web_server: Served) -> None:
    body = fetch(f"{web_server.base}/score/{SCORE}.html").body
    assert 'id="segments"' in body and 'id="explain-form"' in body
    key = body.split('class="example" href="../score/')[1].split("/explain/")[1].split(".html")[0]
    pick = fetch(f"{web_server.base}/score/{SCORE}/explain?entity={key}")
    assert pick.status == 303
    assert pick.headers["location"] == f"/score/{SCORE}/explain/{key}.html"
    page = fetch(f"{web_server.base}{pick.headers['location']}").body
    assert '<svg class="waterfall"' in page and 'id="components"' in page
    table = pq.read_table(web_server.root / "data" / "tables" / f"score_{SCORE}.parquet")
    rows = [r for r in table.to_pylist() if str(r["account_id"]) == key]
    newest = max(rows, key=lambda r: r["event_timestamp"])
    assert f"{newest[SCORE]:.2f} at" in page


def test_static_build_pages_and_index(static_site: Path, web_project: Path) -> None:
    assert (static_site / "index.html").is_file()
    assert (static_site / "metric" / f"{METRIC}.html").is_file()
    assert (static_site / "score" / f"{SCORE}.html").is_file()
    assert list((static_site / "score" / SCORE / "explain").glob("*.html"))
    index = json.loads((static_site / "search-index.json").read_text())
    entry = next(e for e in index if e["name"] == METRIC)
    assert entry["owner"] == OWNER and entry["href"] == f"metric/{METRIC}.html"
    script = (static_site / "search-index.js").read_text()
    assert "<script>" not in script and "\\u003cscript\\u003e" in script
    page = (static_site / "metric" / f"{METRIC}.html").read_text()
    assert 'href="/' not in page and 'src="/' not in page  # relative links only


def test_static_build_refuses_a_foreign_folder(web_project: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = run_tally(["-p", str(web_project), "ui", "--build", str(foreign)])
    assert result.code == 1 and "is not a site" in result.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert "Traceback" not in result.stderr


def test_static_rebuild_replaces_the_old_site(web_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    assert run_tally(["-p", str(web_project), "ui", "--build", str(out),
                      "--explain-limit", "0"]).code == 0
    stale = out / "metric" / "gone.html"
    stale.write_text("old")
    assert run_tally(["-p", str(web_project), "ui", "--build", str(out),
                      "--explain-limit", "0"]).code == 0
    assert not stale.exists() and (out / "index.html").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tally-tmp-")]


def test_ui_usage_errors(web_project: Path, tmp_path: Path) -> None:
    bad_port = run_tally(["-p", str(web_project), "ui", "--port", "0"])
    assert bad_port.code == 2 and "--port 0" in bad_port.stderr
    broken = tmp_path / "broken"
    (broken / "metrics").mkdir(parents=True)
    (broken / "metrics" / "x.yaml").write_text("metrics:\n  - name: Bad Name\n")
    result = run_tally(["-p", str(broken), "ui", "--port", "8"], timeout=120)
    assert result.code == 1 and "x.yaml" in result.stderr and "Traceback" not in result.stderr


def test_distribution_matches_the_computed_table(web_project: Path) -> None:
    from tally.catalog.scores.entities import newest_keys
    from tally.catalog.search.distribution import distribution
    from tally.catalog.spec.loading import load_project

    project = load_project(web_project)
    frame = pq.read_table(web_project / "data" / "tables" / "crm_logins_1d.parquet").to_pandas()
    result = distribution(project, METRIC, snapshots=3)
    assert result is not None and result.computed and len(result.snapshots) == 3
    newest = frame[frame["event_timestamp"] == frame["event_timestamp"].max()][METRIC]
    last = result.snapshots[-1]
    assert last.count == newest.notna().sum()
    assert last.p50 == float(newest.quantile(0.5))
    assert last.p90 == float(newest.quantile(0.9))
    assert (last.low, last.high) == (float(newest.min()), float(newest.max()))
    assert distribution(project, "crm_seat_count") is None  # a column metric: no snapshots
    scores = pq.read_table(web_project / "data" / "tables" / f"score_{SCORE}.parquet").to_pandas()
    at_newest = scores[scores["event_timestamp"] == scores["event_timestamp"].max()]
    assert newest_keys(project, SCORE, 1000) == sorted(at_newest["account_id"].tolist())
    assert newest_keys(project, SCORE, 2) == sorted(at_newest["account_id"].tolist())[:2]


def test_pages_follow_edited_definitions(example_project: Path) -> None:
    from tally.catalog.web.render import Renderer
    from tally.catalog.web.site import Site

    renderer = Renderer(Site(example_project), "server")
    assert "trailing 30 days" in renderer.entry("metric", METRIC)
    crm = example_project / "metrics" / "crm.yaml"
    crm.write_text(crm.read_text().replace(
        "Distinct users who logged in to CRM in the trailing 30 days.",
        "Distinct CRM users of the last 30 days <b>edited</b>."))
    page = renderer.entry("metric", METRIC)
    assert "Distinct CRM users of the last 30 days &lt;b&gt;edited&lt;/b&gt;." in page
    assert "Distinct CRM users" in renderer.search("distinct crm", {})
