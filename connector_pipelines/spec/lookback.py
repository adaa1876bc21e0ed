"""`lookback:` of incremental imports (a warehouse query, an API): how far before the watermark a run reads again,
for rows committed late with an earlier updated_at."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BeforeValidator

from connector_pipelines.spec.common import quoted

DEFAULT_LOOKBACK = "5 minutes"
_LOOKBACK = re.compile(r"^(\d{1,6})\s*(second|minute|hour|day)s?\Z")
_LOOKBACK_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_LOOKBACK = dt.timedelta(days=366)


def parse_lookback(value: object) -> dt.timedelta:
    """'15 minutes', '2 hours', '1 day', '90 seconds', 0 or '0' (no overlap) as a duration; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"lookback must be a duration such as '10 minutes', got {value!r}")
    text = str(value).strip().lower()
    if text == "0":
        return dt.timedelta(0)
    match = _LOOKBACK.match(text)
    if match is None:
        raise ValueError(
            f"lookback {quoted(str(value))} is not a duration; write 'N seconds', 'N minutes', 'N hours' or "
            "'N days' (or 0 for no overlap)"
        )
    delta = dt.timedelta(seconds=int(match.group(1)) * _LOOKBACK_UNITS[match.group(2)])
    if delta > MAX_LOOKBACK:
        raise ValueError(f"lookback {quoted(str(value))} is longer than 366 days; use a full sync instead")
    return delta


def _lookback_text(value: object) -> str:
    parse_lookback(value)
    return value if isinstance(value, str) else str(value)


# A lookback as written in the spec (15 minutes, 0), checked when the file loads.
LookbackText = Annotated[str, BeforeValidator(_lookback_text)]
