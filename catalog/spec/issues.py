"""A pydantic validation error as Issues naming file, line and key."""

from __future__ import annotations

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
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, cause.field)
        path = (*base, *loc)
        kind = error["type"]
        message = _PYDANTIC_MESSAGES.get(kind, error["msg"])
        if kind == "extra_forbidden" and len(loc) == 1:
            allowed = ", ".join(model.model_fields)
            message = f"unknown key; allowed keys here are: {allowed}"
        elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
            message = (f"{error['input']!r} is not a valid name; use lower snake case "
                       "matching ^[a-z][a-z0-9_]{0,62}$")
        elif kind == "value_error":
            message = error["msg"].removeprefix("Value error, ")
        issues.append(Issue(loaded.file, loaded.line_of(path), key_path_text(path), message))
    return issues
