"""What a delivery run does with one record, decided from the ledger's entry for it: a pure function, no I/O.

`decide` answers for a mapped (or unmappable) source record; `decide_delete` for a record to delete. The run
(`integration.delivery`) reads, maps and fingerprints the records, asks here, and then counts, writes ledger rows
and sends as the `Decision` says. The order of the checks is the delivery semantics:

1. a key seen before in this read fails (two rows of one key would go out under one idempotency key);
2. a record that failed to map fails alone, with its reason;
3. the skip reasons are found (the owner holds none of the roles; insert mode and a record delivered before);
4. unless the run is forced (`--full`, or a push of chosen keys): unchanged since delivered (or since skipped,
   when it is still skipped) is left alone, a record held for review waits for a push, and a record the target
   refused with this same payload waits for its retry time (`backoff`) or, after `retry_across_runs.max_attempts`
   failed runs, is not sent at all (`dead_letter`; `integration.retries`);
5. an operation the run's triggers did not ask for is left alone;
6. a skipped record is recorded as skipped;
7. unless forced, a record in doubt (`in_flight`: a run died while it was in flight, or its last try got no
   answer) is held for review when its payload changed since (resending a changed payload under a new key could
   apply it twice), else dealt with by its operation's recovery (`integration.recovery`): held, probed with the
   lookup request first, or resent;
8. a record in doubt with its payload unchanged is resent under the idempotency key it first went out with (a new
   key only ever follows a definitive answer for the old one); anything else is sent as a new version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from connector_pipelines.integration.retries import (
    DEAD_LETTER,
    RetrySchedule,
    dead_letter_reason,
    waiting_reason,
)
from connector_pipelines.state.ledger import LedgerEntry

Action = Literal[
    "duplicate",  # the key was read before in this run: failed, nothing sent, the ledger untouched
    "fail",  # failed before any request (the record did not map); `reason` says why
    "unchanged",  # the target holds this payload already (or it is still skipped): nothing to do
    "held",  # held for review after a crash: only a push or a full run sends it
    "backoff",  # the target refused this payload in an earlier run, and its retry time has not come; `reason`
    "dead_letter",  # refused in retry_across_runs.max_attempts runs: no run sends it again; `reason` says so
    "not_in_scope",  # the run's triggers did not ask for this operation
    "skip",  # not sent, recorded as skipped; `reason` says why
    "hold_in_doubt",  # in flight when a run died and may have landed: held for review; `reason` says why
    "send",  # send as a new version, under a new idempotency key
    "resend",  # send under the idempotency key (and batch) it was first sent with
    "probe",  # ask the target (the lookup request) whether it landed; resend under its key only if not
    "absent",  # a delete of a record the target does not hold (never delivered, or deleted already)
]

ALL_OPERATIONS = frozenset(("create", "update", "delete"))

DUPLICATE_KEY = "the key appears more than once in the data set; only its first row is delivered"
INSERT_ONLY_NEW_KEYS = "sync_mode insert: the record was delivered before; only new keys are sent"
DELETE_REFUSED_BY_ROLES = (
    "not deleted: when the record was last read its owner held none of the roles, and a deleted record has no "
    "owner left to judge"
)
# "In flight when an earlier run stopped" covers both ways a record comes to be in doubt: a run that died, and a
# run that stopped trying after a try that got no answer (its ledger row's last_error says which).
HELD_IN_DOUBT = "held for review: it was in flight when an earlier run stopped; check the target, then push the key"
HELD_IN_DOUBT_CHANGED = (
    "held for review: it was in flight when an earlier run stopped, and has changed since; check the target, "
    "then push the key"
)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one record: the action, the operation it is about and, for some actions, why."""

    action: Action
    operation: str  # "create", "update" or "delete"
    reason: str | None = None  # for "duplicate", "fail", "skip", "hold_in_doubt", "backoff" and "dead_letter"


@dataclass(frozen=True, slots=True)
class DecisionRules:
    """What every record of one run is decided by: the configuration's sync mode and recovery, the run's scope."""

    sync_mode: Literal["upsert", "insert", "update", "mirror"] = "upsert"
    full: bool = False  # resend every record, whatever its fingerprint
    pushed: bool = False  # a manual push of chosen keys (the run decides only those)
    operations: frozenset[str] = ALL_OPERATIONS  # what the triggers asked for
    recovery_hold: bool = False  # every operation's recovery is `hold` (unless `recovery` names it)
    # Per operation, what becomes of a record in doubt: "resend", "probe" or "hold" (`integration.recovery`);
    # an operation not named here is resent (or held, with recovery_hold).
    recovery: Mapping[str, str] = field(default_factory=dict)
    retry: RetrySchedule = RetrySchedule()  # retry_across_runs: backoff and dead letters
    now: dt.datetime | None = None  # the run's time, against a record's retry_after (None: no record waits)
    # A full run or a push sends a record even when unchanged, held or in doubt: someone asked for it.
    forced: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "forced", self.full or self.pushed)

    def recovery_of(self, operation: str) -> str:
        return self.recovery.get(operation) or ("hold" if self.recovery_hold else "resend")


def _without_reason(action: Action) -> dict[str, Decision]:
    return {operation: Decision(action, operation) for operation in ALL_OPERATIONS}


