"""The run log and `tally portfolio` on a project of three models sharing tables, with one
unused feature: cost attribution adds up, unused things are named, sharing saved matches
its definition worked out by hand from the log, and a torn last log line still reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tally.catalog.pipeline import Gate, compute
from tally.catalog.search.portfolio import portfolio
from tally.catalog.spec.loading import load_project
from tally.catalog.spec.tables import table_specs
from tally.catalog.store.paths import RUN_LOG_FILE
from tally.catalog.store.runlog import Run, TableRun, append_run, read_runs
from tally.feature_repo.registry import apply
from tally.feature_repo.scaffold import init_project
from tally.feature_repo.serving import training_frame

from tests.helpers import invoke

OWNER = "team@example.com"
DEFINITIONS = f"""\
entities:
  - {{name: account, join_key: account_id, description: A customer account., owner: {OWNER}}}
sources:
  - {{name: orders, description: Orders., owner: {OWNER}, path: data/orders.parquet,
     entity: account, timestamp_field: ts}}
  - {{name: logins, description: Logins., owner: {OWNER}, path: data/logins.parquet,
     entity: account, timestamp_field: ts}}
  - {{name: tickets, description: Tickets., owner: {OWNER}, path: data/tickets.parquet,
     entity: account, timestamp_field: ts}}
metrics:
  - {{name: orders_30d, description: Orders., owner: {OWNER}, source: orders,
     aggregation: count, expression: amount, window: 30d}}
  - {{name: gmv_30d, description: Order value., owner: {OWNER}, source: orders,
     aggregation: sum, expression: amount, window: 30d}}
  - {{name: logins_30d, description: Logins., owner: {OWNER}, source: logins,
     aggregation: count, expression: amount, window: 30d}}
  - {{name: login_max_30d, description: Longest login (read by nobody)., owner: {OWNER},
     source: logins, aggregation: max, expression: amount, window: 30d}}
  - {{name: tickets_30d, description: Tickets., owner: {OWNER}, source: tickets,
     aggregation: count, expression: amount, window: 30d}}
models:
  - {{name: churn, description: Churn., owner: {OWNER}, features: [orders_30d, logins_30d]}}
  - {{name: upsell, description: Upsell., owner: {OWNER}, features: [gmv_30d, logins_30d],
     outcome: gmv_30d, maintenance_hours_per_month: 4}}
  - {{name: expansion, description: Expansion., owner: {OWNER},
     features: [gmv_30d, tickets_30d], maintenance_hours_per_month: 2}}
