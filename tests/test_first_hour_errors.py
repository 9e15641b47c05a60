"""Issue 14: a new user's bad data and half-done steps get a clear message, never
"This is a bug in tally"; nothing is half loaded. Driven through the real CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, Result, run_tally

BUG = "This is a bug in tally"

PROJECT = """\
entities:
  - name: account
    join_key: account_id
    description: An account.
    owner: a@example.com
sources:
  - name: logins
    description: Logins.
    owner: a@example.com
    path: data/logins.parquet
    entity: account
    timestamp_field: ts
metrics:
  - name: logins_7d
    description: Logins in 7 days.
    owner: a@example.com
    source: logins
    aggregation: count
    expression: "*"
    window: 7d
"""

EXTRA = """\
  - name: {name}
    description: Another metric.
    owner: a@example.com
    source: logins
    aggregation: max
    expression: seconds
    window: {window}
    grain: {grain}
"""


def _make(root: Path, metrics: str = PROJECT) -> Path:
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "m.yaml").write_text(metrics)
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    (root / "data").mkdir()
    stamps = pd.date_range("2025-11-01", "2025-12-10", freq="6h", tz="UTC").astype(
        "datetime64[us, UTC]")  # microseconds, as Tally and most writers store them
    pd.DataFrame({"account_id": [1 + i % 3 for i in range(len(stamps))], "ts": stamps,
                  "seconds": [float(i % 7) for i in range(len(stamps))]}
                 ).to_parquet(root / "data" / "logins.parquet")
    return root


def _tally(root: Path, *args: str) -> Result:
    return run_tally(["--project", str(root), *args])


def _clear(result: Result) -> None:
    assert result.code == 1, result.stderr
    assert BUG not in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _make(tmp_path_factory.mktemp("applied") / "p")
    for step in ("compute", "apply"):
        result = _tally(root, step, "--as-of", "2025-12-11")
        assert result.code == 0, result.stderr
    return root


@pytest.fixture
def project(applied: Path, tmp_path: Path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(applied, root)
    return root


def _entities(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entities.csv"
    path.write_text(text)
    return path


def _add_metric(root: Path, name: str, window: str = "1d", grain: str = "1d") -> None:
    with (root / "metrics" / "m.yaml").open("a") as handle:
        handle.write(EXTRA.format(name=name, window=window, grain=grain))


def _online_rows(online: Path) -> int:
    import sqlite3

    with sqlite3.connect(online) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)


def test_computed_but_not_applied_says_apply(project: Path, tmp_path: Path) -> None:
    _add_metric(project, "logins_max_1d")
    assert _tally(project, "compute", "--as-of", "2025-12-11").code == 0
    entities = _entities(tmp_path, "account_id,event_timestamp\n1,2025-12-05\n")
    result = _tally(project, "training-frame", "--entities", str(entities), "--features",
                    "logins_max_1d", "--out", str(tmp_path / "f.parquet"))
    _clear(result)
    assert "logins_max_1d" in result.stderr and "tally apply" in result.stderr


def test_applied_but_not_computed_names_what_to_compute_and_loads_nothing(
        project: Path, tmp_path: Path) -> None:
    _add_metric(project, "logins_max_2d", window="2d", grain="2d")  # a new table
    _add_metric(project, "logins_max_7d", window="7d")  # in logins_1d, computed before it
    assert _tally(project, "apply", "--as-of", "2025-12-11").code == 0
    online = project / "feature_repo" / "data" / "online_store.db"
    entities = _entities(tmp_path, "account_id,event_timestamp\n1,2025-12-05\n")
    frame = _tally(project, "training-frame", "--entities", str(entities), "--features",
                   "logins_7d,logins_max_7d", "--out", str(tmp_path / "f.parquet"))
    _clear(frame)
    assert "logins_max_7d" in frame.stderr and "--metric logins_max_7d" in frame.stderr
    loaded = _tally(project, "materialize", "--as-of", "2025-12-11", "--start", "2025-11-01")
    _clear(loaded)
    assert "tally compute --metric logins_max_2d --metric logins_max_7d" in loaded.stderr
    assert _online_rows(online) == 0  # logins_1d, computed, was not loaded either


def test_entity_key_that_is_not_an_integer_names_column_row_and_type(
        applied: Path, tmp_path: Path) -> None:
    entities = _entities(tmp_path, "account_id,event_timestamp\n1,2025-12-05\nabc,2025-12-05\n")
    result = _tally(applied, "training-frame", "--entities", str(entities), "--features",
                    "logins_7d", "--out", str(tmp_path / "f.parquet"))
    _clear(result)
    assert "column account_id, row 2: 'abc' is not an integer" in result.stderr


def test_entity_times_in_any_iso_form_and_another_time_column(
        applied: Path, tmp_path: Path) -> None:
    entities = _entities(tmp_path, "account_id,as_of,label\n1,2025-12-05,1\n"
                                   "1,2025-12-05 12:00:00,0\n2,2025-12-06T01:00:00+01:00,1\n")
    out = tmp_path / "f.csv"
    result = _tally(applied, "training-frame", "--entities", str(entities), "--features",
                    "logins_7d", "--timestamp-column", "as_of", "--out", str(out))
    assert result.code == 0, result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["account_id", "as_of", "label", "logins_7d"]
    assert frame["logins_7d"].notna().all()
    bad = _entities(tmp_path, "account_id,event_timestamp\n1,2025-12-05\n1,05/12/2025\n")
    refused = _tally(applied, "training-frame", "--entities", str(bad), "--features",
                     "logins_7d", "--out", str(out))
    _clear(refused)
    assert "row 2: '05/12/2025' is not an ISO 8601 timestamp" in refused.stderr
    assert "format=" not in refused.stderr


def test_library_training_frame_takes_a_timestamp_column(applied: Path) -> None:
    import tally

    entities = pd.DataFrame({"account_id": [1, 2], "seen": ["2025-12-05", "2025-12-06 10:00"]})
    frame = tally.training_frame(entities, features=["logins_7d"], project=applied,
                                 timestamp_column="seen")
    assert list(frame.columns) == ["account_id", "seen", "logins_7d"]
    assert frame["logins_7d"].notna().all()


def test_csv_source_with_unparsable_times(tmp_path: Path) -> None:
    root = _make(tmp_path / "p", PROJECT.replace("logins.parquet", "logins.csv"))
    (root / "data" / "logins.csv").write_text(
        "account_id,ts\n1,2025-12-01 10:00:00\n2,not a time\n1,2025-12-02\n")
    check = _tally(root, "check")
    _clear(check)
    assert "column_type" in check.stdout and "not a timestamp" in check.stdout
    assert "not a time" in check.stdout
    compute = _tally(root, "compute", "--allow-violations")
    _clear(compute)
    assert "source logins" in compute.stderr and "column ts" in compute.stderr
    assert "ts='not a time'" in compute.stderr and "epoch_us" not in compute.stderr
    assert "SourceReport(" not in compute.stderr
    assert "going ahead with source logins despite" in compute.stderr
    assert "column_type on ts (1 rows)" in compute.stderr


def test_nanosecond_timestamps_meet_a_timestamp_contract(tmp_path: Path) -> None:
    contract = ("    timestamp_field: ts\n    contract:\n      columns:\n"
                "        account_id: {type: int64}\n        ts: {type: timestamp}\n"
                "        seconds: {type: float64}\n      unique: [ts]\n")
    root = _make(tmp_path / "p", PROJECT.replace("    timestamp_field: ts\n", contract))
    frame = pd.read_parquet(root / "data" / "logins.parquet")
    for zone in ("UTC", None):  # pandas writes TIMESTAMPTZ_NS / TIMESTAMP_NS
        stamps = frame["ts"].dt.tz_convert(zone) if zone else frame["ts"].dt.tz_localize(None)
        frame.assign(ts=stamps.astype(f"datetime64[ns{', UTC' if zone else ''}]")).to_parquet(
            root / "data" / "logins.parquet", coerce_timestamps=None)
        result = _tally(root, "check", "--json")
        assert result.code == 0, result.stdout + result.stderr
        computed = _tally(root, "compute", "--as-of", "2025-12-11", "--full")
        assert computed.code == 0, computed.stderr
        assert pd.read_parquet(root / "data" / "tables" / "logins_1d.parquet")[
            "logins_7d"].sum() > 0


def test_feast_colour_codes_stay_out_of_piped_stderr(project: Path) -> None:
    result = _tally(project, "materialize", "--as-of", "2025-12-11", "--start", "2025-11-01")
    assert result.code == 0, result.stderr
    assert "Materializing" in result.stderr and "\x1b[" not in result.stderr
