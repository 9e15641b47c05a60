"""Property-based fuzzing of definition files and command lines (issue 7).

Whatever the input: the exit code is 0, 1 or 2, stderr never holds a traceback or an
"internal error", and metrics/ is either unchanged or holds exactly the new valid file.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from tally.catalog.spec.loading import load_project

from tests.helpers import REPO, Result, invoke, tree_digest

BUNDLED = sorted(p.name for p in (REPO / "metrics").glob("*.yaml"))
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


PRISTINE = tree_digest(REPO / "metrics")
BUNDLED_FILE_OF = {n: d.file for n, d in load_project(REPO).definitions.items()}


@pytest.fixture(scope="module")
def shared_root() -> Any:
    root = Path(tempfile.mkdtemp(prefix="tally-fuzz-")) / "project"
    shutil.copytree(REPO / "metrics", root / "metrics")
    (root / "feature_repo").mkdir()
    shutil.copy(REPO / "feature_repo" / "feature_store.yaml", root / "feature_repo")
    yield root
    shutil.rmtree(root.parent, ignore_errors=True)


def _reset(root: Path) -> Path:
    """The shared project back to the bundled definitions (copied again only if changed)."""
    if tree_digest(root / "metrics") != PRISTINE:
        shutil.rmtree(root / "metrics")
        shutil.copytree(REPO / "metrics", root / "metrics")
    for extra in root.parent.iterdir():
        if extra != root:
            shutil.rmtree(extra) if extra.is_dir() and not extra.is_symlink() else extra.unlink()
    return root


def _load(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


def _dump(data: Any) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["30d", "1h", "0d", "-1d", "99999999999d", "count", "sum", "*",
                     "seconds", "crm_logins", "account", "derived", "column", "NaN",
                     "read_csv('/etc/passwd')", "../x.parquet", "2024-01-01", "~", "null"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _parent_and_key(data: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    node = data
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


LAUGHS = b"".join(
    b"%s: &%s [%s]\n" % (bytes([97 + i]), bytes([97 + i]),
                         b", ".join([b"*%s" % bytes([96 + i])] * 9) if i else b"1")
    for i in range(8)
)
YAML_SNIPPETS = [
    b"&anchor ", b"*anchor", b"*nowhere ", b"!!binary aGk= ", b"!custom ",
    b"!!python/object:os.system ",
    b"<<: {a: 1}\n", b"? [a, b]\n: 1\n", b"---\n", b"%YAML 1.1\n---\n", b"{", b"[", b"]",
    b"\t", b"\r", b"\r\n", b"\xef\xbb\xbf", b"\xff\xfe", b"'", b'"', b"|\n", b">-\n", b"- ",
    b": ", b"#", b"@", b"`", b"%", b"\\", "\u2028".encode(), b"\x85", b"2024-01-01T00:00:00Z",
    b"0x1F", b"1_000", b".inf", b".nan", b"~", b"!!set {a, b}", b"!!omap [a: 1]",
    b"[" * 200 + b"]" * 200, LAUGHS, b"x: &r [*r]\n",
]


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, content): a bundled definition file with one or two mutations."""
    name = draw(st.sampled_from(BUNDLED))
    text = (REPO / "metrics" / name).read_text("utf-8")
    data = _load(text)
    for _ in range(draw(st.integers(1, 2))):
        paths = [p for p in _paths(data) if p]
        kind = draw(st.sampled_from(["delete", "retype", "duplicate", "rename", "swap_list"]))
        if not paths:
            break
        parent, key = _parent_and_key(data, draw(st.sampled_from(paths)))
        if kind == "delete":
            del parent[key]
        elif kind == "retype":
            parent[key] = draw(values)
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(parent[key])
        elif kind == "duplicate" and isinstance(parent, dict):
            parent[f"{key}_copy"] = parent[key]
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = parent.pop(key)
        elif kind == "swap_list" and isinstance(parent, dict):
            parent[key] = [parent[key]]
    content = _dump(data).encode("utf-8")
    byte_mutation = draw(st.sampled_from(["none", "truncate", "inject", "dup_line", "snippet"]))
    if byte_mutation == "truncate":
        content = content[: draw(st.integers(0, len(content)))]
    elif byte_mutation == "inject":
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.binary(min_size=1, max_size=8)) + content[at:]
    elif byte_mutation == "snippet":
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.sampled_from(YAML_SNIPPETS)) + content[at:]
    elif byte_mutation == "dup_line":
        lines = content.splitlines(keepends=True) or [b""]
        at = draw(st.integers(0, len(lines) - 1))
        lines.insert(at, lines[at])
        content = b"".join(lines)
    return name, content


def _clean(result: Result) -> None:
    event(f"exit {result.code}")
    assert result.code in (0, 1, 2), result
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr


def _renamed_copy(name: str) -> tuple[str, bytes]:
    """A valid file: bundled `name` with its first definition described anew."""
    data = _load((REPO / "metrics" / name).read_text("utf-8"))
    first = next(iter(data.values()))[0]
    first["description"] = "Described anew."
    return name, _dump(data).encode("utf-8")


