"""Retries across runs, as pure decisions: the backoff schedule, the dead-letter limit, and what `decide` and
`decide_delete` do with a record the target refused in earlier runs."""

from __future__ import annotations

import datetime as dt

import pytest

from connector_pipelines.integration.decide import DecisionRules, decide, decide_delete
from connector_pipelines.integration.retries import (
    RetrySchedule,
    dead_letter_reason,
    failed_runs_before,
    waiting_reason,
)
from connector_pipelines.state.ledger import LedgerEntry

FP, OLD = "fp-now", "fp-old"
NOW = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=10)
EARLIER = NOW - dt.timedelta(seconds=1)
SCHEDULE = RetrySchedule(max_attempts=3, initial_backoff=dt.timedelta(minutes=5), max_backoff=dt.timedelta(hours=1))
RUN = DecisionRules(retry=SCHEDULE, now=NOW)


def refused(
    status: str = "failed",
    failed_runs: int = 1,
    retry_after: dt.datetime | None = LATER,
    fingerprint: str | None = FP,
    delivered: str | None = None,
) -> LedgerEntry:
    return LedgerEntry(status, fingerprint, delivered, 2, "ikey-2", None, None, 1, failed_runs, retry_after)


@pytest.mark.parametrize(
    ("failed_runs", "wait"),
    [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (6, 60), (1000, 60)],
    ids=["first", "doubled", "quadrupled", "eightfold", "capped", "stays_capped", "huge_count"],
)
def test_backoff_doubles_from_the_initial_wait_up_to_the_maximum(failed_runs: int, wait: int) -> None:
    assert SCHEDULE.backoff(failed_runs) == dt.timedelta(minutes=wait)


def test_after_a_failure_below_the_limit_the_record_waits_for_its_backoff() -> None:
    assert SCHEDULE.after_failure(2, NOW) == ("failed", NOW + dt.timedelta(minutes=10))


def test_the_failure_that_reaches_the_limit_makes_a_dead_letter() -> None:
    assert SCHEDULE.after_failure(3, NOW) == ("dead_letter", None)


def test_a_zero_backoff_retries_on_the_next_run() -> None:
    schedule = RetrySchedule(3, dt.timedelta(0), dt.timedelta(0))
    assert schedule.after_failure(1, NOW) == ("failed", NOW)


@pytest.mark.parametrize(
    ("status", "fingerprint", "forced", "expected"),
    [
        ("failed", FP, False, 2),
        ("in_flight", FP, False, 2),
        ("failed", OLD, False, 0),
        ("failed", FP, True, 0),
        (None, None, False, 0),
    ],
    ids=["same_version", "same_version_in_doubt", "new_version", "forced", "new_record"],
)
def test_failed_runs_count_per_version_and_restart_when_forced(status, fingerprint, forced, expected) -> None:
    assert failed_runs_before(status, fingerprint, 2, FP, forced) == expected


CASES = [
    # (id, entry, rules, expected action)
    ("waiting_for_retry_time", refused(), RUN, "backoff"),
    ("retry_time_passed", refused(retry_after=EARLIER), RUN, "send"),
    ("retry_time_is_now", refused(retry_after=NOW), RUN, "send"),
    ("no_retry_time", refused(retry_after=None), RUN, "send"),
    ("run_without_a_clock_waits_for_nothing", refused(), DecisionRules(retry=SCHEDULE), "send"),
    ("dead_letter", refused("dead_letter", 3, None), RUN, "dead_letter"),
    ("dead_letter_after_limit_raised", refused("dead_letter", 3, None), DecisionRules(now=NOW), "dead_letter"),
    ("failed_at_a_lowered_limit", refused(failed_runs=3, retry_after=EARLIER), RUN, "dead_letter"),
    ("waiting_but_changed", refused(fingerprint=OLD), RUN, "send"),
    ("dead_letter_but_changed", refused("dead_letter", 3, None, fingerprint=OLD), RUN, "send"),
    ("waiting_but_pushed", refused(), DecisionRules(retry=SCHEDULE, now=NOW, pushed=True), "send"),
    ("dead_letter_pushed", refused("dead_letter", 3, None), DecisionRules(now=NOW, pushed=True), "send"),
    ("dead_letter_full_run", refused("dead_letter", 3, None), DecisionRules(now=NOW, full=True), "send"),
    ("in_doubt_never_waits", refused("in_flight", 2, LATER), RUN, "resend"),
    ("in_doubt_at_the_limit_keeps_its_key", refused("in_flight", 3, None), RUN, "resend"),
    (
        "in_doubt_pushed_keeps_its_key",
        refused("in_flight", 3, None),
        DecisionRules(retry=SCHEDULE, now=NOW, pushed=True),
        "resend",
    ),
]


@pytest.mark.parametrize(("entry_", "rules", "action"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_for_a_record_refused_before(entry_: LedgerEntry, rules: DecisionRules, action: str) -> None:
    assert decide(entry_, FP, rules).action == action


def test_a_waiting_record_says_how_many_runs_it_failed_and_when_it_is_retried() -> None:
    decision = decide(refused(failed_runs=2), FP, RUN)

    assert decision.reason == waiting_reason(2, 3, LATER)
    assert decision.reason == (
        "failed 2 of at most 3 runs: retry after 2026-12-03 08:10:00 UTC (retry_across_runs); push the key to send "
        "it now"
    )


def test_a_dead_letter_says_why_and_how_to_send_it_again() -> None:
    decision = decide(refused("dead_letter", 3, None), FP, RUN)

    assert decision.reason == dead_letter_reason(3, 3)
    assert decision.reason == (
        "dead letter: the target refused it in 3 runs (retry_across_runs.max_attempts: 3); no run sends it again "
        "until its data changes or the key is pushed"
    )


def test_a_mapping_failure_is_judged_before_the_dead_letter_state() -> None:
    assert decide(refused("dead_letter", 3, None), FP, RUN, mapping_error="name is required").action == "fail"


# A refused delete: its ledger row has no fingerprint, and the target still holds the record.
REFUSED_DELETE = refused(fingerprint=None, delivered=FP)


@pytest.mark.parametrize(
    ("entry_", "rules", "action"),
    [
        (REFUSED_DELETE, RUN, "backoff"),
        (refused(fingerprint=None, delivered=FP, retry_after=EARLIER), RUN, "send"),
        (refused("dead_letter", 3, None, fingerprint=None, delivered=FP), RUN, "dead_letter"),
        (REFUSED_DELETE, DecisionRules(retry=SCHEDULE, now=NOW, full=True), "send"),
        (refused(fingerprint=FP, delivered=OLD), RUN, "send"),  # a refused update, now a delete: a new operation
        (REFUSED_DELETE, None, "send"),
    ],
    ids=["waiting", "retry_time_passed", "dead_letter", "full_run", "refused_update_then_deleted", "no_rules"],
)
def test_decide_delete_for_a_delete_refused_before(entry_, rules, action: str) -> None:
    assert decide_delete(entry_, rules=rules).action == action
