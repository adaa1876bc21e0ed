"""Source formats (reading incoming values) and target types (shaping mapped values)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connector_pipelines.mapping import SOURCE_FORMATS, TARGET_TYPES, parse_format, to_target_type


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [
        ("date", "2024-03-31", date(2024, 3, 31)),
        ("date", "2024-03-31T23:59:00", date(2024, 3, 31)),
        ("date:%d/%m/%Y", "31/03/2024", date(2024, 3, 31)),
        ("date:%d/%m/%Y", " 1/3/2024 ", date(2024, 3, 1)),
        ("date:%d/%m/%y", "31/03/68", date(2068, 3, 31)),
        ("date:%d/%m/%y", "31/03/69", date(1969, 3, 31)),
        ("date:%Y%m%d", "2024315", date(2024, 3, 15)),  # strptime's reading, kept by the fast path
        ("date:%d %B %Y", "31 March 2024", date(2024, 3, 31)),
        ("date:%m/%d/%Y", "03/31/2024", date(2024, 3, 31)),
        ("datetime", "2024-03-31T14:05:00", datetime(2024, 3, 31, 14, 5)),
        ("datetime", "2024-03-31 14:05:00+02:00", datetime(2024, 3, 31, 14, 5, tzinfo=timezone(timedelta(hours=2)))),
        ("datetime:%d/%m/%Y %H:%M", "31/03/2024 14:05", datetime(2024, 3, 31, 14, 5)),
        ("datetime:%d/%m/%YT%H:%M:%S", "31/03/2024t14:05:09", datetime(2024, 3, 31, 14, 5, 9)),
        ("datetime:%Y-%m-%dT%H:%M:%S%z", "2024-03-31T14:05:00+0000", datetime(2024, 3, 31, 14, 5, tzinfo=UTC)),
        ("number", "1,234.56", Decimal("1234.56")),
        ("number", "-1,234,567", Decimal("-1234567")),
        ("number", "+.5", Decimal("0.5")),
        ("number", "1234.5", Decimal("1234.5")),
        ("number", "1.5e3", Decimal("1500")),
        ("number:eu", "1.234,56", Decimal("1234.56")),
        ("number:eu", "1 234,56", Decimal("1234.56")),
        ("number:eu", "-0,5", Decimal("-0.5")),
        ("number:eu", "1234", Decimal("1234")),
        ("currency", "$1,234.56", Decimal("1234.56")),
        ("currency", "USD 1,234.56", Decimal("1234.56")),
        ("currency", "1,234.56 USD", Decimal("1234.56")),
        ("currency", "US$12", Decimal("12")),
        ("currency", "(12.50)", Decimal("-12.50")),
        ("currency", "($12.50)", Decimal("-12.50")),
        ("currency", "-12.50", Decimal("-12.50")),
        ("currency", "-$12.50", Decimal("-12.50")),
        ("currency", "$-12.50", Decimal("-12.50")),
        ("currency", "£0.99", Decimal("0.99")),
        ("currency", "42", Decimal("42")),
        ("currency:eu", "1.234,56 €", Decimal("1234.56")),
        ("currency:eu", "EUR -12,50", Decimal("-12.50")),
        ("currency:eu", "€1.234,5", Decimal("1234.5")),
        ("currency:eu", "1 234,56 kr", Decimal("1234.56")),
        ("integer", "42", 42),
        ("integer", "-7", -7),
        ("integer", "1,234", 1234),
        ("integer", "12.0", 12),
        ("boolean", "TRUE", True),
        ("boolean", "Yes", True),
        ("boolean", "y", True),
        ("boolean", "1", True),
        ("boolean", "false", False),
        ("boolean", "NO", False),
        ("boolean", "n", False),
        ("boolean", " 0 ", False),
    ],
)
def test_source_format_reads(spec: str, text: str, expected: object) -> None:
    result = parse_format(spec)(text)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("spec", ["date", "date:%d/%m/%Y", "datetime:%d/%m/%Y %H:%M", "number", "number:eu"])
@pytest.mark.parametrize("empty", ["", "   ", None])
def test_source_format_empty_is_none(spec: str, empty: str | None) -> None:
    assert parse_format(spec)(empty) is None


@pytest.mark.parametrize("spec", ["currency", "currency:eu", "integer", "boolean"])
def test_other_source_formats_empty_is_none(spec: str) -> None:
    assert parse_format(spec)("") is None
    assert parse_format(spec)(None) is None


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ("date:%d/%m/%Y", date(2024, 3, 31), date(2024, 3, 31)),
        ("date:%d/%m/%Y", datetime(2024, 3, 31, 10), date(2024, 3, 31)),
        ("datetime:%d/%m/%Y", date(2024, 3, 31), datetime(2024, 3, 31)),
        ("number", 12, Decimal(12)),
        ("number", 0.1, Decimal("0.1")),
        ("currency", Decimal("3.10"), Decimal("3.10")),
        ("integer", 5, 5),
        ("boolean", True, True),
        ("boolean", 0, False),
    ],
)
def test_source_format_passes_typed_values(spec: str, value: object, expected: object) -> None:
    assert parse_format(spec)(value) == expected


@pytest.mark.parametrize(
    ("spec", "text", "message"),
    [
        ("date", "31/03/2024", "'31/03/2024' is not a date (expected ISO-8601"),
        ("date:%d/%m/%Y", "2024-03-31", "'2024-03-31' is not a date in format '%d/%m/%Y'"),
        ("date:%d/%m/%Y", "31/02/2024", "'31/02/2024' is not a date in format '%d/%m/%Y'"),
        ("date:%d/%m/%Y", "31/03/2024 junk", "is not a date in format"),
        ("date:%d/%m/%Y", 20240331, "20240331 is not a date in format '%d/%m/%Y'"),
        ("datetime:%d/%m/%Y %H:%M", "31/03/2024 24:00", "is not a datetime in format '%d/%m/%Y %H:%M'"),
        ("datetime", "yesterday", "'yesterday' is not a date"),
        ("number", "1.234,56", "'1.234,56' is not a number (expected e.g. 1,234.56)"),
        ("number", "12,34", "'12,34' is not a number"),
        ("number", "abc", "'abc' is not a number"),
        ("number", "nan", "'nan' is not a number"),
        ("number", "-", "'-' is not a number"),
        ("number:eu", "1,234.56", "'1,234.56' is not a number (expected e.g. 1.234,56)"),
        ("currency", "1.234,56 €", "'1.234,56 €' is not a currency amount (expected e.g. $1,234.56)"),
        ("currency", "$12 USD", "is not a currency amount"),
        ("currency", "(-12)", "two signs"),
        ("currency", "$", "is not a currency amount"),
        ("currency:eu", "$1,234.56", "is not a currency amount (expected e.g. 1.234,56 €)"),
        ("integer", "12.5", "'12.5' is not a whole number"),
        ("integer", "twelve", "'twelve' is not a number"),
        ("integer", True, "True is not a number"),
        ("boolean", "maybe", "'maybe' is not a boolean (expected true/false, yes/no, y/n or 1/0)"),
        ("boolean", 2, "2 is not a boolean"),
    ],
)
def test_source_format_refuses_bad_values(spec: str, text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_format(spec)(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dat:%d", "unknown source format 'dat:%d'"),
        ("numbr", "(did you mean 'number'?)"),
        ("number:us", "unknown source format 'number:us'"),
        ("integer:eu", "unknown source format 'integer:eu'"),
        ("date:", "a date format must be non-empty text"),
        ("date:%d/%q/%Y", "unknown directive '%q'"),
        ("", "unknown source format ''"),
    ],
)
def test_parse_format_refuses_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_format(spec)
    assert message in str(caught.value)
    if "directive" not in message and "non-empty" not in message:
        assert "allowed: " in str(caught.value) and "currency:eu" in str(caught.value)


def test_source_formats_are_documented() -> None:
    for form in ("date:<strftime>", "datetime:<strftime>", "number", "number:eu", "currency", "currency:eu"):
        assert SOURCE_FORMATS[form]
    assert "integer" in SOURCE_FORMATS and "boolean" in SOURCE_FORMATS


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("text", "abc", "abc"),
        ("text", 12, "12"),
        ("text", True, "true"),
        ("text", Decimal("1.50"), "1.50"),
        ("text", date(2024, 3, 31), "2024-03-31"),
        ("integer", 7, 7),
        ("integer", 7.0, 7),
        ("integer", Decimal("7.00"), 7),
        ("integer", "1,234", 1234),
        ("integer", " 42 ", 42),
        ("number", 1.5, 1.5),
        ("number", 2, 2.0),
        ("number", Decimal("0.1"), 0.1),
        ("number", "1,234.5", 1234.5),
        ("number", " -3.25 ", -3.25),
        ("currency", 0.1 + 0.2, Decimal("0.30")),
        ("currency", 2.675, Decimal("2.68")),
        ("currency", "$1,234.567", Decimal("1234.57")),
        ("currency", 5, Decimal("5.00")),
        ("boolean", "Yes", True),
        ("boolean", "0", False),
        ("boolean", 1, True),
        ("boolean", False, False),
        ("date", date(2024, 3, 31), date(2024, 3, 31)),
        ("date", datetime(2024, 3, 31, 23, 59), date(2024, 3, 31)),
        ("date", "2024-03-31", date(2024, 3, 31)),
        ("date", "2024-03-31T10:00:00Z", date(2024, 3, 31)),
        ("datetime", datetime(2024, 3, 31, 1, 2, 3), datetime(2024, 3, 31, 1, 2, 3)),
        ("datetime", date(2024, 3, 31), datetime(2024, 3, 31)),
        ("datetime", "2024-03-31T10:00:00Z", datetime(2024, 3, 31, 10, tzinfo=UTC)),
        ("json", {"a": [1, 2]}, {"a": [1, 2]}),
        ("json", "x", "x"),
    ],
)
def test_target_types_convert(type_name: str, value: object, expected: object) -> None:
    result = to_target_type(type_name)(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("type_name", TARGET_TYPES)
def test_target_types_keep_none(type_name: str) -> None:
    assert to_target_type(type_name)(None) is None


@pytest.mark.parametrize(
    ("type_name", "value", "message"),
    [
        ("integer", 1.5, "1.5 is not a whole number"),
        ("integer", "1.5", "'1.5' is not a whole number"),
        ("integer", True, "True is not a number"),
        ("integer", "abc", "'abc' is not a number"),
        ("number", "abc", "'abc' is not a number"),
        ("number", "1_000", "'1_000' is not a number"),
        ("number", "inf", "'inf' is not a number"),
        ("number", float("nan"), "nan is not a finite number"),
        ("number", [1], "[1] is not a number"),
        ("currency", "12 apples", "is not a currency amount"),
        ("currency", float("inf"), "inf is not a finite number"),
        ("boolean", "perhaps", "'perhaps' is not a boolean"),
        ("date", "31/03/2024", "'31/03/2024' is not a date"),
        ("date", 20240331, "20240331 is not a date"),
        ("datetime", "noon", "'noon' is not a date"),
    ],
)
def test_target_types_refuse_bad_values(type_name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        to_target_type(type_name)(value)
    assert message in str(caught.value)


def test_unknown_target_type() -> None:
    with pytest.raises(ValueError) as caught:
        to_target_type("interger")
    assert "unknown target type 'interger' (did you mean 'integer'?)" in str(caught.value)
    assert "types: text, integer, number, currency, boolean, date, datetime, json" in str(caught.value)
