"""``--where``: one boolean expression over attribute names, parsed, whitelisted and re-generated.

A predicate is user text that ends up inside a DuckDB query, so it is never pasted in. SQLGlot
parses it (DuckDB dialect) into an AST; every node must be of a whitelisted kind (columns,
literals, comparisons, AND/OR/NOT, IN lists, BETWEEN, LIKE, IS NULL, arithmetic, casts to plain
types, a few pure scalar functions); every column must be a known attribute; and DuckDB receives
the SQL re-generated from that AST, with every identifier quoted. A second statement, a subquery,
a table function, ``read_csv``, ``COPY`` or ``INSTALL`` cannot survive the whitelist.

Defence in depth: the connection that evaluates a predicate is locked first (``lock_down``), so even
a parser bug could not reach a file, the network or an extension.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from changelog.errors import UsageError
from changelog.plain import Column, column_sql

MAX_LENGTH = 10_000
MAX_DIGITS = 38  # DynamoDB's precision, and the widest DECIMAL a number column is (changelog.plain)
KNOWN_LISTED = 8
# Far beyond any real filter; keeps generation and DuckDB's own parser clear of their recursion limits.
MAX_DEPTH = 256

# Structure: boolean logic, comparisons and arithmetic over columns and literals.
_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Boolean, exp.Paren,
    exp.And, exp.Or, exp.Not,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.Escape, exp.Is,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.DPipe,
    exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam,
)

# Pure scalar functions: no state, no I/O, one value in, one value out.
_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Lower, exp.Upper, exp.Length, exp.Trim, exp.Substring, exp.Concat,
    exp.StartsWith, exp.EndsWith, exp.Contains,
    exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Coalesce, exp.Nullif, exp.Least, exp.Greatest,
)

# CAST targets: plain scalar types only (no STRUCT, no user-defined type names).
_TYPES = frozenset({
    exp.DataType.Type.BOOLEAN,
    exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT,
    exp.DataType.Type.INT128, exp.DataType.Type.UTINYINT, exp.DataType.Type.USMALLINT, exp.DataType.Type.UINT,
    exp.DataType.Type.UBIGINT, exp.DataType.Type.DECIMAL, exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE,
    exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.CHAR,
    exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ,
})

_ALLOWED = _NODES + _FUNCTIONS

# SQLGlot logs a warning when it falls back to parsing a statement as an opaque command; that
# statement is refused anyway, and the refusal is the one line the user sees.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_HINT = "use one condition over attribute names, e.g. \"status = 'shipped' AND total > 100\""


@dataclass(frozen=True)
class Predicate:
    """A parsed ``--where``: the user's text, and the columns it names."""

    text: str
    tree: exp.Expr
    columns: tuple[str, ...]

    def bind(self, attributes: Iterable[str], aliases: Mapping[str, str] | None = None,
             tree: exp.Expr | None = None) -> str:
        """SQL for DuckDB, re-generated from the AST; refuses a column that is not an attribute.

        A name binds to the attribute of exactly that name: DynamoDB's names are case-sensitive, and
        ``status`` may be one attribute and ``Status`` another (or absent from the items at hand), so
        a name that matches only in case is refused with the stored name suggested. ``aliases`` maps
        attribute names to the column names the SQL reads them under: SQL identifiers ignore case, so
        attributes that differ only in case must be read under distinct names to be bound exactly.
        """
        known = sorted(set(attributes))
        tree = (tree or self.tree).copy()
        for column in tree.find_all(exp.Column):
            name = column.name
            if name not in known:
                raise UsageError(_unknown(name, known))
            column.set("this", exp.to_identifier(aliases[name] if aliases else name, quoted=True))
        return tree.sql(dialect="duckdb", identify=True, comments=False)

    def bind_columns(self, columns: Sequence[Column], image: str = "image") -> tuple[str, str]:
        """Over the typed ``columns`` (``changelog.plain``) read from ``image``: the predicate's SQL,
        and the select-list (``, expr AS alias`` ...) of just the columns it names, to compute beside
        the rows it filters.

        Each attribute is read under an alias of its own (``__where_<n>``), so the binding is exact
        whatever the case of its name. The columns' types make every comparison exact or refused
        (``_exact``): DuckDB would round a quoted number to a decimal column's scale, a number kept as
        text to the other side's type, and divide decimals as doubles.
        """
        aliases = {column.name: f"__where_{index}" for index, column in enumerate(columns)}
        tree = _exact(self.tree.copy(), {column.name: column.kind for column in columns})
        where_sql = self.bind(aliases, aliases, tree)
        named = set(self.columns)  # bound exactly, so only the attributes of exactly these names
        select = "".join(f", {column_sql(column, image)} AS {aliases[column.name]}"
                         for column in columns if column.name in named)
        return where_sql, select


