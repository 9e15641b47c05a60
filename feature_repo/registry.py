"""`tally plan` / `tally apply`: diff against and apply to the project's Feast registry,
with the same contents `feast -c feature_repo apply` would build."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.catalog.errors import TallyError
from tally.catalog.pipeline import Gate, gate
from tally.catalog.spec.project import Project
from tally.catalog.store.fsutil import (
    clean_temp_files,
    crash_point,
    project_lock,
    rename_over,
    temp_path_beside,
)
from tally.catalog.store.paths import DEFAULT_REGISTRY
from tally.catalog.store.runlog import Run, Stopwatch, append_run, now
from tally.feature_repo.bridge import REPO_DIR, feast_objects
from tally.feature_repo.plain_output import PlainWhenPiped


class RegistryError(TallyError):
    pass


@dataclass(frozen=True)
class Change:
    action: str  # add | change | remove | keep
    kind: str
    name: str
    details: list[str]


OFFLINE_STORE_TYPE = "tally.feature_repo.offline_store.TallyDuckDBOfflineStore"
# what projects made before Tally installed under the one import name `tally` say
LEGACY_OFFLINE_STORE_TYPE = "feature_repo.offline_store.TallyDuckDBOfflineStore"
SPARK_STORE_TYPE = "tally.feature_repo.spark_store.TallySparkOfflineStore"


def _offline_store_types(text: str) -> list[tuple[int, str]]:
    """(line number, value) of each `type:` key inside the top-level `offline_store:`."""
    found, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        content = line.split("#")[0].rstrip()
        if content and not content[0].isspace():
            inside = content.startswith("offline_store:")
        elif inside and content.strip().startswith("type:"):
            found.append((number, content.split(":", 1)[1].strip().strip("'\"")))
    return found


def check_repo_yaml(repo: Path) -> None:
    """Refuse a feature_store.yaml Feast cannot load, or would serve wrongly, for a reason
    Tally knows the fix of."""
    path = repo / "feature_store.yaml"
    if not path.is_file():
        raise RegistryError(f"{path} is missing; `tally init` writes one")
    for number, value in _offline_store_types(path.read_text("utf-8", errors="replace")):
        where = f"{path}, line {number}, key offline_store.type: "
        if value == LEGACY_OFFLINE_STORE_TYPE:
            raise RegistryError(
                f"{where}{LEGACY_OFFLINE_STORE_TYPE} is the name Tally's offline store had "
                f"before Tally installed under the one import name `tally`; change it to "
                f"{OFFLINE_STORE_TYPE}")
        if value == "spark":
            raise RegistryError(
                f"{where}Feast's stock Spark store returns training frames out of the "
                f"entity frame's order and repeats duplicate entity rows; change `spark` to "
                f"{SPARK_STORE_TYPE} (the same store, keeping order; its spark_conf and "
                f"other keys stay as they are)")


def open_store(project: Project) -> Any:
    repo = project.root / REPO_DIR
    check_repo_yaml(repo)
    from feast import FeatureStore

    try:
        return FeatureStore(repo_path=str(repo))
    except Exception as exc:  # feast raises many types for a bad config
        raise RegistryError(f"{repo}/feature_store.yaml: {str(exc).splitlines()[0]}") from None


def repo_contents(store: Any, objects: dict[str, Any]) -> Any:
    """What feast's parse_repo would return for a definitions module with these objects."""
    from feast import Entity, FeatureService, FeatureView
    from feast import Project as FeastProject
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents

    values = list(objects.values())
    views = [o for o in values if isinstance(o, FeatureView)]
    return RepoContents(
        projects=[FeastProject(name=store.project,
                               description=store.config.project_description or "")],
        data_sources=[v.batch_source for v in views if v.batch_source is not None],
        entities=[o for o in values if isinstance(o, Entity)] + [DUMMY_ENTITY],
        feature_views=views,
        feature_services=[o for o in values if isinstance(o, FeatureService)],
        on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[],
    )


def plan(project: Project) -> list[Change]:
    store = open_store(project)
    return _changes(store, repo_contents(store, feast_objects(project)))


def _changes(store: Any, contents: Any) -> list[Change]:
    from feast.diff.property_diff import TransitionType

    registry_diff, _, _ = store.plan(contents)
    names = {TransitionType.CREATE: "add", TransitionType.UPDATE: "change",
             TransitionType.DELETE: "remove", TransitionType.UNCHANGED: "keep"}
    changes = []
    for diff in registry_diff.feast_object_diffs:
        if diff.name == "__dummy":
            continue
        real = [p for p in diff.feast_object_property_diffs
                if _definition(p.val_existing) != _definition(p.val_declared)]
        details = [f"{p.property_name}: {str(p.val_existing)[:60]!r} -> "
                   f"{str(p.val_declared)[:60]!r}" for p in real]
        action = names.get(diff.transition_type, "change")
        if action == "change" and not real:
            action = "keep"
        changes.append(Change(action, diff.feast_object_type.value, diff.name, details))
    order = {"remove": 0, "change": 1, "add": 2, "keep": 3}
    return sorted(changes, key=lambda c: (order[c.action], c.kind, c.name))


