"""Data-quality expectations: GX results per kind, mostly, dates, construction errors, and row rejections.

Great Expectations takes seconds to import; the module caches one ephemeral context, so only the first test that
validates pays for it (the `gx_ready` fixture makes that explicit).
"""

from __future__ import annotations

import json
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from connector_pipelines.imports.expectations import Expectation, ExpectationResult, row_rejections, run_expectations


@pytest.fixture(scope="module", autouse=True)
def gx_ready() -> None:
    """Import GX and build the cached context once for the module, outside any one test's assertions."""
    run_expectations(pd.DataFrame({"a": [1]}), [Expectation("not_null", "a")])


def run_one(frame: pd.DataFrame, expectation: Expectation) -> ExpectationResult:
    (result,) = run_expectations(frame, [expectation])
    assert result.expectation == expectation
    json.dumps(result.details, allow_nan=False)  # details must always be metadata-ready
    json.dumps(result.sample_unexpected, allow_nan=False)
    return result


def rejected(frame: pd.DataFrame, expectation: Expectation) -> list[str | None]:
    return row_rejections(frame, [expectation])


PEOPLE = pd.DataFrame(
    {
        "email": ["a@x.com", None, "bad", "c@y.org", "d@z.net"],
        "country": ["US", "XX", None, "FR", "US"],
        "age": [30, 17, 45, 200, 52],
    }
)


# --- each kind, passing and failing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expectation", "unexpected", "element_count", "percent", "sample"),
    [
        (Expectation("not_null", "email"), 1, 5, 20.0, [None]),
        (Expectation("unique", "country"), 2, 5, 50.0, ["US", "US"]),  # of 4 non-null values
        (Expectation("in_set", "country", values=("US", "FR")), 1, 5, 25.0, ["XX"]),
        (Expectation("regex", "email", pattern=r"^[^@]+@[^@]+\.[a-z]+$"), 1, 5, 25.0, ["bad"]),
        (Expectation("between", "age", min=18, max=120), 2, 5, 40.0, [17, 200]),
        (Expectation("between", "age", min=18), 1, 5, 20.0, [17]),
        (Expectation("between", "age", max=120), 1, 5, 20.0, [200]),
    ],
)
def test_each_kind_fails_with_counts(
    expectation: Expectation, unexpected: int, element_count: int, percent: float, sample: list
) -> None:
    result = run_one(PEOPLE, expectation)
    assert not result.success
    assert result.unexpected_count == unexpected
    assert result.element_count == element_count
    assert result.unexpected_percent == pytest.approx(percent)
    assert result.sample_unexpected == sample
    assert result.details["kwargs"]["column"] == expectation.column
    assert result.details["result"]["unexpected_count"] == unexpected


@pytest.mark.parametrize(
    "expectation",
    [
        Expectation("not_null", "age"),
        Expectation("unique", "email"),  # the null is ignored, not a duplicate
        Expectation("in_set", "country", values=("US", "FR", "XX")),  # the null is ignored
        Expectation("regex", "email", pattern=r"@|bad"),
        Expectation("between", "age", min=17, max=200),  # inclusive
    ],
)
def test_each_kind_passes(expectation: Expectation) -> None:
    result = run_one(PEOPLE, expectation)
    assert result.success
    assert result.unexpected_count == 0
    assert result.unexpected_percent == 0.0
    assert result.sample_unexpected == []
    assert "error" not in result.details


def test_results_come_back_in_declaration_order_even_when_repeated() -> None:
    expectations = [
        Expectation("between", "age", max=120),
        Expectation("not_null", "email"),
        Expectation("unique", "country"),
        Expectation("not_null", "email"),
        Expectation("between", "age", max=120, description="again"),
    ]
    results = run_expectations(PEOPLE, expectations)
    assert [r.expectation for r in results] == expectations
    assert [r.unexpected_count for r in results] == [1, 1, 2, 1, 1]


def test_regex_searches_like_gx_rather_than_matching_the_whole_value() -> None:
    frame = pd.DataFrame({"code": ["ab-12", "xx-12-yy", "12", "ab"]})
    expectation = Expectation("regex", "code", pattern=r"\d\d")
    assert run_one(frame, expectation).unexpected_count == 1
    assert rejected(frame, expectation) == [None, None, None, "code: 'ab' does not match pattern '\\d\\d' (regex)"]


