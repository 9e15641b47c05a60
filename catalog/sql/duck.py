"""A hardened DuckDB connection for computation over definitions from many hands.

    con = connect([*source_paths, project_root / TABLES_DIR],
                  temp_directory=project_root / DUCKDB_SPILL_DIR)

The connection can read and write only the paths it is given (files; folders with
everything below them; the base folder of a glob), never installs or loads extensions,
cannot reach the network, and its configuration is locked, so SQL run on it cannot undo
any of this (`SET enable_external_access = true` fails). Python objects are not found by
name (replacement scans need external access): register them with `con.register(name, df)`.

`allowed_paths_for(project)` gives the paths a project's computation needs.
Importing this module does not import duckdb; `connect` does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tally.catalog.errors import TallyError
from tally.catalog.store.paths import TABLES_DIR, glob_base

if TYPE_CHECKING:
    import duckdb
    from tally.catalog.spec.project import Project

def sql_string(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A quoted DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def parquet_scan(path: Path | str) -> str:
    """The table function reading one parquet file."""
    return f"read_parquet({sql_string(str(path))})"


def _sql_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(sql_string(item) for item in items) + "]"


def _split(allowed_paths: Iterable[Path | str]) -> tuple[list[str], list[str]]:
    """(folders, files) DuckDB should allow, as absolute real paths."""
    folders: list[str] = []
    files: list[str] = []
    for entry in allowed_paths:
        text = os.fspath(entry)
        if not text or "\x00" in text:
            raise TallyError(f"cannot allow the path {text!r} in DuckDB; give a file or folder")
        base, is_glob = glob_base(Path(text))
        real = os.path.realpath(base)
        missing_folder = not Path(real).exists() and not Path(real).suffix
        if is_glob or Path(real).is_dir() or text.endswith(os.sep) or missing_folder:
            folders.append(real.rstrip(os.sep) + os.sep)
        else:
            files.append(real)
            if real != os.path.abspath(text):  # a symlink: allow the name it is read by too
                files.append(os.path.abspath(text))
    if any(folder == os.sep for folder in folders):
        raise TallyError("refusing to allow DuckDB the whole file system ('/'); allow the "
                         "folders the project reads instead")
    return sorted(set(folders)), sorted(set(files))


def _hardening_settings(folders: list[str], files: list[str], *,
                        temp_directory: Path | None, threads: int | None,
                        memory_limit: str | None) -> list[tuple[str, Any]]:
    """The SET statements (name, SQL value) of a hardened connection, in order: the
    tunables first, then the path lists, then the locks that freeze them."""
    settings: list[tuple[str, Any]] = []
    if temp_directory is not None:
        temp = Path(temp_directory)
        temp.mkdir(parents=True, exist_ok=True)
        settings.append(("temp_directory", sql_string(str(temp.resolve()))))
    else:
        settings.append(("temp_directory", "''"))
    if threads is not None:
        settings.append(("threads", int(threads)))
    if memory_limit is not None:
        settings.append(("memory_limit", sql_string(memory_limit)))
    return [*settings,
            # naive timestamps are UTC, as Feast reads them; GLOBAL so that the connection's
            # cursors (a run's tables computed side by side) read them so too
            ("GLOBAL TimeZone", "'UTC'"),
            ("allowed_directories", _sql_list(folders)),
            ("allowed_paths", _sql_list(files)),
            ("enable_external_access", "false"),  # after the two lists: they freeze with it
            ("lock_configuration", "true")]


def connect(
    allowed_paths: list[Path] | None,
    *,
    temp_directory: Path | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that may touch only `allowed_paths`.

    Each entry is a file (allowed by name), a folder (allowed with everything below it)
    or a glob (its base folder is allowed); a path that does not exist yet and has no
    suffix (data/tables before the first compute) counts as a folder. `temp_directory` is where
    DuckDB may spill; without it spilling to disk is off. `threads` and `memory_limit` are
    set before the configuration is locked, since they cannot be changed afterwards.
    With `allowed_paths=None`: connect_unrestricted(), for Tally's own reads.
    """
    import duckdb

    if allowed_paths is None:
        return connect_unrestricted()

    folders, files = _split(allowed_paths)
    con = duckdb.connect(database=":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
    })
    try:
        settings = _hardening_settings(folders, files, temp_directory=temp_directory,
                                       threads=threads, memory_limit=memory_limit)
        with contextlib.suppress(duckdb.Error):
            # inside a Jupyter kernel DuckDB refuses this setting unless ipywidgets is there
            con.execute("SET enable_progress_bar = false")
        for name, value in settings:
            con.execute(f"SET {name} = {value}")
    except duckdb.Error as exc:
        con.close()
        raise TallyError(f"cannot harden the DuckDB connection ({exc}); this DuckDB "
                         f"{duckdb.__version__} may lack a setting Tally needs") from None
    except BaseException:
        con.close()
        raise
    return con


def connect_unrestricted() -> duckdb.DuckDBPyConnection:
    """A connection for Tally's own reads (computed tables, entity frames): UTC, no
    extension downloads or auto-loading, but no path restrictions."""
    import duckdb

    con = duckdb.connect(database=":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    })
    con.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: its cursors read naive times so too
    with contextlib.suppress(duckdb.Error):  # refused inside Jupyter without ipywidgets
        con.execute("SET enable_progress_bar = false")
    return con


def allowed_paths_for(project: Project, *, root: Path | None = None) -> list[Path]:
    """The declared source files (or glob folders) of `project` plus root/data/tables."""
    base = Path(root or project.root)
    paths: list[Path] = []
    for source in project.sources.values():
        raw = Path(source.path)
        paths.append(raw if raw.is_absolute() else base / raw)
    paths.append(base / TABLES_DIR)
    return paths