# What a value of the predicate is, as far as exactness goes: an exact number (a decimal column, a
# number literal, arithmetic on them), a double (asked for by a cast), a number kept as text (a
# column whose numbers do not fit one decimal type), a quoted literal, or anything else.
_NUMBER, _FLOAT, _NUMBER_TEXT, _TEXT, _QUOTED, _OTHER = "number", "float", "number text", "text", "quoted", "other"
_FLOAT_TYPES = frozenset({exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE})
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Mod, exp.Div, exp.IntDiv)
_SAME_KIND = (exp.Paren, exp.Neg, exp.Abs, exp.Round, exp.Floor, exp.Ceil)


def _kind(node: exp.Expr, kinds: Mapping[str, str]) -> str:
    if isinstance(node, exp.Column):
        return {"N": _NUMBER, "NTEXT": _NUMBER_TEXT, "S": _TEXT}.get(kinds.get(node.name, ""), _OTHER)
    if isinstance(node, exp.Literal):
        return _NUMBER if node.is_number else _QUOTED
    if isinstance(node, exp.Cast | exp.TryCast):
        target = node.to.this
        return _FLOAT if target in _FLOAT_TYPES else _NUMBER if target in exp.DataType.NUMERIC_TYPES else _OTHER
    if isinstance(node, _SAME_KIND):
        return _kind(node.this, kinds)
    if isinstance(node, _ARITHMETIC):
        found = {_kind(node.left, kinds), _kind(node.right, kinds)}
        return _FLOAT if _FLOAT in found else _NUMBER if _NUMBER in found else _OTHER
    return _OTHER


def _operands(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.In):
        return [node.this, *node.expressions]
    if isinstance(node, exp.Between):
        return [node.this, node.args["low"], node.args["high"]]
    return [node.this, node.args["expression"]]


def _exact(tree: exp.Expr, kinds: Mapping[str, str]) -> exp.Expr:
    """``tree`` with every comparison exact: a quoted number compared with an exact number is read
    as that number (``n = '5.5'`` is 5.5, never rounded to the column's scale); a number kept as text
    compared with a number, or in arithmetic, and a division of exact numbers, are refused."""
    for node in list(tree.walk()):
        if isinstance(node, exp.Div | exp.IntDiv) and _FLOAT not in {_kind(node.left, kinds), _kind(node.right, kinds)}:
            raise UsageError("--where cannot divide exact numbers: DuckDB divides decimals as doubles, which loses "
                             "digits; multiply the other side instead (a > 2 * b), or divide doubles (a::DOUBLE / b)")
        if isinstance(node, (*_ARITHMETIC, *_SAME_KIND)) and not isinstance(node, exp.Paren):
            parts = [node.left, node.right] if isinstance(node, _ARITHMETIC) else [node.this]
            _refuse_number_text(parts, kinds, "in arithmetic")
        if isinstance(node, (*_COMPARISONS, exp.In, exp.Between)):
            operands = _operands(node)
            found = [_kind(operand, kinds) for operand in operands]
            if _NUMBER in found:
                _refuse_number_text(operands, kinds, "beside a number")
                if _TEXT in found:
                    raise UsageError("--where compares a string attribute with a number: DuckDB would read each "
                                     "string as a number of the other side's scale, rounding it; cast one side "
                                     "(s::DECIMAL(38,10) = n, or n::VARCHAR = s)")
                for operand in operands:
                    while isinstance(operand, exp.Paren):
                        operand = operand.this
                    if isinstance(operand, exp.Literal) and operand.is_string and _is_number(operand.this):
                        operand.replace(exp.Literal.number(exact_number(operand.this)))
    return tree


def _is_number(text: str) -> bool:
    try:
        return Decimal(text.strip()).is_finite()
    except InvalidOperation:
        return False


def _refuse_number_text(nodes: Iterable[exp.Expr], kinds: Mapping[str, str], where: str) -> None:
    for node in nodes:
        while isinstance(node, exp.Paren):
            node = node.this
        if _kind(node, kinds) == _NUMBER_TEXT:
            name = node.name
            raise UsageError(f"--where reads {name!r} {where}, but its numbers do not fit one exact decimal type "
                             f"(together they need more than {MAX_DIGITS} digits), so it holds each number's text: "
                             "DuckDB would round it; compare the text exactly "
                             f"({name} = '12.50'), or doubles approximately ({name}::DOUBLE > 12.5)")


def _unknown(name: str, known: list[str]) -> str:
    if not known:
        return f"--where names attribute {name!r}, but the selected items have no attributes to filter on"
    same = [k for k in known if k.lower() == name.lower()]
    close = same[:1] or difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(known[:KNOWN_LISTED]) + (f", ... ({len(known)} in all)" if len(known) > KNOWN_LISTED else "")
    return f"--where names unknown attribute {name!r}{hint}; known attributes: {listed}"


def _refuse(what: str) -> UsageError:
    return UsageError(f"--where cannot contain {what}: {_HINT}")


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Func):
        name = node.sql_name() if not isinstance(node, exp.Anonymous) else str(node.name)
        return f"function {name.lower()}()"
    if isinstance(node, exp.Query | exp.Subquery):
        return "a subquery"
    return f"{type(node).__name__} ({node.sql(dialect='duckdb')[:40]})"


