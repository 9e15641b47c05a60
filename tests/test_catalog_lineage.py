"""`tally impact` and `tally reuse` on a copy of the example project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tally
from tally.catalog.search.reuse import normalize_sql

from tests.helpers import invoke

DUPLICATES = """\
metrics:
  - name: paid_revenue_30d
    description: Revenue from paid orders, last 30 days (the finance team's version).
    owner: finance@example.com
    source: commerce_orders
    aggregation: sum
    expression: (amount)
    filter: "'paid' = status"
    window: 30d
  - name: paid_revenue_4w
    description: Revenue from paid orders, last four weeks.
    owner: finance@example.com
    source: commerce_orders
    aggregation: sum
    expression: amount
    filter: status = 'paid'
    window: 4w
  - name: order_count_copy
    description: Orders placed in the trailing 30 days.
    owner: finance@example.com
    source: commerce_orders
    aggregation: count
    expression: order_id
    window: 720h
"""


def run_json(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    result = invoke(["--project", str(root), *args, "--json"], capsys)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_impact_grouped_by_kind_with_owners(example_project: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    impact = run_json(example_project, capsys, "impact", "crm_seat_count")
    assert impact["kind"] == "metric" and impact["owner"] == "billing@example.com"
    assert impact["downstream"] == {
        "metric": ["crm_active_user_ratio"],
        "feature_view": ["crm_licenses_columns", "derived_account_1d",
                         "score_net_adoption_score"],
        "model": ["churn_risk", "expansion_forecast"],
        "score": ["net_adoption_score"],
    }
    owners = impact["owners"]
    assert owners["ds-apps@example.com"] == ["churn_risk", "net_adoption_score",
                                             "score_net_adoption_score"]
    assert owners["ds-revenue@example.com"] == ["expansion_forecast"]
    assert "crm_active_user_ratio" in owners["crm-analytics@example.com"]
    text = invoke(["--project", str(example_project), "impact", "crm_seat_count"], capsys)
    assert "owners to notify" in text.stdout and "ds-revenue@example.com" in text.stdout


def test_impact_does_not_leak_through_shared_feature_views(
        example_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # commerce_orders_30d shares a table with features models use, but no model uses it
    impact = run_json(example_project, capsys, "impact", "commerce_orders_30d")
    assert impact["downstream"] == {"feature_view": ["commerce_orders_1d"]}
    # from the view itself, every model reading it is affected
    view = run_json(example_project, capsys, "impact", "commerce_orders_1d")
    assert view["downstream"]["model"] == ["churn_risk", "expansion_forecast"]
    source = run_json(example_project, capsys, "impact", "account")
    assert set(source["downstream"]) == {"source", "metric", "score", "feature_view", "model"}
    missing = invoke(["--project", str(example_project), "impact", "nothing_here"], capsys)
    assert missing.code == 1 and "no definition named" in missing.stderr


def test_reuse_counts_unused_and_duplicates(example_project: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "metrics" / "finance.yaml").write_text(DUPLICATES)
    report = run_json(example_project, capsys, "reuse")
    uses = {f["name"]: f for f in report["features"]}
    assert uses["crm_monthly_active_users"]["model_count"] == 2
    assert uses["crm_logins_30d"]["models"] == []
    assert uses["crm_logins_30d"]["indirect_models"] == ["expansion_forecast"]
    assert {"commerce_orders_30d", "crm_session_hours_7d", "marketing_campaigns_30d",
            "paid_revenue_30d"} <= set(report["unused"])
    assert "crm_logins_30d" not in report["unused"]
    groups = sorted(sorted(d["names"]) for d in report["duplicates"])
    # same source, aggregation, normalised expression and filter, same window (30d == 720h);
    # paid_revenue_4w (28 days) is a different thing
    assert groups == [["commerce_gmv_30d", "paid_revenue_30d"],
                      ["commerce_orders_30d", "order_count_copy"]]
    gmv = next(d for d in report["duplicates"] if "commerce_gmv_30d" in d["names"])
    assert gmv["owners"] == ["commerce-analytics@example.com", "finance@example.com"]
    assert gmv["models"] == ["churn_risk", "expansion_forecast"]
    assert gmv["signature"]["aggregation"] == "sum"
    text = invoke(["--project", str(example_project), "reuse"], capsys).stdout
    assert "duplicated pipeline: commerce_gmv_30d, paid_revenue_30d" in text


def test_normalize_sql() -> None:
    assert normalize_sql("5 < Seconds") == normalize_sql("(seconds > 5)")
    assert normalize_sql("a + b * c") == normalize_sql("c * b + a")
    assert normalize_sql("x = 1 AND y = 2") == normalize_sql("y = 2 and 1 = x")
    assert normalize_sql("a - b") != normalize_sql("b - a")
    assert normalize_sql(None) is None and normalize_sql("*") == "*"


def test_notebook_impact_and_reuse_frames(example_project: Path) -> None:
    project = tally.load(str(example_project))
    impact = project.impact("marketing_contracted_volume")
    assert impact.by_kind["metric"] == ["marketing_send_utilisation"]
    frame = impact.to_frame()
    assert set(frame["kind"]) == {"metric", "feature_view", "score", "model"}
    assert frame[frame["name"] == "marketing_send_utilisation"]["distance"].item() == 1
    reuse = project.reuse().to_frame()
    assert reuse.set_index("name").loc["commerce_gmv_30d", "model_count"] == 2
