"""Which arrived files a file sensor asks a run for, given the folder's listing and what it asked for before.

A pure decision (the sensor lists the folder and looks up runs; this decides). The cursor remembers, per file
name, its size and modification time when a run was asked for it, that run's key and the attempt. A file is asked
for again only when it changed (a new version under the same name) or when the run asked for it has finished and
the file is still in the folder (the run failed before it could archive or quarantine it). A file not seen before
is taken once it is unchanged since the previous tick, or was last modified over a minute ago, so a file still
being uploaded is not read half-written. Whether the content was imported before (under any name) is decided in
the run, by checksum, in the import state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from connector_pipelines.imports.files import check_file_name
from connector_pipelines.transports.base import RemoteFile

# A file seen for the first time is only taken once it has not changed for a poll interval (a partner may
# still be uploading it), unless it was last modified this long ago.
SETTLED_AFTER = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Arrivals:
    """What one tick decided: the files to import now (sorted) under `run_key`, and the cursor to keep."""

    files: list[str]
    run_key: str | None
    cursor: dict
    settling: int  # files that may still be being written


def decide_arrivals(
    listing: Sequence[RemoteFile], cursor: dict, now: dt.datetime, run_finished: Callable[[str], bool]
) -> Arrivals:
    """The files of `listing` (already matched to the pattern) to ask a run for. `run_finished(run_key)` says
    whether the run asked for under that key has ended."""
    requested: dict = cursor.get("requested", {})
    pending: dict = cursor.get("pending", {})
    ready: list[tuple[str, list]] = []
    new_pending: dict = {}
    for remote in listing:
        signature = [remote.size, remote.modified.isoformat()]
        earlier = requested.get(remote.name)
        if earlier is not None and earlier["signature"] == signature:
            if check_file_name(remote.name) is not None:
                continue  # refused for its name, with a report, and left in place by design: once is enough
            if not run_finished(earlier["run_key"]):
                continue  # asked for, not finished yet: leave it to that run
        elif pending.get(remote.name) != signature and now - remote.modified < SETTLED_AFTER:
            new_pending[remote.name] = signature  # maybe still being written: look again next tick
            continue
        ready.append((remote.name, signature))
    present = {remote.name for remote in listing}
    # Files gone from the folder were archived or quarantined: forget them (the state keeps their record).
    new_requested = {name: value for name, value in requested.items() if name in present}
    run_key = None
    if ready:
        attempts = {name: new_requested.get(name, {}).get("attempt", 0) + 1 for name, _ in ready}
        digest = hashlib.sha256(
            json.dumps(sorted([name, signature, attempts[name]] for name, signature in ready)).encode()
        ).hexdigest()[:16]
        run_key = f"files:{digest}"
        for name, signature in ready:
            new_requested[name] = {"signature": signature, "run_key": run_key, "attempt": attempts[name]}
    return Arrivals(
        files=sorted(name for name, _ in ready),
        run_key=run_key,
        cursor={"requested": new_requested, "pending": new_pending},
        settling=len(new_pending),
    )
