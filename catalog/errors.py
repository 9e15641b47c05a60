"""The one exception family of Tally: every user-facing failure is a TallyError."""

from __future__ import annotations

from dataclasses import dataclass


class TallyError(Exception):
    """Root of every error Tally reports to a user. The message says how to fix it."""


class UsageError(TallyError):
    """The command line asked for something that cannot be done as asked (exit 2)."""


class ProjectNotFoundError(TallyError):
    pass


class LookupFailedError(TallyError):
    """A name (metric, model, entity, ...) that the project does not define."""


class LockTimeoutError(TallyError):
    pass


class DataError(TallyError):
    """A data file that cannot be read as declared."""


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in one definition file, located by file, line and key path."""

    file: str
    line: int
    key: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "key": self.key, "message": self.message}


class DefinitionError(TallyError):
    """One or more definitions are invalid; carries every issue found, sorted."""

    def __init__(self, issues: list[Issue]):
        self.issues = sorted(set(issues))
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the definitions:"
        super().__init__("\n".join([head, *(f"  {i.render()}" for i in self.issues)]))