def test_sample_is_at_most_ten_values_read_from_the_frame_by_position() -> None:
    frame = pd.DataFrame({"n": range(100)}, index=range(1000, 1100))  # a filtered frame keeps its labels
    result = run_one(frame, Expectation("between", "n", max=49))
    assert result.unexpected_count == 50
    assert result.sample_unexpected == list(range(50, 60))


def test_missing_column_fails_the_check_and_rejects_every_row() -> None:
    expectation = Expectation("not_null", "phone")
    result = run_one(PEOPLE, expectation)
    assert not result.success
    assert "phone" in result.details["error"]
    assert rejected(PEOPLE, expectation) == ["phone: no such column (not_null)"] * 5


def test_the_callers_frame_is_left_alone() -> None:
    frame = pd.DataFrame({"n": ["1", "x", None], "d": ["2024-01-01", "nope", None]}, index=[7, 8, 9])
    before = frame.copy()
    expectations = [Expectation("between", "n", min=0), Expectation("between", "d", min="2023-01-01")]
    run_expectations(frame, expectations)
    row_rejections(frame, expectations)
    pd.testing.assert_frame_equal(frame, before)


def test_gx_progress_bars_and_logs_stay_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    run_expectations(
        PEOPLE, [Expectation("in_set", "country", values=("US",)), Expectation("regex", "email", pattern="(a)")]
    )
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err
    assert captured.out == ""


# --- mostly ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mostly", "success"), [(1.0, False), (0.8, True), (0.81, False), (0.0, True)])
def test_mostly_on_not_null_counts_every_row(mostly: float, success: bool) -> None:
    # 1 null in 5 rows: 80% pass.
    assert run_one(PEOPLE, Expectation("not_null", "email", mostly=mostly)).success is success


@pytest.mark.parametrize(("mostly", "success"), [(0.75, True), (0.76, False)])
def test_mostly_on_in_set_counts_non_null_rows(mostly: float, success: bool) -> None:
    # 1 bad value of 4 non-null ones: 75% pass (the null is neither good nor bad).
    result = run_one(PEOPLE, Expectation("in_set", "country", values=("US", "FR"), mostly=mostly))
    assert result.success is success
    assert result.unexpected_count == 1


def test_mostly_does_not_spare_bad_rows_from_rejection() -> None:
    expectation = Expectation("in_set", "country", values=("US", "FR"), mostly=0.5)
    assert run_one(PEOPLE, expectation).success
    assert rejected(PEOPLE, expectation) == [None, "country: 'XX' not in set (in_set)", None, None, None]


# --- between with dates --------------------------------------------------------------------------------------------


DATES = pd.DataFrame(
    {
        "iso": ["2024-01-15", "2023-12-31", "2024-12-31T23:30:00", "2025-01-01", None, "not a date", "2024-06-01"],
    }
)
YEAR_2024 = Expectation("between", "iso", min="2024-01-01", max="2024-12-31")


def test_between_dates_on_iso_strings_compares_calendar_days() -> None:
    result = run_one(DATES, YEAR_2024)
    # 2023-12-31 and 2025-01-01 are outside, "not a date" is not a date; 23:30 on 2024-12-31 is still that day.
    assert result.unexpected_count == 3
    assert result.element_count == 7
    assert result.sample_unexpected == ["2023-12-31", "2025-01-01", "not a date"]
    assert result.details["kwargs"]["column"] == "iso"
    assert rejected(DATES, YEAR_2024) == [
        None,
        "iso: '2023-12-31' below min 2024-01-01 (between)",
        None,
        "iso: '2025-01-01' above max 2024-12-31 (between)",
        None,
        "iso: 'not a date' not a date (between)",
        None,
    ]


def test_between_with_a_time_in_a_bound_compares_instants() -> None:
    expectation = Expectation("between", "iso", max="2024-12-31T12:00:00")
    result = run_one(DATES, expectation)
    assert result.sample_unexpected == ["2024-12-31T23:30:00", "2025-01-01", "not a date"]


