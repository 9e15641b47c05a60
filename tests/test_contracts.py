"""Data contracts: each way a source can break, in the JSON and the table; gate(); expect."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from tally.catalog.contracts.checks import ContractViolationError, check, gate
from tally.catalog.spec.loading import load_project

from tests.helpers import invoke

AS_OF = ["--as-of", "2026-01-01"]
ORDERS_OWNER = "commerce-platform@example.com"
LOGINS_OWNER = "crm-platform@example.com"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tally.feature_repo.demo_data import generate

    folder = tmp_path_factory.mktemp("demo") / "data"
    generate(folder, accounts=200, end=date(2026, 1, 1))
    return folder


@pytest.fixture
def project(example_project: Path, demo_data: Path) -> Path:
    shutil.copytree(demo_data, example_project / "data")
    return example_project


def _edit(root: Path, name: str, change: Callable[[pa.Table], pa.Table]) -> pa.Table:
    path = root / "data" / f"{name}.parquet"
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    return table


def _set(table: pa.Table, column: str, rows: dict[int, object],
         type_: pa.DataType | None = None) -> pa.Table:
    values = table.column(column).to_pylist()
    for index, value in rows.items():
        values[index] = value
    position = table.schema.get_field_index(column)
    array = pa.array(values, type=type_ or table.schema.field(column).type)
    return table.set_column(position, column, array)


def _check(root: Path, capsys: pytest.CaptureFixture[str], *extra: str
           ) -> tuple[dict, str, int]:
    """(JSON report, table output, exit code) of `tally check` on the project."""
    as_json = invoke(["--project", str(root), "check", *AS_OF, "--json", *extra], capsys)
    data = json.loads(as_json.stdout)
    table = invoke(["--project", str(root), "check", *AS_OF, *extra], capsys)
    assert table.code == as_json.code
    return data, table.stdout, as_json.code


def _failures(data: dict, source: str) -> list[dict]:
    entry = next(s for s in data["sources"] if s["source"] == source)
    return [r for r in entry["rules"] if not r["ok"]]


def test_clean_data_passes_every_rule(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, table, code = _check(project, capsys)
    assert code == 0 and data["ok"] is True
    logins = next(s for s in data["sources"] if s["source"] == "crm_logins")
    rules = {(r["rule"], r["column"]) for r in logins["rules"]}
    assert ("unique", "account_id, user_id, event_ts") in rules
    assert ("freshness", "event_ts") in rules and ("min", "seconds") in rules
    assert logins["rows"] > 0 and all(r["ok"] for r in logins["rules"])
    assert "FAIL" not in table and "crm_logins" in table
    state = json.loads((project / ".tally" / "contracts.json").read_text())
    assert set(state) == set(load_project(project).sources)
    assert state["crm_logins"]["ok"] is True and state["crm_logins"]["failures"] == []
    assert state["crm_logins"]["as_of"] == "2026-01-01T00:00:00Z"


def _missing_column(root: Path) -> None:
    _edit(root, "commerce_orders", lambda t: t.drop_columns(["amount"]))


def _added_column(root: Path) -> None:
    _edit(root, "commerce_orders",
          lambda t: t.append_column("coupon", pa.array(["X"] * t.num_rows)))


def _retyped_column(root: Path) -> None:
    def change(t: pa.Table) -> pa.Table:
        t = t.set_column(t.schema.get_field_index("amount"), "amount",
                         pc.cast(t.column("amount"), pa.string()))
        return _set(t, "amount", {3: "n/a"})
    _edit(root, "commerce_orders", change)


def _null(root: Path) -> None:
    _edit(root, "commerce_orders", lambda t: _set(t, "order_id", {5: None, 9: None}))


def _below_min(root: Path) -> None:
    _edit(root, "commerce_orders", lambda t: _set(t, "amount", {1: -5.0, 2: -1.0, 7: -0.5}))


def _above_max(root: Path) -> None:
    yaml = root / "metrics" / "commerce.yaml"
    yaml.write_text(yaml.read_text().replace(
        "amount:     {type: float64, nullable: false, min: 0}",
        "amount:     {type: float64, nullable: false, min: 0, max: 100000}"))
    _edit(root, "commerce_orders", lambda t: _set(t, "amount", {4: 2_000_000.0}))


def _outside_values(root: Path) -> None:
    _edit(root, "commerce_orders", lambda t: _set(t, "status", {6: "chargeback"}))


def _duplicate_key(root: Path) -> None:
    def change(t: pa.Table) -> pa.Table:
        copy = t.slice(10, 1)
        copy = _set(copy, "seconds", {0: 1.5})  # same key, different payload
        return pa.concat_tables([t, copy])
    _edit(root, "crm_logins", change)


BREAKS = {
    # name: (break, source, owner, rule, column, offending rows (None: all rows), example check)
    "missing column": (_missing_column, "commerce_orders", ORDERS_OWNER, "missing_column",
                       "amount", None, lambda ex: ex == []),
    "added column": (_added_column, "commerce_orders", ORDERS_OWNER, "extra_column", "coupon",
                     None, lambda ex: len(ex) == 5 and all(e["coupon"] == "X" for e in ex)),
    "retyped column": (_retyped_column, "commerce_orders", ORDERS_OWNER, "column_type",
                       "amount", 1, lambda ex: [e["amount"] for e in ex] == ["n/a"]),
    "null": (_null, "commerce_orders", ORDERS_OWNER, "not_null", "order_id", 2,
             lambda ex: len(ex) == 2 and all(e["order_id"] is None for e in ex)),
    "below min": (_below_min, "commerce_orders", ORDERS_OWNER, "min", "amount", 3,
                  lambda ex: sorted(e["amount"] for e in ex) == [-5.0, -1.0, -0.5]),
    "above max": (_above_max, "commerce_orders", ORDERS_OWNER, "max", "amount", 1,
                  lambda ex: [e["amount"] for e in ex] == [2_000_000.0]),
    "outside values": (_outside_values, "commerce_orders", ORDERS_OWNER, "values", "status",
                       1, lambda ex: [e["status"] for e in ex] == ["chargeback"]),
    "duplicate key": (_duplicate_key, "crm_logins", LOGINS_OWNER, "unique",
                      "account_id, user_id, event_ts", 1,
                      lambda ex: len(ex) == 2 and sorted(e["seconds"] for e in ex)[0] == 1.5
                      and len({(e["account_id"], e["user_id"], e["event_ts"]) for e in ex}) == 1),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_break_fails_its_rule(project: Path, capsys: pytest.CaptureFixture[str],
                                   case: str) -> None:
    breaker, source, owner, rule, column, offending, examples_ok = BREAKS[case]
    breaker(project)
    data, table, code = _check(project, capsys, "--source", source)
    assert code == 1 and data["ok"] is False
    entry = next(s for s in data["sources"] if s["source"] == source)
    assert entry["owner"] == owner
    failures = _failures(data, source)
    assert [(f["rule"], f["column"]) for f in failures] == [(rule, column)], failures
    failure = failures[0]
    expected = entry["rows"] if offending is None else offending
    assert failure["offending_rows"] == expected
    assert examples_ok(failure["examples"]), failure["examples"]
    # the table says the same: the rule, the count, the owner, an example
    assert f"{source}: {rule} on {column}" in table
    assert f"contact {owner}" in table
    row = next(line for line in table.splitlines()
               if line.startswith(f"│ {rule} ") and "FAIL" in line)
    assert f" {expected} " in row
    if failure["examples"]:
        assert json.dumps(failure["examples"][0], ensure_ascii=False) in table
    state = json.loads((project / ".tally" / "contracts.json").read_text())
    assert state[source]["ok"] is False and state[source]["allowed_violation"] is False
    assert state[source]["failures"][0]["rule"] == rule
    assert state[source]["failures"][0]["offending_rows"] == expected


def test_stale_data_fails_freshness(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(["--project", str(project), "check", "--source", "crm_logins",
                     "--as-of", "2026-01-10T00:00:00Z", "--json"], capsys)
    assert result.code == 1
    data = json.loads(result.stdout)
    assert [s["source"] for s in data["sources"]] == ["crm_logins"]
    [failure] = _failures(data, "crm_logins")
    assert (failure["rule"], failure["column"]) == ("freshness", "event_ts")
    assert failure["offending_rows"] == data["sources"][0]["rows"]
    stamps = [e["event_ts"] for e in failure["examples"]]
    assert len(stamps) == 5 and stamps == sorted(stamps, reverse=True)
    assert stamps[0] in failure["message"] and "allows 2d" in failure["message"]
    table = invoke(["--project", str(project), "check", "--source", "crm_logins",
                    "--as-of", "2026-01-10T00:00:00Z"], capsys)
    assert "crm_logins: freshness on event_ts" in table.stdout
    assert f"contact {LOGINS_OWNER}" in table.stdout and stamps[0] in table.stdout


def test_naive_timestamps_are_utc(project: Path) -> None:
    aware = check(load_project(project), ["crm_licenses"], as_of="2026-01-01", record=False)
    _edit(project, "crm_licenses", lambda t: t.set_column(
        1, "reported_ts", pc.cast(t.column("reported_ts"), pa.timestamp("us"))))
    naive = check(load_project(project), ["crm_licenses"], as_of="2026-01-01", record=False)
    assert naive.ok and aware.ok
    fresh = [next(r for r in rep.sources[0].results if r.rule == "freshness")
             for rep in (aware, naive)]
    assert fresh[0].message == fresh[1].message and "Z" in fresh[0].message
    # and a naive --as-of is UTC too: 35d after the newest report, to the microsecond
    newest = fresh[0].message.split()[-1]
    from datetime import datetime, timedelta

    limit = datetime.fromisoformat(newest.replace("Z", "")) + timedelta(days=35)
    at = check(load_project(project), ["crm_licenses"], as_of=limit.isoformat(), record=False)
    past = check(load_project(project), ["crm_licenses"],
                 as_of=(limit + timedelta(seconds=1)).isoformat(), record=False)
    assert at.ok and not past.ok


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_unreadable_file_is_a_failure_naming_it(
        project: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    path = project / "data" / "commerce_orders.parquet"
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    data, table, code = _check(project, capsys, "--source", "commerce_orders",
                               "--source", "renewals")
    assert code == 1
    [failure] = _failures(data, "commerce_orders")
    assert failure["rule"] == "readable"
    assert "data/commerce_orders.parquet" in failure["message"]
    assert ("no such file" in failure["message"]) == (damage == "missing")
    assert "Traceback" not in table and "commerce_orders: readable" in table
    assert f"contact {ORDERS_OWNER}" in table
    assert all(s["ok"] for s in data["sources"] if s["source"] != "commerce_orders")


def _to_csv(root: Path, broken_lines: list[str]) -> Path:
    table = pq.read_table(root / "data" / "commerce_orders.parquet")
    csv = root / "data" / "commerce_orders.csv"
    pacsv.write_csv(table, csv)
    if broken_lines:
        lines = csv.read_text().splitlines()
        lines[3:3] = broken_lines
        csv.write_text("\n".join(lines) + "\n")
    yaml = root / "metrics" / "commerce.yaml"
    yaml.write_text(yaml.read_text().replace("data/commerce_orders.parquet",
                                             "data/commerce_orders.csv"))
    return csv


def test_csv_source_passes_and_broken_rows_fail(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _to_csv(project, [])
    data, _, code = _check(project, capsys, "--source", "commerce_orders")
    assert code == 0, _failures(data, "commerce_orders")
    rules = {r["rule"] for r in data["sources"][0]["rules"]}
    assert {"parse", "column_type", "unique", "freshness"} <= rules
    _to_csv(project, ['7,99999,2025-03-01 00:00:00Z', '8,99998,oops,1.0,"paid",extra'])
    data, table, code = _check(project, capsys, "--source", "commerce_orders")
    assert code == 1
    [failure] = _failures(data, "commerce_orders")
    assert failure["rule"] == "parse" and failure["offending_rows"] == 2
    assert [e["line"] for e in failure["examples"]] == [4, 5]  # line 1 is the header
    assert failure["examples"][0]["text"] == "7,99999,2025-03-01 00:00:00Z"
    assert "commerce_orders: parse" in table and f"contact {ORDERS_OWNER}" in table
    assert " 2 " in next(ln for ln in table.splitlines() if ln.startswith("│ parse"))


def test_gate_refuses_then_allows(project: Path) -> None:
    _below_min(project)
    loaded = load_project(project)
    with pytest.raises(ContractViolationError) as caught:
        gate(loaded, ["commerce_orders", "crm_logins"], as_of="2026-01-01")
    message = str(caught.value)
    for part in ("commerce_orders", "rule min on amount", "3 offending rows", ORDERS_OWNER,
                 "`allow_violations`"):
        assert part in message, message
    assert "crm_logins" not in message
    state = json.loads((project / ".tally" / "contracts.json").read_text())
    assert state["commerce_orders"]["ok"] is False
    assert state["commerce_orders"]["allowed_violation"] is False
    assert state["crm_logins"]["ok"] is True
    report = gate(loaded, ["commerce_orders"], as_of="2026-01-01", allow_violations=True)
    assert not report.ok and report.failing_sources[0].failures[0].offending_rows == 3
    state = json.loads((project / ".tally" / "contracts.json").read_text())
    assert state["commerce_orders"]["allowed_violation"] is True
    assert state["commerce_orders"]["failures"][0]["rule"] == "min"
    assert gate(loaded, ["crm_logins"], as_of="2026-01-01").ok


def test_unknown_source_is_a_lookup_error(project: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    result = invoke(["--project", str(project), "check", "--source", "nope"], capsys)
    assert result.code == 1 and "no source named 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_metric_expectations_on_computed_table(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _, code = _check(project, capsys, "--source", "crm_logins")
    [expect] = data["metrics"]
    assert code == 0 and expect["metric"] == "crm_monthly_active_users"
    assert "not computed yet" in expect["skipped"]
    tables = project / "data" / "tables"
    tables.mkdir()
    pq.write_table(pa.table({
        "account_id": [1, 2, 3, 4],
        "event_timestamp": pa.array([0, 0, 0, 0], pa.timestamp("us", tz="UTC")),
        "crm_monthly_active_users": [3, -1, None, 5],
    }), tables / "crm_logins_1d.parquet")
    data, table, code = _check(project, capsys, "--source", "crm_logins")
    assert code == 1 and data["sources"][0]["ok"] is True
    [expect] = data["metrics"]
    failed = {r["rule"]: r for r in expect["rules"] if not r["ok"]}
    assert set(failed) == {"expect_min", "expect_max_null_fraction"}
    assert failed["expect_min"]["offending_rows"] == 1
    assert failed["expect_min"]["examples"][0]["account_id"] == 2
    assert failed["expect_max_null_fraction"]["offending_rows"] == 1
    assert "crm_monthly_active_users: expect_min" in table
    assert "contact crm-analytics@example.com" in table


UNIQUE_CONTRACT = """\
entities:
  - {name: account, join_key: account_id, description: An account., owner: a@example.com}
