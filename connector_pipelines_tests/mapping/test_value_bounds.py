"""Bounds on what one value may cost in conversions and library functions: refused fast, with the reason."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from connector_pipelines.mapping import CompiledMapping, FieldRule, TargetField
from connector_pipelines.mapping.conversions import (
    INT64_MAX,
    INT64_MIN,
    MAX_NUMBER_CHARS,
    parse_format,
    to_currency,
    to_decimal,
    to_integer,
    to_number,
)
from connector_pipelines.mapping.functions import MAX_RESULT_CHARS, concat, replace

INT64_RANGE = "beyond the 64-bit integer range (-9,223,372,036,854,775,808 to 9,223,372,036,854,775,807)"


def refused(call, *args) -> str:
    """The ValueError's message, and that it came in well under a second."""
    started = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        call(*args)
    assert time.perf_counter() - started < 0.1
    return str(caught.value)


def test_a_huge_exponent_is_refused_at_once_not_computed():
    """The issue's case: to_integer('1e1000000') took 33 s building a million-digit int."""
    assert refused(to_integer, "1e1000000") == (
        "'1e1000000' is out of range: numbers are read between 1e-1000 and 1e1000"
    )
    for call in (to_number, to_decimal, parse_format("number"), parse_format("integer")):
        assert "is out of range" in refused(call, "1e1000000")
    assert "is too large for a currency amount" in refused(to_currency, Decimal("1e1000"))
    assert "is out of range" in refused(to_integer, "1e-1000000")
    assert to_integer("0e1000000") == 0  # zero is zero whatever its exponent


def test_integers_beyond_64_bits_are_refused_and_the_edges_kept():
    assert to_integer(str(INT64_MAX)) == INT64_MAX and to_integer(str(INT64_MIN)) == INT64_MIN
    assert to_integer(INT64_MAX) == INT64_MAX and to_integer("9.223372036854775807e18") == INT64_MAX
    for value in (str(INT64_MAX + 1), str(INT64_MIN - 1), "99999999999999999999", INT64_MAX + 1, 1e300, "1e19"):
        message = refused(to_integer, value)
        assert INT64_RANGE in message and message.endswith("; map it as number or text")


def test_long_number_text_is_refused_before_any_parsing():
    digits = "1" * (MAX_NUMBER_CHARS + 1)
    message = refused(to_decimal, digits)
    assert message.endswith(f"is too long to be a number ({MAX_NUMBER_CHARS + 1:,} characters; at most 1,000)")
    # A megabyte of digits before a letter: the currency grammar never gets to backtrack over it.
    assert "is too long to be a number" in refused(parse_format("currency:eu"), "1" * 1_000_000 + "x")
    assert to_decimal("1" * 900) == Decimal("1" * 900)


def test_numbers_and_amounts_past_their_types_are_refused_not_left_to_fail_the_batch():
    assert refused(to_number, "1e400") == "'1e400' is too large for a number (at most about 1.8e308)"
    assert to_number("1.7e308") == 1.7e308
    assert refused(to_currency, "9" * 36 + ".999") == (
        f"'{'9' * 36}.999' is too large for a currency amount (at most 36 digits before the decimal point)"
    )
    # 30 digits did fail before: Python's default 28-digit context cannot quantize them to cents.
    assert to_currency("1" * 30) == Decimal("1" * 30 + ".00")
    assert to_currency("9" * 36 + ".994") == Decimal("9" * 36 + ".99")


def test_an_integer_overflow_is_a_failure_of_its_row_only():
    mapping = CompiledMapping(
        [FieldRule("id", source="id", parse="integer")], [TargetField("id", "integer", required=True)]
    )
    mapped = mapping.map_columns({"id": ["1", "99999999999999999999", "3"]}, 3)
    assert mapped.columns["id"] == [1, None, 3]
    assert mapped.errors[0] is None and mapped.errors[2] is None
    assert INT64_RANGE in mapped.errors[1]


def test_functions_refuse_text_longer_than_the_result_limit():
    cell = "a" * 1_000
    assert refused(replace, cell, "a", "b" * 1_001) == (
        f"replace would make a text of 1,001,000 characters; at most {MAX_RESULT_CHARS:,} are allowed"
    )
    assert replace(cell, "a", "b" * 1_000) == "b" * 1_000_000  # exactly the limit
    assert refused(concat, *[cell] * 1_001) == (
        f"concat would make a text of 1,001,000 characters; at most {MAX_RESULT_CHARS:,} are allowed"
    )
    assert "concat would make" in refused(concat, 7, *[cell] * 1_001)  # not all text: measured once converted
    assert concat("a", None, 1) == "a1"
