"""The expression function library: every function with real values, nulls and bad values."""

from __future__ import annotations

import random
from datetime import date, datetime
from decimal import Decimal

import pytest

from connector_pipelines.mapping import FUNCTIONS, parse_expression


def call(name: str, *args: object) -> object:
    """Call a library function the way the engine does for one row."""
    return FUNCTIONS[name].func(*args)


def evaluate(text: str, **columns: list) -> tuple[list, dict[int, str]]:
    """Evaluate an expression over columns given as keyword lists."""
    n_rows = len(next(iter(columns.values()))) if columns else 1
    return parse_expression(text).evaluate(columns, n_rows, {})


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("concat", ("Ada", " ", "Lovelace"), "Ada Lovelace"),
        ("concat", ("Ada", None, "!"), "Ada!"),
        ("concat", (None, None), ""),
        ("concat", ("n=", 3, " ", True, " ", Decimal("1.50"), " ", date(2024, 3, 31)), "n=3 true 1.50 2024-03-31"),
        ("upper", ("straße",), "STRASSE"),
        ("upper", (12,), "12"),
        ("upper", (None,), None),
        ("lower", ("ÀB",), "àb"),
        ("lower", (None,), None),
        ("trim", ("  a b \t\n",), "a b"),
        ("trim", ("--a--", "-"), "a"),
        ("trim", (None,), None),
        ("coalesce", (None, None, "x", "y"), "x"),
        ("coalesce", (None, ""), ""),
        ("coalesce", (None, None), None),
        ("default", (None, "n/a"), "n/a"),
        ("default", ("", "n/a"), ""),
        ("default", (0, 5), 0),
        ("if_empty", ("", "n/a"), "n/a"),
        ("if_empty", (None, "n/a"), "n/a"),
        ("if_empty", ("x", "n/a"), "x"),
        ("if_empty", (0, "n/a"), 0),
        ("substring", ("abcdef", 2, 3), "bcd"),
        ("substring", ("abcdef", 1, 1), "a"),
        ("substring", ("abcdef", 4), "def"),
        ("substring", ("abc", 10, 2), ""),
        ("substring", (None, 1, 2), None),
        ("replace", ("a-b-c", "-", "/"), "a/b/c"),
        ("replace", ("a-b", "-", ""), "ab"),
        ("replace", (None, "-", "/"), None),
        ("left", ("abcdef", 2), "ab"),
        ("left", ("ab", 5), "ab"),
        ("left", (None, 2), None),
        ("right", ("abcdef", 2), "ef"),
        ("right", ("abcdef", 0), ""),
        ("right", (None, 2), None),
        ("length", ("héllo",), 5),
        ("length", (12345,), 5),
        ("length", (None,), None),
        ("to_text", (None,), None),
        ("to_text", (False,), "false"),
        ("to_text", (Decimal("1E+2"),), "100"),
        ("to_text", (datetime(2024, 3, 31, 14, 5),), "2024-03-31T14:05:00"),
        ("to_text", ({"a": [1, "é"]},), '{"a": [1, "é"]}'),
        ("to_number", ("1,234.56",), Decimal("1234.56")),
        ("to_number", (0.1,), Decimal("0.1")),
        ("to_number", (7,), Decimal(7)),
        ("to_number", ("",), None),
        ("to_number", (None,), None),
        ("to_integer", ("1,234",), 1234),
        ("to_integer", ("12.0",), 12),
        ("to_integer", (3.0,), 3),
        ("to_integer", ("",), None),
        ("to_integer", (None,), None),
        ("round", (2.5,), 3),
        ("round", (-2.5,), -3),
        ("round", (2.675, 2), Decimal("2.68")),
        ("round", ("1,234.5678", 1), Decimal("1234.6")),
        ("round", (1234, -2), 1200),
        ("round", (None, 2), None),
        ("number_format", (1234.5,), "1,234.50"),
        ("number_format", (1234.5, 0), "1,235"),
        ("number_format", (0.1 + 0.2, 2), "0.30"),
        ("number_format", (2.675, 2), "2.68"),
        ("number_format", (-0.001, 2), "0.00"),
        ("number_format", (-1234567.891, 2), "-1,234,567.89"),
        ("number_format", (1234567.891, 2, ",", "."), "1.234.567,89"),
        ("number_format", (1234567.891, 1, ".", ""), "1234567.9"),
        ("number_format", (Decimal("1e3"), 1), "1,000.0"),
        ("number_format", ("1,234.5", 2), "1,234.50"),
        ("number_format", (12, 3), "12.000"),
        ("number_format", (None,), None),
        ("currency_format", (1234.5,), "$1,234.50"),
        ("currency_format", (-3,), "-$3.00"),
        ("currency_format", (1234.5, "€", 2, True, ",", "."), "1.234,50 €"),
        ("currency_format", (-1234.5, "€", 2, True, ",", "."), "-1.234,50 €"),
        ("currency_format", (12, "USD"), "USD 12.00"),
        ("currency_format", (12, "£", 0), "£12"),
        ("currency_format", (12, ""), "12.00"),
        ("currency_format", (None, "€"), None),
        ("date_format", (date(2024, 3, 31), "%d/%m/%Y"), "31/03/2024"),
        ("date_format", (datetime(2024, 3, 31, 14, 5, 9), "%Y-%m-%d %H:%M:%S"), "2024-03-31 14:05:09"),
        ("date_format", ("2024-03-31T14:05:00", "%d.%m.%Y %H:%M"), "31.03.2024 14:05"),
        ("date_format", ("2024-03-31", "%B %d, %Y"), "March 31, 2024"),
        ("date_format", ("2024-03-31", "week %W, 100%%"), "week 13, 100%"),
        ("date_format", (None, "%d/%m/%Y"), None),
        ("date_format", ("", "%d/%m/%Y"), None),
        ("parse_date", ("31/03/2024", "%d/%m/%Y"), date(2024, 3, 31)),
        ("parse_date", ("1/3/2024", "%d/%m/%Y"), date(2024, 3, 1)),
        ("parse_date", ("31 Mar 2024", "%d %b %Y"), date(2024, 3, 31)),
        ("parse_date", (None, "%d/%m/%Y"), None),
        ("parse_date", (date(2024, 1, 2), "%d/%m/%Y"), date(2024, 1, 2)),
        ("parse_datetime", ("31/03/2024 14:05", "%d/%m/%Y %H:%M"), datetime(2024, 3, 31, 14, 5)),
        ("parse_datetime", ("20240331T140509", "%Y%m%dT%H%M%S"), datetime(2024, 3, 31, 14, 5, 9)),
        ("parse_datetime", ("", "%d/%m/%Y %H:%M"), None),
        ("lookup", ({"1": "ann@example.com"}, "1"), "ann@example.com"),
        ("lookup", ({"1": "ann@example.com"}, 1), "ann@example.com"),
        ("lookup", ({"1": "ann@example.com"}, "2"), None),
        ("lookup", ({"1": "ann@example.com"}, None), None),
    ],
)
def test_function_values(name: str, args: tuple, expected: object) -> None:
    result = call(name, *args)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("substring", ("abc", 0, 1), "substring start must be at least 1, got 0"),
        ("substring", ("abc", "2"), "substring start must be a whole number, got '2'"),
        ("substring", ("abc", 1, -1), "substring length must be at least 0"),
        ("left", ("abc", 1.5), "left count must be a whole number, got 1.5"),
        ("right", ("abc", None), "right count must be a whole number, got None"),
        ("replace", ("abc", "", "x"), "must be non-empty text"),
        ("to_number", ("12abc",), "'12abc' is not a number"),
        ("to_number", (float("nan"),), "is not a finite number"),
        ("to_number", (True,), "True is not a number"),
        ("to_integer", ("1.5",), "'1.5' is not a whole number"),
        ("to_integer", (2.5,), "2.5 is not a whole number"),
        ("round", ("x",), "'x' is not a number"),
        ("number_format", ("abc",), "'abc' is not a number"),
        ("number_format", (1, -1), "decimals must be at least 0"),
        ("number_format", (1, 2, 3), "decimal separator must be text"),
        ("number_format", (Decimal("1e40"),), "too large"),
        ("currency_format", (1, "$", 2, "yes"), "symbol_after must be true or false"),
        ("date_format", ("2024-13-45", "%d/%m/%Y"), "'2024-13-45' is not a date"),
        ("date_format", (12, "%d/%m/%Y"), "12 is not a date"),
        ("date_format", ("2024-03-31", "%Q"), "unknown directive '%Q'"),
        ("parse_date", ("31/02/2024", "%d/%m/%Y"), "'31/02/2024' is not a date in format '%d/%m/%Y'"),
        ("parse_date", ("2024-03-31", "%d/%m/%Y"), "is not a date in format"),
        ("parse_datetime", ("31/03/2024 25:00", "%d/%m/%Y %H:%M"), "is not a datetime in format"),
        ("lookup", ({}, ["unhashable"]), "unhashable"),
    ],
)
def test_function_errors(name: str, args: tuple, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=None) as caught:
        call(name, *args)
    assert message in str(caught.value)


