"""States of a project's definitions, each as {project-relative file: YAML text}: the
working tree, a git revision (read with `git show`, nothing checked out) and the copy
`tally apply` keeps of what it last applied."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tally.catalog.errors import TallyError
from tally.catalog.store.fsutil import atomic_write_text, find_definition_files
from tally.catalog.store.paths import APPLIED_DEFINITIONS_FILE as APPLIED_FILE
from tally.catalog.store.paths import METRICS_DIR

DefinitionTexts = dict[str, str]


class RevisionError(TallyError):
    """A git revision whose definitions cannot be read."""


def working_texts(root: Path) -> DefinitionTexts:
    """The definition files as they are now."""
    return {p.relative_to(root).as_posix(): p.read_text("utf-8", errors="replace")
            for p in find_definition_files(root)}


def _git(root: Path, revision: str, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise RevisionError("needs git, which is not installed", option="against") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["git failed"])[-1]
        raise RevisionError(f"{revision!r}: cannot read the definitions at this git "
                            f"revision in {root}: {reason}", option="against")
    return done.stdout


def revision_texts(root: Path, revision: str) -> DefinitionTexts:
    """The definition files of the project at `root` as of a git revision."""
    if revision.startswith("-"):
        raise RevisionError(f"{revision!r} is not a git revision", option="against")
    _git(root, revision, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    listing = _git(root, revision, "ls-tree", "-r", "--name-only", "-z", revision, "--",
                   METRICS_DIR)
    texts: DefinitionTexts = {}
    for path in sorted(filter(None, listing.split("\0"))):
        name = Path(path).name
        if path.endswith(".yaml") and not name.startswith("."):
            texts[path] = _git(root, revision, "show", f"{revision}:./{path}")
    return texts


def applied_texts(root: Path) -> DefinitionTexts | None:
    """The definitions of the last `tally apply`, or None when nothing was applied yet."""
    try:
        data = json.loads((root / APPLIED_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return None
    return {str(k): str(v) for k, v in files.items()}


def write_applied(root: Path, texts: DefinitionTexts) -> None:
    """Keep the definitions just applied (one file, written atomically: the call is made
    under the project lock by apply)."""
    data = {"applied_at": datetime.now(UTC).isoformat(), "files": texts}
    atomic_write_text(root / APPLIED_FILE, json.dumps(data, indent=1, sort_keys=True))
