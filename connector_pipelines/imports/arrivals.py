"""Which arrived files a file sensor asks a run for, given the folder's listing and what it asked for before.

A pure decision (the sensor lists the folder and looks up runs; this decides). The cursor remembers, per file
name, its size and modification time when a run was asked for it, that run's key and the attempt. A file is asked
for again only when it changed (a new version under the same name) or when the run asked for it has finished and
the file is still in the folder (the run failed before it could archive or quarantine it). A file not seen before
is taken once it is unchanged since the previous tick, or was last modified over a minute ago, so a file still
being uploaded is not read half-written. Whether the content was imported before (under any name) is decided in
the run, by checksum, in the import state.

A file that runs keep failing on (a run ends and leaves it in the folder) is asked for at most
`max_failed_attempts` times; then the sensor gives up on it until it changes, and says so on every tick, so one
file the runs cannot get past never costs a run per tick for ever. A changed file starts again at attempt 1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connector_pipelines.imports.files import check_file_name
from connector_pipelines.transports.base import RemoteFile

# A file seen for the first time is only taken once it has not changed for a poll interval (a partner may
# still be uploading it), unless it was last modified this long ago.
SETTLED_AFTER = dt.timedelta(seconds=60)
DEFAULT_MAX_FAILED_ATTEMPTS = 3


@dataclass(frozen=True)
class Arrivals:
    """What one tick decided: the files to import now (sorted) under `run_key`, and the cursor to keep."""

    files: list[str]
    run_key: str | None
    cursor: dict
    settling: int  # files that may still be being written
    given_up: list[str] = field(default_factory=list)  # left in the folder by `max_failed_attempts` runs: not asked


def given_up_message(given_up: Sequence[str], max_failed_attempts: int) -> str:
    """What the sensor says about the files it no longer asks for (empty when there are none)."""
    if not given_up:
        return ""
    shown = ", ".join(given_up[:10]) + (f" and {len(given_up) - 10} more" if len(given_up) > 10 else "")
    return (
        f"{len(given_up)} file(s) not asked for again: {max_failed_attempts} run(s) ended without importing or "
        f"quarantining them (see those runs' errors); replace the file to try again, or remove it: {shown}"
    )


def decide_arrivals(
    listing: Sequence[RemoteFile],
    cursor: dict,
    now: dt.datetime,
    run_finished: Callable[[str], bool],
    max_failed_attempts: int = DEFAULT_MAX_FAILED_ATTEMPTS,
) -> Arrivals:
    """The files of `listing` (already matched to the pattern) to ask a run for. `run_finished(run_key)` says
    whether the run asked for under that key has ended; an unchanged file left by `max_failed_attempts` finished
    runs is not asked for again (it is in `given_up`)."""
    requested: dict = cursor.get("requested", {})
    pending: dict = cursor.get("pending", {})
    ready: list[tuple[str, list]] = []
    given_up: list[str] = []
    new_pending: dict = {}
    for remote in listing:
        signature = [remote.size, remote.modified.isoformat()]
        earlier = requested.get(remote.name)
        if earlier is not None and earlier["signature"] == signature:
            if check_file_name(remote.name) is not None:
                continue  # refused for its name, with a report, and left in place by design: once is enough
            if not run_finished(earlier["run_key"]):
                continue  # asked for, not finished yet: leave it to that run
            if earlier.get("attempt", 1) >= max_failed_attempts:
                given_up.append(remote.name)  # every run asked for it ended and left it: stop asking
                continue
        elif pending.get(remote.name) != signature and now - remote.modified < SETTLED_AFTER:
            new_pending[remote.name] = signature  # maybe still being written: look again next tick
            continue
        ready.append((remote.name, signature))
    present = {remote.name for remote in listing}
    # Files gone from the folder were archived or quarantined: forget them (the state keeps their record).
    new_requested = {name: value for name, value in requested.items() if name in present}
    run_key = None
    if ready:
        # The attempt counts runs asked for this version of the file: a changed file starts again at 1.
        attempts = {}
        for name, signature in ready:
            before = new_requested.get(name, {})
            attempts[name] = before.get("attempt", 0) + 1 if before.get("signature") == signature else 1
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
        given_up=sorted(given_up),
    )
