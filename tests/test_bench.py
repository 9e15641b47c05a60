"""Every benchmark runs end to end at `--size tiny`, so none rots between the real runs
(whose figures docs/benchmarks.md keeps: a tiny run prints and never writes there)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

BENCHES = sorted(m.name for m in pkgutil.iter_modules([str(REPO / "bench")])
                 if m.name not in {"common", "__main__"})


def test_every_bench_is_listed() -> None:
    assert {"compute", "contracts", "materialize", "search", "spark",
            "training_frame"} <= set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_bench_runs_at_tiny_size(name: str, tmp_path: Path) -> None:
    results = REPO / "docs" / "benchmarks.md"
    before = results.read_bytes()
    env = {**os.environ, "TALLY_BENCH_DATA": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "bench", name, "--size", "tiny"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(not recorded)" in run.stdout
    assert results.read_bytes() == before
