"""Every path of a project's state, relative to the project root (the folder holding
metrics/), and the one answer to "is this path a glob". See docs/architecture.md for who
writes each file."""

from __future__ import annotations

from pathlib import Path, PurePath

METRICS_DIR = "metrics"  # the definition files
CONFIG_FILE = "tally.yaml"  # the optional project config (spec.config)
DATA_DIR = Path("data")  # source data of the example project
TABLES_DIR = DATA_DIR / "tables"  # computed tables: a folder of parts each (sql.parts)

STATE_DIR = Path(".tally")
LOCK_FILE = STATE_DIR / "lock"  # the project write lock (store.fsutil.project_lock)
COMMIT_JOURNAL_FILE = STATE_DIR / "commit.json"  # a multi-file commit in flight
TABLE_STATS_FILE = STATE_DIR / "tables.json"  # per table: rows, newest snapshot, nulls
CONTRACT_RESULTS_FILE = STATE_DIR / "contracts.json"  # per source: the last contract result
RUN_LOG_FILE = STATE_DIR / "runs.jsonl"  # one JSON line per compute, apply, materialize, frame
INDEX_DIR = STATE_DIR / "index"  # the catalog search index
APPLIED_DEFINITIONS_FILE = STATE_DIR / "applied_definitions.json"  # as of the last apply
DUCKDB_SPILL_DIR = STATE_DIR / "duckdb_tmp"  # DuckDB's temp directory during compute

TEMP_PREFIX = ".tally-tmp-"  # temp files and folders of a writer, removed when left behind

FEATURE_REPO_DIR = Path("feature_repo")  # the Feast repo
FEATURE_STORE_YAML = FEATURE_REPO_DIR / "feature_store.yaml"
DEFINITIONS_PY = FEATURE_REPO_DIR / "definitions.py"  # `feast -c feature_repo` entry point
FEASTIGNORE = FEATURE_REPO_DIR / ".feastignore"
DEFAULT_REGISTRY = "data/registry.db"  # relative to the Feast repo, as Feast reads it

GLOB_CHARS = "*?[{"


def is_glob(path: str | PurePath) -> bool:
    """Whether a source path is a pattern (DuckDB and glob expand it) rather than one file."""
    return any(ch in str(path) for ch in GLOB_CHARS)


def glob_base(path: PurePath) -> tuple[PurePath, bool]:
    """The folder a glob pattern starts from, and whether `path` is a pattern at all."""
    base_parts: list[str] = []
    for part in path.parts:
        if is_glob(part):
            break
        base_parts.append(part)
    pattern = len(base_parts) < len(path.parts)
    return (type(path)(*base_parts) if base_parts else type(path)(".")), pattern
