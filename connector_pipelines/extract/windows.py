"""Parse explicit (custom) windows given on the command line or in run config."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from connector_pipelines.errors import ExtractError
from connector_pipelines.transports.sql import Window


def parse_window(start: str, end: str, timezone: str) -> Window:
    """`2024-01-01`, `2024-01-01T06:00` or `2024-01-01T06:00+02:00`; times without an offset are in `timezone`."""
    zone = zoneinfo.ZoneInfo(timezone)
    bounds = []
    for label, text in (("start", start), ("end", end)):
        try:
            value = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise ExtractError(
                f"window {label} '{text}' is not an ISO date or datetime; write 2024-01-31 or 2024-01-31T06:00"
            ) from None
        bounds.append(value if value.tzinfo else value.replace(tzinfo=zone))
    try:
        return Window(bounds[0], bounds[1])
    except ValueError as exc:
        raise ExtractError(f"window {start}..{end}: {exc}") from None


def parse_window_range(text: str, timezone: str) -> Window:
    """`START..END` as written after `--window`."""
    if ".." not in text:
        raise ExtractError(f"window '{text}' must be written START..END, for example 2024-01-01..2024-02-01")
    start, end = text.split("..", 1)
    return parse_window(start, end, timezone)
