"""Run import-linter (`lint-imports`) on tally's installed layout.

grimp finds a package by walking the one folder it imports from, but the editable install
maps tally's subpackages from sibling folders (pyproject's `package-dir`: api/ is `tally`,
catalog/ is `tally.catalog`, ...). So stage a tree of symlinks shaped like the installed
package and lint that, with the contracts of pyproject.toml. Extra arguments go to
lint-imports (e.g. --verbose)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage(dest: Path) -> None:
    """dest/tally/ laid out as site-packages would hold it, made of symlinks into ROOT."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    top = dest / "tally"
    top.mkdir()
    for entry in (ROOT / mapping["tally"]).iterdir():
        (top / entry.name).symlink_to(entry)
    for name, folder in sorted(mapping.items()):
        if name != "tally" and name.count(".") == 1:
            (top / name.split(".")[1]).symlink_to(ROOT / folder, target_is_directory=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tally-lint-imports-") as tmp:
        stage(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [sys.executable, "-c",
                   "import sys; from importlinter.cli import lint_imports_command; "
                   "sys.exit(lint_imports_command())",
                   "--config", str(ROOT / "pyproject.toml"), "--no-cache", *sys.argv[1:]]
        return subprocess.run(command, env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