@FUZZ
@given(case=mutated_files(), replace=st.booleans(), same_name=st.booleans())
# valid files that take every name of a bundled file over (from itself or from another
# file), so the success path, with and without --replace, always runs
@example(case=_renamed_copy("marketing.yaml"), replace=True, same_name=False)
@example(case=_renamed_copy("marketing.yaml"), replace=True, same_name=True)
@example(case=_renamed_copy("models.yaml"), replace=False, same_name=False)
def test_register_of_a_mutated_file(case: tuple[str, bytes], replace: bool, same_name: bool,
                                    shared_root: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    name, content = case
    root = _reset(shared_root)
    file = root.parent / (name if same_name else f"fuzzed_{name}")
    file.write_bytes(content)
    before = tree_digest(root / "metrics")
    args = ["--project", str(root), "register", str(file), *(["--replace"] * replace)]
    result = invoke(args, capsys)
    _clean(result)
    after = tree_digest(root / "metrics")
    if result.code != 0:
        assert after == before
        return
    written = (root / "metrics" / file.name).read_bytes()
    assert written == content.decode("utf-8").removeprefix("\ufeff").encode("utf-8")
    project = load_project(root)  # what was written validates with the rest
    taken = {n for n, d in project.definitions.items() if d.file == f"metrics/{file.name}"}
    # every definition the file does not define is still where it was, unchanged in place
    assert {n: f for n, f in BUNDLED_FILE_OF.items() if n not in taken} == {
        n: d.file for n, d in project.definitions.items() if n not in taken}
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    holders = {BUNDLED_FILE_OF[n].removeprefix("metrics/") for n in taken & set(BUNDLED_FILE_OF)}
    if not replace:
        assert changed <= {file.name}
        assert holders <= {file.name}  # a clash without --replace is refused, not merged
    # only the new file and the files that gave up a name to it changed, and each of those did
    assert changed <= {file.name} | holders
    assert holders - {file.name} <= changed
    assert not list((root / "metrics").rglob(".tally-tmp-*"))


@FUZZ
@given(case=mutated_files())
def test_validate_and_show_of_a_project_holding_a_mutated_file(
        case: tuple[str, bytes], shared_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, content = case
    root = _reset(shared_root)
    (root / "metrics" / name).write_bytes(content)
    before = tree_digest(root / "metrics")
    for args in (["validate", "--json"], ["show", "crm_logins_30d"]):
        result = invoke(["--project", str(root), *args], capsys)
        _clean(result)
        assert result.code in (0, 1)
    assert tree_digest(root / "metrics") == before


TOKENS = st.one_of(
    st.sampled_from([
        "--name", "--source", "--aggregation", "--expression", "--window", "--grain",
        "--filter", "--owner", "--description", "--tag", "--replace", "--json", "--help",
        "--", "-", "crm_logins", "sum", "count", "*", "seconds", "7d", "30d", "0d", "abc",
        "new_one", "crm_logins_30d", "account", "getenv('HOME')", "x.yaml", "/dev/null",
        "/dev/zero", "/", ".", "..", "@FILE", "@DIR", "@BAD", "--debug-not", "-x",
    ]),
    st.text(max_size=12),
)
COMMANDS = st.sampled_from([["validate"], ["register"], ["metric", "new"], ["show"],
                            ["metric"], []])
METRIC_NEW = ["metric", "new", "--name", "fuzz_new", "--source", "crm_logins", "--aggregation",
              "sum", "--expression", "seconds", "--window", "7d", "--owner", "o@x.y",
              "--description", "d", "--tag", "t"]


@st.composite
def near_valid_commands(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """A valid `metric new` or `register` command line with a few tokens changed."""
    tokens = list(draw(st.sampled_from([METRIC_NEW, ["register", "@FILE", "--replace"],
                                        ["show", "crm_logins_30d", "--json"]])))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(tokens)))
        action = draw(st.sampled_from(["drop", "replace", "insert"]))
        if action == "insert" or at == len(tokens):
            tokens.insert(at, draw(TOKENS))
        elif action == "drop":
            del tokens[at]
        else:
            tokens[at] = draw(TOKENS)
    return [], tokens


@FUZZ
@given(case=st.one_of(st.tuples(COMMANDS, st.lists(TOKENS, max_size=8)),
                      near_valid_commands()))
def test_random_command_lines(case: tuple[list[str], list[str]], shared_root: Path,
                              capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    command, tokens = case
    assume("--debug" not in tokens)  # --debug shows tracebacks on purpose
    root = _reset(shared_root)
    monkeypatch.chdir(root.parent)
    good = root.parent / "good.yaml"
    good.write_text("metrics:\n  - name: fuzz_ok\n    description: d\n    owner: o@x.y\n"
                    "    source: crm_logins\n    aggregation: count\n    expression: '*'\n"
                    "    window: 7d\n")
    (root.parent / "folder.yaml").mkdir()
    bad = root.parent / "bad.yaml"
    bad.write_bytes(b"metrics:\n  - name: [\x00")
    swap = {"@FILE": str(good), "@DIR": str(root.parent / "folder.yaml"), "@BAD": str(bad)}
    argv = ["--project", str(root), *command, *(swap.get(t, t) for t in tokens)]
    before = tree_digest(root / "metrics")
    result = invoke(argv, capsys)
    _clean(result)
    after = tree_digest(root / "metrics")
    if after != before:
        assert result.code == 0
        new = set(after) - set(before)
        assert len(new) == 1 and not {k for k in before if before[k] != after.get(k)}
        load_project(root)
    assert not list(root.rglob(".tally-tmp-*"))
