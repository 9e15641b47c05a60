"""A SIGKILL at any moment of compute or apply: the project stays loadable and the rerun
gives exactly what an uninterrupted run gives."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tally.catalog.spec.loading import load_project
from tally.catalog.store.paths import TEMP_PREFIX

from tests.helpers import REPO

AS_OF = ["--as-of", "2026-01-01"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tally.feature_repo.demo_data import generate

    root = tmp_path_factory.mktemp("crash") / "base"
    shutil.copytree(REPO / "metrics", root / "metrics")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    generate(root / "data", accounts=30, seed=9, end=date(2026, 1, 1))
    return root


def _copy(base: Path, where: Path) -> Path:
    shutil.copytree(base, where)
    return where


def _tally(root: Path, *args: str, crash: str | None = None,
           kill_after: float | None = None) -> int:
    env = dict(os.environ)
    if crash:
        env["TALLY_CRASH_AT"] = crash
    proc = subprocess.Popen([sys.executable, "-m", "tally.cli.main", "--project", str(root), *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)  # the kill lands wherever the run has got to
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    if crash is None and kill_after is None:
        assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    return proc.returncode


def _tables(root: Path) -> dict[str, object]:
    folder = root / "data" / "tables"
    return {p.name: pq.read_table(p) for p in sorted(folder.glob("*.parquet"))}


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def test_compute_killed_at_any_moment(base: Path, tmp_path: Path) -> None:
    reference = _copy(base, tmp_path / "reference")
    started = time.perf_counter()
    _tally(reference, "compute", *AS_OF)
    took = time.perf_counter() - started
    expected = _tables(reference)
    assert len(expected) >= 4
    # kills at a random point of the second half of a run (by the reference run's time),
    # where the tables are being computed and written, not while Python starts
    rng = random.Random(20261129)
    moments: list[tuple[str | None, float | None]] = [
        ("compute-before-rename", None), ("compute-after-rename", None),
        (None, took * rng.uniform(0.5, 0.8)),
    ]
    for index, (point, delay) in enumerate(moments):
        project = _copy(base, tmp_path / f"crashed{index}")
        code = _tally(project, "compute", *AS_OF, crash=point, kill_after=delay)
        if point is not None:
            assert code == -signal.SIGKILL
        load_project(project)  # still loadable
        for table in _tables(project).values():
            assert table.num_rows > 0  # whatever is there is a whole table
        _tally(project, "compute", *AS_OF)
        got = _tables(project)
        assert got.keys() == expected.keys(), (point, delay)
        for name, table in expected.items():
            assert got[name].equals(table), (name, point, delay)
        assert _leftovers(project / "data") == []


def _strip_meta(message: object) -> None:
    """Drop every nested `meta` (when Feast stamped an object, not what it is)."""
    for field, value in list(message.ListFields()):  # type: ignore[attr-defined]
        if field.name == "meta":
            message.ClearField("meta")  # type: ignore[attr-defined]
        elif field.message_type is not None:
            if hasattr(value, "ListFields"):
                items = [value]
            elif hasattr(value, "values") and callable(value.values):
                items = list(value.values())  # a map field
            else:
                items = list(value)  # a repeated field
            for item in items:
                if hasattr(item, "ListFields"):
                    _strip_meta(item)


def _registry_specs(root: Path) -> dict[str, str]:
    """Every registered object's spec, with the project folder written as ROOT."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(root / "feature_repo"))
    objects = [("view", v) for v in store.list_feature_views()]
    objects += [("service", s) for s in store.list_feature_services()]
    objects += [("entity", e) for e in store.list_entities()]
    specs = {}
    for kind, obj in objects:
        spec = obj.to_proto().spec
        _strip_meta(spec)
        specs[f"{kind}:{obj.name}"] = str(spec).replace(str(root.resolve()), "ROOT")
    return specs


def test_apply_killed_at_any_moment(base: Path, tmp_path: Path) -> None:
    computed = _copy(base, tmp_path / "computed")
    _tally(computed, "compute", *AS_OF)
    reference = _copy(computed, tmp_path / "reference")
    started = time.perf_counter()
    _tally(reference, "apply", *AS_OF)
    took = time.perf_counter() - started
    expected = _registry_specs(reference)
    assert any(k.startswith("service:") for k in expected)
    rng = random.Random(7)  # a random point of the run's second half: past Feast's import
    moments = [("apply-before-rename", None), (None, took * rng.uniform(0.5, 0.8))]
    for index, (point, delay) in enumerate(moments):
        project = _copy(computed, tmp_path / f"crashed{index}")
        code = _tally(project, "apply", *AS_OF, crash=point, kill_after=delay)
        if point is not None:
            assert code == -signal.SIGKILL
            assert _registry_specs(project) == {}  # the previous (empty) registry, whole
        load_project(project)
        _tally(project, "apply", *AS_OF)
        assert _registry_specs(project) == expected, (point, delay)
        assert _leftovers(project / "feature_repo") == []
