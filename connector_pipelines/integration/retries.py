"""Retries across runs: when a record the target refused is sent again, and when it stops being sent (dead letter).

Pure: no I/O, no clock (the caller passes `now`). Within one run the HTTP client retries a request itself
(`transports.retry_policy`); this is about *runs*. A record the target refused (a 4xx other than 408/429, or a
2xx failing the success criteria: an answer about the record itself) counts one failed run; after its n-th it
waits `initial_backoff * 2^(n-1)` (at most `max_backoff`) before a run sends it again, and after `max_attempts`
failed runs it is a dead letter: no run or sensor sends it again. A new version of the record (its payload
changed) starts again at attempt 1, and so does a record someone sends on purpose (`push --key`, a full run).

Not counted: a 5xx, 429, 408 or no answer after the client's retries (the target is down or busy, which says
nothing about the record: the next run tries it again, so an outage makes no dead letters); records that fail
before any request (they did not map: nothing reached the target, and a fix of the data or the mapping should
take effect on the next run); and records in doubt (`integration.recovery`: they stay in flight under their
idempotency key until the target settles them, whatever this schedule says).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

DEAD_LETTER = "dead_letter"
# Past this many doublings every backoff is max_backoff anyway (a second doubled 40 times is 35,000 years).
_MAX_DOUBLINGS = 40


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """`retry_across_runs` of an integration: the backoff between failed runs and the dead-letter limit."""

    max_attempts: int = 10
    initial_backoff: dt.timedelta = dt.timedelta(minutes=5)
    max_backoff: dt.timedelta = dt.timedelta(days=1)

    def backoff(self, failed_runs: int) -> dt.timedelta:
        """How long a record waits after its `failed_runs`-th failed run: initial * 2^(n-1), at most max_backoff."""
        doublings = min(max(failed_runs - 1, 0), _MAX_DOUBLINGS)
        # In seconds, capped before it becomes a timedelta (which overflows past 999,999,999 days).
        seconds = min(self.initial_backoff.total_seconds() * 2**doublings, self.max_backoff.total_seconds())
        return dt.timedelta(seconds=seconds)

    def after_failure(self, failed_runs: int, now: dt.datetime) -> tuple[str, dt.datetime | None]:
        """The status and retry time of a record after its `failed_runs`-th failed run: ("failed", when it may be
        sent again), or ("dead_letter", None) once it has failed `max_attempts` runs."""
        if failed_runs >= self.max_attempts:
            return DEAD_LETTER, None
        return "failed", now + self.backoff(failed_runs)


def failed_runs_before(
    status: str | None, fingerprint: str | None, failed_runs: int, payload: str | None, forced: bool
) -> int:
    """The failed runs that count for a send of `payload` now, from the ledger's entry (its status, the
    fingerprint it is about, its count): the count of that same version, or 0 for a new version or a forced send
    (a push or a full run starts again at attempt 1)."""
    if forced or status is None or fingerprint != payload:
        return 0
    return failed_runs


def describe_time(value: dt.datetime) -> str:
    """A retry time as the CLI and the reasons show it: UTC, to the second."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def waiting_reason(failed_runs: int, max_attempts: int, retry_after: dt.datetime) -> str:
    return (
        f"failed {failed_runs} of at most {max_attempts} runs: retry after {describe_time(retry_after)} "
        "(retry_across_runs); push the key to send it now"
    )


def dead_letter_reason(failed_runs: int, max_attempts: int) -> str:
    return (
        f"dead letter: the target refused it in {failed_runs} runs (retry_across_runs.max_attempts: "
        f"{max_attempts}); no run sends it again until its data changes or the key is pushed"
    )
