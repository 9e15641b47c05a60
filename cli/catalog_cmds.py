"""`tally search`, `show`, `impact`, `reuse`: thin wrappers over tally.catalog.search.query and
tally.catalog.search.reuse. Imports stay light (no project load, no pandas, no rich) so search
and show start fast; output is plain aligned text, or JSON with --json."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from tally.cli.common import JsonOption, current_project, err, print_json, project_root, wait_notice

ListOption = list[str] | None


def _out(line: str = "") -> None:
    sys.stdout.write(line.rstrip() + "\n")


def _table(rows: Sequence[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    """Aligned plain-text columns; the last column is cut to the terminal width."""
    head = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(head)]
    room = max(shutil.get_terminal_size((120, 24)).columns - sum(widths) - 2 * head, 30)
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row[:head], widths, strict=True))]
        last = row[head] if len(row[head]) <= room else row[head][:room - 1] + "…"
        _out("  ".join([*cells, last]))


def _render(value: Any, indent: int) -> None:
    """A definition as indented YAML-like lines (scalars and short lists inline)."""
    pad = "  " * indent
    for key, item in value.items():
        if isinstance(item, dict):
            _out(f"{pad}{key}:")
            _render(item, indent + 1)
        elif isinstance(item, list) and any(isinstance(i, dict) for i in item):
            _out(f"{pad}{key}:")
            for entry in item:
                _out(f"{pad}  - " + ", ".join(f"{k}: {v}" for k, v in entry.items())
                     if isinstance(entry, dict) else f"{pad}  - {entry}")
        elif isinstance(item, list):
            _out(f"{pad}{key}: [{', '.join(map(str, item))}]")
        else:
            _out(f"{pad}{key}: {item}")


def search(
    query: Annotated[str, typer.Argument(help="Words to look for; typos are tolerated.")] = "",
    owner: Annotated[ListOption, typer.Option("--owner", help="Owner e-mail or its part "
                                              "before @ (repeat: any of).")] = None,
    tag: Annotated[ListOption, typer.Option("--tag", help="Tag (repeat: all of).")] = None,
    kind: Annotated[ListOption, typer.Option(
        "--kind", help="entity|source|metric|feature_view|model|score (repeat: any of).")] = None,
    status: Annotated[ListOption, typer.Option(
        "--status", help="certified|draft|deprecated|none (repeat: any of).")] = None,
    contract: Annotated[ListOption, typer.Option(
        "--contract", help="Sources by last contract check: passing|failing|violated "
        "(failed, allowed through)|unchecked|none.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many hits.")] = 20,
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Ranked catalog search over every entity, source, metric, feature view, model, score."""
    from tally.catalog.search.query import search as run

    results = run(project_root(), query, owner=owner, tag=tag, kind=kind, status=status,
                  contract=contract, limit=limit, on_wait=wait_notice)
    if as_json:
        print_json(results.to_list())
        return
    if not results.hits:
        sys.stdout.write("no matches; try fewer words or fewer filters\n")
        return
    # plain aligned text, not rich: search is the command that must start fastest
    rows = [("kind", "name", "owner", "status", "models", "description")]
    rows += [(h.kind, h.name, h.owner or "-", (h.status or "-") + (
        f" v{h.version} of {h.version_count}" if h.version_count > 1 else ""),
        str(h.model_count), h.description) for h in results]
    _table(rows, right=(4,))
    if results.total > len(results.hits):
        err(f"{len(results.hits)} of {results.total} matches; --limit shows more")


