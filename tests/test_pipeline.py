"""The gated pipeline in the library: compute from Python, apply and materialize all pass
the contract gate, so no caller skips a contract; errors name options, not CLI flags."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, invoke

AS_OF = "2026-01-01"  # the generated data ends there


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    from tally.feature_repo.demo_data import generate

    root = tmp_path / "p"
    shutil.copytree(REPO / "metrics", root / "metrics")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    generate(root / "data", accounts=40, seed=5, end=date(2026, 1, 1))
    return root


def _break_orders_contract(root: Path) -> None:
    orders = root / "data" / "commerce_orders.parquet"
    table = pq.read_table(orders)
    amounts = table["amount"].to_pylist()
    amounts[0] = -5.0  # breaks `min: 0`
    pq.write_table(table.set_column(table.schema.get_field_index("amount"), "amount",
                                    pa.array(amounts)), orders)


def test_compute_from_python_refuses_a_failing_contract_then_allows(small_project: Path
                                                                    ) -> None:
    import tally
    from tally.catalog.contracts.checks import ContractViolationError

    _break_orders_contract(small_project)
    with pytest.raises(ContractViolationError) as refused:
        tally.compute(small_project, as_of=AS_OF)
    assert "commerce_orders" in str(refused.value)
    assert "`allow_violations`" in str(refused.value) and "--" not in str(refused.value)
    assert not (small_project / "data" / "tables").exists()
    # a run that reads only sources whose contracts pass is not held back by another's
    only = tally.compute(small_project, ["crm_monthly_active_users"], as_of=AS_OF)
    assert [t.name for t in only.tables] == ["crm_logins_1d"]
    assert [s.source for s in only.contracts.sources] == ["crm_logins"]
    allowed = tally.compute(small_project, as_of=AS_OF, allow_violations=True)
    assert "commerce_orders_1d" in {t.name for t in allowed.tables}
    state = json.loads((small_project / ".tally" / "contracts.json").read_text())
    assert state["commerce_orders"]["allowed_violation"] is True


def test_apply_and_materialize_pass_the_gate(small_project: Path) -> None:
    from tally.catalog.contracts.checks import ContractViolationError
    from tally.catalog.pipeline import Gate, compute
    from tally.catalog.spec.loading import load_project
    from tally.feature_repo.registry import apply
    from tally.feature_repo.serving import materialize

    project = load_project(small_project)
    compute(project, run_gate=Gate(as_of=AS_OF))
    _break_orders_contract(small_project)
    registry = small_project / "feature_repo" / "data" / "registry.db"
    with pytest.raises(ContractViolationError):
        apply(project, Gate(as_of=AS_OF))
    assert not registry.exists()  # refused before Feast was touched
    assert apply(project, Gate(as_of=AS_OF, allow_violations=True))
    online = small_project / "feature_repo" / "data" / "online_store.db"
    before = online.read_bytes() if online.exists() else None
    with pytest.raises(ContractViolationError):
        materialize(project, run_gate=Gate(as_of=AS_OF))
    assert (online.read_bytes() if online.exists() else None) == before
    assert materialize(project, run_gate=Gate(as_of=AS_OF, allow_violations=True))
    assert online.read_bytes() != before  # the allowed run did load it


def test_cli_apply_refuses_through_the_same_gate(small_project: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _break_orders_contract(small_project)
    result = invoke(["--project", str(small_project), "apply", "--as-of", AS_OF], capsys)
    assert result.code == 1
    assert "commerce_orders" in result.stderr and "--allow-violations" in result.stderr
    assert "`allow_violations`" not in result.stderr


def test_an_old_layout_offline_store_type_names_the_new_one(small_project: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    yaml_path = small_project / "feature_repo" / "feature_store.yaml"
    text = yaml_path.read_text()
    new = "tally.feature_repo.offline_store.TallyDuckDBOfflineStore"
    assert new in text
    yaml_path.write_text(text.replace(new, "feature_repo.offline_store.TallyDuckDBOfflineStore"))
    line = next(i for i, t in enumerate(yaml_path.read_text().splitlines(), 1)
                if "offline_store.Tally" in t)
    result = invoke(["--project", str(small_project), "plan"], capsys)
    assert result.code == 1 and "Traceback" not in result.stderr
    assert f"line {line}" in result.stderr and "offline_store.type" in result.stderr
    assert f"change it to {new}" in result.stderr


def test_library_errors_name_options_and_the_cli_names_flags(
        small_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tally.catalog.errors import UsageError
    from tally.catalog.spec.moments import parse_moment

    with pytest.raises(UsageError) as bad:
        parse_moment("yesterday", "as_of")
    assert bad.value.option == "as_of" and "--" not in str(bad.value)
    result = invoke(["--project", str(small_project), "check", "--as-of", "yesterday"], capsys)
    assert result.code == 2 and "--as-of 'yesterday' is not a date or time" in result.stderr
