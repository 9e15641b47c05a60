"""Atomic writes and the project lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LockTimeoutError

STATE_DIR = ".tally"
TEMP_PREFIX = ".tally-tmp-"
DEFAULT_LOCK_TIMEOUT = float(os.environ.get("TALLY_LOCK_TIMEOUT", "60"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def temp_path_beside(path: Path, suffix: str = "") -> Path:
    """A fresh temp name in the folder of `path`, for writers that need a file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def clean_temp_files(folder: Path) -> int:
    """Remove temp files left by a killed writer; call only while holding the lock."""
    removed = 0
    if not folder.is_dir():
        return 0
    for leftover in folder.rglob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if leftover.is_dir():
                import shutil

                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def project_lock(
    root: Path,
    *,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the project's exclusive write lock; wait up to `timeout` seconds for it."""
    timeout = DEFAULT_LOCK_TIMEOUT if timeout is None else timeout
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    lock_file = state / "lock"
    handle = open(lock_file, "a+")  # noqa: SIM115 - held for the context's duration
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    on_wait(f"waiting for the project lock ({lock_file}) held by another "
                            "tally command...")
                    told = True
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"could not get the project lock {lock_file} within {timeout:.0f} s: "
                        "another tally command is writing. Try again when it has finished, "
                        "or raise TALLY_LOCK_TIMEOUT."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        handle.close()
