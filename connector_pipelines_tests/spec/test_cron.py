"""The spec's own cron check: standard five-field cron strings pass, and every string it passes Dagster's schedules
accept too, so a cadence that validates never fails later when the definitions are built."""

from __future__ import annotations

import random

import dagster as dg
import pytest

from connector_pipelines.spec.cron import is_valid_cron

STANDARD = [
    "* * * * *",
    "0 6 * * 1-5",
    "0 */4 * * *",
    "30 6 * * *",
    "*/15 * * * *",
    "0 0 1 */3 *",
    "0,15,30,45 8-18 * * mon-fri",
    "5 4 * jan-mar/2 SUN",
    "0 0 29 2 *",
    "0 0 * * 7",
    "0 0 * * 0-7",
    "00 06 * * *",
    " 0  6 * * * ",
    "59 23 31 12 6",
]
OUT_OF_RANGE_OR_MALFORMED = [
    "61 6 * * *",
    "0 24 * * *",
    "0 0 0 * *",
    "0 0 32 * *",
    "0 0 * 13 *",
    "0 0 * * 8",
    "*/0 * * * *",
    "-1 * * * *",
    "1- * * * *",
    ",1 * * * *",
    "0 0 * *",
    "0 0 * * * *",
    "every morning",
    "",
    "0 0 * * funday",
]
# Forms the croniter inside Dagster accepts but standard cron does not: refused, so no spec depends on them.
NON_STANDARD = ["@daily", "0 0 L * *", "0 0 * * 1#2", "0 0 ? * *", "5-2 * * * *", "5/15 * * * *"]


def _dagster_accepts(expression: str) -> bool:
    try:
        dg.ScheduleDefinition(name="probe", cron_schedule=expression, job_name="probe")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


@pytest.mark.parametrize("expression", STANDARD)
def test_standard_cron_strings_are_valid_and_dagster_accepts_them(expression: str) -> None:
    assert is_valid_cron(expression)
    assert _dagster_accepts(expression)


@pytest.mark.parametrize("expression", OUT_OF_RANGE_OR_MALFORMED)
def test_out_of_range_or_malformed_cron_strings_are_refused(expression: str) -> None:
    assert not is_valid_cron(expression)


@pytest.mark.parametrize("expression", NON_STANDARD)
def test_non_standard_cron_forms_are_refused(expression: str) -> None:
    assert not is_valid_cron(expression)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 feb *", "0 0 30,31 2 *"])
def test_a_day_february_never_has_is_refused(expression: str) -> None:
    assert not is_valid_cron(expression)


def test_every_generated_string_the_check_accepts_dagster_accepts() -> None:
    """Random strings from the parts cron is made of, valid and not: none passes here and fails in Dagster."""
    pieces = ["*", "*/5", "*/7", "0", "1", "2", "5", "7", "12", "13", "23", "24", "29", "30", "31", "59", "60"]
    pieces += ["1-5", "0-7", "5-1", "10-20/5", "1,15", "jan", "feb", "mon-fri", "sun", "L", "?", "3/4"]
    generator = random.Random(20240601)
    accepted = 0
    for _ in range(20000):
        expression = " ".join(generator.choice(pieces) for _ in range(5))
        if is_valid_cron(expression):
            accepted += 1
            assert _dagster_accepts(expression), expression
    assert accepted > 400  # the draw exercises the accepting side, not only refusals
