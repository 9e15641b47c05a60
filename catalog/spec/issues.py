"""A pydantic validation error as Issues naming file, line and key."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from tally.catalog.errors import Issue
from tally.catalog.spec.models import FieldError, Spec
from tally.catalog.spec.yamlio import KeyPath, LoadedYaml, key_path_text

_PYDANTIC_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def pydantic_issues(
    exc: ValidationError, base: KeyPath, loaded: LoadedYaml, model: type[Spec]
) -> list[Issue]:
    issues = []
    errors = exc.errors(include_url=False)
    misspelt = _misspelt_keys(errors)
    for error in errors:
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        if error["type"] == "missing" and loc in misspelt.values():
            continue  # reported once, as the misspelt key
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, cause.field)
        path = (*base, *loc)
        kind = error["type"]
        message = _PYDANTIC_MESSAGES.get(kind, error["msg"])
        if kind == "extra_forbidden" and loc in misspelt:
            message = f"unknown key (did you mean {misspelt[loc][-1]!r}?)"
        elif kind == "extra_forbidden" and len(loc) == 1:
            allowed = ", ".join(model.model_fields)
            message = f"unknown key; allowed keys here are: {allowed}"
        elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
            message = (f"{error['input']!r} is not a valid name; use lower snake case "
                       "matching ^[a-z][a-z0-9_]{0,62}$")
        elif kind == "value_error":
            message = error["msg"].removeprefix("Value error, ")
        issues.append(Issue(loaded.file, loaded.line_of(path), key_path_text(path), message))
    return issues


def _misspelt_keys(errors: list[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """An unknown key close to a missing required key beside it: unknown loc -> missing loc."""
    from tally.catalog.spec.suggest import close_names

    missing = [tuple(e["loc"]) for e in errors if e["type"] == "missing"]
    out = {}
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] != "extra_forbidden" or not isinstance(loc[-1], str):
            continue
        beside = {str(m[-1]): m for m in missing if m[:-1] == loc[:-1]}
        close = close_names(loc[-1], beside, limit=1)
        if close:
            out[loc] = beside[close[0]]
    return out