def test_every_library_function_is_covered_and_documented() -> None:
    tested = {"concat", "upper", "lower", "trim", "coalesce", "default", "if_empty", "substring", "replace"}
    tested |= {"left", "right", "length", "to_text", "to_number", "to_integer", "round", "number_format"}
    tested |= {"currency_format", "date_format", "parse_date", "parse_datetime", "lookup", "column"}
    tested |= {"equals", "map_values"}
    assert set(FUNCTIONS) == tested
    for spec in FUNCTIONS.values():
        assert spec.doc and "\n" not in spec.doc
        assert spec.usage.startswith(f"{spec.name}(")


def test_number_format_of_floats_matches_decimal_rounding() -> None:
    # Floats take a faster path than Decimals; both must print the same text, ties included (2.675 -> 2.68).
    rnd = random.Random(7)
    values = [0.1 + 0.2, 2.675, 1.005, 0.125, -0.125, -0.004, -0.0, 1e15, 4e10 + 0.005, 123456789.125]
    for _ in range(3000):
        values.append(rnd.uniform(-1e6, 1e6))
        values.append(rnd.randint(-(10**7), 10**7) / 1000)
        values.append(rnd.randint(-(10**7), 10**7) / 200)
        values.append(rnd.uniform(-1, 1) * 10 ** rnd.randint(-6, 16))
    for value in values:
        for decimals in (0, 1, 2, 3, 6):
            expected = call("number_format", Decimal(repr(value)), decimals)
            assert call("number_format", value, decimals) == expected, (value, decimals)


