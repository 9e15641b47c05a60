"""`tally compute` from the command line: gating by contracts, JSON, incremental runs."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, invoke


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    from tally.feature_repo.demo_data import generate

    root = tmp_path / "p"
    shutil.copytree(REPO / "metrics", root / "metrics")
    generate(root / "data", accounts=40, seed=5, end=date(2026, 1, 1))
    return root


def test_compute_json_then_incremental(small_project: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--project", str(small_project), "compute", "--as-of", "2026-01-01", "--json"]
    first = invoke(args, capsys)
    assert first.code == 0, first.stderr
    rows = {r["table"]: r for r in json.loads(first.stdout)}
    assert set(rows) == {"commerce_orders_1d", "crm_logins_1d", "marketing_sends_1d",
                         "funnel_quote_to_close_30d", "derived_account_1d",
                         "score_net_adoption_score"}
    assert all(r["mode"] == "full" for r in rows.values())
    table = small_project / "data" / "tables" / "crm_logins_1d.parquet"
    before = pq.read_table(table)
    second = invoke(args, capsys)
    assert second.code == 0, second.stderr
    assert {r["table"]: r["mode"] for r in json.loads(second.stdout)} == {
        name: "up to date" for name in rows}
    assert "every table is up to date" in second.stderr
    assert pq.read_table(table).equals(before)
    stats = json.loads((small_project / ".tally" / "tables.json").read_text())
    assert stats["crm_logins_1d"]["rows"] == before.num_rows
    assert stats["crm_logins_1d"]["newest_snapshot"].startswith("2026-01-01")


def test_compute_one_metric_and_unknown_metric(small_project: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--project", str(small_project), "compute", "--as-of", "2026-01-01", "--json"]
    one = invoke([*base, "--metric", "commerce_gmv_30d"], capsys)
    assert [r["table"] for r in json.loads(one.stdout)] == ["commerce_orders_1d"]
    unknown = invoke([*base, "--metric", "nope"], capsys)
    assert unknown.code == 1 and "unknown metric 'nope'" in unknown.stderr
    bad_date = invoke([*base, "--start", "yesterday"], capsys)
    assert bad_date.code == 2 and "YYYY-MM-DD" in bad_date.stderr


def test_compute_refuses_a_failing_contract_then_allows(small_project: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    import pyarrow as pa

    orders = small_project / "data" / "commerce_orders.parquet"
    table = pq.read_table(orders)
    amounts = table["amount"].to_pylist()
    amounts[0] = -5.0  # breaks `min: 0`
    pq.write_table(table.set_column(table.schema.get_field_index("amount"), "amount",
                                    pa.array(amounts)), orders)
    args = ["--project", str(small_project), "compute", "--as-of", "2026-01-01"]
    refused = invoke(args, capsys)
    assert refused.code == 1
    assert "commerce_orders" in refused.stderr and "commerce-platform@example.com" in (
        refused.stderr)
    assert "--allow-violations" in refused.stderr
    assert not (small_project / "data" / "tables").exists()
    allowed = invoke([*args, "--allow-violations"], capsys)
    assert allowed.code == 0, allowed.stderr
    assert (small_project / "data" / "tables" / "commerce_orders_1d.parquet").exists()
    state = json.loads((small_project / ".tally" / "contracts.json").read_text())
    assert state["commerce_orders"]["ok"] is False
    assert state["commerce_orders"]["allowed_violation"] is True


def test_compute_names_a_missing_source_file(small_project: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The contract gate refuses an unreadable source first; past the gate
    (--allow-violations), compute itself names the missing file and whom to ask."""
    (small_project / "data" / "marketing_sends.parquet").unlink()
    args = ["--project", str(small_project), "compute", "--as-of", "2026-01-01"]
    gated = invoke(args, capsys)
    assert gated.code == 1
    assert "marketing_sends.parquet: no such file" in gated.stderr
    assert "Traceback" not in gated.stderr
    result = invoke([*args, "--allow-violations"], capsys)
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr  # compute's own error, not the gate's
    assert errors[0].startswith("error: source marketing_sends: data file ")
    assert "marketing_sends.parquet does not exist" in errors[0]
    assert "marketing-platform@example.com" in errors[0]  # the producer to ask
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["compute", "--as-of", "yesterday"],
                                  ["check", "--as-of", "2026-13-01"]])
def test_a_bad_time_flag_is_a_usage_error(small_project: Path, args: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Every time flag is read by one parser: a bad one exits 2 and names the flag."""
    result = invoke(["--project", str(small_project), *args], capsys)
    assert result.code == 2
    assert "--as-of" in result.stderr and "not a date or time" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_gate_covers_every_source_compute_reads() -> None:
    from tally.catalog.compute.runner import ComputeOptions, Computer
    from tally.catalog.spec.loading import load_project

    computer = Computer(load_project(REPO))
    # groups scan three sources; the funnel its two step sources; derived metrics read two
    # column sources; renewals only feeds a column view that Feast serves from the file,
    # so compute never reads it
    assert computer.sources_read(computer.selected()) == [
        "billing_events", "commerce_orders", "crm_events", "crm_licenses", "crm_logins",
        "marketing_contracts", "marketing_sends"]
    only = Computer(load_project(REPO), ComputeOptions(metrics=["commerce_gmv_30d"]))
    assert only.sources_read(only.selected()) == ["commerce_orders"]