def _fractions(value: Any) -> str:
    """Null fractions per column as `name 0.0%, other 12.5%` (or one number as a percent)."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fractions(v)}" for k, v in value.items()) or "-"
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def _failure(failure: Any) -> str:
    if not isinstance(failure, dict):
        return str(failure)
    where = f" on {failure['column']}" if failure.get("column") else ""
    return (f"{failure.get('rule')}{where}: {failure.get('offending_rows')} rows; "
            f"{failure.get('message', '')}")


def _refs(refs: list[dict[str, str]]) -> str:
    return ", ".join(f"{r['name']} ({r['kind']})" for r in refs) or "-"


def show(
    name: Annotated[str, typer.Argument(help="Any entity, source, metric, feature view, model "
                                        "or score.")],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """The full card of one entry: definition, owner, contract, statistics, lineage, Feast."""
    from tally.catalog.search.query import show as run

    card = run(project_root(), name, on_wait=wait_notice)
    if as_json:
        print_json(card.to_dict())
        return
    where = f"{card.file}:{card.line}" if card.file else "a computed table"
    kind = f"{card.kind}, {card.type}" if card.type and card.kind == "metric" else card.kind
    _out(f"{card.name} ({kind}) {where}")
    _out(f"  {card.description}")
    facts = [("owners" if len(card.owners) > 1 else "owner", card.owner),
             ("status", card.status), ("version", card.version),
             ("tags", ", ".join(card.tags)), ("aliases", ", ".join(card.aliases)),
             ("entity", card.entity), ("source", card.source),
             ("columns", ", ".join(card.columns))]
    for key, value in facts:
        if value not in (None, ""):
            _out(f"  {key}: {value}")
    _out("definition:")
    _render(card.definition, 1)
    if card.funnel:
        _show_funnel(card.funnel)
    if card.contract:
        c = card.contract
        last = c.get("last_check") or {}
        checked = f", checked {last.get('checked_at')}" if last.get("checked_at") else ""
        _out(f"contract of source {c['source']}: {c['state']}{checked}; producer "
             f"{c['producer']}")
        for failure in (last.get("failures") or [])[:5]:
            _out(f"  - {_failure(failure)}")
    if card.table:
        t = card.table
        if t.get("computed"):
            _out(f"table {t['table']}: {t.get('rows')} rows, newest snapshot "
                 f"{t.get('newest_snapshot')}, null fraction "
                 f"{_fractions(t.get('null_fraction'))}")
        else:
            _out(f"table {t['table']}: not computed yet (run tally compute)")
    _show_versions(card.versions)
    _out(f"upstream:   {_refs(card.upstream)}")
    _out(f"downstream: {_refs(card.downstream)}")
    _out(f"models:     {', '.join(card.models) or '-'}")
    feast = "; ".join(f"{k.replace('_', ' ')} {', '.join(v) if isinstance(v, list) else v}"
                      for k, v in card.feast.items() if v)
    _out(f"feast:      {feast or '-'}")


def _show_funnel(funnel: dict[str, Any]) -> None:
    same = f", same {funnel['same']}" if funnel["same"] else ""
    _out(f"funnel: {funnel['order']}, last step within {funnel['within']} of the first{same}; "
         f"starts in the trailing {funnel['window']} every {funnel['grain']}; measure "
         f"{funnel['measure']}")
    for step in funnel["steps"]:
        _out(f"  step {step['step']}: {step['source']} where {step['filter']}")
    _out(f"  columns: {', '.join(funnel['columns'])}")


def _show_versions(versions: list[dict[str, Any]]) -> None:
    if len(versions) < 2 and not any(v["deprecated_on"] for v in versions):
        return
    _out(f"versions ({len(versions)}):")
    for v in versions:
        flags = [v["status"]] + (["current"] if v["current"] else [])
        if v["deprecated_on"]:
            flags.append(f"deprecated on {v['deprecated_on']}")
        changed = f"; changed {', '.join(v['changed'])}" if v["changed"] else ""
        _out(f"  @{v['version']} ({', '.join(flags)}) served as {', '.join(v['served_as'])}"
             f"{changed}; models: {', '.join(v['models']) or '-'}")


def impact(
    name: Annotated[str, typer.Argument(help="The entry whose change you plan.")],
    as_json: Annotated[bool, JsonOption] = False,
) -> None:
    """Everything transitively downstream of NAME, grouped by kind, and whom to notify."""
    from tally.catalog.search.query import impact as run

    result = run(project_root(), name, on_wait=wait_notice)
    if as_json:
        print_json(result.to_dict())
        return
    _out(f"{result.name} ({result.kind}, {result.owner}): {len(result.items)} downstream")
    for kind, names in result.by_kind.items():
        _out(f"  {kind}: {', '.join(names)}")
    if result.owners:
        _out("owners to notify:")
        for owner, names in result.owners.items():
            _out(f"  {owner}: {', '.join(names)}")


def reuse(as_json: Annotated[bool, JsonOption] = False) -> None:
    """Features per model, features no model uses, and duplicated pipelines to merge."""
    from tally.catalog.search.reuse import reuse_report

    report = reuse_report(current_project())
    if as_json:
        print_json(report.to_dict())
        return
    rows = [("feature", "kind", "models", "used by", "indirectly (derived, scores)")]
    rows += [(f.name, f.kind, str(f.model_count), ", ".join(f.models) or "-",
              ", ".join(f.indirect_models) or "-") for f in report.features]
    _table(rows, right=(2,))
    _out()
    _out(f"unused (no model reaches them): {', '.join(report.unused) or 'none'}")
    if not report.duplicates:
        _out("duplicated pipelines: none")
    for group in report.duplicates:
        sig = ", ".join(f"{k}={v}" for k, v in group.signature.items())
        _out(f"duplicated pipeline: {', '.join(group.names)} compute the same thing ({sig}); "
             f"owners {', '.join(group.owners)}; used by {', '.join(group.models) or 'no model'}"
             "; merge them into one and point the models at it")


def register_commands(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(show)
    app.command()(impact)
    app.command()(reuse)
