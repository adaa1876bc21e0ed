"""A strict check of the five-field cron syntax a schedule's `cadence` may hold.

The spec layer runs without Dagster, so it cannot ask Dagster whether a cron string is valid (its check is a
private API over a vendored croniter). This accepts the standard syntax only: per field a comma list of `*`,
a number or a name (jan-dec, sun-sat), or a range `low-high`, where `*` and ranges may take a `/step`. Every
string it accepts Dagster accepts too (a test holds the two side by side); the exotic forms croniter also
knows (`@daily`, `L`, `#`, `?`, wrap-around ranges) are refused, so a spec never relies on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(r"^[0-9]{1,2}\Z")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FEBRUARY = 2


@dataclass(frozen=True)
class _CronField:
    """One of the five positions: the values it allows and the names that stand for some of them."""

    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _CronField(0, 59, {}),  # minute
    _CronField(0, 23, {}),  # hour
    _CronField(1, 31, {}),  # day of month
    _CronField(1, 12, {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}),
    # 0 and 7 are both Sunday, as in every cron.
    _CronField(0, 7, {name: number for number, name in enumerate(_DAY_NAMES)}),
)


def is_valid_cron(expression: str) -> bool:
    """True when `expression` is a five-field cron string that fires at least once a year."""
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        return False
    expanded = [_expand(part, cron_field) for part, cron_field in zip(parts, _FIELDS, strict=True)]
    if any(values is None for values in expanded):
        return False
    _, _, days_of_month, months, _ = expanded
    # Day 30 or 31 of February never comes: Dagster refuses such a schedule, so the spec does too.
    return not (months == {_FEBRUARY} and days_of_month <= {30, 31})


def _expand(text: str, cron_field: _CronField) -> set[int] | None:
    """The values one field's text selects, or None when it is not valid for that field."""
    values: set[int] = set()
    for item in text.split(","):
        base, has_step, step_text = item.partition("/")
        step = 1
        if has_step:
            step = _number(step_text, 1, cron_field.high)
            if step is None:
                return None
        if base == "*":
            low, high = cron_field.low, cron_field.high
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            low, high = _value(start_text, cron_field), _value(end_text, cron_field)
            # A reversed range means different things to different crons: refused rather than guessed.
            if low is None or high is None or low > high:
                return None
        else:
            low = high = _value(base, cron_field)
            # `5/15` is croniter's shorthand for `5-59/15`, not standard cron.
            if low is None or has_step:
                return None
        values.update(range(low, high + 1, step))
    return values


def _value(text: str, cron_field: _CronField) -> int | None:
    if text.lower() in cron_field.names:
        return cron_field.names[text.lower()]
    return _number(text, cron_field.low, cron_field.high)


def _number(text: str, low: int, high: int) -> int | None:
    if not _NUMBER.match(text):
        return None
    number = int(text)
    return number if low <= number <= high else None
