"""The wheel a user installs (`pip install .`, not editable) holds everything the demo and
`tally init` read, all under the one import name `tally`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import REPO

SOURCES = ("pyproject.toml", "README.md", "api", "catalog", "cli", "feature_repo", "metrics")


def test_wheel_holds_tally_only_with_its_data(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    tree.mkdir()
    for name in SOURCES:  # a copy: building in the checkout would leave a stale build/
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns(
                "__pycache__", "data", "*.parquet"))
        else:
            shutil.copy(source, tree / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                            str(tree)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("tally-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"tally", dist_info}
    examples = {n for n in names if n.startswith("tally/example/") and n.endswith(".yaml")}
    assert examples == {f"tally/example/{p.name}" for p in (REPO / "metrics").glob("*.yaml")}
    assert {f"tally/catalog/templates/{p.name}" for p in
            (REPO / "catalog" / "templates").iterdir() if p.is_file()} <= names
    assert {"tally/feature_repo/feature_store.yaml", "tally/feature_repo/.feastignore",
            "tally/feature_repo/demo_data.py", "tally/catalog/spec/sample_data.py",
            "tally/cli/main.py", "tally/__init__.py"} <= names
    modules = {p.relative_to(REPO / "catalog").as_posix() for p in
               (REPO / "catalog").rglob("*.py")}
    assert {f"tally/catalog/{m}" for m in modules} <= names  # no subpackage left out
