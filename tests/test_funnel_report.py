"""`tally funnel` and the library report behind it, on a funnel table the fixture writes
in the agreed layout (`<name>`, `<name>__step_1..k`) with counts known by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import invoke

DEFINITIONS = """\
entities:
  - {name: account, join_key: account_id, description: A customer., owner: cs@example.com}
sources:
  - name: events
    description: Sales events.
    owner: crm@example.com
    path: data/events.parquet
    entity: account
    timestamp_field: ts
    contract:
      columns:
        account_id: {type: int64}
        user_id: {type: int64}
        event: {type: string}
        ts: {type: timestamp}
  - name: plans
    description: Plan tier changes.
    owner: billing@example.com
    path: data/plans.parquet
    entity: account
    timestamp_field: reported_ts
metrics:
  - name: job_30d
    type: funnel
    description: Opportunities quoted and closed within a week.
    owner: sales@example.com
    entity: account
    steps:
      - {source: events, filter: "event = 'created'"}
      - {source: events, filter: "event = 'quoted'"}
      - {source: events, filter: "event = 'won'"}
    within: 7d
    window: 30d
    grain: 1d
    same: user_id
  - name: events_30d
    description: Events in the trailing 30 days.
    owner: crm@example.com
    source: events
    aggregation: count
    expression: "*"
    window: 30d
  - name: plan_tier
    description: The account's plan tier, as billing last reported it.
    owner: billing@example.com
    type: column
    source: plans
    expression: tier
    ttl: 90d
scores:
  - name: job_score
    entity: account
    description: Job completion beside activity.
    owner: ds@example.com
    components:
      - {metric: job_30d, weight: 1}
      - {metric: events_30d, weight: 1}
    bands: {low: [0, 50], high: [50, 100]}