class BreakingChangeError(TallyError):
    """apply would change values that models read, and was not told to accept that."""


def refuse_breaking(project: Project) -> None:
    """Raise BreakingChangeError when a breaking change since the last apply reaches a
    model, naming each change, the models and their owners."""
    from tally.catalog.changes.classify import breaking_for_models
    from tally.catalog.changes.diff import diff_definitions

    found = breaking_for_models(diff_definitions(project).changes)
    if not found:
        return
    lines = []
    for change, models in found:
        what = ", ".join(f.field for f in change.fields) or change.action
        readers = ", ".join(f"model {m.name} ({m.owner}{', pinned' if m.pinned else ''})"
                            for m in models)
        lines.append(f"  {change.kind} {change.label} ({what}) is read by {readers}")
    raise BreakingChangeError(
        "apply refused: these breaking changes since the last apply change what models "
        "read:\n" + "\n".join(lines) + "\nPin the models to the old version (name@N), or "
        "agree the change with their owners and apply with `accept_breaking` (the diff "
        "shows every change).", mentions=("accept_breaking",))


def _definition(value: Any) -> Any:
    """A property as the definitions decide it: a nested Feast proto (a view's batch source)
    without the `meta` Feast stamps on every apply and materialize (created and updated
    times), so unchanged definitions plan as no change."""
    if not hasattr(value, "ListFields") or "meta" not in value.DESCRIPTOR.fields_by_name:
        return value
    copy = type(value)()
    copy.CopyFrom(value)
    copy.ClearField("meta")
    return copy


def apply(project: Project, run_gate: Gate | None = None, *,
          accept_breaking: bool = False) -> list[Change]:
    """Make the registry hold exactly the project's objects (adds, changes, removals), after
    the contract gate of every source (tally.catalog.pipeline.gate).

    Refuses (BreakingChangeError) a breaking change that a model reads, unless
    `accept_breaking`. Feast writes its file registry in place; Tally applies to a copy and
    renames it over the registry, so a killed apply leaves the previous registry intact.
    The definitions applied are kept for the diff (tally.catalog.changes.states)."""
    from feast.repo_operations import extract_objects_for_apply_delete
    from tally.catalog.changes.states import working_texts, write_applied

    gate(project, None, run_gate)
    watch = Stopwatch()
    with project_lock(project.root):
        if not accept_breaking:
            refuse_breaking(project)
        texts = working_texts(project.root)
        store, staged, final = _staged_store(project)
        try:
            contents = repo_contents(store, feast_objects(project))
            changes = _changes(store, contents)
            crash_point("apply-planned")  # Feast loaded, the staged copy made, nothing applied
            to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
                store.project, store.registry, contents)
            with contextlib.redirect_stdout(PlainWhenPiped(sys.stderr)):
                store.apply(to_apply, objects_to_delete=to_delete, partial=False)
            if staged is not None and final is not None:
                rename_over(staged, final, crash_name="apply-")
            write_applied(project.root, texts)
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        append_run(project.root, Run(now(), "apply", watch.wall, watch.cpu,
                                     features=sorted(project.metrics) + sorted(project.scores)),
                   lock_held=True)
    return changes


def _staged_store(project: Project) -> tuple[Any, Path | None, Path | None]:
    """A FeatureStore writing to a copy of a local file registry (else the store itself)."""
    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    repo = project.root / REPO_DIR
    check_repo_yaml(repo)
    # read as feast.repo_config.load_repo_config does (${VAR}s expanded), so apply sees the
    # config plan, materialize and `feast` see; its RepoConfig cannot re-point the path
    raw = yaml.safe_load(os.path.expandvars((repo / "feature_store.yaml").read_text())) or {}
    registry = raw.get("registry", DEFAULT_REGISTRY)
    path = registry if isinstance(registry, str) else (
        registry.get("path") if isinstance(registry, dict) and registry.get(
            "registry_type", "file") == "file" else None)
    if not path or "://" in str(path):
        return open_store(project), None, None
    final = Path(path) if Path(path).is_absolute() else repo / path
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_temp_files(final.parent)
    staged = temp_path_beside(final, ".db")
    if final.exists():
        shutil.copyfile(final, staged)
    else:
        staged.unlink()
    raw["registry"] = ({**registry, "path": str(staged)} if isinstance(registry, dict)
                       else str(staged))
    try:
        config = RepoConfig(repo_path=repo, **raw)
        return FeatureStore(repo_path=str(repo), config=config), staged, final
    except Exception as exc:  # feast raises many types for a bad config
        staged.unlink(missing_ok=True)
        raise RegistryError(f"{repo}/feature_store.yaml: {str(exc).splitlines()[0]}") from None