def test_between_dates_on_datetime_columns_naive_and_aware() -> None:
    naive = pd.DataFrame({"at": pd.to_datetime(["2024-03-01 10:00", "2022-01-01 00:00", None])})
    aware = pd.DataFrame({"at": naive["at"].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris")})
    expectation = Expectation("between", "at", min="2024-01-01T00:00:00+00:00")
    # The reason shows the value as the frame holds it; the comparison is in UTC.
    for frame, shown in ((naive, "2022-01-01T00:00:00"), (aware, "2022-01-01T01:00:00+01:00")):
        result = run_one(frame, expectation)
        assert (result.unexpected_count, result.element_count) == (1, 3)
        assert rejected(frame, expectation) == [
            None,
            f"at: {shown} below min 2024-01-01T00:00:00+00:00 (between)",
            None,
        ]


def test_between_dates_on_date_objects_and_yaml_date_bounds() -> None:
    # YAML reads unquoted 2024-01-01 as a date; warehouses hand DATE columns over as date objects.
    frame = pd.DataFrame({"day": [date(2024, 5, 1), date(2023, 5, 1), None]})
    expectation = Expectation("between", "day", min=date(2024, 1, 1), max=datetime(2024, 12, 31))
    assert (expectation.min, expectation.max) == ("2024-01-01", "2024-12-31T00:00:00")
    result = run_one(frame, expectation)
    assert result.unexpected_count == 1
    assert result.sample_unexpected == ["2023-05-01"]
    assert rejected(frame, expectation) == [None, "day: 2023-05-01 below min 2024-01-01 (between)", None]


def test_between_numbers_on_text_and_nullable_columns() -> None:
    frame = pd.DataFrame({"text": ["5", "abc", None, "50"], "nullable": pd.array([5, None, 7, 50], dtype="Int64")})
    text = Expectation("between", "text", min=0, max=10)
    nullable = Expectation("between", "nullable", min=0, max=10)
    assert run_one(frame, text).sample_unexpected == ["abc", "50"]
    assert rejected(frame, text) == [
        None,
        "text: 'abc' not a number (between)",
        None,
        "text: '50' above max 10 (between)",
    ]
    assert run_one(frame, nullable).unexpected_count == 1
    assert rejected(frame, nullable) == [None, None, None, "nullable: 50 above max 10 (between)"]


# --- construction --------------------------------------------------------------------------------------------------


def test_invalid_regex_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"expectation 'regex' on column 'email': invalid regex '\(unclosed'"):
        Expectation("regex", "email", pattern="(unclosed")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "positive", "column": "a"}, "unknown kind"),
        ({"kind": "regex", "column": "a"}, "regex needs a pattern"),
        ({"kind": "in_set", "column": "a"}, "values must not be empty"),
        ({"kind": "in_set", "column": "a", "values": "US"}, "values must be a list"),
        ({"kind": "between", "column": "a"}, "needs min, max or both"),
        ({"kind": "between", "column": "a", "min": 5, "max": 1}, "greater than max"),
        ({"kind": "between", "column": "a", "min": "2024-02-01", "max": "2024-01-01"}, "greater than max"),
        ({"kind": "between", "column": "a", "min": 0, "max": "2024-01-01"}, "both be numbers or both be dates"),
        ({"kind": "between", "column": "a", "min": "yesterday"}, "neither a number nor an ISO date"),
        ({"kind": "between", "column": "a", "min": True}, "must be a number or an ISO date"),
        ({"kind": "not_null", "column": "a", "mostly": 1.5}, "mostly must be a number from 0 to 1"),
        ({"kind": "not_null", "column": "a", "pattern": "x"}, "pattern do not apply to not_null"),
        ({"kind": "not_null", "column": ""}, "column must be a non-empty string"),
    ],
)
def test_invalid_declarations_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Expectation(**kwargs)


