"""`tally diff`: the project's definitions now against a git revision or the last apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally.catalog.changes.classify import Change, plan_changes
from tally.catalog.changes.states import applied_texts, revision_texts, working_texts
from tally.catalog.spec.project import Project


@dataclass(frozen=True)
class DiffReport:
    against: str  # what the definitions were compared with
    changes: list[Change]

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.change == "breaking"]

    def to_dict(self) -> dict[str, Any]:
        return {"against": self.against, "breaking": len(self.breaking),
                "changes": [c.to_dict() for c in self.changes]}


def diff_definitions(project: Project, against: str | None = None) -> DiffReport:
    """Changes from git revision `against` (default: the last `tally apply`; nothing
    applied yet compares with an empty project) to the definitions now."""
    if against is not None:
        before, label = revision_texts(project.root, against), f"git revision {against}"
    else:
        applied = applied_texts(project.root)
        before, label = (applied, "the last tally apply") if applied is not None else (
            {}, "an empty project (nothing applied yet)")
    return DiffReport(label, plan_changes(project, before, working_texts(project.root)))
