from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_tally(args: list[str], cwd: Path | None = None, timeout: float = 600) -> Result:
    """Run the real `tally` console entry point in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "tally.cli.main", *args],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def invoke(args: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """Run the CLI in process (fast), capturing its exit code and output."""
    from tally.cli.main import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".tally" not in p.relative_to(folder).parts
    }


