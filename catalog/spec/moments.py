"""Dates and times given on the command line or to the library (light: stdlib only)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from tally.catalog.errors import UsageError


def parse_moment(value: str | datetime | date | None, option: str = "at") -> datetime | None:
    """An ISO date or time (`Z` for UTC accepted); without a time zone it is UTC. A bad one
    is a UsageError about `option` (the parameter it was given as)."""
    if value is None or isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(f"{value!r} is not a date or time; write YYYY-MM-DD or an "
                             "ISO 8601 time", option=option) from None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
