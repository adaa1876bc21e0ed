"""The fixed library of functions a mapping expression may call.

Each function works on one value (one row); the expression engine applies it column-wise. Nulls: most
functions return None when their value is None; concat reads None as '', and coalesce, default, if_empty and
lookup exist to deal with None. A bad value raises ValueError with a message naming the value; the engine
turns it into a failure of that one row.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Protocol

from connector_pipelines.mapping.conversions import (
    as_text,
    check_strftime,
    describe_value,
    parse_iso_datetime,
    strptime_reader,
    to_decimal,
    to_integer,
    to_text,
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
    # bind(*constant_args) -> a one-argument function equal to func(value, *constant_args), with the arguments
    # checked and prepared once; used when every argument after the value is a constant (the usual case).
    bind: Callable[..., Callable[[object], object]] | None = None

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


def _check_flag(value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe_value(value)}")


# --- text ------------------------------------------------------------------------------------------------

# The longest text a function may make. Only concat and replace make text longer than their values; a row of a
# megabyte times a long replacement (or a column joined to itself a thousand times) would otherwise be
# gigabytes from a few bytes of input.
MAX_RESULT_CHARS = 1_000_000


def _too_long(function: str, size: int) -> ValueError:
    return ValueError(f"{function} would make a text of {size:,} characters; at most {MAX_RESULT_CHARS:,} are allowed")


def concat(*values: object) -> str:
    """Join values as text; None counts as ''."""
    if None not in values:
        try:
            size = sum(map(len, values))
        except TypeError:
            size = -1  # not all text: measured below, once converted
        if size >= 0 and all(value.__class__ is str for value in values):
            if size > MAX_RESULT_CHARS:
                raise _too_long("concat", size)
            return "".join(values)  # all text: the common case, and the fastest
    texts = [value if value.__class__ is str else as_text(value) or "" for value in values]
    size = sum(map(len, texts))
    if size > MAX_RESULT_CHARS:
        raise _too_long("concat", size)
    return "".join(texts)


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
    text = as_text(value)
    old = _text_arg(old, "replace's old text", False)
    new = _text_arg(new, "replace's new text")
    if len(new) > len(old):
        size = len(text) + text.count(old) * (len(new) - len(old))
        if size > MAX_RESULT_CHARS:
            raise _too_long("replace", size)
    return text.replace(old, new)


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


def equals(value: object, other: object) -> bool | None:
    """True when value equals other (text compared as text, numbers as numbers); None when value is None."""
    if value is None:
        return None
    if isinstance(value, str) != isinstance(other, str):
        return str(value) == str(other)
    return value == other


def map_values(value: object, *pairs: object) -> object:
    """A value map: map_values(status, 'active', 'A', 'churned', 'C', 'other') -> the value paired with the
    first matching key; an odd last argument is the default (else None)."""
    for index in range(0, len(pairs) - 1, 2):
        if equals(value, pairs[index]):
            return pairs[index + 1]
    return pairs[-1] if len(pairs) % 2 else None


# --- numbers ---------------------------------------------------------------------------------------------

# Float formatting is three times faster than going through Decimal, and gives the very same text except when
# the float's shortest repr sits exactly on a rounding tie (2.675 with 2 decimals: floats round the binary value
# 2.67499.. down, Decimal rounds the 2.675 people see up) or when the float is so large that its binary value
# and its repr differ in the decimals shown. Those two cases go through Decimal. Per decimals 0..8:
# (format spec, 10**(decimals+1), bound below which x * 10**(decimals+1) is exact to well under 0.01).
_FLOAT_FORMATS = {places: (f",.{places}f", 10.0 ** (places + 1), 4e13 / 10.0 ** (places + 1)) for places in range(9)}
# One-argument formatters built per distinct set of arguments, for calls whose arguments come from columns.
_BUILT: dict[tuple, Callable[[object], object]] = {}


def _built(factory: Callable[..., Callable[[object], object]], *args: object) -> Callable[[object], object]:
    """factory(*args), remembered; the key holds the types so True and 1 do not share a formatter."""
    key = (factory, *((type(arg), arg) for arg in args))
    try:
        found = _BUILT.get(key)
    except TypeError:  # an unhashable argument: build it, don't remember it
        return factory(*args)
    if found is None:
        found = factory(*args)
        if len(_BUILT) < 512:  # arguments read from a column must not grow this without bound
            _BUILT[key] = found
    return found


def _round_half_up(value: object, quantum: Decimal) -> Decimal:
    """Value as a Decimal rounded half-up (2.675 -> 2.68, as people expect, not banker's rounding)."""
    number = to_decimal(value)
    try:
        rounded = number.quantize(quantum, ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError(f"{describe_value(value)} is too large to round") from None
    return rounded.copy_abs() if not rounded else rounded  # no '-0.00'


def to_number(value: object) -> Decimal | None:
    """A number (Decimal) from a number or text such as '1,234.56'; '' -> None."""
    if value is None or value == "":
        return None
    return to_decimal(value)


def round_(value: object, digits: object = 0) -> int | Decimal | None:
    """Round half-up to `digits` decimals: an int for 0 (or negative) digits, else a Decimal."""
    if value is None:
        return None
    places = _whole(digits, "round digits", None)
    rounded = _round_half_up(value, Decimal(1).scaleb(-places))
    return int(rounded) if places <= 0 else rounded


def number_formatter(
    decimals: object = 2, decimal_sep: object = ".", thousands_sep: object = ","
) -> Callable[[object], str | None]:
    """number_format with everything but the value fixed; the arguments are checked once, here."""
    places = _whole(decimals, "decimals", 0)
    quantum = Decimal(1).scaleb(-places)
    table = None
    if (decimal_sep, thousands_sep) != (".", ","):
        table = str.maketrans(
            {".": _text_arg(decimal_sep, "decimal separator"), ",": _text_arg(thousands_sep, "thousands separator")}
        )
    spec, scale, bound = _FLOAT_FORMATS.get(places, ("", 1.0, 0.0))

    def format_number(value: object) -> str | None:
        if value.__class__ is float and -bound < value < bound:  # nan and inf fail the bound too
            scaled = value * scale
            nearest = round(scaled)
            if nearest % 10 != 5 or abs(scaled - nearest) >= 0.01:  # not a tie that Decimal rounds half-up
                text = format(value, spec)
                if text[0] == "-" and not text.strip("-0.,"):
                    text = text[1:]  # no '-0.00'
                return text if table is None else text.translate(table)
        if value is None:
            return None
        text = format(_round_half_up(value, quantum), ",f")
        return text if table is None else text.translate(table)

    return format_number


def number_format(
    value: object, decimals: object = 2, decimal_sep: object = ".", thousands_sep: object = ","
) -> str | None:
    """Number as text with fixed decimals and separators: number_format(1234.5) -> '1,234.50'."""
    return _built(number_formatter, decimals, decimal_sep, thousands_sep)(value)


def currency_formatter(
    symbol: object = "$",
    decimals: object = 2,
    symbol_after: object = False,
    decimal_sep: object = ".",
    thousands_sep: object = ",",
) -> Callable[[object], str | None]:
    """currency_format with everything but the value fixed; the arguments are checked once, here."""
    format_number = number_formatter(decimals, decimal_sep, thousands_sep)
    symbol = _text_arg(symbol, "currency symbol")
    if not isinstance(symbol_after, bool):
        raise ValueError(f"symbol_after must be true or false, got {describe_value(symbol_after)}")
    # A symbol ending in a letter ('USD') needs a space before the digits; '$' does not.
    before = f"{symbol} " if symbol and symbol[-1].isalpha() else symbol
    after = f" {symbol}" if symbol else ""

    def format_amount(value: object) -> str | None:
        text = format_number(value)
        if text is None:
            return None
        sign, digits = ("-", text[1:]) if text[0] == "-" else ("", text)
        return f"{sign}{digits}{after}" if symbol_after else f"{sign}{before}{digits}"

    return format_amount


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
    return _built(currency_formatter, symbol, decimals, symbol_after, decimal_sep, thousands_sep)(value)


# --- dates -----------------------------------------------------------------------------------------------

# strftime is ~1.5 us a call; for formats made only of these numeric fields a '%'-template filled from an
# attrgetter does the same work in a third of the time (years below 1000 come out zero-padded, as ISO-8601
# wants, where glibc's strftime does not pad). Other directives (month names, %j, ...) use strftime itself.
_FAST_STRFTIME = {
    "Y": ("year", "%04d"),
    "m": ("month", "%02d"),
    "d": ("day", "%02d"),
    "H": ("hour", "%02d"),
    "M": ("minute", "%02d"),
    "S": ("second", "%02d"),
}


def _strftime(fmt: str) -> Callable[[datetime], str]:
    """A function doing datetime.strftime(fmt), faster for formats made of numeric fields only."""
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


def date_formatter(fmt: object) -> Callable[[object], str | None]:
    """date_format with the format fixed; the format is checked once, here."""
    check_strftime(fmt)
    format_moment = _strftime(fmt)  # type: ignore[arg-type]
    if re.search(r"%[^Ymd%]", fmt.replace("%%", "")):  # type: ignore[union-attr]
        return functools.partial(_format_date, format_moment)
    # A format of the date alone gives one text per day, and real data repeats days: remember them.
    texts: dict[int, str] = {}

    def format_day(moment: datetime) -> str:
        day = moment.toordinal()
        text = texts.get(day)
        if text is None:
            text = format_moment(moment)
            if len(texts) < 100_000:
                texts[day] = text
        return text

    return functools.partial(_format_date, format_day)


def _format_date(format_moment: Callable[[datetime], str], value: object) -> str | None:
    if value.__class__ is not datetime:
        if value is None or value == "":
            return None
        value = parse_iso_datetime(value)
    return format_moment(value)


def date_format(value: object, fmt: object) -> str | None:
    """Format a date, datetime or ISO-8601 text with a strftime format: date_format(d, '%d/%m/%Y')."""
    return _built(date_formatter, fmt)(value)


def date_reader(fmt: object) -> Callable[[object], object]:
    """parse_date with the format fixed."""
    check_strftime(fmt)
    return strptime_reader(fmt, want_date=True)  # type: ignore[arg-type]


def datetime_reader(fmt: object) -> Callable[[object], object]:
    """parse_datetime with the format fixed."""
    check_strftime(fmt)
    return strptime_reader(fmt, want_date=False)  # type: ignore[arg-type]


def parse_date(value: object, fmt: object) -> object:
    """Read text in a strftime format as a date: parse_date('31/03/2024', '%d/%m/%Y')."""
    return _built(date_reader, fmt)(value)


def parse_datetime(value: object, fmt: object) -> object:
    """Read text in a strftime format as a datetime: parse_datetime('31/03/2024 14:05', '%d/%m/%Y %H:%M')."""
    return _built(datetime_reader, fmt)(value)


# --- lookups and columns (resolved by the expression parser) ---------------------------------------------


class SupportsGet(Protocol):
    """A lookup table: `get(key)` as a dict answers it. It may also offer `prefetch(values: list) -> None`, which
    the expression calls with a batch's values before looking each up."""

    def get(self, key: object, /) -> object: ...


def lookup(table: Mapping[object, object] | SupportsGet, value: object) -> object:
    """`table[value]`, None when missing; a non-text value is also tried as text (CSV keys are text).

    `table` is a dict, or anything with a dict's `get` (`integration.lookups.SqlLookup`, which answers the same)."""
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
        FunctionSpec("equals", 2, 2, equals, "equals(value, other)", "true when value equals other, else false."),
        FunctionSpec(
            "map_values",
            3,
            None,
            map_values,
            "map_values(value, key, result, ..., [default])",
            "The result paired with the first key equal to value; the default (or null) otherwise.",
        ),
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
            {1: lambda old: _text_arg(old, "replace's old text", False), 2: lambda new: _text_arg(new, "new text")},
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
            bind=number_formatter,
        ),
        FunctionSpec(
            "currency_format",
            1,
            6,
            currency_format,
            "currency_format(value[, symbol[, decimals[, symbol_after[, decimal_sep[, thousands_sep]]]]])",
            "Amount with a symbol: '$1,234.50'; (v, '€', 2, True, ',', '.') gives '1.234,50 €'.",
            {1: _check_separator, 2: _check_decimals, 3: _check_flag, 4: _check_separator, 5: _check_separator},
            bind=currency_formatter,
        ),
        FunctionSpec(
            "date_format",
            2,
            2,
            date_format,
            "date_format(value, format)",
            "Format a date, datetime or ISO-8601 text with a strftime format such as '%d/%m/%Y'.",
            {1: check_strftime},
            bind=date_formatter,
        ),
        FunctionSpec(
            "parse_date",
            2,
            2,
            parse_date,
            "parse_date(value, format)",
            "Read text such as '31/03/2024' as a date with a strftime format such as '%d/%m/%Y'.",
            {1: check_strftime},
            bind=date_reader,
        ),
        FunctionSpec(
            "parse_datetime",
            2,
            2,
            parse_datetime,
            "parse_datetime(value, format)",
            "Read text as a datetime with a strftime format such as '%d/%m/%Y %H:%M'.",
            {1: check_strftime},
            bind=datetime_reader,
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
