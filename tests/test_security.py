"""Hostile definitions, paths and arguments are refused with their reason (issue 7)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from tally.catalog.spec.sqlcheck import ExpressionRefused, check_expression

from tests.helpers import invoke, tree_digest

LONG = "seconds" + " + 1" * 1100  # over 4000 characters
DEEP = "(" * 60 + "seconds" + ")" * 60
FAR_DEEP = "(" * 5000 + "seconds" + ")" * 5000
NOT_LIST = "not " * 80 + "seconds"

# case id -> (expression, a fragment of the reason it is refused)
HOSTILE_EXPRESSIONS: dict[str, tuple[str, str]] = {
    # statements and statement separators
    "semicolon": ("seconds; DROP TABLE x", "`;` is not allowed"),
    "semicolon_only": ("seconds;", "`;` is not allowed"),
    "select": ("select 1", "subquery"),
    "union": ("seconds union select 1", "subquery"),
    "with": ("with a as (select 1) select 1", "subquery"),
    "subquery_in": ("seconds in (select seconds from read_csv('x'))", "subquery"),
    "subquery_case": ("case when true then (select 1) end", "subquery"),
    "copy": ("COPY crm TO '/tmp/x.csv'", "SQL statement (COPY)"),
    "attach": ("ATTACH 'evil.db'", "SQL statement (ATTACH)"),
    "detach": ("DETACH memory", "SQL statement (DETACH)"),
    "install": ("INSTALL httpfs", "SQL statement (INSTALL)"),
    "load": ("LOAD httpfs", "SQL statement (LOAD)"),
    "pragma": ("PRAGMA enable_profiling", "SQL statement (PRAGMA)"),
    "set": ("SET enable_external_access = true", "SQL statement (SET)"),
    "reset": ("RESET threads", "SQL statement (RESET)"),
    "create_macro": ("CREATE MACRO m(a) AS a", "SQL statement (CREATE)"),
    "call": ("CALL pragma_version()", "SQL statement (CALL)"),
    "use": ("USE other", "SQL statement (USE)"),
    "vacuum": ("VACUUM", "SQL statement (VACUUM)"),
    # comment tricks
    "line_comment": ("seconds -- hide the rest", "comments are not allowed"),
    "block_comment": ("seconds /* x */ + 1", "comments are not allowed"),
    "unterminated_comment": ("seconds /*", "not valid SQL"),
    "comment_in_function": ("abs(/**/seconds)", "comments are not allowed"),
    # quoted-identifier tricks
    "quoted_quote": ('"sec""onds"', "not a plain identifier"),
    "quoted_space": ('"seconds + 1"', "not a plain identifier"),
    "quoted_function_name": ("\"read_csv\"('/etc/passwd')", "read_csv()"),
    "quoted_alias": ('"seconds" "alias"', "Alias construct"),
    "quoted_empty": ('""', "not a plain identifier"),
    "qualified": ("main.crm.seconds", "qualified column"),
    # file, network and environment access
    "read_csv": ("read_csv('/etc/passwd')", "function read_csv()"),
    "read_csv_auto": ("read_csv_auto('/etc/passwd')", "read_csv"),
    "read_parquet": ("read_parquet('/data/x.parquet')", "function read_parquet()"),
    "read_text": ("length(read_text('/etc/shadow'))", "function read_text()"),
    "read_blob": ("read_blob('/etc/shadow')", "function read_blob()"),
    "read_json": ("read_json('https://evil.example/x.json')", "function read_json()"),
    "glob": ("glob('/home/*')", "function glob()"),
    "parquet_scan": ("parquet_scan('x.parquet')", "function parquet_scan()"),
    "getenv": ("getenv('AWS_SECRET_ACCESS_KEY')", "function getenv()"),
    "getenv_nested": ("coalesce(seconds, length(getenv('HOME')))", "function getenv()"),
    "current_setting": ("current_setting('home_directory')", "function current_setting()"),
    "getvariable": ("getvariable('x')", "function getvariable()"),
    "query": ("query('select 1')", "function query()"),
    "query_table": ("query_table('crm')", "function query_table()"),
    "sleep": ("sleep_ms(100000)", "function sleep_ms()"),
    "repeat": ("repeat('x', 1000000000)", "function repeat()"),
    "range": ("range(1000000000)", "generate_series()"),
    "builtin_value": ("concat(seconds, current_schema)", "built-in value"),
    "builtin_user": ("user", "built-in value"),
    # lambdas, comprehensions, nested types
    "lambda_arrow": ("list_transform([1], x -> x + 1)", "not allowed"),
    "lambda_keyword": ("list_apply([1], lambda x: x + 1)", "function list_apply()"),
    "list_comprehension": ("[x * 2 for x in [1, 2] if x > 1]", "function array()"),
    "list_literal": ("[1, 2, 3]", "function array()"),
    "struct_literal": ("{'a': 1}", "function struct()"),
    "struct_pack": ("struct_pack(a := 1)", "function struct()"),
    "map_literal": ("map([1], [2])", "function map()"),
    "map_keyword": ("map {'a': 1}", "function to_map()"),
    "subscript": ("{'a': 1}['a']", "Bracket construct"),
    "cast_struct": ("cast(seconds as struct(a int))", "cast to STRUCT"),
    "cast_blob": ("seconds::blob", "cast to VARBINARY"),
    "cast_collate": ("cast(seconds as varchar collate nocase)", "cast to TEXT COLLATE"),
    "columns_star": ("COLUMNS(*)", "function columns()"),
    "star": ("* EXCLUDE (seconds)", "`*`"),
    "window": ("sum(seconds) over ()", "Window construct"),
    "aggregate_inside": ("max(seconds)", "function max()"),
    # size
    "very_long": (LONG, "the limit is 4000"),
    "deep": (DEEP, "nested deeper than 48"),
    "far_too_deep": (FAR_DEEP, "the limit is 4000"),
    "deep_unary": (NOT_LIST, "nested deeper than 48"),
    # unicode look-alikes
    "greek_question_mark": ("seconds\u037e select 1", "U+037E"),
    "cyrillic_e": ("g\u0435tenv('HOME')", "U+0435"),
    "cyrillic_column": ("\u0455econds", "U+0455"),
    "fullwidth_plus": ("seconds\uff0b1", "U+FF0B"),
    "nbsp": ("seconds\u00a0+ 1", "U+00A0"),
    "zero_width": ("seconds\u200b", "U+200B"),
    "smart_quotes": ("\u2018abc\u2019", "U+2018"),
    "nul": ("seconds\x00", "U+0000"),
    # parameters
    "dollar_param": ("$1", "parameter"),
    "named_param": ("$name", "parameter"),
    "question_param": ("seconds > ?", "parameter"),
    "colon_param": (":x", "parameter"),
    # string escapes
    "backslash_escape": ("'a\\' OR 1=1 --'", "comments are not allowed"),
    "dollar_quoted": ("$$select 1$$", "RawString construct"),
    "dollar_tagged": ("$tag$x$tag$", "RawString construct"),
    "e_string": ("E'\\x41'", "ByteString construct"),
    "e_string_quote": ("e'\\'' || getenv('HOME')", "not valid SQL"),
    "unicode_escape": ("U&'\\0041'", "not allowed"),
    "national": ("N'abc'", "National construct"),
    "bit_string": ("B'101'", "not valid SQL"),
}


def test_corpus_cases_are_distinct_and_many() -> None:
    texts = [text for text, _ in HOSTILE_EXPRESSIONS.values()]
    assert len(set(texts)) == len(texts)  # no case counted twice under two names
    assert len(HOSTILE_EXPRESSIONS) >= 40


# harmless look-alikes of hostile cases: what is refused is the construct, never the
# characters that spell it inside a string literal, nor nesting within the limit
NEAR_MISSES = {
    "semicolon": "'a; b'", "line_comment": "'-- not a comment'",
    "block_comment": "'/* x */'", "read_csv": "'read_csv(''/etc/passwd'')'",
    "getenv": "length('getenv')", "smart_quotes": "'\u2018quoted\u2019'",
    "nbsp": "'a\u00a0b'", "dollar_param": "'$1'", "deep": "(" * 40 + "seconds" + ")" * 40,
    "deep_unary": "not " * 40 + "seconds", "subquery_in": "seconds in (1, 2)",
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_of_hostile_cases_are_kept(case: str) -> None:
    assert case in HOSTILE_EXPRESSIONS  # the case it is a near miss of
    checked = check_expression(NEAR_MISSES[case])
    assert check_expression(checked.duckdb_sql).tree == checked.tree


@pytest.mark.parametrize("case", sorted(HOSTILE_EXPRESSIONS))
def test_allow_list_refuses_with_reason(case: str) -> None:
    text, reason = HOSTILE_EXPRESSIONS[case]
    if reason == "built-in value":  # a rule of validation, which knows the source's columns
        check_expression(text)
        return
    with pytest.raises(ExpressionRefused) as refused:
        check_expression(text)
    assert reason in str(refused.value)


@pytest.mark.parametrize("text", [
    "seconds", '"seconds"', "seconds * 2 + 1", "coalesce(seconds, 0)", "nullif(seconds, 0)",
    "case when seconds > 5 then 1 else 0 end", "cast(seconds as bigint)", "seconds::double",
    "'Zürich — ok'", "lower('ÄÖ') = 'äö'", "extract(year from event_ts)", "abs(-seconds)",
    "date_trunc('day', event_ts)", "seconds between 1 and 2 and not seconds is null",
])
def test_allow_list_keeps_plain_expressions(text: str) -> None:
    checked = check_expression(text)
    # the rendering the compute engine runs parses back to the same checked tree
    assert check_expression(checked.duckdb_sql).tree == checked.tree


def _dump(data: object) -> str:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt", pure=True)
    yaml.width = 100_000
    stream = io.StringIO()
    yaml.dump(data, stream)
    return stream.getvalue()


def test_register_refuses_every_hostile_expression_with_its_reason(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole corpus in one file: each metric refused at its own key, with its reason."""
    cases = sorted(HOSTILE_EXPRESSIONS)
    metrics = []
    for index, case in enumerate(cases):
        text, _ = HOSTILE_EXPRESSIONS[case]
        metrics.append({"name": f"hostile_{index}", "description": case, "owner": "x@y.z",
                        "source": "crm_logins", "aggregation": "sum", "window": "7d",
                        "expression": "seconds" if index % 2 else text,
                        **({"filter": text} if index % 2 else {})})
    file = tmp_path / "hostile.yaml"
    file.write_text(_dump({"metrics": metrics}), encoding="utf-8")
    before = tree_digest(example_project)
    result = invoke(["--project", str(example_project), "register", str(file)], capsys)
    assert result.code == 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    lines = result.stderr.splitlines()
    for index, case in enumerate(cases):
        _, reason = HOSTILE_EXPRESSIONS[case]
        key = f"metrics[{index}].{'filter' if index % 2 else 'expression'}"
        if case in ("very_long", "far_too_deep"):  # refused by the definition's schema first
            reason = "at most 4000 characters"
        mine = [line for line in lines if f": {key}: " in line]
        assert mine, (case, result.stderr[:2000])
        assert any(reason in line for line in mine), (case, mine)
    assert tree_digest(example_project) == before


