"""The SQL allow-list for metric expressions and filters.

An expression is scalar SQL over plain columns: literals, arithmetic, comparison,
boolean logic, CASE, CAST, COALESCE/NULLIF and a fixed list of scalar functions.
Anything else (subqueries, statements, table functions, file or network access,
parameters, lambdas, comments, `;`) is refused with the construct named.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import Tokenizer, TokenType, exp
from sqlglot.errors import ParseError, TokenError

logging.getLogger("sqlglot").setLevel(logging.ERROR)

MAX_DEPTH = 48
MAX_LENGTH = 4000
# Names DuckDB evaluates as built-in values when no column of that name exists (even quoted):
# `user`, `current_schema`, ... A definition may use one only as a column its source declares.
BUILTIN_VALUES = frozenset({
    "current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
    "current_user", "session_user", "user", "current_role", "current_catalog", "current_schema",
})
PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_STRUCTURE: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Boolean, exp.Paren,
    exp.Neg, exp.Not, exp.And, exp.Or, exp.Xor,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Pow,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.Is, exp.In, exp.Between, exp.Like, exp.ILike,
    exp.Case, exp.If, exp.Cast, exp.TryCast, exp.DataType, exp.Var,
)
_SCALAR_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Coalesce, exp.Nullif, exp.Abs, exp.Ln, exp.Log, exp.Exp, exp.Sqrt, exp.Round,
    exp.Floor, exp.Ceil, exp.Sign, exp.Greatest, exp.Least,
    exp.Lower, exp.Upper, exp.Length, exp.Trim, exp.Substring, exp.Concat, exp.DPipe,
    exp.StrPosition, exp.DateDiff, exp.DateTrunc, exp.TimestampTrunc, exp.Extract,
    exp.Year, exp.Month, exp.Day, exp.DayOfWeek, exp.Date,
)
_ALLOWED = _STRUCTURE + _SCALAR_FUNCTIONS
_STATEMENTS: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in ("Command", "Copy", "Pragma", "Set", "Create", "Drop", "Insert", "Update",
                 "Delete", "Use", "Attach", "Detach", "Install", "Alter", "Merge", "Transaction")
    if hasattr(exp, name)
)
_ALLOWED_TYPES = {
    exp.DataType.Type.INT, exp.DataType.Type.BIGINT, exp.DataType.Type.SMALLINT,
    exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL,
    exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.BOOLEAN,
    exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ,
}


class ExpressionRefused(ValueError):
    """The expression is not allowed; the message names the construct."""


@dataclass(frozen=True)
class CheckedExpression:
    text: str
    tree: exp.Expr
    columns: frozenset[str]

    @property
    def duckdb_sql(self) -> str:
        """The checked tree rendered for DuckDB: run this, never the raw text, so a
        difference between sqlglot's parser and DuckDB's cannot smuggle anything through."""
        return "*" if isinstance(self.tree, exp.Star) else self.tree.sql(dialect="duckdb")


def _construct_name(node: exp.Expr) -> str:
    if isinstance(node, _STATEMENTS):
        keyword = node.name if isinstance(node, exp.Command) else node.key
        return f"a SQL statement ({keyword.upper()})"
    if isinstance(node, exp.Anonymous):
        return f"function {node.name}()"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}()"
    if isinstance(node, (exp.Subquery, exp.Select, exp.Query)):
        return "a subquery"
    if isinstance(node, exp.Lambda):
        return "a lambda"
    if isinstance(node, (exp.Placeholder, exp.Parameter)):
        return "a parameter"
    if isinstance(node, exp.Star):
        return "`*`"
    return f"{type(node).__name__} construct"


def _depth(node: exp.Expr, limit: int) -> int:
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in current.iter_expressions())
    return deepest


def _check_characters(text: str, tokens: list[Any]) -> None:
    """Outside string literals only printable ASCII and plain white space may appear, so a
    look-alike (U+037E for `;`, U+00A0 for a space, Cyrillic letters) cannot hide a construct."""
    inside = bytearray(len(text))
    for token in tokens:
        if token.token_type in (TokenType.STRING, TokenType.NATIONAL_STRING):
            inside[token.start: token.end + 1] = b"\x01" * (token.end + 1 - token.start)
    for index, char in enumerate(text):
        if inside[index] or char in "\t\n\r" or " " <= char <= "~":
            continue
        label = unicodedata.name(char, "a control character")
        raise ExpressionRefused(
            f"character U+{ord(char):04X} ({label}) at position {index + 1} is not allowed "
            "outside a string literal; write names and operators in plain ASCII"
        )


def check_expression(text: str, *, allow_star: bool = False) -> CheckedExpression:
    """Parse `text` and return its tree and columns, or raise ExpressionRefused.

    Cached: loading, validation, compute and the catalog ask about the same few
    expressions dozens of times (derived metrics' inputs above all). The tree is shared,
    so treat it as read-only (copy it to transform it, as plans.quoted_tree does)."""
    return _check_cached(text, allow_star)


def _check_tokens(text: str) -> None:
    """Refuse what the tokens already show (odd characters, `;`, comments, deep nesting)
    before the recursive parser sees the text."""
    try:
        tokens = Tokenizer().tokenize(text)
    except (TokenError, ValueError) as exc:
        raise ExpressionRefused(f"not valid SQL: {exc}") from None
    _check_characters(text, tokens)
    depth = 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            raise ExpressionRefused("`;` is not allowed: an expression is one scalar SQL term")
        if token.comments:
            raise ExpressionRefused("SQL comments are not allowed in expressions")
        if token.token_type in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
            if depth > MAX_DEPTH:  # refuse before the recursive parser sees it
                raise ExpressionRefused(f"nested deeper than {MAX_DEPTH} levels")
        elif token.token_type in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1


def _parse_one(text: str) -> exp.Expr:
    try:
        statements = sqlglot.parse(text, read="duckdb")
    except (ParseError, TokenError) as exc:
        first = str(exc).splitlines()[0]
        raise ExpressionRefused(f"not valid SQL: {first}") from None
    except RecursionError:
        raise ExpressionRefused(f"nested deeper than {MAX_DEPTH} levels") from None
    if len(statements) != 1 or statements[0] is None:
        raise ExpressionRefused("write exactly one scalar SQL expression")
    tree = statements[0]
    if _depth(tree, MAX_DEPTH) > MAX_DEPTH:
        raise ExpressionRefused(f"nested deeper than {MAX_DEPTH} levels")
    return tree


def _check_node(node: exp.Expr) -> None:
    """Refuse a node that is not on the allow-list (or is, in a form that is not)."""
    if not isinstance(node, _ALLOWED):
        raise ExpressionRefused(f"{_construct_name(node)} is not allowed in an expression")
    if isinstance(node, exp.DataType) and (
        node.this not in _ALLOWED_TYPES or any(True for _ in node.iter_expressions())
    ):
        raise ExpressionRefused(f"cast to {node.sql()} is not allowed; cast to one of "
                                "int, bigint, double, decimal, varchar, boolean, date, "
                                "timestamp without parameters")
    if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest")):
        raise ExpressionRefused("a subquery is not allowed in an expression")
    if isinstance(node, exp.Var) and not isinstance(node.parent, _SCALAR_FUNCTIONS):
        raise ExpressionRefused(f"{node.name!r} is not a known column or function")
    if isinstance(node, exp.Column):
        if node.table or node.args.get("db") or node.args.get("catalog"):
            raise ExpressionRefused(f"qualified column {node.sql()} is not allowed; "
                                    "name the column alone")
        if not PLAIN_IDENTIFIER.match(node.name):
            raise ExpressionRefused(f"column name {node.name!r} is not a plain identifier")


@functools.lru_cache(maxsize=2048)
def _check_cached(text: str, allow_star: bool) -> CheckedExpression:
    if not text.strip():
        raise ExpressionRefused("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionRefused(f"the expression is {len(text)} characters long; the limit is "
                                f"{MAX_LENGTH}, split it into several metrics")
    _check_tokens(text)
    if allow_star and text.strip() == "*":
        return CheckedExpression(text, exp.Star(), frozenset())
    tree = _parse_one(text)
    for node in tree.walk():
        _check_node(node)
    columns = {node.name for node in tree.walk() if isinstance(node, exp.Column)}
    return CheckedExpression(text, tree, frozenset(columns))
