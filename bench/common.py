"""What every benchmark shares: machine facts, timing in subprocesses, the results file."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "benchmarks.md"
# generated inputs; TALLY_BENCH_DATA puts them elsewhere (the tests' tiny runs use a temp dir)
DATA = Path(os.environ.get("TALLY_BENCH_DATA") or REPO / "bench" / "data")
RECORD = True  # False for `--size tiny`: results are printed, never written
LOAD_AT_START = os.getloadavg()  # the machine's load when the bench began (1, 5, 15 min)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


@dataclass
class Run:
    seconds: float
    peak_mb: float
    output: dict[str, object]


def run_in_subprocess(code: str, *args: str, timeout: float = 3600,
                      env: dict[str, str] | None = None) -> Run:
    """Run `code` in a fresh Python process (with `env` when given); it prints one JSON
    line last. Peak RSS from the kernel's accounting of the child (ru_maxrss)."""

    wrapper = (
        "import json, resource, sys, time\n"
        "t0 = time.perf_counter()\n"
        f"{code}\n"
        "elapsed = time.perf_counter() - t0\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'seconds': elapsed, 'peak_mb': peak,\n"
        "                  'out': globals().get('OUT', {})}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-3000:]}")
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return Run(last["seconds"], last["peak_mb"], last["out"])


def median_runs(code: str, *args: str, repeat: int = 3, timer: str | None = None
                ) -> tuple[float, float, list[Run]]:
    """Median seconds and the largest peak over `repeat` fresh processes; with `timer`, the
    seconds are the code's own `OUT[timer]` (the timed part alone) rather than the whole."""
    runs = [run_in_subprocess(code, *args) for _ in range(repeat)]
    seconds = [float(r.output[timer]) if timer else r.seconds for r in runs]  # type: ignore[arg-type]
    return statistics.median(seconds), max(r.peak_mb for r in runs), runs


def write_section(name: str, markdown: str, command: str | None = None) -> None:
    """Replace (or add) the section of `name` in docs/benchmarks.md (print it when not
    RECORD); `command` is the bench command that writes it, when not `name` itself."""
    if not RECORD:
        print(f"## {name} (not recorded)\n\n{markdown.strip()}")
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmarks\n\nEach section is written by the command it names; ratios are measured "
        "side by side in one run.\n"
    )
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = " / ".join(f"{a:.1f}, {b:.1f}, {c:.1f}" for a, b, c in (LOAD_AT_START,
                                                                   os.getloadavg()))
    block = (f"{begin}\n## {name}\n\n`python -m bench {command or name}` on {stamp}; machine: "
             f"{machine()}; load average (1, 5, 15 min) at the start / end: {loads}."
             f"\n\n{markdown.strip()}\n{end}")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + block + "\n")
    RESULTS.write_text(text)


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