def _check(node: exp.Expr) -> None:
    if not isinstance(node, _ALLOWED):
        raise _refuse(_describe(node))
    if isinstance(node, exp.Column):
        if node.table or node.args.get("db") or node.args.get("catalog"):
            raise _refuse(f"a qualified name ({node.sql(dialect='duckdb')}); name attributes alone")
        if not isinstance(node.this, exp.Identifier):
            raise _refuse(_describe(node.this))
    if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest") or node.args.get("field")):
        raise _refuse("a subquery")
    if isinstance(node, exp.DataType):
        if node.this not in _TYPES:
            raise _refuse(f"a cast to {node.sql(dialect='duckdb')}")
        for param in node.expressions:
            if not isinstance(param, exp.DataTypeParam) or not isinstance(param.this, exp.Literal):
                raise _refuse(f"a cast to {node.sql(dialect='duckdb')}")


def parse_predicate(text: str) -> Predicate:
    """Parse and whitelist a ``--where``; raises UsageError naming what is not allowed."""
    if not text.strip():
        raise UsageError(f"--where is empty: {_HINT}")
    if len(text) > MAX_LENGTH:
        raise UsageError(f"--where is longer than {MAX_LENGTH:,} characters")
    try:
        tokens = sqlglot.tokenize(text, read="duckdb")
        if any(token.token_type == TokenType.SEMICOLON for token in tokens):
            raise _refuse("';' (a second statement)")
        trees = sqlglot.parse(text, read="duckdb")
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--where is not a valid condition ({first}): {_HINT}") from None
    except RecursionError:
        raise UsageError(f"--where is nested too deeply: {_HINT}") from None
    statements = [tree for tree in trees if tree is not None]
    if not statements:
        raise UsageError(f"--where holds no condition: {_HINT}")
    if len(statements) != 1:
        raise _refuse("more than one statement")
    (tree,) = statements
    depth = {id(tree): 0}
    for node in tree.walk():
        _check(node)
        level = depth[id(node)] + 1
        if level > MAX_DEPTH:
            raise UsageError(f"--where is nested more than {MAX_DEPTH} levels deep: {_HINT}")
        for child in node.iter_expressions():
            depth[id(child)] = level
    for literal in tree.find_all(exp.Literal):
        if literal.is_number:
            literal.set("this", exact_number(literal.this))
    columns = tuple(dict.fromkeys(column.name for column in tree.find_all(exp.Column)))
    return Predicate(text, tree, columns)


def exact_number(text: str) -> str:
    """A number literal in the positional form DuckDB reads exactly (1E+37 -> 1 and 37 zeros, 5.10 -> 5.1).

    DuckDB reads a literal in exponent form, or of more than 38 digits, as a DOUBLE, and then compares
    a DECIMAL(38,s) column through doubles: ``n = 1E+37`` matched 10^37 + 1 too. Positional with at
    most 38 digits, it is an exact DECIMAL or integer. A number needing more digits than that cannot
    be compared exactly with any DynamoDB number column, and is refused.
    """
    try:
        sign, digits, exponent = Decimal(text).as_tuple()
    except InvalidOperation:
        raise UsageError(f"--where holds {text[:40]!r}, which is not a number: {_HINT}") from None
    if not isinstance(exponent, int):
        raise UsageError(f"--where holds {text[:40]!r}, which is not a finite number: {_HINT}")
    figures = "".join(map(str, digits)).lstrip("0")
    while exponent < 0 and figures.endswith("0"):
        figures, exponent = figures[:-1], exponent + 1
    if not figures:
        return "0"
    # Digits of the positional form, counted before it is written (1e-999999999 must not be built).
    width = len(figures) + exponent if exponent >= 0 else max(0, len(figures) + exponent) - exponent
    if width > MAX_DIGITS:
        shown = text if len(text) <= 60 else f"{text[:28]}...{text[-28:]}"
        raise UsageError(f"--where holds the number {shown}, which needs {width} digits: a number is compared "
                         f"exactly only within {MAX_DIGITS} digits (DynamoDB's precision); to compare approximately, "
                         f"compare doubles, the number as text: n::DOUBLE > "
                         f"'{text if shown == text else '<the number>'}'::DOUBLE")
    if exponent >= 0:
        plain = figures + "0" * exponent
    else:
        # No leading 0 below 1: DuckDB counts it as a digit, and 0. with 38 decimals would be a DOUBLE.
        plain = f"{figures[:exponent]}.{figures[exponent:].rjust(-exponent, '0')}"
    return ("-" if sign else "") + plain


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No more files, network or extensions on ``con``, and no setting can undo that.

    Called once a connection has read what it needs from the store; from then on it can only
    compute over what it holds (temporary tables spilled to disk still read back).
    """
    # Known extensions are neither fetched nor loaded for a query that names one (s3://, https://):
    # a clear "not loaded" instead of an attempt the locked file access would stop half-way.
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
