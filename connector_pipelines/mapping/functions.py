"""The fixed library of functions a mapping expression may call.

Each function works on one value (one row); the expression engine applies it column-wise. Nulls: most
functions return None when their value is None; concat reads None as '', and coalesce, default, if_empty and
lookup exist to deal with None. A bad value raises ValueError with a message naming the value; the engine
turns it into a failure of that one row.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from connector_pipelines.mapping.conversions import (
    as_text,
    check_strftime,
    describe_value,
    parse_iso_datetime,
    strptime_reader,
    to_decimal,
)
from connector_pipelines.mapping.conversions import (
    to_integer as _convert_integer,
)


@dataclass(frozen=True)
class FunctionSpec:
    """One library function: its arity, the per-value callable, a usage line and a one-line doc.

    `checks` maps an argument position to a validator run at load time when that argument is a constant
    (a bad date format or a negative decimal count is a mapping error, not 200,000 row errors).
    """

    name: str
    min_args: int
    max_args: int | None  # None: any number of arguments
    func: Callable[..., object]
    usage: str
    doc: str
    checks: Mapping[int, Callable[[object], None]] = field(default_factory=dict)

    def arity_text(self) -> str:
        """'1 argument', '2 to 3 arguments', 'at least 1 argument' for error messages."""
        if self.max_args is None:
            return f"at least {self.min_args} argument{'s' if self.min_args != 1 else ''}"
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        return f"{self.min_args} to {self.max_args} arguments"


# --- argument checks -------------------------------------------------------------------------------------


def _whole(value: object, what: str, minimum: int | None = 0) -> int:
    """An int argument (a count, a position); refuse text, bools and fractions with a clear message."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float | Decimal) and value == int(value):
            value = int(value)
        else:
            raise ValueError(f"{what} must be a whole number, got {describe_value(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return value


def _text_arg(value: object, what: str, allow_empty: bool = True) -> str:
    """A text argument such as a separator or a format."""
    if not isinstance(value, str) or (not allow_empty and not value):
        kind = "text" if allow_empty else "non-empty text"
        raise ValueError(f"{what} must be {kind}, got {describe_value(value)}")
    return value


def _check_decimals(value: object) -> None:
    _whole(value, "decimals", 0)


def _check_separator(value: object) -> None:
    _text_arg(value, "a separator")


# --- text ------------------------------------------------------------------------------------------------


def concat(*values: object) -> str:
    """Join values as text; None counts as ''."""
    try:
        return "".join(values)  # all text: the common case, and the fastest
    except TypeError:
        return "".join("" if value is None else as_text(value) for value in values)


def upper(value: object) -> str | None:
    """Upper-case text."""
    if isinstance(value, str):
        return value.upper()
    return None if value is None else as_text(value).upper()


def lower(value: object) -> str | None:
    """Lower-case text."""
    if isinstance(value, str):
        return value.lower()
    return None if value is None else as_text(value).lower()


def trim(value: object, chars: object = None) -> str | None:
    """Text without leading/trailing whitespace (or without the given characters)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else as_text(value)
    return text.strip() if chars is None else text.strip(_text_arg(chars, "trim characters"))


def substring(value: object, start: object, length: object = None) -> str | None:
    """`length` characters from position `start` (1-based, like SQL); to the end without a length."""
    if value is None:
        return None
    text = as_text(value)
    begin = _whole(start, "substring start", 1) - 1
    if length is None:
        return text[begin:]
    return text[begin : begin + _whole(length, "substring length", 0)]


def replace(value: object, old: object, new: object) -> str | None:
    """Text with every `old` replaced by `new`."""
    if value is None:
        return None
    return as_text(value).replace(_text_arg(old, "replace's old text", False), _text_arg(new, "replace's new text"))


def left(value: object, count: object) -> str | None:
    """The first `count` characters."""
    if value is None:
        return None
    return as_text(value)[: _whole(count, "left count")]


def right(value: object, count: object) -> str | None:
    """The last `count` characters."""
    if value is None:
        return None
    count = _whole(count, "right count")
    # text[-0:] is the whole text, so 0 needs its own answer.
    return as_text(value)[-count:] if count else ""


def length(value: object) -> int | None:
    """The number of characters of the text form."""
    return None if value is None else len(as_text(value))


def to_text(value: object) -> str | None:
    """The text form: dates as ISO-8601, booleans as true/false, Decimals without exponent."""
    return as_text(value)


# --- nulls -----------------------------------------------------------------------------------------------


def coalesce(*values: object) -> object:
    """The first value that is not None."""
    for value in values:
        if value is not None:
            return value
    return None


def default(value: object, fallback: object) -> object:
    """`fallback` when value is None."""
    return fallback if value is None else value


def if_empty(value: object, fallback: object) -> object:
    """`fallback` when value is None or ''."""
    return fallback if value is None or value == "" else value


# --- numbers ---------------------------------------------------------------------------------------------

# Quantizers and separator tables are built once per distinct argument, not once per row.
_QUANTUMS: dict[int, Decimal] = {}
_SEPARATOR_TABLES: dict[tuple[str, str], dict[int, str]] = {}


def _quantum(decimals: object) -> Decimal:
    quantum = _QUANTUMS.get(decimals)  # type: ignore[arg-type]
    if quantum is None:
        places = _whole(decimals, "decimals", None)
        quantum = Decimal(1).scaleb(-places)
        if len(_QUANTUMS) < 64:
            _QUANTUMS[places] = quantum
    return quantum


def _rounded(value: object, decimals: object) -> Decimal:
    """Value as a Decimal rounded half-up (2.675 -> 2.68, as people expect, not banker's rounding)."""
    number = to_decimal(value)
    try:
        rounded = number.quantize(_quantum(decimals), ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError(f"{describe_value(value)} is too large to round to {decimals} decimals") from None
    return rounded.copy_abs() if not rounded else rounded  # no '-0.00'


def to_number(value: object) -> Decimal | None:
    """A number (Decimal) from a number or text such as '1,234.56'; '' -> None."""
    if value is None or value == "":
        return None
    return to_decimal(value)


def to_integer(value: object) -> int | None:
    """A whole number from a number or text such as '1,234'; '' -> None; 1.5 is refused (use round)."""
    if value == "":
        return None
    return _convert_integer(value)


def round_(value: object, digits: object = 0) -> int | Decimal | None:
    """Round half-up to `digits` decimals: an int for 0 (or negative) digits, else a Decimal."""
    if value is None:
        return None
    rounded = _rounded(value, digits)
    return int(rounded) if _whole(digits, "round digits", None) <= 0 else rounded


def number_format(
    value: object, decimals: object = 2, decimal_sep: object = ".", thousands_sep: object = ","
) -> str | None:
    """Number as text with fixed decimals and separators: number_format(1234.5) -> '1,234.50'."""
    if value is None:
        return None
    text = format(_rounded(value, decimals), ",f")
    if decimal_sep == "." and thousands_sep == ",":
        return text
    table = _SEPARATOR_TABLES.get((decimal_sep, thousands_sep))  # type: ignore[arg-type]
    if table is None:
        pair = (_text_arg(decimal_sep, "decimal separator"), _text_arg(thousands_sep, "thousands separator"))
        table = str.maketrans({".": pair[0], ",": pair[1]})
        if len(_SEPARATOR_TABLES) < 64:
            _SEPARATOR_TABLES[pair] = table
    return text.translate(table)


def currency_format(
    value: object,
    symbol: object = "$",
    decimals: object = 2,
    symbol_after: object = False,
    decimal_sep: object = ".",
    thousands_sep: object = ",",
) -> str | None:
    """Amount as text with a symbol: '$1,234.50', '-$3.00'; symbol_after gives '1.234,50 €' with ',' '.'.

    A symbol after the number, or a symbol ending in a letter before it ('USD 12.00'), is set off by a space.
    """
    text = number_format(value, decimals, decimal_sep, thousands_sep)
    if text is None:
        return None
    symbol = _text_arg(symbol, "currency symbol")
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    if not symbol:
        return text
    if symbol_after:
        return f"{sign}{digits} {symbol}"
    space = " " if symbol[-1].isalpha() else ""
    return f"{sign}{symbol}{space}{digits}"


# --- dates -----------------------------------------------------------------------------------------------

# strftime is ~1.5 us a call; for formats made only of these numeric fields a '%'-template filled from an
# attrgetter does the same work in a third of the time. Other directives (names of months, %j, ...) use strftime.
_FAST_STRFTIME = {
    "Y": ("year", "%04d"),
    "m": ("month", "%02d"),
    "d": ("day", "%02d"),
    "H": ("hour", "%02d"),
    "M": ("minute", "%02d"),
    "S": ("second", "%02d"),
}
_FORMATTERS: dict[str, Callable[[datetime], str]] = {}
_READERS: dict[tuple[str, bool], Callable[[object], object]] = {}


def _build_formatter(fmt: str) -> Callable[[datetime], str]:
    template: list[str] = []
    fields: list[str] = []
    index = 0
    while index < len(fmt):
        char = fmt[index]
        if char == "%":
            directive = fmt[index + 1 : index + 2]
            if directive not in _FAST_STRFTIME:
                return operator.methodcaller("strftime", fmt)
            attribute, spec = _FAST_STRFTIME[directive]
            fields.append(attribute)
            template.append(spec)
            index += 2
        else:
            template.append(char)
            index += 1
    if not fields:
        return operator.methodcaller("strftime", fmt)
    pattern = "".join(template)
    getter = operator.attrgetter(*fields)
    if len(fields) == 1:
        return lambda moment: pattern % (getter(moment),)
    return lambda moment: pattern % getter(moment)


def _formatter(fmt: object) -> Callable[[datetime], str]:
    formatter = _FORMATTERS.get(fmt)  # type: ignore[arg-type]
    if formatter is None:
        check_strftime(fmt)
        formatter = _build_formatter(fmt)  # type: ignore[arg-type]
        if len(_FORMATTERS) < 256:  # a format read from a column must not grow this without bound
            _FORMATTERS[fmt] = formatter  # type: ignore[index]
    return formatter


def date_format(value: object, fmt: object) -> str | None:
    """Format a date, datetime or ISO-8601 text with a strftime format: date_format(d, '%d/%m/%Y')."""
    if value is None or value == "":
        return None
    return _formatter(fmt)(parse_iso_datetime(value))


def _reader(fmt: object, want_date: bool) -> Callable[[object], object]:
    reader = _READERS.get((fmt, want_date))  # type: ignore[arg-type]
    if reader is None:
        check_strftime(fmt)
        reader = strptime_reader(fmt, want_date)  # type: ignore[arg-type]
        if len(_READERS) < 256:
            _READERS[(fmt, want_date)] = reader  # type: ignore[index]
    return reader


def parse_date(value: object, fmt: object) -> object:
    """Read text in a strftime format as a date: parse_date('31/03/2024', '%d/%m/%Y')."""
    return _reader(fmt, True)(value)


def parse_datetime(value: object, fmt: object) -> object:
    """Read text in a strftime format as a datetime: parse_datetime('31/03/2024 14:05', '%d/%m/%Y %H:%M')."""
    return _reader(fmt, False)(value)


# --- lookups and columns (resolved by the expression parser) ---------------------------------------------


def lookup(table: Mapping[object, object], value: object) -> object:
    """`table[value]`, None when missing; a non-text value is also tried as text (CSV keys are text)."""
    if value is None:
        return None
    found = table.get(value)
    if found is None and not isinstance(value, str):
        found = table.get(as_text(value))
    return found


def column(value: object) -> object:
    """The value of the column whose name is given as text; for names that are not identifiers."""
    return value


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name: spec
    for spec in (
        FunctionSpec("concat", 1, None, concat, "concat(value, ...)", "Join values as text; None counts as ''."),
        FunctionSpec("upper", 1, 1, upper, "upper(value)", "Upper-case text."),
        FunctionSpec("lower", 1, 1, lower, "lower(value)", "Lower-case text."),
        FunctionSpec(
            "trim", 1, 2, trim, "trim(value[, chars])", "Strip whitespace (or the given characters) at both ends."
        ),
        FunctionSpec("coalesce", 1, None, coalesce, "coalesce(value, ...)", "The first value that is not null."),
        FunctionSpec("default", 2, 2, default, "default(value, fallback)", "fallback when value is null."),
        FunctionSpec("if_empty", 2, 2, if_empty, "if_empty(value, fallback)", "fallback when value is null or ''."),
        FunctionSpec(
            "substring",
            2,
            3,
            substring,
            "substring(value, start[, length])",
            "Characters from position start (1-based), to the end or length characters.",
            {1: lambda start: _whole(start, "substring start", 1), 2: lambda n: _whole(n, "substring length")},
        ),
        FunctionSpec(
            "replace",
            3,
            3,
            replace,
            "replace(value, old, new)",
            "Replace every occurrence of old by new.",
            {1: lambda old: _text_arg(old, "replace's old text", False), 2: _check_separator},
        ),
        FunctionSpec(
            "left", 2, 2, left, "left(value, n)", "The first n characters.", {1: lambda n: _whole(n, "left count")}
        ),
        FunctionSpec(
            "right", 2, 2, right, "right(value, n)", "The last n characters.", {1: lambda n: _whole(n, "right count")}
        ),
        FunctionSpec("length", 1, 1, length, "length(value)", "The number of characters."),
        FunctionSpec("to_text", 1, 1, to_text, "to_text(value)", "Text form (dates ISO-8601, booleans true/false)."),
        FunctionSpec("to_number", 1, 1, to_number, "to_number(value)", "A Decimal from a number or '1,234.56'."),
        FunctionSpec("to_integer", 1, 1, to_integer, "to_integer(value)", "A whole number; refuses 1.5."),
        FunctionSpec(
            "round",
            1,
            2,
            round_,
            "round(value[, digits])",
            "Round half-up to digits decimals (default 0, which gives a whole number).",
            {1: lambda digits: _whole(digits, "round digits", None)},
        ),
        FunctionSpec(
            "number_format",
            1,
            4,
            number_format,
            "number_format(value[, decimals[, decimal_sep[, thousands_sep]]])",
            "Number as text, default 2 decimals, '.' and ',': 1234.5 -> '1,234.50'.",
            {1: _check_decimals, 2: _check_separator, 3: _check_separator},
        ),
        FunctionSpec(
            "currency_format",
            1,
            6,
            currency_format,
            "currency_format(value[, symbol[, decimals[, symbol_after[, decimal_sep[, thousands_sep]]]]])",
            "Amount with a symbol: '$1,234.50'; (v, '€', 2, True, ',', '.') gives '1.234,50 €'.",
            {1: _check_separator, 2: _check_decimals, 4: _check_separator, 5: _check_separator},
        ),
        FunctionSpec(
            "date_format",
            2,
            2,
            date_format,
            "date_format(value, format)",
            "Format a date, datetime or ISO-8601 text with a strftime format such as '%d/%m/%Y'.",
            {1: check_strftime},
        ),
        FunctionSpec(
            "parse_date",
            2,
            2,
            parse_date,
            "parse_date(value, format)",
            "Read text such as '31/03/2024' as a date with a strftime format such as '%d/%m/%Y'.",
            {1: check_strftime},
        ),
        FunctionSpec(
            "parse_datetime",
            2,
            2,
            parse_datetime,
            "parse_datetime(value, format)",
            "Read text as a datetime with a strftime format such as '%d/%m/%Y %H:%M'.",
            {1: check_strftime},
        ),
        FunctionSpec(
            "lookup",
            2,
            2,
            lookup,
            "lookup('name', value)",
            "The value found for value in the lookup table 'name'; null when missing.",
        ),
        FunctionSpec(
            "column",
            1,
            1,
            column,
            "column('name')",
            "The column with that name, for names with spaces or dashes: column('First Name').",
        ),
    )
}
