"""Read definition YAML into plain data plus a map from key path to line number."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from tally.catalog.errors import Issue

MAX_FILE_BYTES = 1 << 20

KeyPath = tuple[str | int, ...]


@dataclass
class LoadedYaml:
    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def key_path_text(path: KeyPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


MAX_VALUES = 100_000  # after aliases are expanded: `&a [*b, *b, ...]` chains grow exponentially
MAX_NESTING = 64


class _TooLarge(Exception):
    pass


def _plain(node: Any, path: KeyPath, lines: dict[KeyPath, int], budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge(f"the YAML expands to more than {MAX_VALUES} values (through anchors "
                        "and aliases); write the definitions out plainly")
    if len(path) > MAX_NESTING:
        raise _TooLarge(f"the YAML is nested deeper than {MAX_NESTING} levels")
    if isinstance(node, CommentedMap):
        lines.setdefault(path, node.lc.line + 1)
        out: dict[Any, Any] = {}
        for key, value in node.items():
            child = (*path, str(key))
            try:
                lines[child] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError):
                lines[child] = node.lc.line + 1
            out[str(key) if not isinstance(key, (int, float, bool)) else key] = _plain(
                value, child, lines, budget
            )
        return out
    if isinstance(node, CommentedSeq):
        lines.setdefault(path, node.lc.line + 1)
        items = []
        for index, value in enumerate(node):
            child = (*path, index)
            try:
                lines[child] = node.lc.item(index)[0] + 1
            except (KeyError, TypeError, IndexError):
                lines[child] = node.lc.line + 1
            items.append(_plain(value, child, lines, budget))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (dt.date, dt.datetime)):
        return node.isoformat()
    return node


CACHED_TEXT_CHARS = 64 * 1024


def parse_yaml_text(text: str, file: str) -> tuple[LoadedYaml | None, list[Issue]]:
    """Parse one file's text; the result is shared between calls, so treat it as read-only.

    Parsing with ruamel's pure-Python round-trip loader dominates loading a project, and
    `register` and notebooks load the same unchanged files again and again.
    """
    if len(text) > CACHED_TEXT_CHARS:
        return _parse_yaml_text(text, file)
    loaded, issues = _parse_cached(text, file)
    return loaded, list(issues)


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str, file: str) -> tuple[LoadedYaml | None, tuple[Issue, ...]]:
    loaded, issues = _parse_yaml_text(text, file)
    return loaded, tuple(issues)


def _flow_depth_line(text: str) -> int | None:
    """The first line where `[`/`{` nest deeper than MAX_NESTING (quotes and comments
    skipped, roughly), or None. ruamel takes seconds to fail on thousands of levels."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        quote = ""
        for char in line:
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "#":
                break
            elif char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    return number
            elif char in "]}":
                depth = max(0, depth - 1)
    return None


def _parse_yaml_text(text: str, file: str) -> tuple[LoadedYaml | None, list[Issue]]:
    deep = _flow_depth_line(text)
    if deep is not None:
        return None, [Issue(file, deep, "", f"the YAML is nested deeper than {MAX_NESTING} "
                            "levels")]
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        return None, [Issue(file, line, "", f"YAML syntax error: {problem}; fix the YAML there")]
    except YAMLError as exc:
        return None, [Issue(file, 1, "", f"YAML error: {exc}")]
    except RecursionError:
        return None, [Issue(file, 1, "", "YAML nested too deeply")]
    lines: dict[KeyPath, int] = {(): 1}
    try:
        data = _plain(raw, (), lines, [MAX_VALUES])
    except _TooLarge as exc:
        return None, [Issue(file, 1, "", str(exc))]
    except RecursionError:
        return None, [Issue(file, 1, "", f"the YAML is nested deeper than {MAX_NESTING} levels")]
    return LoadedYaml(file, data, lines), []


def read_definition_bytes(path: Path, shown_as: str) -> tuple[bytes | None, list[Issue]]:
    """The bytes of one definition file, refusing what is not a small regular file."""
    import os
    import stat

    try:
        # O_NONBLOCK: opening a FIFO must not hang; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return None, [Issue(shown_as, 1, "", f"cannot read the file: {exc.strerror or exc}")]
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, [Issue(shown_as, 1, "", "not a regular file (a directory, FIFO or "
                                "device); give a YAML file")]
        if info.st_size > MAX_FILE_BYTES:
            return None, [
                Issue(shown_as, 1, "", f"file is {info.st_size / 1e6:.1f} MB; definition files "
                      f"are limited to {MAX_FILE_BYTES // 1024} KiB, split it into several files")
            ]
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, [Issue(shown_as, 1, "", f"cannot read the file: {exc.strerror or exc}")]
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        return None, [Issue(shown_as, 1, "", f"file grew past {MAX_FILE_BYTES // 1024} KiB "
                            "while being read; split it into several files")]
    return data, []


def decode_definition_bytes(data: bytes, shown_as: str) -> tuple[str | None, list[Issue]]:
    """UTF-8 text without a BOM, or an issue naming the line of the first bad byte."""
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        return None, [Issue(shown_as, line, "", "binary content (a NUL byte); definitions are "
                            "UTF-8 YAML text")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [Issue(shown_as, line, "", f"not UTF-8 (byte 0x{data[exc.start]:02x}); "
                            "save the file as UTF-8")]
    return text.removeprefix("\ufeff"), []


def read_yaml_file(path: Path, shown_as: str) -> tuple[LoadedYaml | None, list[Issue]]:
    """Read one definition file; problems come back as issues, never as exceptions."""
    data, issues = read_definition_bytes(path, shown_as)
    if data is None:
        return None, issues
    text, issues = decode_definition_bytes(data, shown_as)
    if text is None:
        return None, issues
    return parse_yaml_text(text, shown_as)
