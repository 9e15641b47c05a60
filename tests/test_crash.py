"""A SIGKILL at any moment of compute or apply: the project stays loadable and the rerun
gives exactly what an uninterrupted run gives."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
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


def _tally(root: Path, *args: str, crash: str | None = None) -> int:
    """Run tally; with `crash` (a TALLY_CRASH_AT point), check the kill landed there."""
    env = dict(os.environ)
    if crash:
        env["TALLY_CRASH_AT"] = crash
    proc = subprocess.run([sys.executable, "-m", "tally.cli.main", "--project", str(root), *args],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    stderr = proc.stderr
    if crash is None:
        assert proc.returncode == 0, stderr
    else:
        assert proc.returncode == -signal.SIGKILL, (crash, stderr)
    assert "Traceback" not in stderr
    return proc.returncode


def _tables(root: Path) -> dict[str, object]:
    folder = root / "data" / "tables"
    return {p.name: pq.read_table(p) for p in sorted(folder.glob("*.parquet"))}


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def test_compute_killed_at_any_moment(base: Path, tmp_path: Path) -> None:
    reference = _copy(base, tmp_path / "reference")
    _tally(reference, "compute", *AS_OF)
    expected = _tables(reference)
    assert len(expected) >= 4
    # kills at the first table's worst moments, then part way through the run: after a
    # randomly chosen table k (of the middle ones) is in place, k tables done, the rest not
    rng = random.Random(20261129)
    middle = rng.randint(2, len(expected) - 1)
    moments = [("compute-before-rename", 0), ("compute-after-rename", 1),
               (f"compute-before-rename#{middle}", middle - 1),
               (f"compute-after-rename#{middle}", middle)]
    for index, (point, done) in enumerate(moments):
        project = _copy(base, tmp_path / f"crashed{index}")
        _tally(project, "compute", *AS_OF, crash=point)
        load_project(project)  # still loadable
        written = _tables(project)
        in_place = [name for name in written if not name.startswith(TEMP_PREFIX)]
        assert len(in_place) == done, point  # the kill landed where it was aimed
        for table in written.values():
            assert table.num_rows > 0  # whatever is there is a whole table
        _tally(project, "compute", *AS_OF)
        got = _tables(project)
        assert got.keys() == expected.keys(), point
        for name, table in expected.items():
            assert got[name].equals(table), (name, point)
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
    _tally(reference, "apply", *AS_OF)
    expected = _registry_specs(reference)
    assert any(k.startswith("service:") for k in expected)
    # after Feast has loaded and the staged copy is made, before anything is applied; then
    # with everything applied to the staged copy, before it replaces the registry
    for index, point in enumerate(["apply-planned", "apply-before-rename"]):
        project = _copy(computed, tmp_path / f"crashed{index}")
        _tally(project, "apply", *AS_OF, crash=point)
        assert _registry_specs(project) == {}  # the previous (empty) registry, whole
        load_project(project)
        _tally(project, "apply", *AS_OF)
        assert _registry_specs(project) == expected, point
        assert _leftovers(project / "feature_repo") == []