def test_bound_and_per_row_calls_agree() -> None:
    # With constant arguments the engine binds them once; a format read from a column goes row by row.
    moments = [datetime(2024, 3, 31, 14, 5), date(2024, 1, 2), "2023-12-25T08:00:00", None]
    bound, _ = evaluate("date_format(moment, '%d/%m/%Y %H:%M')", moment=moments)
    per_row, _ = evaluate("date_format(moment, fmt)", moment=moments, fmt=["%d/%m/%Y %H:%M"] * 4)
    assert bound == per_row == ["31/03/2024 14:05", "02/01/2024 00:00", "25/12/2023 08:00", None]
    amounts = [1234.5, Decimal("-0.005"), "7", None]
    bound, _ = evaluate("currency_format(amount, '€', 2, true, ',', '.')", amount=amounts)
    per_row, _ = evaluate("currency_format(amount, symbol, 2, true, ',', '.')", amount=amounts, symbol=["€"] * 4)
    assert bound == per_row == ["1.234,50 €", "-0,01 €", "7,00 €", None]


def test_date_format_of_dates_only_reuses_texts_per_day() -> None:
    days = [datetime(2024, 3, 31, hour) for hour in range(24)] + [datetime(2024, 4, 1, 0, 0, 1)]
    values, errors = evaluate("date_format(day, '%Y/%m/%d')", day=days)
    assert errors == {}
    assert values == ["2024/03/31"] * 24 + ["2024/04/01"]


def test_equals_compares_text_as_text_and_numbers_as_numbers():
    from connector_pipelines.mapping.functions import equals

    assert equals("active", "active") is True
    assert equals("active", "Active") is False
    assert equals(3, 3.0) is True
    assert equals(3, "3") is True  # a number column against a text constant
    assert equals(None, "x") is None


def test_map_values_maps_pairs_with_an_optional_default():
    from connector_pipelines.mapping.functions import map_values

    assert map_values("trial", "active", "A", "trial", "T") == "T"
    assert map_values("churned", "active", "A", "trial", "T") is None
    assert map_values("churned", "active", "A", "trial", "T", "other") == "other"
    assert map_values(None, "active", "A", "none") == "none"
