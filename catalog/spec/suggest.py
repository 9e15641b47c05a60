""""Did you mean" for a name that is not defined: the closest defined names of the kinds
wanted, by edit similarity (difflib), so a typo points at what the user meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    return difflib.get_close_matches(name, sorted(set(candidates)), n=limit, cutoff=0.6)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'a' or 'b'?)`, or "" when nothing is close."""
    close = close_names(name, candidates)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
