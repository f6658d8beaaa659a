"""Feature-set specs: a declarative TOML file or frozen dataclasses, and their version hash.

A spec names a catalog and an ordered list of features, each an arithmetic
expression over the catalog's numeric columns::

    name = "sdss_ugriz"          # the feature set: table features.<name>_<hash[:12]>
    catalog = "sdss17"

    [[feature]]                  # one table per feature, in output order
    name = "u_g"                 # the feature's name (a-z, 0-9, _)
    expr = "u - g"               # the expression (grammar below)
    group = "colours"            # optional; ablation drops a group at a time
    missing = "indicator"        # optional: "nan" (default) or "indicator"
    nondetection = { column = "u", above = 26.0 }   # optional, see below

``[[feature]]`` tables were chosen over ``[features.<name>]`` tables because
the order of the features is the order of the model's inputs, and an array of
tables states that order explicitly instead of relying on key order.

Expressions: column names, decimal numbers, ``+ - * /``, unary ``-``,
parentheses and the functions ``log10(a)``, ``ln(a)``, ``sqrt(a)``,
``abs(a)``, ``flux_to_mag(flux, zeropoint)`` (``zeropoint - 2.5 log10(flux)``)
and ``mag_to_flux(mag, zeropoint)`` (``10^(-0.4 (mag - zeropoint))``). They
are parsed here by a small tokenizer and recursive-descent parser into a tree
of :class:`Column`, :class:`Number`, :class:`Negate`, :class:`BinaryOp` and
:class:`Call` nodes; the build step compiles that tree to SQL (columns as
quoted identifiers checked against the catalog, numbers as bound parameters).
Spec text never reaches SQL.

Missing values: ``missing = "nan"`` leaves a missing or undefined value as NaN
(tree models handle NaN); ``missing = "indicator"`` also adds the 0/1 feature
``<name>_missing``. ``nondetection = {column = "u", above = 26.0}`` (or
``below = ...``) or ``nondetection = {flag = "u_nondet"}`` adds the 0/1
feature ``<name>_nondet`` (1 where the column is beyond the limit, or the flag
is true or non-zero; a NULL column or flag counts as 0), and with ``mask =
true`` the feature itself becomes NaN there. Indicator features follow their
feature and belong to its group. A feature without ``group`` is a group of its
own (named like the feature).

The version of a feature set is :attr:`FeatureSpec.spec_hash`, the sha256 of
the canonical JSON of the parsed spec (:meth:`FeatureSpec.canonical`: sorted
keys, expressions re-printed from their parse tree, numbers as Python floats,
defaults filled in). Whitespace, comments, key order, redundant parentheses
or ``2.50`` for ``2.5`` do not change it; any change of the set's name, its
catalog, a feature's name, expression, group, order or missing policy does.

That hash versions a *build*: the definition on one catalog. The definition
itself (name and features, no catalog) is versioned by
:attr:`FeatureSpec.definition_hash`, the same on every catalog it is built on;
:meth:`FeatureSpec.for_catalog` moves a spec to another catalog and maps the
columns its expressions read to that catalog's names (``columns``, hashed into
the build only when not empty, so a spec without a map keeps its old version).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from skyclass.errors import FeatureSpecError

# Bumped when the meaning of a canonical spec changes (so old versions hash differently).
SPEC_FORMAT = 1
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
# The table is features.<name>_<12 hex digits>: PostgreSQL identifiers have at most 63 bytes.
MAX_SET_NAME = 63 - 13
MAX_FEATURES = 1000
MAX_EXPR_CHARS = 500
MAX_EXPR_NODES = 100
MAX_EXPR_HEIGHT = 16
# Intermediate values are kept within these magnitudes (see build.py); so are constants.
VALUE_MAX = 1e150
VALUE_MIN = 1e-150

Missing = Literal["nan", "indicator"]
MISSING_POLICIES: tuple[str, ...] = ("nan", "indicator")
MISSING_SUFFIX = "_missing"
NONDET_SUFFIX = "_nondet"

# name -> number of arguments
FUNCTIONS: dict[str, int] = {
    "log10": 1,
    "ln": 1,
    "sqrt": 1,
    "abs": 1,
    "flux_to_mag": 2,
    "mag_to_flux": 2,
}
ALLOWED = (
    "allowed: catalog column names, numbers (2.5, 1e-3), + - * /, unary -, parentheses, "
    "log10(a), ln(a), sqrt(a), abs(a), flux_to_mag(flux, zeropoint), mag_to_flux(mag, zeropoint)"
)
SPEC_KEYS = ("name", "catalog", "feature")
FEATURE_KEYS = ("name", "expr", "group", "missing", "nondetection")
NONDET_KEYS = ("column", "flag", "above", "below", "mask")


# -- expression trees ---------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A reference to a catalog column."""

    name: str


