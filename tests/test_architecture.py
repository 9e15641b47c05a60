"""The import structure: no cycle among tally's modules, counting every import wherever it
is written (inside functions and TYPE_CHECKING blocks too), and the import-linter contracts
of pyproject.toml kept."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    """Every module of the installed `tally`, by dotted name, from pyproject's package-dir."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    found: dict[str, Path] = {}
    for package, folder in mapping.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if package == "tally" and parts:
                continue  # api/ holds only `tally` itself; subpackages come from their folders
            found[".".join([package, *parts])] = path
    return found


def _imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement anywhere in the module may refer to."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path):
            while name and name not in modules:  # `from pkg.mod import func` -> pkg.mod
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_scan_sees_every_subpackage_and_imports_inside_functions() -> None:
    graph = import_graph()
    for package in ("tally", "tally.catalog.spec.loading", "tally.catalog.pipeline",
                    "tally.feature_repo.registry", "tally.cli.compute_cmds"):
        assert package in graph
    # an import written inside a function body counts: the demo imports the pipeline there
    assert "tally.catalog.pipeline" in graph["tally.feature_repo.demo"]


def test_the_cycle_finder_finds_a_hidden_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_modules() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles (imports inside functions count): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_import_linter_contracts_are_kept() -> None:
    command = [sys.executable, str(REPO / ".ci" / "staged.py"), "lint-imports"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


CLI_PUBLIC_API = {
    "tally", "tally.catalog", "tally.catalog.errors", "tally.catalog.pipeline",
    "tally.catalog.facade", "tally.catalog.spec.loading", "tally.catalog.spec.authoring",
    "tally.catalog.changes.diff", "tally.catalog.changes",
    "tally.catalog.spec.moments", "tally.catalog.spec.project", "tally.catalog.search.query",
    "tally.catalog.search.reuse", "tally.catalog.search.portfolio",
    "tally.catalog.search.portfolio_plot", "tally.catalog.search.funnel_report",
    "tally.catalog.search.funnel_plot", "tally.catalog.scores.explain",
    "tally.catalog.contracts.odcs",
    "tally.catalog.store.fsutil", "tally.catalog.web.app", "tally.catalog.web.build",
    "tally.feature_repo", "tally.feature_repo.registry",
    "tally.feature_repo.serving", "tally.feature_repo.demo", "tally.feature_repo.scaffold",
    "tally.feature_repo.readiness",  # the not-computed / not-applied errors the CLI maps
    # subpackage __init__s: empty today, where a subpackage's exports would go
    "tally.catalog.spec", "tally.catalog.store", "tally.catalog.search", "tally.catalog.scores",
    "tally.catalog.contracts", "tally.catalog.web",
}


def test_every_module_outside_the_public_api_is_forbidden_to_the_cli() -> None:
    """A new catalog or feature_repo module is internal until docs/architecture.md and this
    list say otherwise: the cli contract must forbid it."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    cli = next(c for c in contracts if c["name"] == "cli imports only the public API")
    forbidden = cli["forbidden_modules"]
    internal = [m for m in import_graph() if m.startswith(("tally.catalog", "tally.feature_repo"))
                and m not in CLI_PUBLIC_API]
    uncovered = [m for m in internal if not any(m == f or m.startswith(f + ".")
                                                for f in forbidden)]
    assert uncovered == []
    assert not [f for f in forbidden if f in CLI_PUBLIC_API]
