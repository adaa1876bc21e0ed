"""Parse explicit (custom) windows given on the command line or in run config."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from connector_pipelines.errors import ExtractError
from connector_pipelines.transports.sql import Window


class WindowError(ExtractError):
    """A window that cannot be parsed. Its message repeats what was written (for the operator who typed it on the
    command line); `reason` says what is wrong without repeating any value (for a run's error in the UI)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def parse_window(start: str, end: str, timezone: str) -> Window:
    """`2024-01-01`, `2024-01-01T06:00` or `2024-01-01T06:00+02:00`; times without an offset are in `timezone`."""
    zone = zoneinfo.ZoneInfo(timezone)
    bounds = []
    for label, text in (("start", start), ("end", end)):
        try:
            value = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            advice = "is not an ISO date or datetime; write 2024-01-31 or 2024-01-31T06:00"
            raise WindowError(f"window {label} '{text}' {advice}", f"window {label} {advice}") from None
        bounds.append(value if value.tzinfo else value.replace(tzinfo=zone))
    try:
        return Window(bounds[0], bounds[1])
    except ValueError as exc:
        raise WindowError(f"window {start}..{end}: {exc}", "the window's end is not after its start") from None


def parse_window_range(text: str, timezone: str) -> Window:
    """`START..END` as written after `--window`."""
    if ".." not in text:
        raise ExtractError(f"window '{text}' must be written START..END, for example 2024-01-01..2024-02-01")
    start, end = text.split("..", 1)
    return parse_window(start, end, timezone)
