"""Atomic writes and the project lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tally.catalog.errors import LockTimeoutError, TallyError, UsageError
from tally.catalog.store.paths import (
    COMMIT_JOURNAL_FILE,
    LOCK_FILE,
    METRICS_DIR,
    STATE_DIR,
    TEMP_PREFIX,
)


def find_definition_files(root: Path) -> list[Path]:
    """Every definition file of the project at root (one listing for load and index)."""
    folder = root / METRICS_DIR
    return sorted(p for p in folder.rglob("*.yaml") if p.is_file() and not p.name.startswith("."))

DEFAULT_LOCK_TIMEOUT = 60.0
LOCK_TIMEOUT_ENV = "TALLY_LOCK_TIMEOUT"


CRASH_ENV = "TALLY_CRASH_AT"


_crash_points_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process here when TALLY_CRASH_AT names this point, as
    `NAME` (its first reach) or `NAME#N` (its Nth reach in this process).

    The crash-safety tests use it to kill a writer at the worst moments (a temp file
    written but not renamed, a journal written but not applied, a commit half applied),
    and part way through a run (after the Nth table), where a kill is sure to land.
    """
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    _crash_points_reached[name] = _crash_points_reached.get(name, 0) + 1
    if _crash_points_reached[name] == (int(nth) if nth.isdigit() else 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def lock_timeout_from_env() -> float:
    """Seconds to wait for the project lock: TALLY_LOCK_TIMEOUT, read at each call."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds; set it to "
                         "e.g. 60, or unset it for the default")
    return value


def _file_mode(path: Path) -> int:
    """The mode a new file gets: the existing file's mode, else 0o666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a part.

    A killed writer leaves at most a `.tally-tmp-*` file beside `path`, which
    `clean_temp_files` removes on the next write under the project lock.
    """
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def rename_over(tmp: Path, path: Path, *, crash_name: str = "") -> None:
    """Rename a finished temp file over `path`, durably: the one step every atomic write
    ends with. `crash_name` prefixes the test hooks around it (see crash_point)."""
    crash_point(f"{crash_name}before-rename")
    os.replace(tmp, path)
    fsync_dir(path.parent)
    crash_point(f"{crash_name}after-rename")


_RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths in one step


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(done == 0)


def swap_in_folder(tmp: Path, path: Path, *, crash_name: str = "") -> None:
    """Put the finished folder `tmp` at `path` (a folder or file, or nothing yet) so that
    readers see the old one or the new one, never a mix: one atomic exchange where the
    system has it (Linux), else two renames with a moment in between where `path` is
    missing. The old content is removed after."""
    import shutil

    crash_point(f"{crash_name}before-rename")
    if not os.path.lexists(path):
        os.rename(tmp, path)
    elif not _exchange(tmp, path):
        old = temp_path_beside(path)
        old.unlink()  # only its fresh name is wanted
        os.rename(path, old)
        os.rename(tmp, path)
        tmp = old
    fsync_dir(path.parent)
    crash_point(f"{crash_name}after-rename")
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def replacing(path: Path, suffix: str = "", *, crash_name: str = "") -> Iterator[Path]:
    """A fresh temp file beside `path` for a writer to fill; renamed over `path` when the
    block ends normally, removed when it raises (temp-file-then-rename, written once)."""
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        rename_over(tmp, path, crash_name=crash_name)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # gone after the rename; left only when the writer failed


def write_figure(fig: Any, out: Path) -> Path:
    """A matplotlib figure saved as PNG at `out` (temp file, then rename), then closed."""
    import matplotlib.pyplot as plt

    try:
        with replacing(out, ".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out


def temp_path_beside(path: Path, suffix: str = "") -> Path:
    """A fresh temp name in the folder of `path`, for writers that need a file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=path.parent)
    os.fchmod(fd, _file_mode(path))  # mkstemp's 0600 would survive the rename
    os.close(fd)
    return Path(tmp)


def clean_temp_files(folder: Path, *, recursive: bool = True) -> int:
    """Remove temp files left by a killed writer; call only while holding the lock."""
    removed = 0
    if not folder.is_dir():
        return 0
    found = folder.rglob(f"{TEMP_PREFIX}*") if recursive else folder.glob(f"{TEMP_PREFIX}*")
    for leftover in list(found):
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
    """Hold the project's exclusive write lock; wait up to `timeout` seconds for it.

    `timeout` defaults to TALLY_LOCK_TIMEOUT (60 s). `on_wait` is told once, when the lock
    is busy. The lock is an flock on `.tally/lock`: the kernel releases it when its holder
    dies, even by SIGKILL, so a killed command never leaves the project locked.
    """
    timeout = lock_timeout_from_env() if timeout is None else timeout
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    lock_file = root / LOCK_FILE
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
                        f"could not get the project lock {lock_file} within {timeout:g} s: "
                        "another tally command is writing. Try again when it has finished, "
                        "or raise TALLY_LOCK_TIMEOUT."
                    ) from None
                time.sleep(0.05)
        crash_point("locked")
        yield
    finally:
        handle.close()


# -- multi-file commits -------------------------------------------------------------------

def _journal_path(root: Path) -> Path:
    return root / COMMIT_JOURNAL_FILE


def _checked_changes(root: Path, raw: object) -> dict[str, str | None]:
    journal = _journal_path(root)
    changes = raw.get("changes") if isinstance(raw, dict) else None
    if not isinstance(changes, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in changes.items()
    ):
        raise TallyError(f"{journal} is not a commit journal Tally wrote; delete it")
    for relative in changes:
        parts = Path(relative).parts
        if Path(relative).is_absolute() or ".." in parts or not parts:
            raise TallyError(f"{journal} names {relative!r}, outside the project; delete it")
    return changes


def pending_commit(root: Path) -> dict[str, str | None]:
    """Changes of a multi-file commit whose writer was killed before it finished, if any.

    Readers apply them as overrides, so they see the commit whole (it was validated before
    the journal was written); the next writer finishes it on disk (`finish_commit`).
    """
    import json

    journal = _journal_path(root)
    try:
        raw = json.loads(journal.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TallyError(f"cannot read the commit journal {journal} ({exc}); delete it if no "
                         "tally command is running") from None
    return _checked_changes(root, raw)


def _apply(root: Path, changes: dict[str, str | None]) -> None:
    for index, (relative, text) in enumerate(sorted(changes.items())):
        if index == 1:
            crash_point("mid-commit")
        target = root / relative
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            fsync_dir(target.parent)
        else:
            atomic_write_text(target, text)


def finish_commit(root: Path) -> bool:
    """Roll forward a commit a killed writer left half done; call holding the lock."""
    changes = pending_commit(root)
    if not changes:
        with contextlib.suppress(FileNotFoundError):
            _journal_path(root).unlink()
        return False
    _apply(root, changes)
    _journal_path(root).unlink()
    fsync_dir(_journal_path(root).parent)
    return True


def commit_files(root: Path, changes: dict[str, str | None]) -> None:
    """Write (text) or delete (None) several project files as one change; hold the lock.

    One file is one atomic rename. Several go through a journal (`.tally/commit.json`,
    itself written atomically): once it exists the commit counts as done, readers see it
    through `pending_commit`, and a writer killed half way is finished by the next one.
    """
    import json

    if len(changes) == 1 and next(iter(changes.values())) is not None:
        _apply(root, changes)
        return
    atomic_write_text(_journal_path(root), json.dumps({"version": 1, "changes": changes}))
    crash_point("after-journal")
    finish_commit(root)
