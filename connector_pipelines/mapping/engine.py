"""The mapping engine: field rules compiled once, then applied column-wise to batches of source rows.

A rule fills one target field from a source column, a safe expression or a constant. Per rule the steps are:
value -> `parse` (a source format) -> `default` (when None or '') -> the target field's type -> required check.
A bad value fails only its row, with a reason that starts with the target field name; configuration problems
(unknown targets, two rules for one target, bad expressions) raise MappingError when the mapping is compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from connector_pipelines.mapping.conversions import TARGET_TYPES, describe_value, parse_format, to_target_type
from connector_pipelines.mapping.expressions import DATA_ERRORS, Expression, ExpressionError, parse_expression
from connector_pipelines.mapping.suggest import did_you_mean

if TYPE_CHECKING:
    import pyarrow as pa


class _NoConstant:
    """The type of NO_CONSTANT: a rule without a constant (None is a valid constant)."""

    _instance: _NoConstant | None = None

    def __new__(cls) -> _NoConstant:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_CONSTANT"

    def __reduce__(self) -> str:
        return "NO_CONSTANT"  # pickles (e.g. to a Dagster worker) as the same singleton


NO_CONSTANT = _NoConstant()


@dataclass(frozen=True)
class FieldRule:
    """How one target field is filled: exactly one of source, expression or constant."""

    target: str
    source: str | None = None  # a source column, copied (possibly parsed)
    expression: str | None = None  # a safe expression (expressions.py)
    constant: object = NO_CONSTANT  # a constant value
    parse: str | None = None  # a source format applied to the source column (or to the expression result)
    default: object = None  # used when the result is None or ''
    note: str = ""

    @classmethod
    def from_spec(cls, rule) -> FieldRule:
        """The rule a spec's mapping entry (`spec.common.MappingRuleSpec`, of an integration or an import) stands
        for. A constant counts only when it was written, so `constant: null` is a constant and no key is none."""
        return cls(
            target=rule.target,
            source=rule.source,
            expression=rule.expression,
            constant=rule.constant if "constant" in rule.model_fields_set else NO_CONSTANT,
            parse=rule.parse,
            default=rule.default,
            note=rule.note,
        )


@dataclass(frozen=True)
class TargetField:
    """A field of the target (an API payload or a table column)."""

    name: str
    type: str = "text"  # one of TARGET_TYPES
    required: bool = False


class MappingError(ValueError):
    """A mapping is misconfigured (not a per-row problem); `problems` holds one line per problem."""

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class MappedBatch:
    """The result of mapping a batch: target columns, and per row None or the reasons it failed."""

    columns: dict[str, list]  # target name -> values (None in failed rows)
    errors: list[str | None]  # per row: None, or "field: reason" joined by '; '

    @property
    def n_rows(self) -> int:
        """How many rows were mapped (failed ones included)."""
        return len(self.errors)

    @property
    def failed_count(self) -> int:
        """How many rows failed."""
        return self.n_rows - self.errors.count(None)

    @property
    def ok_count(self) -> int:
        """How many rows mapped without a problem."""
        return self.errors.count(None)

    def failures(self) -> list[tuple[int, str]]:
        """(row index, reason) for every failed row, in row order."""
        return [(row, reason) for row, reason in enumerate(self.errors) if reason is not None]

    def records(self) -> list[dict | None]:
        """Per row a dict target -> value, or None for a failed row."""
        names = list(self.columns)
        if names:
            rows: list[dict | None] = [dict(zip(names, values)) for values in zip(*self.columns.values())]
        else:
            rows = [{} for _ in self.errors]
        for row, reason in enumerate(self.errors):
            if reason is not None:
                rows[row] = None
        return rows


# Per target type, the exact class of a value that needs no conversion (bool is not an int here: it is refused).
_ALREADY_TYPED: dict[str, type] = {"text": str, "integer": int, "boolean": bool, "date": date, "datetime": datetime}


class _Plan:
    """One compiled rule: where the value comes from and the per-value steps applied to it."""

    def __init__(self, rule: FieldRule, field: TargetField | None, number: int, problems: list[str]):
        self.target = rule.target
        self.rule = rule
        self.required = bool(field and field.required)
        self.expression: Expression | None = None
        self.constant: object = NO_CONSTANT
        self.parse: Callable[[object], object] | None = None
        self.convert: Callable[[object], object] | None = None
        self.keep: type | None = _ALREADY_TYPED.get(field.type) if field is not None else None
        label = f"mapping for '{rule.target}'" if rule.target else f"mapping #{number}"
        first_problem = len(problems)
        if not isinstance(rule.target, str) or not rule.target:
            problems.append(f"{label}: target must be a field name, got {describe_value(rule.target)}")

        sources = [
            name
            for name, given in (
                ("source", rule.source is not None),
                ("expression", rule.expression is not None),
                ("constant", rule.constant is not NO_CONSTANT),
            )
            if given
        ]
        if len(sources) != 1:
            given = f"it sets {' and '.join(sources)}" if sources else "it sets none"
            problems.append(f"{label} must set exactly one of source, expression or constant ({given})")
        if rule.source is not None and (not isinstance(rule.source, str) or not rule.source):
            problems.append(f"{label}: source must be a column name, got {describe_value(rule.source)}")
        if rule.expression is not None:
            try:
                self.expression = parse_expression(rule.expression)
            except ExpressionError as exc:
                problems.append(f"{label}: {exc}")
        if rule.parse is not None:
            try:
                self.parse = parse_format(rule.parse)
            except ValueError as exc:
                problems.append(f"{label}: {exc}")
        if field is not None and field.type != "json":
            # json keeps values as they are, so it needs no conversion pass at all.
            try:
                self.convert = to_target_type(field.type)
            except ValueError:
                pass  # reported once per field by CompiledMapping
        if rule.default is not None and self.convert is not None:
            try:
                self.convert(rule.default)
            except DATA_ERRORS as exc:
                default = describe_value(rule.default)
                problems.append(f"{label}: default {default} does not fit type {field.type}: {exc}")
        if rule.constant is not NO_CONSTANT and len(problems) == first_problem:
            # A constant goes through the same steps, once, now: a bad one is a mapping error, not n row errors.
            values, errors = self.finish([rule.constant], {})
            if errors:
                problems.append(f"{label}: constant {describe_value(rule.constant)}: {errors[0]}")
            self.constant = values[0]

    @property
    def columns(self) -> frozenset[str]:
        if self.rule.source is not None:
            return frozenset({self.rule.source})
        return self.expression.columns if self.expression is not None else frozenset()

    def values(self, columns: Mapping[str, list], n_rows: int, lookups: Mapping[str, Mapping]):
        """(values, {row: reason}) for this field; values is a fresh list the caller may change."""
        if self.constant is not NO_CONSTANT:
            return [self.constant] * n_rows, {}
        if self.expression is not None:
            values, errors = self.expression.evaluate(columns, n_rows, lookups)
        else:
            values, errors = columns[self.rule.source], {}  # type: ignore[index]
        return self.finish(values, errors, copy=True)

    def finish(self, values: list, errors: dict[int, str], copy: bool = False):
        """parse -> default -> type -> required, each as one pass over the column."""
        if self.parse is not None:
            values = _apply(self.parse, values, errors)
        default = self.rule.default
        if default is not None:
            values = [default if value is None or value == "" else value for value in values]
        if self.convert is not None:
            values = _apply(self.convert, values, errors, self.keep)
        elif copy and self.parse is None and default is None:
            values = list(values)  # never hand out (or later blank rows in) the caller's own list
        if self.required:
            for row, value in enumerate(values):
                if (value is None or value == "") and row not in errors:
                    errors[row] = "required field is empty"
        return values, errors


def _apply(func: Callable[[object], object], values: list, errors: dict[int, str], keep: type | None = None) -> list:
    """func over a column; on a bad value retry per row, recording the reason and leaving None.

    Values whose class is exactly `keep` are already right and skip the call: most text is already text.
    """
    try:
        if keep is None:
            return list(map(func, values))
        return [value if value.__class__ is keep else func(value) for value in values]
    except DATA_ERRORS:
        out = [None] * len(values)
        for row, value in enumerate(values):
            if row in errors:
                continue
            try:
                out[row] = func(value)
            except DATA_ERRORS as exc:
                errors[row] = str(exc)
        return out


class CompiledMapping:
    """Field rules validated and compiled once; map many batches with map_columns or map_batch.

    `lookups` maps a lookup name to its {key: value} table. It may be left out to compile a mapping only to
    learn `lookup_names`; mapping rows then raises MappingError until a mapping is compiled with them.
    """

    def __init__(
        self,
        rules: Sequence[FieldRule],
        target_fields: Sequence[TargetField] = (),
        lookups: Mapping[str, Mapping] | None = None,
    ):
        problems: list[str] = []
        fields = {field.name: field for field in target_fields}
        for field in target_fields:
            if field.type not in TARGET_TYPES:
                problems.append(
                    f"target field '{field.name}' has unknown type {field.type!r}"
                    f"{did_you_mean(field.type, TARGET_TYPES)}; types: {', '.join(TARGET_TYPES)}"
                )
        seen: dict[str, int] = {}
        plans: list[_Plan] = []
        for number, rule in enumerate(rules, start=1):
            if rule.target in seen:
                problems.append(
                    f"two mappings write target field '{rule.target}' (mappings #{seen[rule.target]} "
                    f"and #{number}); map each target field once"
                )
                continue
            seen[rule.target] = number
            if fields and rule.target not in fields:
                problems.append(
                    f"mapping #{number} writes '{rule.target}', which is not a target field"
                    f"{did_you_mean(rule.target, fields)}; target fields: {', '.join(fields)}"
                )
                continue
            plans.append(_Plan(rule, fields.get(rule.target), number, problems))
        for field in target_fields:
            if field.required and field.name not in seen:
                problems.append(f"required target field '{field.name}' has no mapping")

        self.lookup_names: frozenset[str] = frozenset().union(
            *(plan.expression.lookups for plan in plans if plan.expression is not None)
        )
        if lookups is not None:
            for name in sorted(self.lookup_names - set(lookups)):
                problems.append(
                    f"lookup '{name}' is used but was not provided{did_you_mean(name, lookups)}; "
                    f"provided lookups: {', '.join(lookups) or 'none'}"
                )
        if problems:
            raise MappingError(problems)
        self.rules: tuple[FieldRule, ...] = tuple(rules)
        self.target_fields: tuple[TargetField, ...] = tuple(target_fields)
        self.targets: tuple[str, ...] = tuple(plan.target for plan in plans)  # output order = rule order
        self.source_columns: frozenset[str] = frozenset().union(*(plan.columns for plan in plans))
        self.lookups: Mapping[str, Mapping] | None = lookups
        self._plans = plans

    def check_columns(self, available: Iterable[str]) -> list[str]:
        """One problem per source column a rule reads that `available` lacks, with a did-you-mean."""
        available = list(available)
        known = set(available)
        problems = []
        for plan in self._plans:
            for column in sorted(plan.columns - known):
                problems.append(
                    f"mapping for '{plan.target}' reads column '{column}', which the data set does not have"
                    f"{did_you_mean(column, available)}"
                )
        return problems

    def map_columns(self, columns: Mapping[str, list], n_rows: int) -> MappedBatch:
        """Map rows given column-wise (column -> list of n_rows values); the input lists are not changed."""
        problems = self.check_columns(columns)
        if self.lookup_names and self.lookups is None:
            problems.append(
                f"this mapping uses lookups ({', '.join(sorted(self.lookup_names))}); compile it with their tables"
            )
        for name in sorted(self.source_columns & set(columns)):
            if len(columns[name]) != n_rows:
                problems.append(f"column '{name}' has {len(columns[name])} values, expected {n_rows} rows")
        if problems:
            raise MappingError(problems)
        lookups = self.lookups or {}
        out: dict[str, list] = {}
        row_errors: dict[int, list[str]] = {}
        for plan in self._plans:
            values, errors = plan.values(columns, n_rows, lookups)
            out[plan.target] = values
            for row, reason in errors.items():
                row_errors.setdefault(row, []).append(f"{plan.target}: {reason}")
        errors_list: list[str | None] = [None] * n_rows
        for row, reasons in row_errors.items():
            errors_list[row] = "; ".join(reasons)
            for values in out.values():
                values[row] = None  # a failed row is dropped whole: no half-mapped record leaves the engine
        return MappedBatch(out, errors_list)

    def map_batch(self, batch: pa.RecordBatch | pa.Table) -> MappedBatch:
        """Map a pyarrow RecordBatch or Table, converting to Python only the columns the rules read."""
        names = batch.schema.names
        problems = self.check_columns(names)
        if problems:
            raise MappingError(problems)
        columns = {name: batch.column(name).to_pylist() for name in self.source_columns}
        return self.map_columns(columns, batch.num_rows)