@dataclass(frozen=True)
class Number:
    """A finite non-negative constant (a leading minus is a :class:`Negate`)."""

    value: float


@dataclass(frozen=True)
class Negate:
    """Unary minus."""

    operand: Node


@dataclass(frozen=True)
class BinaryOp:
    """``left op right`` with ``op`` one of ``+ - * /``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    """A call of one of :data:`FUNCTIONS`."""

    function: str
    args: tuple[Node, ...]


Node = Column | Number | Negate | BinaryOp | Call

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def children(node: Node) -> tuple[Node, ...]:
    """The operands of ``node`` (empty for columns and numbers)."""
    if isinstance(node, Negate):
        return (node.operand,)
    if isinstance(node, BinaryOp):
        return (node.left, node.right)
    if isinstance(node, Call):
        return node.args
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, children before their parent."""
    for child in children(node):
        yield from walk(child)
    yield node


def columns_of(node: Node) -> list[str]:
    """The distinct column names used by ``node``, in order of first use."""
    seen: dict[str, None] = {}
    for n in walk(node):
        if isinstance(n, Column):
            seen.setdefault(n.name, None)
    return list(seen)


def height(node: Node) -> int:
    """0 for columns and numbers, else 1 + the height of the tallest operand."""
    kids = children(node)
    return 0 if not kids else 1 + max(height(k) for k in kids)


def format_number(value: float) -> str:
    """The canonical text of a constant: Python's shortest round-tripping ``repr``."""
    return repr(float(value))


def unparse(node: Node) -> str:
    """The canonical text of an expression tree, with only the parentheses it needs.

    The right operand of ``-``, ``/`` (and, since floating-point addition and
    multiplication are not associative, ``+`` and ``*``) keeps its parentheses
    when it has the same precedence, so re-parsing gives the same tree.
    """
    if isinstance(node, Column):
        return node.name
    if isinstance(node, Number):
        return format_number(node.value)
    if isinstance(node, Negate):
        inner = unparse(node.operand)
        if isinstance(node.operand, BinaryOp | Negate):
            inner = f"({inner})"
        return f"-{inner}"
    if isinstance(node, Call):
        return f"{node.function}({', '.join(unparse(a) for a in node.args)})"
    prec = _PRECEDENCE[node.op]
    left, right = unparse(node.left), unparse(node.right)
    if isinstance(node.left, BinaryOp) and _PRECEDENCE[node.left.op] < prec:
        left = f"({left})"
    if isinstance(node.right, BinaryOp) and _PRECEDENCE[node.right.op] <= prec:
        right = f"({right})"
    return f"{left} {node.op} {right}"


# -- tokenizer and parser -----------------------------------------------------------------
_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)"
    r"|(?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/(),])"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number, name, op, end
    text: str
    pos: int