"""
TABLES = {"orders": "orders_1d", "logins": "logins_1d",
          "tickets": "tickets_1d"}


def _project(root: Path, days: int = 20) -> Path:
    init_project(root)
    for leftover in (root / "metrics").glob("*.yaml"):
        leftover.unlink()
    (root / "metrics" / "defs.yaml").write_text(DEFINITIONS)
    (root / "data").mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    end = pd.Timestamp(datetime.now(UTC).date()) - pd.Timedelta(days=1)
    for index, source in enumerate(TABLES):
        n = 200
        pd.DataFrame({
            "account_id": rng.integers(1, 20, n).astype("int64"),
            "ts": end - pd.to_timedelta(rng.integers(0, days * 24, n), unit="h"),
            "amount": rng.gamma(2.0, 10.0 * (index + 1), n),
        }).to_parquet(root / "data" / f"{source}.parquet", index=False)
    return root


def _adds_up(report: object) -> float:
    return (sum(m.attributed for m in report.models) + report.unused_cost  # type: ignore[attr-defined]
            + report.retired_cost)  # type: ignore[attr-defined]


def test_real_runs_are_logged_and_attributed_costs_add_up(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    project = load_project(root)
    assert [t.name for t in table_specs(project)] == sorted(TABLES.values())
    compute(project)
    apply(project, Gate())
    entities = pd.DataFrame({"account_id": [1, 2, 3, 4],
                             "event_timestamp": [pd.Timestamp(datetime.now(UTC))] * 4})
    training_frame(entities, model="churn", project=project)
    training_frame(entities, model="upsell", project=project)
    training_frame(entities, model="upsell", project=project)

    runs = read_runs(root)
    assert [r.command for r in runs] == ["compute", "apply"] + ["training_frame"] * 3
    written = {t.name: t for t in runs[0].tables}
    assert set(written) == set(TABLES.values())
    assert all(t.rows > 0 and t.bytes > 0 and t.cpu_seconds > 0 for t in written.values())
    assert runs[2].model == "churn" and runs[2].rows_served == 4

    report = portfolio(project, "90d")
    assert report.runs == 5
    assert report.measured["total"] > 0
    assert _adds_up(report) == pytest.approx(report.measured["total"], rel=1e-9)
    assert [f.name for f in report.unused_features] == ["login_max_30d"]
    assert report.unused_features[0].cost > 0
    assert report.unused_models == ["expansion"]
    models = {m.name: m for m in report.models}
    assert (models["upsell"].training_frames, models["upsell"].rows_served) == (2, 8)
    assert models["expansion"].last_used is None and models["churn"].last_used
    assert models["upsell"].maintenance == pytest.approx(4 * 3 * 100.0)  # 90d = 3 months
    assert models["upsell"].shared == ["gmv_30d", "logins_30d"]
    assert models["expansion"].exclusive == ["tickets_30d"]
    trend = models["upsell"].outcome
    assert trend is not None and trend.first_mean is not None and trend.last_mean is not None
    assert trend.first_snapshot < trend.last_snapshot  # type: ignore[operator]


def _hand_log(root: Path, at: datetime) -> dict[str, tuple[float, int]]:
    """A run log with known figures: per table (CPU seconds, bytes)."""
    figures = {"orders_1d": (7200.0, 4_000_000_000),
               "logins_1d": (3600.0, 1_000_000_000),
               "tickets_1d": (1800.0, 2_000_000_000)}
    tables = [TableRun(name, 10, size, cpu, cpu) for name, (cpu, size) in figures.items()]
    append_run(root, Run(at, "compute", 13000.0, 12600.0 + 900.0, tables))  # 900 s overhead
    append_run(root, Run(at, "training_frame", 1.0, 360.0, model="churn", rows_served=5))
    append_run(root, Run(at, "materialize", 1.0, 720.0, features=["logins_30d", "tickets_30d"]))
    old = at - timedelta(days=200)  # before the period: not counted, not "used"
    append_run(root, Run(old, "training_frame", 1.0, 99999.0, model="expansion"))
    return figures


def test_sharing_saved_and_costs_match_the_definitions_by_hand(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    (root / "tally.yaml").write_text(
        "cost: {cpu_hour: 2.0, storage_gb_month: 10, maintenance_hour: 50, currency: EUR}\n")
    at = datetime.now(UTC) - timedelta(days=1)
    figures = _hand_log(root, at)
    report = portfolio(load_project(root), "60d")  # two months

    # each table: CPU (with the run's 900 s overhead split over its 3 tables) + storage
    table_cost = {name: (cpu + 300.0) / 3600 * 2.0 + size / 1e9 * 10 * 2
                  for name, (cpu, size) in figures.items()}
    readers = {"orders_1d": 3, "logins_1d": 2, "tickets_1d": 1}
    saved = sum(table_cost[t] * (readers[t] - 1) for t in table_cost)
    assert report.sharing_saved == pytest.approx(saved)
    assert report.currency == "EUR"

    measured = (12600.0 + 900.0 + 360.0 + 720.0) / 3600 * 2.0 + 7e9 / 1e9 * 10 * 2
    assert report.measured["total"] == pytest.approx(measured)
    assert _adds_up(report) == pytest.approx(measured)

    models = {m.name: m for m in report.models}
    # churn: orders_30d alone (1/2 of orders), half of logins_30d (1/2 of logins, shared with
    # upsell), and half of the materialize run's logins_30d share; its own frame
    orders, logins = table_cost["orders_1d"], table_cost["logins_1d"]
    churn_measured = orders / 2 + logins / 2 / 2 + 720.0 / 3600 * 2.0 / 2 / 2 + 360 / 3600 * 2.0
    assert models["churn"].attributed == pytest.approx(churn_measured)
    assert models["churn"].maintenance == 0
    assert models["upsell"].maintenance == pytest.approx(4 * 2 * 50.0)
    assert models["upsell"].total == pytest.approx(models["upsell"].attributed + 400.0)
    assert [(f.name, f.cost) for f in report.unused_features] == [
        ("login_max_30d", pytest.approx(logins / 2))]
    assert report.unused_models == ["expansion", "upsell"]
    assert models["expansion"].last_used is not None  # used, but before the period


def test_a_torn_last_line_is_skipped_and_the_next_append_reads(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    at = datetime.now(UTC) - timedelta(hours=1)
    _hand_log(root, at)
    log = root / RUN_LOG_FILE
    with open(log, "ab") as handle:
        handle.write(b'{"time": "2026-01-01T00:00:00+00:00", "command": "comp')  # a crash
    runs = read_runs(root)
    assert len(runs) == 4
    before = portfolio(load_project(root), "90d")
    assert before.runs == 3
    append_run(root, Run(at, "training_frame", 1.0, 36.0, model="upsell", rows_served=2))
    assert len(read_runs(root)) == 5  # the torn line did not swallow the new one
    assert "upsell" not in portfolio(load_project(root), "90d").unused_models


def test_cli_portfolio_json_text_and_errors(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p")
    _hand_log(root, datetime.now(UTC) - timedelta(days=1))
    result = invoke(["--project", str(root), "portfolio", "--json"], capsys)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["unused_models"] == ["expansion", "upsell"]
    assert data["unused_features"][0]["name"] == "login_max_30d"
    assert {m["name"] for m in data["models"]} == {"churn", "upsell", "expansion"}
    text = invoke(["--project", str(root), "portfolio", "--since", "30d"], capsys)
    assert text.code == 0 and "sharing saved:" in text.stdout
    assert "unused features: login_max_30d" in text.stdout
    bad = invoke(["--project", str(root), "portfolio", "--since", "soon"], capsys)
    assert bad.code == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
    (root / "tally.yaml").write_text("cost: {cpu_hour: -1}\n")
    priced = invoke(["--project", str(root), "portfolio"], capsys)
    assert priced.code == 1 and "tally.yaml" in priced.stderr and "cpu_hour" in priced.stderr


def test_outcome_must_name_a_metric_or_score(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p")
    defs = root / "metrics" / "defs.yaml"
    defs.write_text(defs.read_text().replace("outcome: gmv_30d", "outcome: gmv_31d"))
    result = invoke(["--project", str(root), "validate"], capsys)
    assert result.code == 1
    assert "defs.yaml" in result.stderr and "outcome" in result.stderr
    assert "gmv_31d" in result.stderr


def test_plot_writes_a_png_and_refuses_other_names(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path / "p")
    _hand_log(root, datetime.now(UTC) - timedelta(days=1))
    chart = tmp_path / "portfolio.png"
    result = invoke(["--project", str(root), "portfolio", "--json", "--plot", str(chart)],
                    capsys)
    assert result.code == 0, result.stderr
    json.loads(result.stdout)  # only JSON on stdout; the note about the chart is on stderr
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(chart) in result.stderr
    bad = invoke(["--project", str(root), "portfolio", "--plot", str(tmp_path / "p.jpg")],
                 capsys)
    assert bad.code == 2 and "--plot" in bad.stderr and not (tmp_path / "p.jpg").exists()


def test_the_demo_logs_its_runs_and_the_portfolio_shows_real_figures(tmp_path: Path) -> None:
    from tally.feature_repo.demo import run_demo

    report = run_demo(tmp_path / "demo", accounts=120)
    root = tmp_path / "demo"
    assert [r.command for r in read_runs(root)] == ["compute", "apply", "materialize",
                                                    "training_frame"]
    step = next(s for s in report.steps if s.name == "portfolio")
    assert "4 runs logged" in step.summary
    result = portfolio(load_project(root), "90d")
    assert result.measured["compute"] > 0 and result.measured["storage"] > 0
    assert _adds_up(result) == pytest.approx(result.measured["total"], rel=1e-9)
    models = {m.name: m for m in result.models}
    assert models["churn_risk"].training_frames == 1 and models["churn_risk"].attributed > 0
    assert result.unused_models == ["expansion_forecast"]
    for model in models.values():  # the generated data ends before the period: see the note
        assert model.outcome is not None and model.outcome.change is not None


def test_web_catalog_portfolio_page_shows_the_same_report(tmp_path: Path) -> None:
    from tally.catalog.web.build import build_site

    root = _project(tmp_path / "p")
    _hand_log(root, datetime.now(UTC) - timedelta(days=1))
    out = tmp_path / "site"
    build_site(root, out)
    page = (out / "portfolio.html").read_text()
    expected = portfolio(load_project(root))
    assert f"{expected.sharing_saved:.6f} USD" in page
    assert 'id="unused-features">login_max_30d' in page
    assert 'href="model/expansion.html"' in page and "portfolio.html" in (
        out / "index.html").read_text()