"""

T1, T2 = pd.Timestamp("2026-01-10", tz="UTC"), pd.Timestamp("2026-01-11", tz="UTC")
# (account, snapshot) -> starts, reached step 2, reached step 3 (completions)
STEPS = {(1, T1): (4, 3, 1), (2, T1): (2, 2, 2), (3, T1): (0, 0, 0),
         (1, T2): (5, 3, 2), (2, T2): (2, 1, 0), (3, T2): (3, 3, 1), (4, T2): (1, 0, 0)}


def _write(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


@pytest.fixture
def funnel_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "defs.yaml").write_text(DEFINITIONS)
    _write(root / "data" / "events.parquet", pd.DataFrame({
        "account_id": [1], "user_id": [7], "event": ["created"],
        "ts": [pd.Timestamp("2026-01-01", tz="UTC")]}))
    _write(root / "data" / "plans.parquet", pd.DataFrame({
        "account_id": [1, 2, 2, 3], "tier": ["pro", "free", "pro", "free"],
        # account 2 turns pro at T2 itself (not strictly before it); 3's row is past the ttl
        "reported_ts": pd.to_datetime(["2026-01-05", "2026-01-01", "2026-01-11",
                                       "2025-06-01"], utc=True)}))
    rows = [{"account_id": k, "event_timestamp": t, "created_timestamp": t,
             "job_30d": (c / s if s else None), "job_30d__step_1": s,
             "job_30d__step_2": q, "job_30d__step_3": c}
            for (k, t), (s, q, c) in STEPS.items()]
    _write(root / "data" / "tables" / "funnel_job_30d.parquet", pd.DataFrame(rows))
    _write(root / "data" / "tables" / "events_1d.parquet", pd.DataFrame({
        "account_id": [1, 2, 3], "event_timestamp": [T2] * 3,
        "created_timestamp": [T2] * 3, "events_30d": [10, 10, 4]}))
    _write(root / "data" / "tables" / "score_job_score.parquet", _score_rows())
    return root


def _score_rows() -> pd.DataFrame:
    """The score table of job_score at T2 in its documented layout (docs/scores.md)."""
    rows = []
    for key, (rate, events) in {1: (0.4, 10.0), 3: (1 / 3, 4.0)}.items():
        norm_rate, norm_events = (1.0, 1.0) if key == 1 else (0.5, 0.5)
        rows.append({"account_id": key, "event_timestamp": T2, "created_timestamp": T2,
                     "job_score": 50 * (norm_rate + norm_events),
                     "job_score_band": "high",
                     "job_score__job_30d_contribution": 50 * norm_rate,
                     "job_score__events_30d_contribution": 50 * norm_events,
                     "job_score__job_30d_value": rate, "job_score__job_30d_norm": norm_rate,
                     "job_score__events_30d_value": events,
                     "job_score__events_30d_norm": norm_events})
    return pd.DataFrame(rows)


def _run(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    result = invoke(["--project", str(root), "funnel", *args], capsys)
    return result.code, result.stdout, result.stderr


def test_report_sums_the_steps_across_entities_at_the_newest_snapshot(
        funnel_project: Path) -> None:
    from tally.catalog.search.funnel_report import funnel_report
    from tally.catalog.spec.loading import load_project

    report = funnel_report(load_project(funnel_project), "job_30d")
    assert report.snapshot == "2026-01-11T00:00:00+00:00"
    assert (report.entities, report.entities_with_starts) == (4, 4)
    assert (report.starts, report.completions) == (11, 3)
    assert report.rate == pytest.approx(3 / 11)
    assert [s.reached for s in report.steps] == [11, 7, 3]
    assert [s.dropped for s in report.steps] == [0, 4, 4]
    assert [s.from_previous for s in report.steps] == pytest.approx([1, 7 / 11, 3 / 7])
    assert [s.from_start for s in report.steps] == pytest.approx([1, 7 / 11, 3 / 11])
    assert [(s.source, s.filter) for s in report.steps][1] == ("events", "event = 'quoted'")
    assert (report.within, report.window, report.order, report.same, report.measure) == (
        "7d", "30d", "sequential", "user_id", "rate")


def test_at_picks_the_newest_snapshot_at_or_before_it(funnel_project: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    code, out, err = _run(funnel_project, capsys, "job_30d", "--at", "2026-01-10T18:00",
                          "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["snapshot"] == "2026-01-10T00:00:00+00:00"
    # account 3 has a row without starts at T1
    assert (data["entities"], data["entities_with_starts"]) == (3, 2)
    assert [s["reached"] for s in data["steps"]] == [6, 5, 3]
    assert data["rate"] == pytest.approx(0.5)


def test_segment_by_an_aggregate_metric_at_the_same_snapshot(
        funnel_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(funnel_project, capsys, "job_30d", "--segment-by", "events_30d",
                          "--json")
    assert code == 0, err
    segments = {s["value"]: ([x["reached"] for x in s["steps"]], s["entities"])
                for s in json.loads(out)["segments"]}
    # account 4 has no events_30d row at T2: the segment without a value
    assert segments == {4: ([3, 3, 1], 1), 10: ([7, 4, 2], 2), None: ([1, 0, 0], 1)}


def test_segment_by_a_column_metric_reads_the_newest_row_before_the_snapshot(
        funnel_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(funnel_project, capsys, "job_30d", "--segment-by", "plan_tier",
                          "--json")
    assert code == 0, err
    segments = {s["value"]: [x["reached"] for x in s["steps"]]
                for s in json.loads(out)["segments"]}
    assert segments == {"free": [2, 1, 0], "pro": [5, 3, 2], None: [4, 3, 1]}


def test_table_output_shows_reach_conversion_and_drop_off(
        funnel_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(funnel_project, capsys, "job_30d", "--segment-by", "plan_tier")
    assert code == 0, err
    assert "11 starts across 4 of 4 accounts; 3 completed (27.3%)" in out
    assert "'quoted'" in out
    second = next(line for line in out.splitlines() if "63.6%" in line)
    assert [cell.strip() for cell in second.split("│")][1:6] == [
        "2. event = 'quoted'", "7", "63.6%", "63.6%", "4"]
    assert "(no value)" in out and "pro" in out


def test_plot_writes_a_png(funnel_project: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "charts" / "funnel.png"
    code, stdout, err = _run(funnel_project, capsys, "job_30d", "--segment-by", "plan_tier",
                             "--plot", str(out), "--json")
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(stdout)["metric"] == "job_30d"  # only JSON on stdout
    assert "wrote the funnel chart" in err
    code, _, err = _run(funnel_project, capsys, "job_30d", "--plot", str(tmp_path / "f.jpg"))
    assert code == 2 and "--plot" in err and not (tmp_path / "f.jpg").exists()


@pytest.mark.parametrize(("args", "code", "words"), [
    (["nope"], 1, "unknown metric 'nope'; funnel metrics: job_30d"),
    (["events_30d"], 1, "events_30d is an aggregate metric, not a funnel; funnel metrics: job_30d"),
    (["job_30d", "--at", "2026-01-01"], 1, "--at 2026-01-01T00:00:00+00:00: funnel job_30d "
     "has no snapshot at or before it; its first is 2026-01-10T00:00:00+00:00"),
    (["job_30d", "--at", "soon"], 2, "--at 'soon' is not a date or time"),
    (["job_30d", "--segment-by", "tier"], 1, "--segment-by 'tier' is no metric of this "
     "project; give a metric of account"),
])
def test_errors_exit_with_a_clear_message(funnel_project: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], code: int, words: str) -> None:
    got, out, err = _run(funnel_project, capsys, *args)
    assert got == code and words in err and "Traceback" not in err
    assert out == ""


def test_a_funnel_not_computed_yet_names_the_command(funnel_project: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (funnel_project / "data" / "tables" / "funnel_job_30d.parquet").unlink()
    code, out, err = _run(funnel_project, capsys, "job_30d", "--json")
    assert code == 1 and out == ""
    assert "not computed yet" in err and "--metric" in err


def test_show_spells_out_the_funnel(funnel_project: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    shown = invoke(["--project", str(funnel_project), "show", "job_30d"], capsys)
    assert shown.code == 0, shown.stderr
    # order and measure are defaults, absent from the definition, and still shown
    assert ("funnel: sequential, last step within 7d of the first, same user_id; starts in "
            "the trailing 30d every 1d; measure rate") in shown.stdout
    assert "  step 2: events where event = 'quoted'" in shown.stdout
    assert "columns: job_30d, job_30d__step_1, job_30d__step_2, job_30d__step_3" in shown.stdout
    card = json.loads(invoke(["--project", str(funnel_project), "show", "job_30d", "--json"],
                             capsys).stdout)
    assert card["funnel"]["steps"][2] == {"step": 3, "source": "events",
                                          "filter": "event = 'won'"}
    assert card["columns"] == ["event", "user_id"]
    assert {"kind": "source", "name": "events"} in card["upstream"]
    view = json.loads(invoke(["--project", str(funnel_project), "show", "funnel_job_30d",
                              "--json"], capsys).stdout)
    assert view["columns"][-1] == "job_30d__step_3" and "funnel job_30d" in view[
        "description"]


def test_explain_shows_the_funnel_components_step_counts(
        funnel_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--project", str(funnel_project), "explain", "job_score", "--entity"]
    data = json.loads(invoke([*base, "3", "--json"], capsys).stdout)
    steps = {c["metric"]: c["funnel_steps"] for c in data["components"]}
    assert steps == {"job_30d": [3, 3, 1], "events_30d": None}
    text = invoke([*base, "1"], capsys)
    assert text.code == 0, text.stderr
    assert "job_30d steps: 5 started, step 2 3 (60%), step 3 2 (67%)" in text.stdout


def test_web_pages_show_the_funnel_and_the_step_counts(funnel_project: Path) -> None:
    from tally.catalog.web.render import Renderer
    from tally.catalog.web.site import Site

    renderer = Renderer(Site(funnel_project), "server")
    page = renderer.entry("metric", "job_30d")
    assert 'id="extra-funnel"' in page and "event = &#39;quoted&#39;" in page
    explained = renderer.explain("job_score", "3")
    assert "steps: step 1 3, step 2 3, step 3 1" in explained
