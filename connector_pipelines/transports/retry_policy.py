"""The HTTP client's retry policy: after one try of a request, retry it (after how long) or stop (and why).

Pure: no I/O, no clock; the jitter comes from the random source the caller passes, so a test can fix it. What
passes on its own is retried: 429, 5xx, timeouts, dropped connections, a token endpoint that may recover. The
wait before try n+1 is full jitter over an exponential ceiling, `uniform(0, min(max_backoff, initial * 2**(n-1)))`,
or the target's `Retry-After` (429 and 503) when that is longer. A `Retry-After` above `max_retry_after_seconds`
is not waited for: the request stops at once. Any other answer is final: the success criteria judge it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from connector_pipelines.spec.connections import RetryPolicy

# The statuses whose Retry-After header is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})


class RandomSource(Protocol):
    """Where the jitter comes from: the `random` module, or a seeded `random.Random`."""

    def uniform(self, a: float, b: float) -> float: ...


class AttemptOutcome(NamedTuple):
    """How one try ended, as the policy needs it: a response's status, or why there was none.

    (A named tuple: one is built for every request sent, and a tuple is the cheapest thing to build.)
    """

    status: int | None = None  # the HTTP status, when the target answered
    error: str | None = None  # why the try got no response (timed out, connection dropped, token refused, ...)
    retryable: bool = False  # for an error: whether it may pass on its own
    retry_after: float | None = None  # the seconds the response's Retry-After asks for, when it has one


@dataclass(frozen=True, slots=True)
class Step:
    """What to do after a try: retry after `delay` seconds, or stop with `error` (None: the response is final)."""

    retry: bool
    delay: float = 0.0
    error: str | None = None
    # A 429's Retry-After: every caller of the client waits it out, not only the one that was told.
    pause_all_seconds: float | None = None


FINAL = Step(retry=False)


def backoff_ceiling(tries: int, policy: RetryPolicy) -> float:
    """The longest jittered wait after the `tries`-th try: doubling from the initial backoff, capped."""
    return min(policy.max_backoff_seconds, policy.initial_backoff_seconds * 2 ** (tries - 1))


def next_step(outcome: AttemptOutcome, tries: int, policy: RetryPolicy, rng: RandomSource) -> Step:
    """After the `tries`-th try (counted from 1) ended with `outcome`: retry, or stop and why."""
    status = outcome.status
    retry_after = None
    pause_all = None
    if outcome.error is None:
        if status is None:
            raise ValueError("an attempt outcome needs a status or an error")
        if status < 400 or (status < 500 and status != 429):
            return FINAL
        error = str(status)
        if status in RETRY_AFTER_STATUSES:
            retry_after = outcome.retry_after
            if retry_after is not None and retry_after > policy.max_retry_after_seconds:
                return Step(
                    retry=False,
                    error=(
                        f"{status}: the target asks to retry after {retry_after:g}s, longer than "
                        f"retry.max_retry_after_seconds ({policy.max_retry_after_seconds:g}s); not retried"
                    ),
                )
            if status == 429:
                pause_all = retry_after
    elif not outcome.retryable:
        return Step(retry=False, error=outcome.error)
    else:
        error = outcome.error
    if tries >= policy.max_attempts:
        return Step(retry=False, error=f"gave up after {tries} attempts: {error}", pause_all_seconds=pause_all)
    delay = rng.uniform(0, backoff_ceiling(tries, policy))
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return Step(retry=True, delay=delay, pause_all_seconds=pause_all)
