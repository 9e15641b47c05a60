"""Feast prints progress with colour codes whatever it writes to; Tally sends that output
to stderr, and strips the codes when stderr is not a terminal (a pipe, a log, a notebook)."""

from __future__ import annotations

import re
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PlainWhenPiped:
    """A text stream writing to `target`, without ANSI escapes unless it is a TTY."""

    def __init__(self, target: TextIO):
        self.target = target
        isatty = getattr(target, "isatty", None)
        self.strip = not (callable(isatty) and isatty())

    def write(self, text: str) -> int:
        self.target.write(_ANSI.sub("", text) if self.strip else text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return not self.strip
