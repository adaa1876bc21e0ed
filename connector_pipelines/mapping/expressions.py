"""A small, safe expression language for computing one target field, e.g. `upper(trim(name))`.

Text is parsed with `ast.parse(..., mode="eval")` and only a few node kinds are accepted: a column name, a
constant (text, number, true/false/null), a unary minus before a number, and calls of library functions
(functions.py) by plain name. Nothing is ever compiled or executed: the accepted tree is turned into our own
nodes, which evaluate column-wise: one list per column, one `map` of the function over its argument lists,
and a per-row retry only when that fast pass hits a bad value, so one bad cell fails only its own row.

`true`, `false` and `null` are constants (as in YAML); a column with such a name, or with spaces in its name,
is read with `column('First Name')`. `lookup('name', value)` reads a lookup table given at evaluation time.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Mapping

from connector_pipelines.mapping.conversions import as_text, describe_value
from connector_pipelines.mapping.functions import FUNCTIONS, FunctionSpec, lookup
from connector_pipelines.mapping.suggest import did_you_mean

# Errors a library function raises for a bad value; anything else is a bug and should surface, not be hidden
# as a row failure.
DATA_ERRORS = (ValueError, TypeError, ArithmeticError)

ALLOWED = (
    "an expression is a column name, a constant ('text', 12, -1.5, true, false, null) "
    "or a library function call such as upper(trim(name))"
)
# Calls on constants are computed once, at load (`_Builder.fold`), and `replace` multiplies a text's length
# (every `old` becomes `new`), so nested replaces grow a constant exponentially: a one-line expression could
# take the loader's memory. Text written in an expression, and text computed from it at load, is at most this long.
MAX_TEXT_CHARS = 10_000
# How many times longer than its column values an expression's result may get through nested replaces of
# longer text, each multiplying by len(new) / len(old): past this, a run would turn a cell into gigabytes.
MAX_GROWTH = 1_000
# Lowercase words people write in YAML; Python's True/False/None are accepted as well.
_WORD_CONSTANTS = {"true": True, "false": False, "null": None}

_OPERATORS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}
_REFUSED_NODES = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing with [] (use substring or left/right)",
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.IfExp: "'x if c else y' (use coalesce, default or if_empty)",
    ast.BoolOp: "'and'/'or' (use coalesce, default or if_empty)",
    ast.Compare: "a comparison",
    ast.JoinedStr: "an f-string (use concat)",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.NamedExpr: "':=' assignment",
    ast.Starred: "'*' unpacking",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class ExpressionError(ValueError):
    """An expression is not valid: the message says what is wrong, where (column) and what is allowed."""


class _Node:
    """An accepted expression node; evaluate returns (values, {row: reason}) for n_rows rows.

    `growth` bounds how many times longer than the longest column value it reads its text can get (0 for a
    constant, 1 for a column).
    """

    growth = 1

    def evaluate(self, columns: Mapping[str, list], n_rows: int, lookups: Mapping[str, Mapping]):
        raise NotImplementedError


class _Column(_Node):
    def __init__(self, name: str):
        self.name = name

    def evaluate(self, columns, n_rows, lookups):
        try:
            return columns[self.name], {}
        except KeyError:
            raise ExpressionError(
                f"column '{self.name}' is not in the data{did_you_mean(self.name, columns)}; "
                f"columns: {', '.join(columns)}"
            ) from None


class _Constant(_Node):
    growth = 0

    def __init__(self, value: object):
        self.value = value

    def evaluate(self, columns, n_rows, lookups):
        return [self.value] * n_rows, {}


class _Call(_Node):
    def __init__(
        self, spec: FunctionSpec, args: list[_Node], func: Callable[..., object] | None = None, growth: int = 1
    ):
        self.spec = spec
        self.args = args
        self.func = func or spec.func  # a bound one-argument function when the other arguments are constants
        self.growth = growth

    def evaluate(self, columns, n_rows, lookups):
        arg_values, errors = _evaluate_all(self.args, columns, n_rows, lookups)
        return _apply(self.func, self.spec.name, arg_values, errors, n_rows), errors


class _Lookup(_Node):
    def __init__(self, name: str, arg: _Node):
        self.name = name
        self.arg = arg

    def evaluate(self, columns, n_rows, lookups):
        table = lookups.get(self.name)
        if table is None:
            provided = ", ".join(lookups) or "none"
            raise ExpressionError(f"lookup '{self.name}' was not provided; provided lookups: {provided}")
        arg_values, errors = _evaluate_all([self.arg], columns, n_rows, lookups)
        # A table read per batch (integration/lookups.py) is told the batch's values first, so that `get` below
        # answers from memory: one statement per chunk of new values instead of one per row. A dict has no prefetch.
        prefetch = getattr(table, "prefetch", None)
        if prefetch is not None:
            prefetch(arg_values[0])
        return _apply(functools.partial(lookup, table), "lookup", arg_values, errors, n_rows), errors


def _evaluate_all(nodes, columns, n_rows, lookups) -> tuple[list[list], dict[int, str]]:
    """Evaluate argument nodes; a row keeps the first reason it failed for."""
    arg_values: list[list] = []
    errors: dict[int, str] = {}
    for node in nodes:
        values, node_errors = node.evaluate(columns, n_rows, lookups)
        for row, reason in node_errors.items():
            errors.setdefault(row, reason)
        arg_values.append(values)
    return arg_values, errors


def _apply(func: Callable[..., object], name: str, arg_values: list[list], errors: dict[int, str], n_rows: int) -> list:
    """Apply func over the zipped argument lists; retry row by row only if a value is bad.

    Rows already in `errors` come out None and keep their first reason; new failures are added to `errors`.
    """
    try:
        # map over whole lists runs the loop in C: the fast path for clean data.
        values = list(map(func, *arg_values))
    except DATA_ERRORS:
        values = [None] * n_rows
        for row, args in enumerate(zip(*arg_values)):
            if row in errors:
                continue
            try:
                values[row] = func(*args)
            except DATA_ERRORS as exc:
                errors[row] = f"{name}: {exc}"
        return values
    for row in errors:
        values[row] = None  # e.g. concat turns a failed (None) argument into '': the row stays failed
    return values


class Expression:
    """A parsed, validated expression; evaluate it column-wise with `evaluate`."""

    def __init__(self, text: str, root: _Node, columns: frozenset[str], lookups: frozenset[str]):
        self.text = text
        self.columns = columns  # source columns it reads
        self.lookups = lookups  # lookup tables it needs
        self._root = root

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def evaluate(
        self, columns: Mapping[str, list], n_rows: int, lookups: Mapping[str, Mapping] | None = None
    ) -> tuple[list, dict[int, str]]:
        """Values for n_rows rows and {row index: reason} for rows that failed (their value is None).

        `columns` maps a source column to its list of values; a bare column expression returns that very
        list, so callers must copy before changing it. Raise ExpressionError if a column or lookup is missing.
        """
        return self._root.evaluate(columns, n_rows, lookups or {})


def parse_expression(text: str) -> Expression:
    """Parse and validate an expression; raise ExpressionError saying what is wrong, where and what is allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"an expression must be non-empty text, got {describe_value(text)}; {ALLOWED}")
    source = text.strip()
    # The text is stripped before parsing (leading spaces are a syntax error in eval mode); report columns in
    # the text as written.
    shift = len(text) - len(text.lstrip())
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = _where(exc.lineno or 1, (exc.offset or 1) - 1, shift)
        raise ExpressionError(f"invalid expression {describe_value(text, 80)}: {exc.msg} {where}; {ALLOWED}") from None
    except RecursionError:
        raise ExpressionError(f"expression {describe_value(text, 80)} is nested too deeply") from None
    builder = _Builder(source, shift)
    try:
        root = builder.build(tree.body)
    except RecursionError:
        raise ExpressionError(f"expression {describe_value(text, 80)} is nested too deeply") from None
    return Expression(text, root, frozenset(builder.columns), frozenset(builder.lookups))