sources:
  - name: logins
    description: Logins.
    owner: crm-platform@example.com
    path: data/logins.parquet
    entity: account
    timestamp_field: event_ts
    contract:
      freshness: 2d
      columns:
        account_id: {type: int64}
        user_id:    {type: int64, nullable: false}
        event_ts:   {type: timestamp, nullable: false}
      unique: [account_id, user_id, event_ts]
"""


def _ordering_cases() -> dict[str, pa.Table]:
    import numpy as np

    rng = np.random.default_rng(5)
    n = 20_000
    accounts = rng.integers(1, 20, n)
    users = accounts * 10 + rng.integers(0, 3, n)
    start = 1_735_689_600_000_000

    def table(event: object, account: object = accounts, user: object = users,
              nulls: bool = False, null_times: bool = False) -> pa.Table:
        mask = rng.random(n) < 0.05 if nulls else None
        times = rng.random(n) < 0.05 if null_times else None
        return pa.table({
            "account_id": pa.array(account, mask=mask),
            "user_id": user,
            "event_ts": pa.array(event, mask=times).cast(pa.timestamp("us", tz="UTC"))})

    distinct = start + np.sort(rng.choice(10**9, n, replace=False))
    tied = start + np.sort(rng.integers(0, 4000, n))  # ties, some full-key repeats
    swapped = distinct.copy()
    swapped[[10, 11]] = swapped[[11, 10]]  # out of order inside one row group
    swapped[30] = swapped[31]
    repeat_account, repeat_user = accounts.copy(), users.copy()
    repeat_account[31], repeat_user[31] = accounts[30], users[30]
    shuffled = distinct.copy()
    rng.shuffle(shuffled)
    by_user = np.argsort(users, kind="stable")
    return {
        "in order, unique": table(distinct),
        "in order, ties and repeats": table(tied),
        "in order, nulls in the key": table(tied, nulls=True),
        "in order, null times": table(tied, null_times=True),
        "in order, naive times": table(tied).set_column(
            2, "event_ts", pa.array(tied).cast(pa.timestamp("us"))),
        "many ties": table(start + np.sort(rng.integers(0, 50, n))),
        "out of order within a row group": table(swapped, repeat_account, repeat_user),
        "shuffled": table(shuffled),
        "in user order": table(tied[by_user], accounts[by_user], users[by_user]),
    }


@pytest.mark.parametrize("case", sorted(_ordering_cases()))
def test_unique_on_ordered_data_equals_the_hash_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Counting repeats only among tied values of a key column in order gives the same
    result (counts and examples) as the hash count over every row, in and out of order."""
    import tally.catalog.contracts.ordered as contracts

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "logins.yaml").write_text(UNIQUE_CONTRACT)
    (tmp_path / "data").mkdir()
    pq.write_table(_ordering_cases()[case], tmp_path / "data" / "logins.parquet",
                   row_group_size=4000)

    def results() -> list[dict]:
        report = check(load_project(tmp_path), ["logins"], as_of="2026-01-01",
                       expectations=False, record=False)
        return [r.to_dict() for r in report.sources[0].results]

    chosen: list[object] = []
    ordered_key = contracts._ordered_key
    monkeypatch.setattr(contracts, "_ordered_key",
                        lambda *args: chosen.append(ordered_key(*args)) or chosen[-1])
    fast = results()
    # the ordered count really ran, except where no key column is in order
    assert (chosen[-1] is not None) == (case != "shuffled")
    monkeypatch.setattr(contracts, "_IN_ONE_ARRAY", 0)  # streamed in batches
    assert fast == results()
    monkeypatch.setattr(contracts, "_ordered_key", lambda *args: None)
    assert fast == results()
