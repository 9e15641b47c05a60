"""The one exception family of Tally: every user-facing failure is a TallyError."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


def _as_parameter(option: str) -> str:
    return f"`{option}`"


class TallyError(Exception):
    """Root of every error Tally reports to a user. The message says how to fix it.

    The library never names a command-line flag. An error about the value of one option
    carries the option's parameter name in `option` (e.g. "as_of"); options the message
    tells the reader to use are written `name` in backticks and listed in `mentions`.
    `render(name_of)` spells them: as parameters by default (str), as flags in the CLI."""

    def __init__(self, message: str = "", *, option: str | None = None,
                 mentions: Iterable[str] = ()):
        super().__init__(message)
        self.message = message
        self.option = option
        self.mentions = tuple(mentions)

    def render(self, name_of: Callable[[str], str] = _as_parameter) -> str:
        text = self.message
        for mentioned in self.mentions:
            text = text.replace(f"`{mentioned}`", name_of(mentioned))
        return f"{name_of(self.option)} {text}" if self.option else text

    def __str__(self) -> str:
        return self.render()


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

    def __init__(self, issues: list[Issue], *, mentions: Iterable[str] = ()):
        self.issues = sorted(set(issues))
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the definitions:"
        super().__init__("\n".join([head, *(f"  {i.render()}" for i in self.issues)]),
                         mentions=mentions)
