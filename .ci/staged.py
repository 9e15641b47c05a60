"""Run a tool that finds `tally` by walking folders (lint-imports, mypy) on tally's
installed layout: `python .ci/staged.py lint-imports` or `python .ci/staged.py mypy`.

The editable install maps tally's subpackages from sibling folders (pyproject's
`package-dir`: api/ is `tally`, catalog/ is `tally.catalog`, ...) through an import hook
that grimp and mypy do not use. So stage a tree of symlinks shaped like site-packages'
`tally/` and point the tool at it (PYTHONPATH, MYPYPATH); it reads pyproject.toml here."""

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


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    tool, *args = argv
    if tool == "lint-imports":
        command = [sys.executable, "-c", "import sys; from importlinter.cli import "
                   "lint_imports_command; sys.exit(lint_imports_command())", "--no-cache"]
    else:
        command = [sys.executable, "-m", tool]
    with tempfile.TemporaryDirectory(prefix="tally-staged-") as tmp:
        stage(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp, "MYPYPATH": tmp}
        return subprocess.run([*command, *args], env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
