"""How to read an incoming value (source formats) and what to turn a mapped value into (target types).

A source format reads text the way a file or a warehouse wrote it (`date:%d/%m/%Y`, `number:eu`, `currency`);
a target type makes the final value the type the target expects (`integer`, `date`, `currency`, ...).
Both are chosen once, when a mapping is loaded, and return plain per-value callables: the engine applies them
column-wise. Every callable maps None to None and raises ValueError naming the value and what was expected.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from connector_pipelines.mapping.suggest import did_you_mean

SOURCE_FORMATS: dict[str, str] = {
    "date": "an ISO-8601 date such as 2024-03-31 (a datetime keeps its date part)",
    "date:<strftime>": "a date in the given strftime format, e.g. date:%d/%m/%Y reads 31/03/2024",
    "datetime": "an ISO-8601 datetime such as 2024-03-31T14:05:00 or 2024-03-31 14:05:00+02:00",
    "datetime:<strftime>": "a datetime in the given strftime format, e.g. datetime:%d/%m/%Y %H:%M",
    "number": "a number with ',' thousands and '.' decimals, e.g. 1,234.56 or -12 (read as Decimal)",
    "number:eu": "a number with '.' or space thousands and ',' decimals, e.g. 1.234,56 (read as Decimal)",
    "currency": "an amount with an optional symbol or ISO code before or after: $1,234.56, USD 1,234.56, (12.50)",
    "currency:eu": "an amount in European notation with an optional symbol or code: 1.234,56 €, EUR -12,50",
    "integer": "a whole number, e.g. 42, -7 or 1,234 (12.5 is refused)",
    "boolean": "true/false, yes/no, y/n or 1/0, in any case",
}

TARGET_TYPES: tuple[str, ...] = ("text", "integer", "number", "currency", "boolean", "date", "datetime", "json")

# strptime directives Python supports; anything else in a `date:` format is a typo we can report at load time.
_STRPTIME_DIRECTIVES = set("aAbBcdfGHIjmMpSuUVwWxXyYzZ%")
_TRUE_WORDS = frozenset({"true", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"false", "no", "n", "0"})
_CENT = Decimal("0.01")

# Bounds on what one value may cost. A number is short text: past these, parsing turns a few bytes into seconds of
# CPU ('1e1000000' as an integer is a million-digit int) or quadratic regex work, so such values are refused.
MAX_NUMBER_CHARS = 1_000  # text read as a number (digits, separators, sign, exponent, currency marker)
MAX_EXPONENT = 1_000  # a number's magnitude: at most 10**1000 and at least 10**-1000 (floats stop at 1.8e308)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the integer type's range (Arrow int64, SQL BIGINT)
# currency is NUMERIC(38, 2) in the target (Arrow decimal128(38, 2)): 36 digits before the decimal point.
CURRENCY_MAX_DIGITS = 36
_CURRENCY_CONTEXT = Context(prec=CURRENCY_MAX_DIGITS + 4)  # quantize to cents needs every digit of the amount

# Plain-number grammars. Grouping must be regular (1,234,567) so a stray comma is an error, not a silent join.
_NUMBER_EN = re.compile(r"([+-]?)(\d{1,3}(?:,\d{3})+|\d*)(?:\.(\d+))?(?:[eE]([+-]?\d+))?")
_NUMBER_EU = re.compile(r"([+-]?)(\d{1,3}(?:[.\s\u00a0\u202f]\d{3})+|\d*)(?:,(\d+))?(?:[eE]([+-]?\d+))?")
_GROUP_SEPARATORS = str.maketrans("", "", ",.\u00a0\u202f ")

# A currency marker: a symbol ($, €, ...) or up to three letters (USD, kr), optionally followed by a symbol (US$).
_SYMBOLS = "$€£¥₹₩₽₺₪₫₱฿¢₦₴₸₲₵₡"
_MARKER = rf"(?:[A-Za-z]{{1,3}}\s?[{_SYMBOLS}]?|[{_SYMBOLS}])"
_CURRENCY = re.compile(
    rf"(?P<sign>[-+])?\s*(?:(?P<pre>{_MARKER})\s*)?(?P<sign2>[-+])?\s*"
    rf"(?P<number>[\d.,\s\u00a0\u202f]*\d[\d.,\u00a0\u202f]*)\s*(?P<post>{_MARKER})?"
)


def describe_value(value: object, limit: int = 60) -> str:
    """A short repr of a value for error messages, so a huge cell never floods a run report."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_text(value: object) -> str | None:
    """The text form of a value: dates as ISO-8601, Decimals without exponent, booleans as true/false."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _number_from_text(text: str, european: bool) -> Decimal:
    """Read '1,234.56' (or '1.234,56' when european) as a Decimal; raise ValueError for anything else."""
    _check_number_length(text)
    match = (_NUMBER_EU if european else _NUMBER_EN).fullmatch(text.strip())
    if match is None or not (match.group(2) or match.group(3)):
        example = "1.234,56" if european else "1,234.56"
        raise ValueError(f"{describe_value(text)} is not a number (expected e.g. {example})")
    sign, whole, fraction, exponent = match.groups()
    digits = f"{sign}{whole.translate(_GROUP_SEPARATORS) or '0'}.{fraction or '0'}"
    if exponent:
        digits += f"e{exponent}"
    return _bounded(Decimal(digits), text)


def _check_number_length(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(
            f"{describe_value(text)} is too long to be a number ({len(text):,} characters; "
            f"at most {MAX_NUMBER_CHARS:,})"
        )


def _bounded(number: Decimal, original: object) -> Decimal:
    """`number` when its magnitude is within 10**±MAX_EXPONENT (zero always is); ValueError otherwise."""
    if number and not -MAX_EXPONENT <= number.adjusted() <= MAX_EXPONENT:
        raise ValueError(
            f"{describe_value(original)} is out of range: numbers are read between 1e-{MAX_EXPONENT} "
            f"and 1e{MAX_EXPONENT}"
        )
    return number


def to_decimal(value: object, european: bool = False) -> Decimal | None:
    """A number as a finite Decimal; floats go through their shortest repr so 0.1 stays 0.1."""
    if value.__class__ is float and value - value == 0.0:  # the common case first; nan/inf fail 'x - x == 0'
        return Decimal(repr(value))
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return _bounded(Decimal(value), value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        return _bounded(value, value)
    if isinstance(value, str):
        return _number_from_text(value, european)
    raise ValueError(f"{describe_value(value)} is not a number")


def _integral(number: Decimal, original: object) -> int:
    """An integral Decimal as int; refuse 12.5 instead of silently truncating it, and values beyond 64 bits."""
    if (
        number and number.adjusted() > 18
    ):  # 10**19 and more: beyond 64 bits, refused before an int of that size is built
        raise _beyond_int64(original)
    if number != number.to_integral_value():
        raise ValueError(f"{describe_value(original)} is not a whole number")
    return _int64(int(number), original)


def _int64(number: int, original: object) -> int:
    if not INT64_MIN <= number <= INT64_MAX:
        raise _beyond_int64(original)
    return number


def _beyond_int64(original: object) -> ValueError:
    return ValueError(
        f"{describe_value(original)} is beyond the 64-bit integer range "
        f"({INT64_MIN:,} to {INT64_MAX:,}); map it as number or text"
    )


def to_integer(value: object) -> int | None:
    """A whole number as int: accepts ints, integral floats/Decimals and text such as '1,234'; refuses 1.5 and
    anything beyond the 64-bit range (the target's integer type)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _int64(value, value)
    if isinstance(value, str) and not value.strip():
        return None
    return _integral(to_decimal(value), value)


def to_boolean(value: object) -> bool | None:
    """true/false, yes/no, y/n, 1/0 (any case) or a bool or 0/1 number, as bool."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        if not word:
            return None
    elif isinstance(value, int | float | Decimal) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{describe_value(value)} is not a boolean (expected true/false, yes/no, y/n or 1/0)")


def parse_iso_datetime(value: object) -> datetime:
    """A date, datetime or ISO-8601 text as a datetime (a date becomes midnight)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{describe_value(value)} is not a date (expected ISO-8601 such as 2024-03-31)")


def to_date(value: object) -> date | None:
    """A date from a date, a datetime (its date part) or ISO-8601 text."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str) and not value.strip():
        return None
    return parse_iso_datetime(value).date()


def to_datetime(value: object) -> datetime | None:
    """A datetime from a datetime, a date (midnight) or ISO-8601 text."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str) and not value.strip():
        return None
    return parse_iso_datetime(value)


def to_currency(value: object) -> Decimal | None:
    """An amount as a Decimal rounded half-up to cents; text may carry a symbol ($1,234.56, (12.50))."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        amount = parse_currency(value, european=False)
    else:
        amount = to_decimal(value)
    try:
        rounded = amount.quantize(_CENT, ROUND_HALF_UP, context=_CURRENCY_CONTEXT)
    except InvalidOperation:
        rounded = None  # more digits than the context holds: far too large
    if rounded is None or (rounded and rounded.adjusted() >= CURRENCY_MAX_DIGITS):
        raise ValueError(
            f"{describe_value(value)} is too large for a currency amount "
            f"(at most {CURRENCY_MAX_DIGITS} digits before the decimal point)"
        )
    return rounded


def to_number(value: object) -> float | None:
    """A number as float: accepts ints, floats, Decimals and text such as '1,234.56'."""
    if value.__class__ is float and value - value == 0.0:  # finite floats, the common case, as they are
        return value
    if value is None:
        return None
    if isinstance(value, str):
        # float() reads plain numbers ten times faster than our grammar; it also reads '1_000', 'nan' and
        # 'inf', which are kept out here and refused by the grammar below.
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if number - number == 0.0 and "_" not in value:
                return number
        if not value.strip():
            return None
        return _finite(float(_number_from_text(value, False)), value)
    return _finite(float(to_decimal(value)), value)


def _finite(number: float, original: object) -> float:
    if number - number != 0.0:
        raise ValueError(f"{describe_value(original)} is too large for a number (at most about 1.8e308)")
    return number


def to_text(value: object) -> str | None:
    """Any value as text (see as_text); kept as its own name so target types read as a table."""
    return as_text(value)


def _unchanged(value: object) -> object:
    """The json target type: the value as it is."""
    return value


_TARGET_CONVERTERS: dict[str, Callable[[object], object]] = {
    "text": to_text,
    "integer": to_integer,
    "number": to_number,
    "currency": to_currency,
    "boolean": to_boolean,
    "date": to_date,
    "datetime": to_datetime,
    "json": _unchanged,
}


def to_target_type(type_name: str) -> Callable[[object], object]:
    """The converter for one of TARGET_TYPES; raise ValueError listing the types for anything else."""
    converter = _TARGET_CONVERTERS.get(type_name)
    if converter is None:
        raise ValueError(
            f"unknown target type {type_name!r}{did_you_mean(str(type_name), TARGET_TYPES)}; "
            f"types: {', '.join(TARGET_TYPES)}"
        )
    return converter


def parse_currency(text: str, european: bool = False) -> Decimal:
    """Read an amount such as '$1,234.56', 'USD 1,234.56', '(12.50)', '-12.50' or '1.234,56 €' as a Decimal."""
    _check_number_length(text)
    stripped = text.strip()
    negative = False
    if stripped.startswith("(") and stripped.endswith(")"):
        # Accounting notation: (12.50) is -12.50.
        negative, stripped = True, stripped[1:-1].strip()
    match = _CURRENCY.fullmatch(stripped)
    if match is None or (match["pre"] and match["post"]) or (match["sign"] and match["sign2"]):
        raise _not_currency(text, european)
    sign = match["sign"] or match["sign2"]
    if sign and negative:
        raise ValueError(f"{describe_value(text)} is not a currency amount (two signs)")
    try:
        amount = _number_from_text(match["number"], european)
    except ValueError:
        raise _not_currency(text, european) from None
    return -amount if negative or sign == "-" else amount


def _not_currency(text: str, european: bool) -> ValueError:
    example = "1.234,56 €" if european else "$1,234.56"
    return ValueError(f"{describe_value(text)} is not a currency amount (expected e.g. {example})")


def check_strftime(fmt: object) -> None:
    """Refuse an empty format or an unknown %-directive when a mapping is loaded, not on the first row."""
    if not isinstance(fmt, str) or not fmt:
        raise ValueError(f"a date format must be non-empty text such as '%d/%m/%Y', got {describe_value(fmt)}")
    for directive in re.findall(r"%(.?)", fmt.replace("%%", "")):
        if directive not in _STRPTIME_DIRECTIVES:
            raise ValueError(f"date format {fmt!r} has an unknown directive '%{directive}'")


# Formats made only of these numeric directives and non-space literals are read with one regex instead of
# strptime, which is about five times slower; the result (and the ranges date() checks) is the same.
_FAST_DIRECTIVES = {
    "Y": r"(?P<Y>\d{4})",
    "y": r"(?P<y>\d{2})",
    "m": r"(?P<m>\d{1,2})",
    "d": r"(?P<d>\d{1,2})",
    "H": r"(?P<H>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
}


def _fast_pattern(fmt: str) -> re.Pattern[str] | None:
    """A regex equivalent to strptime for simple numeric formats, or None when strptime must do it."""
    parts: list[str] = []
    seen: set[str] = set()
    pieces = re.split(r"(%.)", fmt)
    for piece in pieces:
        if piece.startswith("%") and len(piece) == 2:
            key = piece[1]
            if key not in _FAST_DIRECTIVES or key in seen:
                return None
            seen.add(key)
            parts.append(_FAST_DIRECTIVES[key])
        elif piece:
            if any(char.isspace() or char == "%" for char in piece):
                return None  # strptime treats spaces as 'any whitespace'; leave that to strptime
            parts.append(re.escape(piece))
    has_year = bool(seen & {"Y", "y"})
    if not (has_year and {"m", "d"} <= seen):
        return None  # partial dates default odd fields in strptime; keep its exact behaviour
    return re.compile("".join(parts), re.IGNORECASE)


def strptime_reader(fmt: str, want_date: bool) -> Callable[[object], object]:
    """A reader for `date:<fmt>` / `datetime:<fmt>`: text -> date/datetime, date values pass through."""
    kind = "date" if want_date else "datetime"
    pattern = _fast_pattern(fmt)

    def parse_text(text: str) -> datetime:
        match = pattern.fullmatch(text) if pattern is not None else None
        if match is not None:
            fields = match.groupdict()
            year = int(fields["Y"]) if "Y" in fields else _two_digit_year(int(fields["y"]))
            try:
                return datetime(
                    year,
                    int(fields["m"]),
                    int(fields["d"]),
                    int(fields.get("H") or 0),
                    int(fields.get("M") or 0),
                    int(fields.get("S") or 0),
                )
            except ValueError:
                pass  # strptime may still read it another way (e.g. '2024315' as 2024-3-15); let it decide
        return datetime.strptime(text, fmt)

    def read(value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            try:
                parsed = parse_text(text)
            except ValueError:
                raise ValueError(f"{describe_value(value)} is not a {kind} in format '{fmt}'") from None
            return parsed.date() if want_date else parsed
        if value is None:
            return None
        if isinstance(value, date):  # already typed (a date32 or timestamp column): keep it
            if want_date:
                return value.date() if isinstance(value, datetime) else value
            return value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
        raise ValueError(f"{describe_value(value)} is not a {kind} in format '{fmt}'")

    return read


def _two_digit_year(year: int) -> int:
    """strptime's %y rule: 69-99 are the 1900s, 00-68 the 2000s."""
    return year + (1900 if year >= 69 else 2000)


def _text_reader(form: str, read_text: Callable[[str], object], accept: Callable[[object], object]):
    """Wrap a text parser: None and '' -> None, text -> read_text, other values -> accept (already typed)."""

    def read(value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str):
            if not value.strip():
                return None
            return read_text(value)
        return accept(value)

    read.__doc__ = f"Read a value in source format '{form}'."
    return read


def parse_format(spec: str) -> Callable[[object], object]:
    """The reader for a source format such as `date:%d/%m/%Y`, `number:eu` or `currency` (see SOURCE_FORMATS).

    Raise ValueError naming the allowed forms for an unknown or malformed spec. The reader maps None and ''
    to None, passes values that are already typed (a date for `date:...`, a number for `number`), and raises
    ValueError naming the value and the expected format otherwise.
    """
    if not isinstance(spec, str):
        raise ValueError(f"source format must be text, got {describe_value(spec)}")
    form, colon, argument = spec.partition(":")
    form = form.strip()
    if form in ("date", "datetime"):
        if not colon:
            return to_date if form == "date" else to_datetime
        try:
            check_strftime(argument)
        except ValueError as exc:
            raise ValueError(f"source format {spec!r}: {exc}; write it like {form}:%d/%m/%Y") from None
        return strptime_reader(argument, want_date=form == "date")
    variant = argument.strip() if colon else None
    if form in ("number", "currency") and variant in (None, "eu"):
        european = variant == "eu"
        if form == "number":
            return _text_reader(spec, lambda text: _number_from_text(text, european), to_decimal)
        return _text_reader(spec, lambda text: parse_currency(text, european), to_decimal)
    if form == "integer" and variant is None:
        return to_integer
    if form == "boolean" and variant is None:
        return to_boolean
    raise _unknown_format(spec)


def _unknown_format(spec: str) -> ValueError:
    """The error for a source format we do not know, listing every allowed form."""
    known = [form.split(":")[0] for form in SOURCE_FORMATS] + ["number:eu", "currency:eu"]
    return ValueError(
        f"unknown source format {spec!r}{did_you_mean(spec, known)}; allowed: {', '.join(SOURCE_FORMATS)}"
    )