class ExpressionError(ValueError):
    """A syntax error in one expression, at character ``pos`` (0-based)."""

    def __init__(self, message: str, pos: int) -> None:
        self.pos = pos
        super().__init__(message)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(f"unexpected character {text[pos]!r} at position {pos + 1}", pos)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := factor (*|/ factor)*;
    factor := - factor | atom; atom := number | name | name ( args ) | ( expr )."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        if self.token.text != text or self.token.kind != "op":
            raise ExpressionError(f"expected {text!r} {self.where()}", self.token.pos)
        self.advance()

    def where(self) -> str:
        if self.token.kind == "end":
            return "at the end of the expression"
        return f"at position {self.token.pos + 1}, found {self.token.text!r}"

    def parse(self) -> Node:
        node = self.expr()
        if self.token.kind != "end":
            raise ExpressionError(
                f"unexpected {self.token.text!r} at position {self.token.pos + 1}", self.token.pos
            )
        return node

    def nest(self) -> None:
        # Bounded recursion: a hostile "((((...))))" must not exhaust the Python stack.
        self.depth += 1
        if self.depth > 3 * MAX_EXPR_HEIGHT:
            raise ExpressionError("the expression is nested too deeply", self.token.pos)

    def expr(self) -> Node:
        node = self.term()
        while self.token.kind == "op" and self.token.text in "+-":
            op = self.advance().text
            node = BinaryOp(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.token.kind == "op" and self.token.text in "*/":
            op = self.advance().text
            node = BinaryOp(op, node, self.factor())
        return node

    def factor(self) -> Node:
        if self.token.kind == "op" and self.token.text == "-":
            self.advance()
            self.nest()
            node = Negate(self.factor())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.advance()
            value = float(token.text)
            if not math.isfinite(value) or value > VALUE_MAX or 0 < value < VALUE_MIN:
                raise ExpressionError(
                    f"number {token.text} is out of range (use 0 or magnitudes between "
                    f"{VALUE_MIN:g} and {VALUE_MAX:g})",
                    token.pos,
                )
            return Number(value)
        if token.kind == "name":
            self.advance()
            if self.token.kind == "op" and self.token.text == "(":
                return self.call(token)
            return Column(token.text)
        if token.kind == "op" and token.text == "(":
            self.advance()
            self.nest()
            node = self.expr()
            self.depth -= 1
            self.expect(")")
            return node
        raise ExpressionError(f"expected a column, number or '(' {self.where()}", token.pos)

    def call(self, name: _Token) -> Node:
        arity = FUNCTIONS.get(name.text)
        if arity is None:
            close = difflib.get_close_matches(name.text, list(FUNCTIONS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ExpressionError(f"unknown function {name.text!r}{hint}", name.pos)
        self.expect("(")
        self.nest()
        args = [self.expr()]
        while self.token.kind == "op" and self.token.text == ",":
            self.advance()
            args.append(self.expr())
        self.depth -= 1
        self.expect(")")
        if len(args) != arity:
            raise ExpressionError(
                f"{name.text}() takes {arity} argument{'s' if arity > 1 else ''}, not {len(args)}",
                name.pos,
            )
        return Call(name.text, tuple(args))


def parse_expression(text: str) -> Node:
    """Parse one feature expression into a tree, or raise :class:`ExpressionError`.

    Only the grammar of this module is accepted (see the module docstring): no
    quotes, semicolons, comparison operators or other functions. Limits keep
    hostile input cheap: at most :data:`MAX_EXPR_CHARS` characters,
    :data:`MAX_EXPR_NODES` nodes and a tree height of :data:`MAX_EXPR_HEIGHT`.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"the expression must be a string, not {type(text).__name__}", 0)
    if len(text) > MAX_EXPR_CHARS:
        raise ExpressionError(f"the expression is longer than {MAX_EXPR_CHARS} characters", 0)
    if not text.strip():
        raise ExpressionError("the expression is empty", 0)
    node = _Parser(text).parse()
    if sum(1 for _ in walk(node)) > MAX_EXPR_NODES:
        raise ExpressionError(f"the expression has more than {MAX_EXPR_NODES} terms", 0)
    if height(node) > MAX_EXPR_HEIGHT:
        raise ExpressionError(
            f"the expression is nested more than {MAX_EXPR_HEIGHT} operations deep", 0
        )
    return node


# -- specs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Nondetection:
    """When a feature's value is a non-detection (an upper limit).

    Either ``column`` with exactly one of ``above``/``below`` (non-detected
    where the column's value is beyond the limit) or ``flag`` (a boolean or
    numeric column, non-detected where true or non-zero). ``mask`` makes the
    feature NaN where non-detected.
    """

    column: str | None = None
    above: float | None = None
    below: float | None = None
    flag: str | None = None
    mask: bool = False

    def canonical(self) -> dict[str, Any]:
        """The JSON form used in the hash (all keys present)."""
        return {
            "column": self.column,
            "above": None if self.above is None else float(self.above),
            "below": None if self.below is None else float(self.below),
            "flag": self.flag,
            "mask": bool(self.mask),
        }


@dataclass(frozen=True)
class Feature:
    """One feature: its output name, its expression, its group and its missing policy."""

    name: str
    expr: str
    group: str | None = None
    missing: Missing = "nan"
    nondetection: Nondetection | None = None

    @property
    def group_name(self) -> str:
        """The group: ``group``, or the feature's own name."""
        return self.group or self.name

    def output_names(self) -> list[str]:
        """The columns this feature adds: itself, then its indicators."""
        names = [self.name]
        if self.missing == "indicator":
            names.append(self.name + MISSING_SUFFIX)
        if self.nondetection is not None:
            names.append(self.name + NONDET_SUFFIX)
        return names


@dataclass(frozen=True)
class SpecOrigin:
    """Where a spec came from (for error messages): a file name and its text."""

    path: str
    text: str | None = None


@dataclass(frozen=True)
class FeatureSpec:
    """A feature-set spec: the set's name, its catalog and its features, in order.

    Build one in Python (``FeatureSpec("mine", "sdss17", (Feature("u_g", "u -
    g"),))``) or read a TOML file with :func:`load_spec`. ``origin`` only
    serves error messages and is not part of the version.
    """

    name: str
    catalog: str
    features: tuple[Feature, ...]
    origin: SpecOrigin | None = field(default=None, compare=False, repr=False)
    # spec column -> catalog column, sorted by spec column (empty: the names are the catalog's)
    columns: tuple[tuple[str, str], ...] = ()

    def for_catalog(
        self, catalog: str | None = None, column_map: Mapping[str, str] | None = None
    ) -> FeatureSpec:
        """This definition built on ``catalog`` (default: the spec's), reading mapped columns.

        ``column_map`` maps a column the expressions name to the catalog's
        column (``{"g": "mag_g"}``); a key the spec never reads, or a value that
        is not a column name, raises :class:`FeatureSpecError`.
        """
        mapping = dict(self.columns)
        for key, value in (column_map or {}).items():
            if key not in self.source_columns():
                read = ", ".join(self.source_columns())
                raise self.error(
                    f"--map {key}={value}: the spec reads no column {key!r} (it reads {read})"
                )
            problem = _name_problem(value, f"catalog column of --map {key}")
            if problem is not None:
                raise self.error(problem)
            mapping[key] = value
        return replace(
            self,
            catalog=self.catalog if catalog is None else catalog,
            columns=tuple(sorted((k, v) for k, v in mapping.items() if k != v)),
        )

    def source_columns(self) -> list[str]:
        """The columns the expressions and non-detections read, in order of first use."""
        seen: dict[str, None] = {}
        for f, tree in zip(self.features, self.trees(), strict=True):
            for name in columns_of(tree):
                seen.setdefault(name, None)
            nd = f.nondetection
            if nd is not None:
                seen.setdefault(nd.column or nd.flag or "", None)
        return list(seen)

    def catalog_column(self, name: str) -> str:
        """The catalog column that spec column ``name`` reads (through :attr:`columns`)."""
        return dict(self.columns).get(name, name)

    def trees(self) -> list[Node]:
        """The parsed expression of every feature (raises :class:`FeatureSpecError`)."""
        check_spec(self)
        return [parse_expression(f.expr) for f in self.features]

    @property
    def feature_names(self) -> list[str]:
        """The output features in order (indicator features after their feature)."""
        return [name for f in self.features for name in f.output_names()]

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Group name -> output features in it (a feature's indicators join its group)."""
        groups: dict[str, list[str]] = {}
        for f in self.features:
            groups.setdefault(f.group_name, []).extend(f.output_names())
        return {g: tuple(names) for g, names in groups.items()}

    def canonical(self) -> dict[str, Any]:
        """The parsed spec as JSON-ready data: what is hashed and stored in ``spec``."""
        trees = self.trees()
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "catalog": self.catalog,
            "features": [
                {
                    "name": f.name,
                    "expr": unparse(tree),
                    "group": f.group_name,
                    "missing": f.missing,
                    "nondetection": None if f.nondetection is None else f.nondetection.canonical(),
                }
                for f, tree in zip(self.features, trees, strict=True)
            ],
            **({"columns": dict(self.columns)} if self.columns else {}),
        }

    def definition(self) -> dict[str, Any]:
        """:meth:`canonical` without the catalog and the column map: what travels."""
        return {k: v for k, v in self.canonical().items() if k not in ("catalog", "columns")}

    @property
    def definition_hash(self) -> str:
        """The definition's version: sha256 of :meth:`definition` as canonical JSON."""
        return _sha256_json(self.definition())

    def canonical_json(self) -> str:
        """:meth:`canonical` as compact JSON with sorted keys (the hashed text)."""
        return _canonical_json(self.canonical())

    @property
    def spec_hash(self) -> str:
        """The build's version: sha256 (hex) of :meth:`canonical_json`."""
        return _sha256_json(self.canonical())

    @property
    def table_name(self) -> str:
        """The feature table in schema ``features``: ``<name>_<hash[:12]>``."""
        return f"{self.name}_{self.spec_hash[:12]}"

    def to_toml(self) -> str:
        """The spec as TOML text that :func:`parse_spec` reads back to an equal spec."""
        lines = [f"name = {_toml_str(self.name)}", f"catalog = {_toml_str(self.catalog)}"]
        for f in self.features:
            lines += ["", "[[feature]]", f"name = {_toml_str(f.name)}"]
            lines.append(f"expr = {_toml_str(f.expr)}")
            if f.group is not None:
                lines.append(f"group = {_toml_str(f.group)}")
            if f.missing != "nan":
                lines.append(f"missing = {_toml_str(f.missing)}")
            nd = f.nondetection
            if nd is not None:
                parts = []
                if nd.column is not None:
                    parts.append(f"column = {_toml_str(nd.column)}")
                if nd.above is not None:
                    parts.append(f"above = {format_number(nd.above)}")
                if nd.below is not None:
                    parts.append(f"below = {format_number(nd.below)}")
                if nd.flag is not None:
                    parts.append(f"flag = {_toml_str(nd.flag)}")
                if nd.mask:
                    parts.append("mask = true")
                lines.append(f"nondetection = {{ {', '.join(parts)} }}")
        return "\n".join(lines) + "\n"

    # -- error reporting --------------------------------------------------------------
    def error(
        self, message: str, *, feature: int | None = None, key: str | None = None
    ) -> FeatureSpecError:
        """A :class:`FeatureSpecError` naming this spec's file and the line concerned.

        ``feature`` is the index of the feature the problem is in (its line is
        the line of its ``name = ...``), ``key`` a top-level key (``catalog``).
        """
        path = self.origin.path if self.origin else None
        text = self.origin.text if self.origin else None
        line = None
        if text is not None:
            if feature is not None:
                line = _feature_line(text, feature, self.features[feature].name)
            elif key is not None:
                line = _key_line(text, key)
        if feature is not None:
            message = f"feature {self.features[feature].name!r}: {message}"
        return FeatureSpecError(message, path=path, line=line)


def _canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _sha256_json(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(data).encode()).hexdigest()


def _toml_str(value: str) -> str:
    # json.dumps escapes quotes, backslashes and control characters the way TOML basic
    # strings do.
    return json.dumps(value, ensure_ascii=False)


_FEATURE_HEADER = re.compile(r"^\s*\[\[\s*feature\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[")


def _feature_line(text: str, index: int, name: str) -> int | None:
    """The 1-based line of the ``index``-th ``[[feature]]``'s ``name = ...`` (or its header)."""
    lines = text.splitlines()
    headers = [n for n, line in enumerate(lines) if _FEATURE_HEADER.match(line)]
    if index < len(headers):
        start = headers[index]
        for n in range(start + 1, len(lines)):
            if _TABLE_HEADER.match(lines[n]):
                break
            if re.match(r"^\s*name\s*=", lines[n]):
                return n + 1
        return start + 1
    # Inline tables (feature = [{ name = ... }, ...]): the first line naming the feature.
    quoted = json.dumps(name)
    for n, line in enumerate(lines):
        if quoted in line or f"'{name}'" in line:
            return n + 1
    return None


def _key_line(text: str, key: str) -> int | None:
    for n, line in enumerate(text.splitlines()):
        if _TABLE_HEADER.match(line):
            return None  # top-level keys come before the first table
        if re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return n + 1
    return None


def _name_problem(value: object, what: str, limit: int = 63) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string, not {type(value).__name__}"
    if len(value.encode()) > limit:
        return f"{what} {value[:80]!r}... is longer than {limit} bytes"
    if not NAME_RE.fullmatch(value):
        return (
            f"{what} {value!r} is not allowed: use 1 to {limit} characters a-z, 0-9 and _, "
            "starting with a letter"
        )
    return None


def check_spec(spec: FeatureSpec) -> None:
    """Check everything that does not need the database; raise :class:`FeatureSpecError`.

    Names (set, catalog, features, groups, indicator features), uniqueness,
    missing policies, non-detection settings and the syntax of every
    expression. Columns are checked against the catalog by the build.
    """
    problem = _name_problem(spec.name, "feature set name", MAX_SET_NAME)
    if problem:
        raise spec.error(problem, key="name")
    problem = _name_problem(spec.catalog, "catalog name")
    if problem:
        raise spec.error(problem, key="catalog")
    if not isinstance(spec.features, tuple | list) or not spec.features:
        raise spec.error("a feature set needs at least one [[feature]] table", key="name")
    if len(spec.features) > MAX_FEATURES:
        raise spec.error(f"at most {MAX_FEATURES} features are allowed", key="name")
    seen: dict[str, int] = {}
    for index, feature in enumerate(spec.features):
        if not isinstance(feature, Feature):
            raise spec.error(f"feature {index + 1} is a {type(feature).__name__}, not a Feature")
        problem = _name_problem(feature.name, "feature name")
        if problem:
            raise spec.error(problem, feature=index)
        if feature.group is not None:
            problem = _name_problem(feature.group, "group name")
            if problem:
                raise spec.error(problem, feature=index)
        if feature.missing not in MISSING_POLICIES:
            raise spec.error(
                f'missing = {feature.missing!r} is not known: use "nan" (keep NaN) or '
                '"indicator" (also add a 0/1 <name>_missing feature)',
                feature=index,
            )
        if feature.nondetection is not None:
            _check_nondetection(spec, index, feature.nondetection)
        for name in feature.output_names():
            problem = _name_problem(name, "feature name")
            if problem:
                raise spec.error(problem, feature=index)
            if name in seen:
                raise spec.error(
                    f"feature name {name!r} is used twice (also by feature "
                    f"{spec.features[seen[name]].name!r})",
                    feature=index,
                )
            seen[name] = index
        try:
            parse_expression(feature.expr)
        except ExpressionError as exc:
            raise spec.error(
                f"bad expression {_show(feature.expr)}: {exc}; {ALLOWED}", feature=index
            ) from None


def _show(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 100 else shown[:97] + "..."


def _check_nondetection(spec: FeatureSpec, index: int, nd: Nondetection) -> None:
    if not isinstance(nd, Nondetection):
        raise spec.error("nondetection must be a Nondetection", feature=index)
    usage = (
        'nondetection takes { column = "u", above = 26.0 } (or below = ...) or '
        '{ flag = "u_nondet" }, optionally with mask = true'
    )
    if (nd.column is None) == (nd.flag is None):
        raise spec.error(f"give exactly one of column and flag: {usage}", feature=index)
    for what, value in (("column", nd.column), ("flag", nd.flag)):
        if value is not None:
            problem = _name_problem(value, f"nondetection {what}")
            if problem:
                raise spec.error(problem, feature=index)
    limits = [v for v in (nd.above, nd.below) if v is not None]
    if nd.column is not None and len(limits) != 1:
        raise spec.error(f"give exactly one of above and below: {usage}", feature=index)
    if nd.flag is not None and limits:
        raise spec.error(f"a flag takes no above/below limit: {usage}", feature=index)
    for limit in limits:
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or not math.isfinite(limit)
            or abs(limit) > VALUE_MAX
        ):
            raise spec.error(
                f"the nondetection limit must be a finite number: {usage}", feature=index
            )
    if not isinstance(nd.mask, bool):
        raise spec.error(f"mask must be true or false: {usage}", feature=index)


# -- reading TOML -------------------------------------------------------------------------
def load_spec(path: str | Path) -> FeatureSpec:
    """Read and check a TOML feature-set spec file (see the module docstring).

    Raises :class:`FeatureSpecError` naming the file, the line and what is
    allowed when the file is not valid TOML, has unknown keys or wrong types,
    or has an invalid name or expression.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FeatureSpecError(f"cannot read the spec: {exc.strerror}", path=str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FeatureSpecError(f"the spec is not UTF-8 text ({exc.reason})", path=str(p)) from None
    return parse_spec(text, source=str(p))


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)$|\(at end of document\)$")


def parse_spec(text: str, *, source: str = "<spec>") -> FeatureSpec:
    """Parse TOML text into a checked :class:`FeatureSpec` (``source`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = None
        if match and match.group(1):
            line = int(match.group(1))
        elif match:
            line = text.count("\n") + 1
        message = _TOML_POSITION.sub("", message).strip()
        raise FeatureSpecError(f"not valid TOML: {message}", path=source, line=line) from None
    origin = SpecOrigin(source, text)
    shell = FeatureSpec("", "", (), origin)  # only for error() before the spec exists

    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise shell.error(
            f"unknown key {unknown[0]!r}; a spec has name, catalog and [[feature]] tables",
            key=unknown[0],
        )
    for key in ("name", "catalog"):
        if key not in data:
            raise FeatureSpecError(f'the spec has no {key} = "..."', path=source, line=1)
        if not isinstance(data[key], str):
            raise shell.error(f"{key} must be a string", key=key)
    raw_features = data.get("feature")
    if not isinstance(raw_features, list) or not raw_features:
        raise FeatureSpecError(
            "the spec has no [[feature]] tables (each with name and expr)",
            path=source,
            line=text.count("\n") + 1,
        )
    features: list[Feature] = []
    for index, item in enumerate(raw_features):
        features.append(_feature_from_toml(item, index, text, source))
    spec = FeatureSpec(data["name"], data["catalog"], tuple(features), origin)
    check_spec(spec)
    return spec


def _feature_from_toml(item: object, index: int, text: str, source: str) -> Feature:
    name = item.get("name") if isinstance(item, dict) else None
    shown = name if isinstance(name, str) else f"#{index + 1}"

    def fail(message: str) -> FeatureSpecError:
        line = _feature_line(text, index, shown)
        return FeatureSpecError(f"feature {shown!r}: {message}", path=source, line=line)

    if not isinstance(item, dict):
        raise fail("each feature must be a table ([[feature]])")
    unknown = [k for k in item if k not in FEATURE_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], FEATURE_KEYS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise fail(f"unknown key {unknown[0]!r}{hint}; allowed: {', '.join(FEATURE_KEYS)}")
    for key in ("name", "expr"):
        if key not in item:
            raise fail(f'no {key} = "..."')
    for key in ("name", "expr", "group", "missing"):
        if key in item and not isinstance(item[key], str):
            raise fail(f"{key} must be a string")
    nondetection = None
    if "nondetection" in item:
        raw = item["nondetection"]
        if not isinstance(raw, dict):
            raise fail('nondetection must be a table, e.g. { column = "u", above = 26.0 }')
        bad = [k for k in raw if k not in NONDET_KEYS]
        if bad:
            raise fail(f"unknown nondetection key {bad[0]!r}; allowed: {', '.join(NONDET_KEYS)}")
        for key in ("column", "flag"):
            if key in raw and not isinstance(raw[key], str):
                raise fail(f"nondetection {key} must be a string (a column name)")
        for key in ("above", "below"):
            if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], int | float)):
                raise fail(f"nondetection {key} must be a number")
        if "mask" in raw and not isinstance(raw["mask"], bool):
            raise fail("nondetection mask must be true or false")
        nondetection = Nondetection(
            column=raw.get("column"),
            above=None if raw.get("above") is None else float(raw["above"]),
            below=None if raw.get("below") is None else float(raw["below"]),
            flag=raw.get("flag"),
            mask=bool(raw.get("mask", False)),
        )
    return Feature(
        name=item["name"],
        expr=item["expr"],
        group=item.get("group"),
        missing=item.get("missing", "nan"),
        nondetection=nondetection,
    )


def spec_from_canonical(data: Mapping[str, Any], *, text: str | None = None) -> FeatureSpec:
    """Rebuild a spec from its stored canonical JSON (``skyclass.feature_set.spec``)."""
    features = []
    for f in data["features"]:
        nd = f.get("nondetection")
        features.append(
            Feature(
                name=f["name"],
                expr=f["expr"],
                group=f["group"],
                missing=f["missing"],
                nondetection=None if nd is None else Nondetection(**nd),
            )
        )
    origin = SpecOrigin("<stored spec>", text) if text is not None else None
    columns = tuple(sorted(dict(data.get("columns") or {}).items()))
    return FeatureSpec(data["name"], data["catalog"], tuple(features), origin, columns)


EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def example_spec_path(name: str = "sdss_ugriz") -> Path:
    """The path of a spec shipped in ``skyclass/features/examples`` (``sdss_ugriz``...)."""
    path = EXAMPLES_DIR / f"{name}.toml"
    if not NAME_RE.fullmatch(name) or not path.is_file():
        known = sorted(p.stem for p in EXAMPLES_DIR.glob("*.toml"))
        raise FeatureSpecError(f"no example spec {name!r}; examples: {', '.join(known)}")
    return path
