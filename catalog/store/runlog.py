"""The run log `.tally/runs.jsonl`: one JSON line per compute, apply, materialize and
training frame, read by the portfolio (tally.catalog.portfolio) to measure cost and use.

A line is appended with one `write` on a file opened for appending, under the project
lock, then fsynced: readers see whole lines, or at worst a torn last line left by a crash,
which `read_runs` skips. The log is a record, never a gate: a failed append or an
unreadable line never fails the command that ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tally.catalog.errors import TallyError
from tally.catalog.store.fsutil import project_lock
from tally.catalog.store.paths import RUN_LOG_FILE

RUN_COMMANDS = ("compute", "apply", "materialize", "training_frame")


@dataclass
class TableRun:
    """One table a run wrote: its rows and bytes after the run, and the seconds it took."""

    name: str
    rows: int
    bytes: int
    wall_seconds: float
    cpu_seconds: float


@dataclass
class Run:
    time: datetime
    command: str
    wall_seconds: float
    cpu_seconds: float
    tables: list[TableRun] = field(default_factory=list)
    model: str | None = None
    features: list[str] = field(default_factory=list)  # served, or registered by apply
    rows_served: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(timespec="microseconds"),
            "command": self.command,
            "tables": [vars(t) for t in self.tables],
            "wall_seconds": round(self.wall_seconds, 6),
            "cpu_seconds": round(self.cpu_seconds, 6),
            "model": self.model,
            "features": self.features,
            "rows_served": self.rows_served,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        stamp = datetime.fromisoformat(str(data["time"]))
        return cls(
            time=stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC),
            command=str(data["command"]),
            wall_seconds=float(data.get("wall_seconds") or 0.0),
            cpu_seconds=float(data.get("cpu_seconds") or 0.0),
            tables=[TableRun(str(t["name"]), int(t.get("rows") or 0), int(t.get("bytes") or 0),
                             float(t.get("wall_seconds") or 0.0),
                             float(t.get("cpu_seconds") or 0.0))
                    for t in data.get("tables") or []],
            model=str(data["model"]) if data.get("model") else None,
            features=[str(f) for f in data.get("features") or []],
            rows_served=int(data["rows_served"]) if data.get("rows_served") is not None
            else None,
        )


class Stopwatch:
    """Wall and CPU seconds since it started (CPU of every thread of this process, which
    counts DuckDB's worker threads)."""

    def __init__(self) -> None:
        self.wall_start = time.perf_counter()
        self.cpu_start = time.process_time()

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.wall_start

    @property
    def cpu(self) -> float:
        return time.process_time() - self.cpu_start


def _append_line(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:  # a crash may have left a torn line without its newline: end it first
            with open(path, "rb") as handle:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_run(root: Path, run: Run, *, lock_held: bool = False) -> bool:
    """Append `run` to the project's run log; False when it could not be written.

    `lock_held` says the caller already holds the project lock (compute, apply and
    materialize append inside their own locked block; the lock is not re-entrant)."""
    line = (json.dumps(run.to_json(), sort_keys=True) + "\n").encode("utf-8")
    try:
        if lock_held:
            _append_line(root / RUN_LOG_FILE, line)
        else:
            with project_lock(root):
                _append_line(root / RUN_LOG_FILE, line)
    except (OSError, TallyError):
        return False
    return True


def _parsed_lines(path: Path) -> Iterator[Run]:
    try:
        raw = path.read_bytes()
    except OSError:
        return
    for text in raw.split(b"\n"):
        if not text.strip():
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            data = json.loads(text)
            if isinstance(data, dict) and data.get("command") in RUN_COMMANDS:
                yield Run.from_json(data)


def read_runs(root: Path, since: datetime | None = None) -> list[Run]:
    """Every readable run of the project at root, oldest first, at or after `since`.

    A torn or foreign line (a crash mid-append, a hand edit) is skipped, never fatal."""
    runs = [r for r in _parsed_lines(root / RUN_LOG_FILE) if since is None or r.time >= since]
    return sorted(runs, key=lambda r: r.time)


def table_run(name: str, path: Path, rows: int, watch: Stopwatch) -> TableRun:
    """The record of one table just written at `path`."""
    try:
        size = path.stat().st_size if path.is_file() else _folder_size(path)
    except OSError:
        size = 0
    return TableRun(name, rows, size, round(watch.wall, 6), round(watch.cpu, 6))


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def now() -> datetime:
    return datetime.now(UTC)
