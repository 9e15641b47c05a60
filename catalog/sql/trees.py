"""sqlglot node builders shared by the compute and score plans: quoted identifiers and
columns, numbers, functions, aliases, parenthesised operations, the relation reading a
computed table. Every name is quoted, so a plan's SQL never depends on a name's spelling."""

from __future__ import annotations

from sqlglot import exp


def ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def num(value: int | float) -> exp.Expr:
    return exp.Literal.number(value)


def fn(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


def alias(node: exp.Expr, name: str) -> exp.Alias:
    return exp.Alias(this=node, alias=ident(name))


def op(kind: type[exp.Binary], left: exp.Expr, right: exp.Expr | int) -> exp.Paren:
    """A parenthesised binary operation, so the rendered SQL keeps the tree's precedence."""
    return exp.Paren(this=kind(this=left, expression=num(right) if isinstance(right, int)
                               else right))


def table_relation(path: str, dialect: str) -> exp.Expr:
    """The FROM item reading a computed (parquet) table."""
    if dialect == "spark":
        return exp.Table(this=exp.Identifier(this=path, quoted=True),
                         db=exp.to_identifier("parquet"))
    return exp.Table(this=exp.Anonymous(this="read_parquet",
                                        expressions=[exp.Literal.string(path)]))
