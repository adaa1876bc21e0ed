"""`next_step`: what the HTTP client does after each try, with the jitter drawn from a seeded or fixed source."""

from __future__ import annotations

import random

import pytest

from connector_pipelines.spec.connections import RetryPolicy
from connector_pipelines.transports.retry_policy import FINAL, AttemptOutcome, Step, backoff_ceiling, next_step

POLICY = RetryPolicy(max_attempts=5, initial_backoff_seconds=0.5, max_backoff_seconds=30, max_retry_after_seconds=120)


class UpperBound:
    """A jitter source that always draws the top of the range, so a delay equals its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowerBound:
    """A jitter source that always draws the bottom of the range (no wait of its own)."""

    def uniform(self, a: float, b: float) -> float:
        return a


def response(status: int, retry_after: float | None = None) -> AttemptOutcome:
    return AttemptOutcome(status=status, retry_after=retry_after)


def failure(error: str, retryable: bool) -> AttemptOutcome:
    return AttemptOutcome(error=error, retryable=retryable)


@pytest.mark.parametrize("status", [200, 201, 204, 302, 400, 401, 403, 404, 408, 409, 422])
def test_an_answer_other_than_429_or_5xx_is_final(status: int) -> None:
    assert next_step(response(status), 1, POLICY, UpperBound()) == FINAL


def test_a_final_answer_carries_no_error() -> None:
    assert FINAL == Step(retry=False, delay=0.0, error=None, pause_all_seconds=None)


def test_429_without_retry_after_retries_after_the_jittered_backoff() -> None:
    assert next_step(response(429), 1, POLICY, UpperBound()) == Step(retry=True, delay=0.5)


def test_429_with_retry_after_waits_for_it_and_pauses_every_caller() -> None:
    assert next_step(response(429, 5.0), 1, POLICY, UpperBound()) == Step(retry=True, delay=5.0, pause_all_seconds=5.0)


def test_retry_after_shorter_than_the_backoff_leaves_the_backoff() -> None:
    assert next_step(response(429, 1.0), 4, POLICY, UpperBound()) == Step(retry=True, delay=4.0, pause_all_seconds=1.0)


def test_503_with_retry_after_waits_for_it_without_pausing_other_callers() -> None:
    assert next_step(response(503, 7.0), 1, POLICY, LowerBound()) == Step(retry=True, delay=7.0)


def test_retry_after_is_ignored_on_statuses_that_do_not_define_it() -> None:
    assert next_step(response(500, 7.0), 1, POLICY, LowerBound()) == Step(retry=True, delay=0.0)


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_longer_than_the_limit_is_not_waited_for(status: int) -> None:
    step = next_step(response(status, 600.0), 1, POLICY, UpperBound())

    assert step == Step(
        retry=False,
        error=(
            f"{status}: the target asks to retry after 600s, longer than retry.max_retry_after_seconds (120s); "
            "not retried"
        ),
    )


def test_a_retry_after_at_the_limit_is_waited_for() -> None:
    assert next_step(response(503, 120.0), 1, POLICY, LowerBound()) == Step(retry=True, delay=120.0)


def test_a_too_long_retry_after_is_refused_before_the_attempts_run_out() -> None:
    step = next_step(response(429, 121.0), POLICY.max_attempts, POLICY, UpperBound())

    assert step.error is not None and step.error.endswith("; not retried") and not step.error.startswith("gave up")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_5xx_is_retried(status: int) -> None:
    assert next_step(response(status), 2, POLICY, UpperBound()) == Step(retry=True, delay=1.0)


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (response(503), "503"),
        (response(429), "429"),
        (failure("timed out after 30s", retryable=True), "timed out after 30s"),
        (
            failure("connection dropped (ServerDisconnectedError)", retryable=True),
            "connection dropped (ServerDisconnectedError)",
        ),
    ],
    ids=["5xx", "429", "timeout", "connection"],
)
def test_the_last_attempt_gives_up_naming_the_attempts_and_the_last_reason(outcome, reason: str) -> None:
    step = next_step(outcome, 5, POLICY, UpperBound())

    assert step == Step(retry=False, error=f"gave up after 5 attempts: {reason}")


def test_giving_up_on_429_still_pauses_every_caller_for_its_retry_after() -> None:
    assert next_step(response(429, 3.0), 5, POLICY, UpperBound()).pause_all_seconds == 3.0


@pytest.mark.parametrize(
    "error",
    [
        "timed out after 30s",
        "connection refused by 127.0.0.1:9 (ClientConnectorError)",
        "connection reset (ClientOSError)",
    ],
    ids=["timeout", "refused", "reset"],
)
def test_a_retryable_error_is_retried_after_the_backoff(error: str) -> None:
    assert next_step(failure(error, retryable=True), 3, POLICY, UpperBound()) == Step(retry=True, delay=2.0)


@pytest.mark.parametrize("tries", [1, 5])
def test_a_non_retryable_error_stops_at_once_with_its_message(tries: int) -> None:
    error = "TLS certificate verification failed for h:443 (self-signed); set ca_file to the CA that signed it"

    assert next_step(failure(error, retryable=False), tries, POLICY, UpperBound()) == Step(retry=False, error=error)


def test_one_attempt_allowed_means_no_retry() -> None:
    policy = RetryPolicy(max_attempts=1)

    assert next_step(response(503), 1, policy, UpperBound()) == Step(retry=False, error="gave up after 1 attempts: 503")


def test_an_outcome_with_neither_status_nor_error_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a status or an error"):
        next_step(AttemptOutcome(), 1, POLICY, UpperBound())


def test_the_backoff_doubles_each_try_until_the_cap() -> None:
    policy = RetryPolicy(max_attempts=20, initial_backoff_seconds=0.5, max_backoff_seconds=10)

    ceilings = [backoff_ceiling(tries, policy) for tries in range(1, 9)]
    delays = [next_step(response(503), tries, policy, UpperBound()).delay for tries in range(1, 9)]

    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert delays == ceilings


def test_a_zero_initial_backoff_retries_without_waiting() -> None:
    policy = RetryPolicy(initial_backoff_seconds=0)

    assert next_step(response(500), 1, policy, UpperBound()) == Step(retry=True, delay=0.0)


def test_jitter_spreads_delays_over_the_whole_range_below_the_ceiling() -> None:
    rng = random.Random(20240101)

    delays = [next_step(response(503), 4, POLICY, rng).delay for _ in range(2000)]

    assert all(0.0 <= delay <= 4.0 for delay in delays)
    assert min(delays) < 0.2 and max(delays) > 3.8


def test_a_seeded_source_gives_the_same_delays() -> None:
    first = [next_step(response(503), tries, POLICY, random.Random(7)).delay for tries in range(1, 5)]
    second = [next_step(response(503), tries, POLICY, random.Random(7)).delay for tries in range(1, 5)]

    assert first == second


def test_stopping_draws_no_jitter() -> None:
    rng = random.Random(3)
    before = rng.getstate()

    next_step(response(200), 1, POLICY, rng)
    next_step(response(503), 5, POLICY, rng)
    next_step(response(429, 600.0), 1, POLICY, rng)
    next_step(failure("request failed (InvalidURL: x)", retryable=False), 1, POLICY, rng)

    assert rng.getstate() == before