# Built once: `decide` runs for every record of every run (200,000 in the benchmark's unchanged rerun), and a
# lookup costs a tenth of building a frozen dataclass.
_UNCHANGED = _without_reason("unchanged")
_HELD = _without_reason("held")
_NOT_IN_SCOPE = _without_reason("not_in_scope")
_SEND = _without_reason("send")
_RESEND = _without_reason("resend")
_PROBE = _without_reason("probe")
_ABSENT = Decision("absent", "delete")
_DUPLICATE = Decision("duplicate", "create", DUPLICATE_KEY)
_REFUSED = ("failed", DEAD_LETTER)


def owner_refusal(owner: object, allowed_owners: Collection[str], roles: Iterable[str]) -> str | None:
    """Why a record may not be pushed for its owner (None when the owner holds one of the roles)."""
    if owner is None:  # a NULL owner is nobody: it holds no role (str(None) could match a user called 'None')
        return f"the record has no owner, so it holds none of the roles {', '.join(roles)}"
    if str(owner) in allowed_owners:
        return None
    return f"owner {owner} holds none of the roles {', '.join(roles)}"


def decide(
    entry: LedgerEntry | None,
    fingerprint: str | None,
    rules: DecisionRules,
    *,
    duplicate: bool = False,
    mapping_error: str | None = None,
    owner_refused: str | None = None,
) -> Decision:
    """The decision for one source record, given the ledger's entry for its key (None: never seen).

    `fingerprint` is the mapped payload's; `duplicate` says the key was read before in this run; `mapping_error`
    is why the record did not map; `owner_refused` is why its owner may not have it (see `owner_refusal`).
    """
    if duplicate:
        return _DUPLICATE
    operation = "create" if entry is None or entry.delivered_fingerprint is None else "update"
    if mapping_error is not None:
        return Decision("fail", operation, mapping_error)
    mode = rules.sync_mode
    skip = owner_refused
    if skip is None and mode == "insert" and operation == "update":
        skip = INSERT_ONLY_NEW_KEYS
    if mode == "update":
        operation = "update"
    forced = rules.forced
    if not forced and entry is not None:
        status = entry.status
        if status == "delivered" and entry.delivered_fingerprint == fingerprint:
            return _UNCHANGED[operation]
        if status == "skipped" and entry.fingerprint == fingerprint and skip is not None:
            return _UNCHANGED[operation]
        if status == "pending":
            return _HELD[operation]
        if status in _REFUSED and entry.fingerprint == fingerprint:
            waiting = _waiting(entry, rules, operation)
            if waiting is not None:
                return waiting
    if operation not in rules.operations:
        return _NOT_IN_SCOPE[operation]
    if skip is not None:
        return Decision("skip", operation, skip)
    if entry is None:
        return _SEND[operation]
    changed = entry.fingerprint != fingerprint
    if entry.status == "in_flight" and not forced:
        if changed:
            return Decision("hold_in_doubt", operation, HELD_IN_DOUBT_CHANGED)
        recovery = rules.recovery_of(operation)
        if recovery == "hold":
            return Decision("hold_in_doubt", operation, HELD_IN_DOUBT)
        if recovery == "probe":
            return _PROBE[operation]
        return _RESEND[operation]
    if entry.status in ("in_flight", "pending") and not changed:
        return _RESEND[operation]
    return _SEND[operation]


def _waiting(entry: LedgerEntry, rules: DecisionRules, operation: str) -> Decision | None:
    """Why a record the target refused is not sent by this run (dead letter, or its retry time has not come)."""
    limit = rules.retry.max_attempts
    # A dead letter stays one when max_attempts is raised (only a push or new data sends it); lowering it makes
    # dead letters of records that already failed that often.
    if entry.status == DEAD_LETTER or entry.failed_runs >= limit:
        return Decision("dead_letter", operation, dead_letter_reason(entry.failed_runs, limit))
    retry_after = entry.retry_after
    if retry_after is not None and rules.now is not None and rules.now < retry_after:
        return Decision("backoff", operation, waiting_reason(entry.failed_runs, limit, retry_after))
    return None


def decide_delete(
    entry: LedgerEntry | None,
    *,
    in_scope: bool = True,
    roles_apply: bool = False,
    recovery: str = "resend",
    rules: DecisionRules | None = None,
) -> Decision:
    """The decision for a record to delete (gone from the data set, or deleted in the change log).

    `in_scope` is False when the run is a push of other keys. A delete in doubt (in flight when a run died, or
    its last try got no answer) goes out again under its first idempotency key, or is probed first or held, as
    `recovery` (the delete's recovery mode) says. `roles_apply` says the integration checks owners' roles: a record gone
    from the data set has no owner to judge any more, so a record whose last reading was refused (skipped) keeps
    that refusal and its delete is not sent either (fail closed). With `rules` (the run's), a delete the target
    refused in earlier runs waits for its retry time, or is a dead letter, as `decide` says for other operations.
    """
    if entry is None or entry.delivered_fingerprint is None:
        return _ABSENT
    if not in_scope:
        return _NOT_IN_SCOPE["delete"]
    if roles_apply and entry.status == "skipped":
        return Decision("skip", "delete", DELETE_REFUSED_BY_ROLES)
    # A refused delete's ledger row has no fingerprint (the version it is about is "the record is gone").
    if rules is not None and not rules.forced and entry.status in _REFUSED and entry.fingerprint is None:
        waiting = _waiting(entry, rules, "delete")
        if waiting is not None:
            return waiting
    if entry.status == "in_flight" and entry.fingerprint is None:
        if recovery == "hold":
            return Decision("hold_in_doubt", "delete", HELD_IN_DOUBT)
        return _PROBE["delete"] if recovery == "probe" else _RESEND["delete"]
    return _SEND["delete"]