# -- source paths ---------------------------------------------------------------------------

def _source(name: str, path: str) -> dict[str, object]:
    return {"name": name, "description": "d", "owner": "o@x.y", "path": path,
            "entity": "account", "timestamp_field": "ts"}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.parquet").write_bytes(b"PAR1")
    (folder / "secret.csv").write_text("a\n1\n")
    return folder


def _plant_symlinks(root: Path, outside: Path) -> None:
    data = root / "data"
    (data / "ok").mkdir(parents=True)
    (data / "ok" / "part-1.parquet").write_bytes(b"PAR1")
    (data / "real.parquet").write_bytes(b"PAR1")
    (data / "link_out.parquet").symlink_to(outside / "secret.parquet")
    (data / "link_in.parquet").symlink_to(data / "real.parquet")
    (data / "dir_out").symlink_to(outside, target_is_directory=True)
    (data / "mixed").mkdir()
    (data / "mixed" / "a.parquet").write_bytes(b"PAR1")
    (data / "mixed" / "b.parquet").symlink_to(outside / "secret.parquet")
    (data / "chain.parquet").symlink_to(data / "link_out.parquet")
    (root / "lake").symlink_to(outside, target_is_directory=True)


# path -> reason fragment (None: accepted)
SOURCE_PATHS: dict[str, str | None] = {
    "../outside/secret.parquet": "leaves the project",
    "data/../../outside/secret.parquet": "leaves the project",
    "data/../data/real.parquet": "leaves the project",  # no `..` at all without a config
    "/etc/passwd.csv": "leaves the project",
    "/": "leaves the project",
    "~/data.parquet": "`~` is not expanded",
    "~root/.ssh/id_rsa.csv": "`~` is not expanded",
    "..\\..\\outside\\secret.parquet": "leaves the project",
    "data/link_out.parquet": "resolves through a symlink",
    "data/chain.parquet": "resolves through a symlink",
    "data/dir_out/secret.parquet": "resolves through a symlink",
    "data/dir_out/*.parquet": "the folder of the glob resolves through a symlink",
    "lake/**/*.parquet": "the folder of the glob resolves through a symlink",
    "data/mixed/*.parquet": "b.parquet resolves through a symlink",
    "data/*/b.parquet": "resolves through a symlink",
    "data/real\n.parquet": "control character",
    "data/real.parquet": None,
    "data/link_in.parquet": None,
    "data/ok/*.parquet": None,
    "data/not_there_yet.parquet": None,
}