def _where(lineno: int, col_offset: int, shift: int) -> str:
    """'at column 5' (1-based) or 'at line 2, column 3' for a multi-line expression."""
    if lineno == 1:
        return f"at column {col_offset + shift + 1}"
    return f"at line {lineno}, column {col_offset + 1}"


class _Builder:
    """Turns an ast tree into our nodes, refusing every node kind we do not know to be safe."""

    def __init__(self, source: str, shift: int):
        self.source = source
        self.shift = shift
        self.columns: set[str] = set()
        self.lookups: set[str] = set()

    def error(self, node: ast.AST, problem: str, hint: str = "") -> ExpressionError:
        """'<problem> at column N; <hint>': what is wrong, where, and what to write instead."""
        where = _where(getattr(node, "lineno", 1), getattr(node, "col_offset", 0), self.shift)
        return ExpressionError(f"{problem} {where}; {hint}" if hint else f"{problem} {where}")

    def segment(self, node: ast.AST) -> str:
        """The source text of a node for a message, cut short so a long expression does not flood it."""
        text = ast.get_source_segment(self.source, node) or type(node).__name__
        return text if len(text) <= 60 else text[:57] + "..."

    def build(self, node: ast.AST) -> _Node:
        if isinstance(node, ast.Name):
            if node.id in _WORD_CONSTANTS:
                return _Constant(_WORD_CONSTANTS[node.id])
            self.columns.add(node.id)
            return _Column(node.id)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp):
            symbol = _OPERATORS.get(type(node.op), type(node.op).__name__)
            raise self.error(
                node, f"operator '{symbol}' in '{self.segment(node)}' is not allowed", "use functions such as concat"
            )
        what = _REFUSED_NODES.get(type(node), type(node).__name__)
        raise self.error(node, f"{what} in '{self.segment(node)}' is not allowed", ALLOWED)

    def constant(self, node: ast.Constant) -> _Constant:
        value = node.value
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise self.error(
                node,
                f"a text constant of {len(value):,} characters is longer than the {MAX_TEXT_CHARS:,} an expression "
                "may hold",
                "put long text in a `constant:` rule or a lookup table",
            )
        if value is None or isinstance(value, str | int | float):  # bool is an int
            return _Constant(value)
        raise self.error(node, f"constant {self.segment(node)} is not allowed", ALLOWED)

    def unary(self, node: ast.UnaryOp) -> _Constant:
        operand = node.operand
        if (
            isinstance(node.op, ast.USub)
            and isinstance(operand, ast.Constant)
            and isinstance(operand.value, int | float)
            and not isinstance(operand.value, bool)
        ):
            return _Constant(-operand.value)
        raise self.error(node, f"'{self.segment(node)}' is not allowed", "a unary minus may only precede a number")

    def call(self, node: ast.Call) -> _Node:
        if isinstance(node.func, ast.Attribute):
            raise self.error(
                node,
                f"attribute access or method call '{self.segment(node.func)}' is not allowed",
                "call library functions by name, e.g. upper(name)",
            )
        if not isinstance(node.func, ast.Name):
            raise self.error(node, f"calling '{self.segment(node.func)}' is not allowed", ALLOWED)
        name = node.func.id
        spec = FUNCTIONS.get(name)
        if spec is None:
            where = _where(node.lineno, node.col_offset, self.shift)
            raise ExpressionError(
                f"unknown function '{name}' {where}{did_you_mean(name, FUNCTIONS)}; functions: {', '.join(FUNCTIONS)}"
            )
        if node.keywords:
            raise self.error(node, f"{name}: keyword arguments are not allowed", f"usage: {spec.usage}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error(arg, f"{name}: '*' unpacking is not allowed", f"usage: {spec.usage}")
        count = len(node.args)
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            raise self.error(node, f"{name} takes {spec.arity_text()}, got {count}", f"usage: {spec.usage}")
        if name in ("lookup", "column"):
            return self.named(node, spec)
        args = [self.build(arg) for arg in node.args]
        for position, check in spec.checks.items():
            if position < count and isinstance(args[position], _Constant):
                try:
                    check(args[position].value)
                except ValueError as exc:
                    raise self.error(node.args[position], f"{name}: {exc}") from None
        if all(isinstance(arg, _Constant) for arg in args):
            return self.fold(node, spec, args)
        growth = self.growth(node, spec, args)
        if spec.bind is not None and all(isinstance(arg, _Constant) for arg in args[1:]):
            try:
                bound = spec.bind(*(arg.value for arg in args[1:]))  # type: ignore[attr-defined]
            except ValueError as exc:
                raise self.error(node, f"{name}: {exc}") from None
            return _Call(spec, args[:1], bound, growth)
        return _Call(spec, args, growth=growth)

    def growth(self, node: ast.Call, spec: FunctionSpec, args: list[_Node]) -> int:
        """How many times longer than a column value this call's text can get (see `_Node.growth`)."""
        if spec.name == "concat":
            growth = sum(arg.growth for arg in args)
        elif spec.name == "replace":
            old, new = args[1], args[2]
            # A `new` read from a column makes the length depend on the data, which no bound at load can see.
            factor = 1
            if isinstance(new, _Constant):
                longer = len(as_text(new.value) or "")
                shortest_old = len(old.value) if isinstance(old, _Constant) and isinstance(old.value, str) else 1
                factor = max(1, -(-longer // max(1, shortest_old)))  # ceil(len(new) / len(old))
            growth = args[0].growth * factor
        else:
            growth = max(arg.growth for arg in args)
        if growth > MAX_GROWTH:
            raise self.error(
                node,
                f"{spec.name}: '{self.segment(node)}' can make a value up to {growth:,} times longer (each replace "
                f"multiplies the length by len(new) / len(old)); at most {MAX_GROWTH:,} times is allowed",
                "replace shorter text, or fewer times",
            )
        return growth

    def named(self, node: ast.Call, spec: FunctionSpec) -> _Node:
        """lookup('name', value) and column('name'): the name must be constant text, known at load time."""
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value):
            raise self.error(first, f"{spec.name}: the first argument must be a name in quotes", f"usage: {spec.usage}")
        if spec.name == "column":
            self.columns.add(first.value)
            return _Column(first.value)
        self.lookups.add(first.value)
        return _Lookup(first.value, self.build(node.args[1]))

    def fold(self, node: ast.Call, spec: FunctionSpec, args: list[_Node]) -> _Constant:
        """A call on constants only is computed once, now; a bad constant is a load-time error, and so is a
        result longer than MAX_TEXT_CHARS (a replace is measured before it runs: it may be far longer)."""
        values = [arg.value for arg in args]  # type: ignore[attr-defined]
        size = _replaced_length(*values) if spec.name == "replace" else 0
        if size <= MAX_TEXT_CHARS:
            try:
                value = spec.func(*values)
            except DATA_ERRORS as exc:
                raise self.error(node, f"{spec.name}: {exc}") from None
            size = len(value) if isinstance(value, str) else 0
        if size > MAX_TEXT_CHARS:
            raise self.error(
                node,
                f"{spec.name}: '{self.segment(node)}' makes a text of {size:,} characters at load, longer than the "
                f"{MAX_TEXT_CHARS:,} an expression may compute",
                "compute shorter text, or put it in a `constant:` rule",
            )
        return _Constant(value)


def _replaced_length(value: object, old: object, new: object) -> int:
    """The length of replace(value, old, new), computed without building it; 0 when replace would refuse or
    return None (it then raises or answers as usual)."""
    if value is None or not isinstance(old, str) or not old or not isinstance(new, str):
        return 0
    text = value if isinstance(value, str) else as_text(value) or ""
    return len(text) + text.count(old) * (len(new) - len(old))
