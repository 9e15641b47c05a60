"""Which snapshots of a derived or score table its inputs changed since it was computed.

Every computed table's state entry (`.tally/tables.json`) counts its writes: `generation`
goes up by one per write, and `changes` lists the recent ones as `[generation, since]`,
`since` being the first snapshot (microseconds since the epoch) the write replaced, 0 for
a whole table. A table computed from others records the generation of each input it
read; on the next run the inputs' changes after those generations say from which
snapshot on it must be recomputed. A score normalises per snapshot and a derived metric
is row by row, so the snapshots before that stand.
"""

from __future__ import annotations

from typing import Any

MAX_CHANGES = 32  # writes remembered per table; an input further behind means a full run
WHOLE = 0  # `since` of a write that replaced every snapshot


def next_generation(previous: dict[str, Any], since: int) -> dict[str, Any]:
    """The `generation` and `changes` entries after one more write from `since`."""
    generation = int(previous.get("generation", 0)) + 1
    changes = [*previous.get("changes", []), [generation, since]][-MAX_CHANGES:]
    return {"generation": generation, "changes": changes}


def changed_since(entry: dict[str, Any], seen: int | None) -> int | None:
    """From which snapshot a table changed after generation `seen` (WHOLE when it cannot
    tell), None when it did not."""
    generation = entry.get("generation")
    if generation is None or seen is None:
        return WHOLE
    if int(generation) == seen:
        return None
    writes = [c for c in entry.get("changes", []) if int(c[0]) > seen]
    if len(writes) != int(generation) - seen:  # older than the log remembers
        return WHOLE
    return min(int(c[1]) for c in writes)


def inputs_changed(state: dict[str, Any], seen: dict[str, int], tables: set[str]
                   ) -> int | None:
    """The earliest snapshot any of `tables` changed from since the generations `seen`."""
    since: int | None = None
    for table in sorted(tables):
        change = changed_since(state.get(table, {}), seen.get(table))
        if change is not None:
            since = change if since is None else min(since, change)
    return since


def generations(state: dict[str, Any], tables: set[str]) -> dict[str, int]:
    """The current generation of each table (what a dependent table records it read)."""
    return {t: int(state[t]["generation"]) for t in sorted(tables)
            if "generation" in state.get(t, {})}
