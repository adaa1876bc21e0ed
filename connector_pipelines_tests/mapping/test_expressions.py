"""The safe expression language: what it accepts, what it refuses (and how it says so), how it evaluates."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from connector_pipelines.mapping import ExpressionError, parse_expression


def refused(text: str) -> str:
    """The message parse_expression gives for text it must refuse."""
    with pytest.raises(ExpressionError) as caught:
        parse_expression(text)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


def test_parse_reports_columns_and_lookups() -> None:
    expression = parse_expression(
        "concat(upper(trim(first_name)), ' ', lookup('owner_email', owner_id), column('A B'))"
    )
    assert expression.columns == frozenset({"first_name", "owner_id", "A B"})
    assert expression.lookups == frozenset({"owner_email"})
    assert expression.text.startswith("concat(")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'x'", "x"),
        ("12", 12),
        ("-1.5", -1.5),
        ("true", True),
        ("False", False),
        ("null", None),
        ("None", None),
        ("concat('a', 'b')", "ab"),  # computed once, when parsed
        ("number_format(-1234.5, 1)", "-1,234.5"),
    ],
)
def test_constant_expressions(text: str, expected: object) -> None:
    values, errors = parse_expression(text).evaluate({}, 3, {})
    assert values == [expected] * 3
    assert errors == {}


def test_unknown_function_with_did_you_mean() -> None:
    message = refused("uper(name)")
    assert message.startswith("unknown function 'uper' at column 1 (did you mean 'upper'?); functions: concat, upper")
    assert "date_format" in message


def test_dunder_import_is_an_unknown_function() -> None:
    message = refused("__import__('os')")
    assert message.startswith("unknown function '__import__' at column 1; functions: ")


def test_method_call_is_refused() -> None:
    message = refused("name.upper()")
    assert "attribute access or method call 'name.upper' is not allowed at column 1" in message
    assert "call library functions by name, e.g. upper(name)" in message


def test_attribute_access_is_refused() -> None:
    message = refused("upper(x.__class__)")
    assert "attribute access in 'x.__class__' is not allowed at column 7" in message


def test_operator_is_refused() -> None:
    message = refused("a + b")
    assert message == "operator '+' in 'a + b' is not allowed at column 1; use functions such as concat"
    assert "operator '*'" in refused("concat(a, b * 2)")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("lambda: 1", "lambda in 'lambda: 1' is not allowed at column 1"),
        ("upper(lambda x: x)", "lambda in 'lambda x: x' is not allowed at column 7"),
        ("[c for c in name]", "a comprehension in '[c for c in name]' is not allowed at column 1"),
        ("name[0]", "indexing with [] (use substring or left/right) in 'name[0]' is not allowed"),
        ("a if b else c", "'x if c else y' (use coalesce, default or if_empty)"),
        ("a or b", "'and'/'or' (use coalesce, default or if_empty)"),
        ("a == b", "a comparison in 'a == b' is not allowed"),
        ("f'{a}'", "an f-string (use concat)"),
        ("(a, b)", "a tuple in '(a, b)' is not allowed"),
        ("{'a': 1}", "a dict"),
        ("b'x'", "constant b'x' is not allowed at column 1"),
        ("1j", "constant 1j is not allowed"),
        ("-name", "'-name' is not allowed at column 1; a unary minus may only precede a number"),
        ("not a", "'not a' is not allowed"),
        ("upper(*names)", "upper: '*' unpacking is not allowed at column 7; usage: upper(value)"),
        ("upper(value=name)", "upper: keyword arguments are not allowed at column 1; usage: upper(value)"),
        ("(lambda: 1)()", "calling 'lambda: 1' is not allowed"),
        ("upper(", "invalid expression 'upper(': '(' was never closed at column 6"),
        ("", "an expression must be non-empty text"),
        ("x := 1", "invalid expression"),
    ],
)
def test_refused_syntax(text: str, fragment: str) -> None:
    message = refused(text)
    assert fragment in message
    if "invalid expression" in fragment or fragment.startswith("an expression"):
        assert "an expression is a column name" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("upper(a, b)", "upper takes 1 argument, got 2 at column 1; usage: upper(value)"),
        ("upper()", "upper takes 1 argument, got 0"),
        (
            "substring(a)",
            "substring takes 2 to 3 arguments, got 1 at column 1; usage: substring(value, start[, length])",
        ),
        ("concat()", "concat takes at least 1 argument, got 0"),
        ("date_format(a)", "date_format takes 2 arguments, got 1"),
    ],
)
def test_wrong_arity(text: str, fragment: str) -> None:
    assert fragment in refused(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("date_format(d, '%d/%q')", "date_format: date format '%d/%q' has an unknown directive '%q' at column 16"),
        ("number_format(n, -1)", "number_format: decimals must be at least 0, got -1 at column 18"),
        ("substring(s, 0, 2)", "substring: substring start must be at least 1, got 0"),
        ("lookup(table, x)", "lookup: the first argument must be a name in quotes at column 8"),
        ("column(name)", "column: the first argument must be a name in quotes"),
        ("date_format('2024-13-45', '%Y')", "date_format: '2024-13-45' is not a date"),
        ("currency_format(x, '$', 2, 'yes')", "currency_format: expected true or false, got 'yes'"),
    ],
)
def test_bad_constant_arguments_are_load_time_errors(text: str, fragment: str) -> None:
    assert fragment in refused(text)


def test_column_offset_counts_leading_spaces() -> None:
    assert "at column 3" in refused("  uper(x)")


def test_deep_nesting_is_an_expression_error() -> None:
    message = refused("upper(" * 5000 + "x" + ")" * 5000)
    assert "nested too deeply" in message or "too many nested parentheses" in message


def test_evaluation_is_column_wise_and_returns_the_column_for_a_name() -> None:
    names = [" ada ", "Grace", None]
    expression = parse_expression("name")
    values, errors = expression.evaluate({"name": names}, 3, {})
    assert values is names  # no copy for a bare column: the engine copies when it must
    values, errors = parse_expression("upper(trim(name))").evaluate({"name": names}, 3, {})
    assert values == ["ADA", "GRACE", None]
    assert errors == {}


def test_one_bad_date_fails_only_its_row() -> None:
    created = ["2024-03-31", "2024-13-45", date(2024, 1, 2), None, "2023-12-25T08:00:00"]
    values, errors = parse_expression("date_format(created_at, '%d/%m/%Y')").evaluate({"created_at": created}, 5, {})
    assert values == ["31/03/2024", None, "02/01/2024", None, "25/12/2023"]
    assert errors == {1: "date_format: '2024-13-45' is not a date (expected ISO-8601 such as 2024-03-31)"}


def test_failed_argument_row_stays_failed_with_its_first_reason() -> None:
    # concat would turn the failed (None) inner value into 'x'; the row must stay failed and keep the inner reason.
    expression = parse_expression("concat(date_format(d, '%Y'), 'x', number_format(n))")
    values, errors = expression.evaluate({"d": ["2024-01-01", "bad", "2024-01-01"], "n": [1, 2, "nope"]}, 3, {})
    assert values == ["2024x1.00", None, None]
    assert errors[1].startswith("date_format: 'bad' is not a date")
    assert errors[2] == "number_format: 'nope' is not a number (expected e.g. 1,234.56)"


def test_per_row_fallback_with_arguments_from_columns() -> None:
    expression = parse_expression("substring(code, start, 2)")
    values, errors = expression.evaluate({"code": ["abcdef", "abcdef", "xyz"], "start": [2, 0, 3]}, 3, {})
    assert values == ["bc", None, "z"]
    assert errors == {1: "substring: substring start must be at least 1, got 0"}


def test_coalesce_and_if_empty_over_columns() -> None:
    columns = {"email": [None, "", "a@example.com"], "backup": ["b@example.com", "c@example.com", None]}
    values, _ = parse_expression("coalesce(email, backup, 'unknown@example.com')").evaluate(columns, 3, {})
    assert values == ["b@example.com", "", "a@example.com"]
    values, _ = parse_expression("if_empty(email, 'unknown@example.com')").evaluate(columns, 3, {})
    assert values == ["unknown@example.com", "unknown@example.com", "a@example.com"]


def test_number_format_over_a_column_of_mixed_numbers() -> None:
    balances = [1234.5, Decimal("0.005"), 7, "1,000", None, 0.1 + 0.2]
    values, errors = parse_expression("number_format(balance, 2)").evaluate({"balance": balances}, 6, {})
    assert values == ["1,234.50", "0.01", "7.00", "1,000.00", None, "0.30"]
    assert errors == {}


def test_lookup_hit_miss_and_text_keys() -> None:
    expression = parse_expression("lookup('owner_email', owner_id)")
    lookups = {"owner_email": {"7": "ann@example.com", 8: "bob@example.com"}}
    values, errors = expression.evaluate({"owner_id": [7, 8, "7", 9, None]}, 5, lookups)
    assert values == ["ann@example.com", "bob@example.com", "ann@example.com", None, None]
    assert errors == {}


def test_lookup_with_unhashable_key_fails_its_row_only() -> None:
    expression = parse_expression("lookup('owner', owner_id)")
    values, errors = expression.evaluate({"owner_id": [1, [2]]}, 2, {"owner": {1: "one"}})
    assert values == ["one", None]
    assert errors[1].startswith("lookup: ") and "unhashable" in errors[1]


def test_missing_lookup_table_or_column_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="lookup 'owner' was not provided; provided lookups: none"):
        parse_expression("lookup('owner', owner_id)").evaluate({"owner_id": [1]}, 1, {})
    with pytest.raises(ExpressionError, match=r"column 'nmae' is not in the data \(did you mean 'name'\?\)"):
        parse_expression("upper(nmae)").evaluate({"name": ["a"]}, 1, {})


def test_column_function_reads_names_with_spaces() -> None:
    values, _ = parse_expression("upper(column('First Name'))").evaluate({"First Name": ["ada"]}, 1, {})
    assert values == ["ADA"]


def test_evaluation_of_many_rows_stays_correct() -> None:
    n_rows = 20_000
    dates = [f"2024-01-{day % 28 + 1:02d}" for day in range(n_rows)]
    dates[12_345] = "not a date"
    values, errors = parse_expression("date_format(d, '%d/%m')").evaluate({"d": dates}, n_rows, {})
    assert list(errors) == [12_345]
    assert values[12_345] is None
    assert values[0] == "01/01" and values[-1] == dates[-1][8:] + "/01"


# --------------------------------------------------------------------------------------------------
# Size limits: text an expression holds, computes at load, or multiplies at run time


def test_a_text_constant_longer_than_the_limit_is_refused() -> None:
    assert parse_expression("'" + "x" * 10_000 + "'").evaluate({}, 1)[0] == ["x" * 10_000]
    assert refused("concat(name, '" + "x" * 10_001 + "')") == (
        "a text constant of 10,001 characters is longer than the 10,000 an expression may hold at column 14; "
        "put long text in a `constant:` rule or a lookup table"
    )


def test_nested_replaces_of_a_constant_are_capped_before_they_are_computed() -> None:
    # Each level multiplies the length by ten: six levels are 10**7 characters, and each further level makes it ten
    # times as much, all computed at load.
    text = "'aaaaaaaaaa'"
    for _ in range(6):
        text = f"replace({text}, 'a', 'aaaaaaaaaa')"
    message = refused(text)
    assert message.startswith("replace: 'replace(replace(replace(")
    assert message.endswith(
        "makes a text of 100,000 characters at load, longer than the 10,000 an expression may compute at column 17; "
        "compute shorter text, or put it in a `constant:` rule"
    )
    # Within the limit, the constant is folded as before.
    assert parse_expression("replace(replace('aa', 'a', 'aaaa'), 'a', 'bb')").evaluate({}, 1)[0] == ["b" * 16]


def test_folded_concat_longer_than_the_limit_is_refused() -> None:
    half = "x" * 6_000
    assert "makes a text of 12,000 characters at load" in refused(f"concat('{half}', '{half}')")


def test_nested_replaces_of_a_column_may_grow_a_value_at_most_a_thousand_times() -> None:
    ten = "'" + "b" * 10 + "'"
    allowed = parse_expression(f"replace(replace(replace(name, 'a', {ten}), 'b', {ten}), 'c', {ten})")
    assert allowed.evaluate({"name": ["a"]}, 1) == (["b" * 100], {})  # 10 * 10 * 10: the most allowed
    message = refused(f"replace(replace(replace(replace(name, 'a', {ten}), 'b', {ten}), 'b', {ten}), 'b', {ten})")
    assert message == (
        "replace: 'replace(replace(replace(replace(name, 'a', 'bbbbbbbbbb'),...' can make a value up to 10,000 "
        "times longer (each replace multiplies the length by len(new) / len(old)); at most 1,000 times is allowed "
        "at column 1; replace shorter text, or fewer times"
    )
    # An `old` read from a column may be one character long: the bound takes the worst case.
    assert "up to 1,001 times longer" in refused("replace(name, other, '" + "b" * 1_001 + "')")
