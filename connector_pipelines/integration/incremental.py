"""What a scheduled integration run reads: only the rows updated since the last delivered run, or the whole data set.

A pure decision over the configurations' read cursors (state/read_cursor.py). The whole data set (a full diff) is
read when asked (`run --full-diff`), when the data set has no `updated_at` column, when `full_diff_every` is 0 or
has passed since the last complete read any configuration delivered, and when a configuration has no cursor yet.
Otherwise the run reads `updated_at >= cursor - overlap`: the earliest cursor of the configurations (each must see
what it has not delivered), moved back by the data set's `overlap` so rows committed late with an earlier
`updated_at` are read again; the ledger's fingerprints make the rows read twice harmless. The run then also reads
the records it must retry, by key.

Only a full diff finds records gone from the data set (mirror mode's deletes) and rows changed without their
`updated_at` moving: that is what `full_diff_every` bounds.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from connector_pipelines.imports.source_query import later_watermark, read_from
from connector_pipelines.spec.integration import DataSet
from connector_pipelines.state.read_cursor import ReadCursor


@dataclass(frozen=True)
class ReadPlan:
    complete: bool  # every row of the data set is read: a key the ledger has and the read lacks has vanished
    updated_after: str | None  # an incremental read: rows whose updated_at is at or after this
    cursor: str | None  # the earliest cursor the incremental read started from (before the overlap)
    why: str  # what the run reads and why, in words


def scheduled_read(
    data_set: DataSet,
    full_diff_every: dt.timedelta,
    cursors: Mapping[str, ReadCursor | None],
    now: dt.datetime,
    full_diff: bool = False,
) -> ReadPlan:
    """The read of a run that did not say what to read (a schedule, a manual run, `run NAME`)."""
    if full_diff:
        return ReadPlan(True, None, None, "the whole data set (a full diff was asked for)")
    if data_set.updated_at is None:
        return ReadPlan(True, None, None, "the whole data set (it has no updated_at column to read changes by)")
    if not full_diff_every:
        return ReadPlan(True, None, None, "the whole data set (full_diff_every: 0)")
    fresh = sorted(name for name, c in cursors.items() if c is None or c.read_until is None or c.full_diff_at is None)
    if fresh:
        return ReadPlan(True, None, None, f"the whole data set (first full diff of {', '.join(fresh)})")
    oldest = min(c.full_diff_at for c in cursors.values())
    if now - oldest >= full_diff_every:
        return ReadPlan(
            True, None, None, f"the whole data set (the last full diff was {_age(now - oldest)} ago; full_diff_every)"
        )
    earliest = functools.reduce(_earlier, (c.read_until for c in cursors.values()))
    since = read_from(earliest, data_set.overlap_delta)
    overlap = f", {data_set.overlap} of overlap" if since != earliest else ""
    return ReadPlan(False, since, earliest, f"updated_at >= {since} (since the last run{overlap})")


def _earlier(a: str, b: str) -> str:
    return a if later_watermark(a, b) == b else b


def _age(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"