def test_row_level_and_hashable() -> None:
    assert [Expectation(kind, "a", **extra).row_level for kind, extra in [
        ("not_null", {}), ("in_set", {"values": ["x"]}), ("regex", {"pattern": "x"}), ("between", {"min": 0}),
        ("unique", {}),
    ]] == [True, True, True, True, False]  # fmt: skip
    listed = Expectation("in_set", "a", values=["x", "y"])
    assert listed.values == ("x", "y")
    assert len({listed, Expectation("in_set", "a", values=("x", "y"))}) == 1


# --- row rejections ----------------------------------------------------------------------------------------------


def test_row_rejections_give_every_reason_and_none_for_good_rows() -> None:
    expectations = [
        Expectation("not_null", "email"),
        Expectation("unique", "country"),  # set-level: never a row's reason
        Expectation("in_set", "country", values=("US", "FR")),
        Expectation("regex", "email", pattern=r"^[^@]+@[^@]+\.[a-z]+$"),
        Expectation("between", "age", min=18, max=120),
    ]
    assert row_rejections(PEOPLE, expectations) == [
        None,
        "email: null (not_null); country: 'XX' not in set (in_set); age: 17 below min 18 (between)",
        "email: 'bad' does not match pattern '^[^@]+@[^@]+\\.[a-z]+$' (regex)",
        "age: 200 above max 120 (between)",
        None,
    ]


def test_row_rejections_quote_long_values_briefly_and_survive_braces() -> None:
    frame = pd.DataFrame({"note {x}": ["y" * 500]})
    (reason,) = rejected(frame, Expectation("regex", "note {x}", pattern=r"^x{1,3}$"))
    assert reason == "note {x}: '" + "y" * 60 + "...' does not match pattern '^x{1,3}$' (regex)"


MESSY = pd.DataFrame(
    {
        "text": ["a", None, "b", np.nan, "", "zz", "a", None],
        "number": [1.0, np.nan, 5.0, None, -3.0, 1000.0, 7.0, 2.0],
        "mixed": [1, "2", None, "x", 3.5, None, "40", True],
        "when": ["2024-01-01", None, "garbage", "2030-01-01", "", "2024-06-01T10:00:00+02:00", None, "2024-02-29"],
    }
)


@pytest.mark.parametrize(
    "expectation",
    [
        Expectation("not_null", "text"),
        Expectation("in_set", "text", values=("a", "b")),
        Expectation("regex", "text", pattern=r"^[a-z]$"),
        Expectation("between", "number", min=0, max=10),
        Expectation("between", "mixed", min=0, max=10),
        Expectation("in_set", "mixed", values=(1, "2", 3.5)),
        Expectation("regex", "mixed", pattern=r"^\d$"),
        Expectation("between", "when", min="2024-01-01", max="2024-12-31"),
        Expectation("between", "when", max="2024-06-01T09:00:00Z"),
    ],
)
def test_nulls_and_odd_values_are_judged_alike_by_gx_and_row_rejections(expectation: Expectation) -> None:
    result = run_one(MESSY, expectation)
    reasons = rejected(MESSY, expectation)
    assert result.unexpected_count == sum(reason is not None for reason in reasons)
    column = MESSY[expectation.column]
    if expectation.kind != "not_null":  # nulls pass every other kind, in GX and here
        assert all(reason is None for reason, value in zip(reasons, column) if pd.isna(value))
    # The sample is the first offending values as they are in the frame (nulls as None, to be JSON).
    offending = [value for value, reason in zip(column, reasons) if reason is not None][:10]
    assert result.sample_unexpected == [None if pd.isna(value) else value for value in offending]


# --- empty frame ---------------------------------------------------------------------------------------------------


def test_empty_frame_passes_and_rejects_nothing() -> None:
    empty = PEOPLE.iloc[0:0]
    expectations = [
        Expectation("not_null", "email"),
        Expectation("unique", "country"),
        Expectation("in_set", "country", values=("US",)),
        Expectation("regex", "email", pattern="@"),
        Expectation("between", "age", min=0),
    ]
    for result in run_expectations(empty, expectations):
        assert (result.success, result.unexpected_count, result.element_count) == (True, 0, 0)
        assert result.unexpected_percent == 0.0
    assert row_rejections(empty, expectations) == []
    assert run_expectations(PEOPLE, []) == []