def test_source_paths_outside_the_project_are_refused(
        example_project: Path, tmp_path: Path, outside: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _plant_symlinks(example_project, outside)
    paths = sorted(SOURCE_PATHS)
    file = tmp_path / "paths.yaml"
    file.write_text(_dump({"sources": [_source(f"src_{i}", p) for i, p in enumerate(paths)]}))
    before = tree_digest(example_project / "metrics")
    result = invoke(["--project", str(example_project), "register", str(file)], capsys)
    assert result.code == 1 and "Traceback" not in result.stderr
    for index, path in enumerate(paths):
        reason = SOURCE_PATHS[path]
        mine = [line for line in result.stderr.splitlines()
                if f": sources[{index}].path: " in line]
        if reason is None:
            assert not mine, (path, mine)
        else:
            assert mine and reason in mine[0], (path, mine, result.stderr[:3000])
    assert tree_digest(example_project / "metrics") == before


def test_tally_yaml_allows_an_outside_folder(example_project: Path, tmp_path: Path,
                                             outside: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _plant_symlinks(example_project, outside)
    paths = {"data/link_out.parquet": True, str(outside / "secret.parquet"): True,
             "lake/*.parquet": True, "../outside/secret.csv": True,
             "data/mixed/*.parquet": True, str(tmp_path / "elsewhere.parquet"): False,
             "~/x.parquet": False}
    file = tmp_path / "allowed.yaml"
    file.write_text(_dump({"sources": [_source(f"src_{i}", p) for i, p in enumerate(paths)]}))
    (example_project / "tally.yaml").write_text(
        f"# data shared with the lake\nallowed_data_dirs:\n  - {outside.parent / 'lake_link'}\n")
    (outside.parent / "lake_link").symlink_to(outside, target_is_directory=True)
    result = invoke(["--project", str(example_project), "register", str(file)], capsys)
    assert result.code == 1
    for index, (path, allowed) in enumerate(paths.items()):
        mine = [line for line in result.stderr.splitlines()
                if f": sources[{index}].path: " in line]
        assert bool(mine) != allowed, (path, result.stderr)
    ok = tmp_path / "ok.yaml"
    ok.write_text(_dump({"sources": [_source("src_ok", "data/link_out.parquet")]}))
    assert invoke(["--project", str(example_project), "register", str(ok)], capsys).code == 0


@pytest.mark.parametrize(("text", "line", "key", "reason"), [
    ("allowed_data_dirs: [/a]\nallowed_dirs: [/b]\n", 2, "allowed_dirs", "unknown key"),
    ("allowed_data_dirs: /mnt/lake\n", 1, "allowed_data_dirs", "list"),
    ("allowed_data_dirs:\n  - /a\n  - [nested]\n", 3, "allowed_data_dirs[1]", "string"),
    ("allowed_data_dirs:\n  - ~/lake\n", 2, "allowed_data_dirs[0]", "absolute path"),
    ("- /a\n", 1, None, "must be a mapping"),
    ("allowed_data_dirs: [/a\n", 2, None, "YAML syntax error"),
])
def test_bad_tally_yaml_is_reported_with_file_and_line(
        example_project: Path, text: str, line: int, key: str | None, reason: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "tally.yaml").write_text(text)
    result = invoke(["--project", str(example_project), "validate"], capsys)
    assert result.code == 1 and "Traceback" not in result.stderr
    expected = f"tally.yaml:{line}: {key}: " if key else f"tally.yaml:{line}: "
    assert expected in result.stderr, result.stderr
    assert reason in result.stderr


def test_empty_tally_yaml_is_fine(example_project: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    (example_project / "tally.yaml").write_text("# nothing allowed yet\n")
    assert invoke(["--project", str(example_project), "validate"], capsys).code == 0


# -- hostile files and arguments to register -------------------------------------------------

GOOD = ("metrics:\n  - name: {name}\n    description: d\n    owner: o@x.y\n"
        "    source: crm_logins\n    aggregation: count\n    expression: '*'\n    window: 7d\n")


def test_register_refuses_files_that_are_not_small_yaml_files(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it for reading would block forever
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NUL bytes, no disk used
    zero_link = tmp_path / "zero.yaml"
    zero_link.symlink_to("/dev/zero")
    dangling = tmp_path / "dangling.yaml"
    dangling.symlink_to(tmp_path / "nowhere.yaml")
    hidden = tmp_path / ".hidden.yaml"
    hidden.write_text(GOOD.format(name="hidden_metric"))
    cases = {
        str(fifo): (1, "not a regular file"),
        str(folder): (1, "not a regular file"),
        str(huge): (1, "limited to 1024 KiB"),
        str(zero_link): (1, "not a regular file"),
        "/dev/zero": (2, "end in .yaml"),
        "/dev/null": (2, "end in .yaml"),
        str(dangling): (2, "no such file"),
        str(tmp_path / "missing.yaml"): (2, "no such file"),
        str(hidden): (2, "hidden"),
        str(tmp_path): (2, "end in .yaml"),
        "": (2, ""),
    }
    before = tree_digest(example_project)
    for arg, (code, message) in cases.items():
        result = invoke(["--project", str(example_project), "register", arg], capsys)
        assert result.code == code, (arg, result.stderr)
        assert message in result.stderr, (arg, result.stderr)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert tree_digest(example_project) == before


@pytest.mark.parametrize("file_name", ["my metrics.yaml", "métriques été.yaml", "指标.yaml",
                                       "-dash.yaml", "a'quote\".yaml"])
def test_register_handles_unusual_file_names(example_project: Path, tmp_path: Path,
                                             file_name: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad" / file_name
    bad.parent.mkdir()
    bad.write_text(GOOD.format(name="odd_metric").replace("count", "median"))
    before = tree_digest(example_project)
    result = invoke(["--project", str(example_project), "register", "--", str(bad)], capsys)
    assert result.code == 1 and file_name in result.stderr and "median" not in os.listdir(
        example_project / "metrics")
    assert tree_digest(example_project) == before
    good = tmp_path / file_name
    good.write_text(GOOD.format(name="odd_metric"))
    result = invoke(["--project", str(example_project), "register", "--", str(good)], capsys)
    assert result.code == 0, result.stderr
    assert (example_project / "metrics" / file_name).read_text() == good.read_text()


# -- the hardened DuckDB connection ----------------------------------------------------------

@pytest.fixture
def duck_files(tmp_path: Path) -> dict[str, Path]:
    import duckdb

    root = tmp_path / "proj"
    (root / "data" / "tables").mkdir(parents=True)
    (root / "data" / "events").mkdir()
    (tmp_path / "outside").mkdir()
    files = {"source": root / "data" / "src.parquet",
             "sibling": root / "data" / "other.parquet",
             "part": root / "data" / "events" / "part-0.parquet",
             "secret": tmp_path / "outside" / "secret.parquet",
             "tables": root / "data" / "tables", "root": root, "outside": tmp_path / "outside"}
    plain = duckdb.connect()
    for key in ("source", "sibling", "part", "secret"):
        plain.execute(f"COPY (SELECT 42 AS answer) TO '{files[key]}' (FORMAT parquet)")
    plain.close()
    (files["tables"] / "escape").symlink_to(files["outside"], target_is_directory=True)
    return files


def _fails(con: object, sql: str, fragment: str = "") -> str:
    import duckdb

    with pytest.raises(duckdb.Error) as refused:
        con.execute(sql).fetchall()  # type: ignore[attr-defined]
    assert fragment in str(refused.value), str(refused.value)
    return str(refused.value)


def test_duck_connection_reads_and_writes_only_what_it_is_given(
        duck_files: dict[str, Path]) -> None:
    import pandas as pd
    from tally.catalog.sql.duck import connect

    f = duck_files
    con = connect([f["source"], f["root"] / "data" / "events" / "*.parquet", f["tables"]])
    assert con.execute(f"SELECT answer FROM read_parquet('{f['source']}')").fetchall() == [(42,)]
    assert con.execute(f"SELECT answer FROM '{f['part'].parent}/*.parquet'").fetchall() == [
        (42,)]
    out = f["tables"] / "t.parquet"
    con.execute(f"COPY (SELECT 1 AS x) TO '{out}' (FORMAT parquet)")
    assert con.execute(f"SELECT x FROM read_parquet('{out}')").fetchall() == [(1,)]
    denied = "disabled by configuration"
    _fails(con, f"SELECT * FROM read_parquet('{f['secret']}')", denied)
    _fails(con, f"SELECT * FROM read_parquet('{f['sibling']}')", denied)
    _fails(con, f"SELECT * FROM read_parquet('{f['tables']}/../other.parquet')", denied)
    _fails(con, f"SELECT * FROM read_parquet('{f['tables']}/escape/secret.parquet')", denied)
    _fails(con, f"COPY (SELECT 1) TO '{f['outside']}/x.parquet' (FORMAT parquet)", denied)
    _fails(con, f"COPY (SELECT 1) TO '{f['tables']}/../x.parquet' (FORMAT parquet)", denied)
    _fails(con, f"COPY (SELECT 1) TO '{f['tables']}/escape/x.parquet' (FORMAT parquet)",
           denied)
    assert not (f["outside"] / "x.parquet").exists()
    _fails(con, "SELECT * FROM read_csv('/etc/passwd')", denied)
    _fails(con, "SELECT * FROM read_text('/etc/hostname')")
    _fails(con, "SELECT * FROM glob('/etc/*')", denied)
    _fails(con, f"ATTACH '{f['outside']}/x.db'", denied)
    _fails(con, "SELECT * FROM read_parquet('https://example.com/x.parquet')")
    _fails(con, "INSTALL httpfs")
    _fails(con, "LOAD httpfs")
    # the configuration is locked: SQL cannot undo the hardening
    for setting in ("SET enable_external_access = true", "SET allowed_directories = ['/']",
                    "SET allowed_paths = ['/etc/passwd']", "SET lock_configuration = false",
                    "SET autoload_known_extensions = true"):
        _fails(con, setting, "locked")
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('autoinstall_known_extensions',"
        " 'autoload_known_extensions', 'enable_external_access', 'lock_configuration')"
    ).fetchall())
    assert settings == {"autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false",
                        "enable_external_access": "false", "lock_configuration": "true"}
    # Python objects go in by explicit registration only
    con.register("entity_rows", pd.DataFrame({"account_id": [1, 2]}))
    assert con.execute("SELECT count(*) FROM entity_rows").fetchone() == (2,)
    con.close()


def test_duck_connection_refuses_the_whole_file_system(tmp_path: Path) -> None:
    from tally.catalog.errors import TallyError
    from tally.catalog.sql.duck import connect

    with pytest.raises(TallyError, match="whole file system"):
        connect([Path("/")])
    with pytest.raises(TallyError, match="whole file system"):
        connect([Path("/*.parquet")])


def test_allowed_paths_for_a_project(example_project: Path) -> None:
    from tally.catalog.spec.loading import load_project
    from tally.catalog.sql.duck import allowed_paths_for, connect

    project = load_project(example_project)
    paths = allowed_paths_for(project)
    assert example_project / "data" / "tables" in paths
    assert example_project / "data" / "crm_logins.parquet" in paths
    con = connect(paths, temp_directory=example_project / ".tally" / "duckdb_tmp")
    dirs = con.execute("SELECT current_setting('allowed_directories')").fetchone()[0]
    assert f"{example_project}/data/tables/" in dirs
    assert not any(d in ("/", f"{example_project}/") for d in dirs)
    con.close()


def test_yaml_alias_bombs_and_deep_nesting_are_refused(
        example_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    laughs = "".join(
        f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9) if i else '1'}]\n"
        for i in range(9)
    )
    cases = {"laughs.yaml": (laughs, "expands to more than"),
             "nested.yaml": ("metrics:\n" + "".join("  " * i + "-\n" for i in range(1, 90)),
                             "nested deeper than"),
             "brackets.yaml": ("metrics: " + "[" * 3000 + "]" * 3000 + "\n", "nested")}
    before = tree_digest(example_project)
    for name, (text, reason) in cases.items():
        file = tmp_path / name
        file.write_text(text)
        result = invoke(["--project", str(example_project), "register", str(file)], capsys)
        assert result.code == 1 and reason in result.stderr, (name, result.stderr)
        assert f"{name}:1" in result.stderr and "Traceback" not in result.stderr
    assert tree_digest(example_project) == before


def test_a_cursor_of_the_hardened_connection_keeps_utc_and_the_allowed_paths(
        tmp_path: Path) -> None:
    """A run's tables computed side by side each query through a cursor: it must read
    naive times as UTC whatever the machine's zone, and the same paths only."""
    import subprocess
    import sys

    (tmp_path / "data").mkdir()
    code = (
        "import sys\nfrom pathlib import Path\nfrom tally.catalog.sql.duck import connect\n"
        "con = connect([Path(sys.argv[1])])\ncur = con.cursor()\n"
        "print(cur.execute(\"SELECT current_setting('TimeZone'), "
        "epoch(TIMESTAMP '2025-01-01 00:00:00'::TIMESTAMPTZ)\").fetchone())\n"
        "try:\n    cur.execute(\"SELECT * FROM read_csv('/etc/hostname')\")\n"
        "except Exception as exc:\n    print(type(exc).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TZ": "America/New_York"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["('UTC', 1735689600.0)", "PermissionException"]
