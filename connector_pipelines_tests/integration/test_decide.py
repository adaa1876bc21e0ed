"""`decide` and `decide_delete`: every branch of the per-record decision, as a table of ledger entries and runs."""

from __future__ import annotations

import pytest

from connector_pipelines.integration.decide import (
    DUPLICATE_KEY,
    HELD_IN_DOUBT,
    HELD_IN_DOUBT_CHANGED,
    INSERT_ONLY_NEW_KEYS,
    Decision,
    DecisionRules,
    decide,
    decide_delete,
    owner_refusal,
)
from connector_pipelines.state.ledger import LedgerEntry

FP = "fp-now"  # the record's fingerprint in this run
OLD = "fp-old"  # an earlier payload
REFUSED = "owner 7 holds none of the roles sales"


def entry(status: str, fingerprint: str | None = FP, delivered: str | None = FP) -> LedgerEntry:
    """A ledger entry; by default one for the payload of this run, delivered."""
    return LedgerEntry(status, fingerprint, delivered, 3, "ikey-3", "batch-3", "ref-3", 2)


NEW = None
DELIVERED = entry("delivered")
DELIVERED_OLD = entry("delivered", OLD, OLD)
DELETED = entry("delivered", None, None)  # deleted at the target by an earlier run
FAILED_NEW = entry("failed", FP, None)
FAILED_UPDATE = entry("failed", FP, OLD)
SKIPPED = entry("skipped", FP, None)
SKIPPED_OLD = entry("skipped", OLD, None)
PENDING = entry("pending", FP, None)
PENDING_OLD = entry("pending", OLD, None)
IN_FLIGHT = entry("in_flight", FP, None)
IN_FLIGHT_OLD = entry("in_flight", OLD, None)
IN_FLIGHT_UPDATE = entry("in_flight", FP, OLD)

UPSERT = DecisionRules()
FULL = DecisionRules(full=True)
PUSH = DecisionRules(pushed=True)
INSERT = DecisionRules(sync_mode="insert")
UPDATE = DecisionRules(sync_mode="update")
MIRROR = DecisionRules(sync_mode="mirror")
HOLD = DecisionRules(recovery_hold=True)
CREATES_ONLY = DecisionRules(operations=frozenset({"create"}))
UPDATES_ONLY = DecisionRules(operations=frozenset({"update"}))

CASES = [
    # (id, entry, rules, decide's keyword inputs, expected decision)
    ("duplicate_key_first", DELIVERED, UPSERT, {"duplicate": True, "mapping_error": "bad"}, ("duplicate", "create")),
    ("mapping_error_new_record", NEW, UPSERT, {"mapping_error": "name is required"}, ("fail", "create")),
    ("mapping_error_delivered_record", DELIVERED, FULL, {"mapping_error": "name is required"}, ("fail", "update")),
    ("mapping_error_before_update_mode", NEW, UPDATE, {"mapping_error": "name is required"}, ("fail", "create")),
    ("mapping_error_before_owner", NEW, UPSERT, {"mapping_error": "x", "owner_refused": REFUSED}, ("fail", "create")),
    ("new_record_upsert", NEW, UPSERT, {}, ("send", "create")),
    ("new_record_mirror", NEW, MIRROR, {}, ("send", "create")),
    ("new_record_insert", NEW, INSERT, {}, ("send", "create")),
    ("new_record_update_mode", NEW, UPDATE, {}, ("send", "update")),
    ("changed_record_upsert", DELIVERED_OLD, UPSERT, {}, ("send", "update")),
    ("changed_record_mirror", DELIVERED_OLD, MIRROR, {}, ("send", "update")),
    ("changed_record_update_mode", DELIVERED_OLD, UPDATE, {}, ("send", "update")),
    ("deleted_record_back_again", DELETED, UPSERT, {}, ("send", "create")),
    ("unchanged_upsert", DELIVERED, UPSERT, {}, ("unchanged", "update")),
    ("unchanged_insert", DELIVERED, INSERT, {}, ("unchanged", "update")),
    ("unchanged_update_mode", DELIVERED, UPDATE, {}, ("unchanged", "update")),
    ("unchanged_forced_by_full", DELIVERED, FULL, {}, ("send", "update")),
    ("unchanged_forced_by_keys", DELIVERED, PUSH, {}, ("send", "update")),
    ("unchanged_before_operation_scope", DELIVERED, CREATES_ONLY, {}, ("unchanged", "update")),
    ("failed_new_record_retried", FAILED_NEW, UPSERT, {}, ("send", "create")),
    ("failed_update_retried", FAILED_UPDATE, UPSERT, {}, ("send", "update")),
    ("insert_mode_skips_delivered_record", DELIVERED_OLD, INSERT, {}, ("skip", "update")),
    (
        "insert_mode_skip_forced_by_full",
        DELIVERED,
        DecisionRules(sync_mode="insert", full=True),
        {},
        ("skip", "update"),
    ),
    ("owner_refused_new_record", NEW, UPSERT, {"owner_refused": REFUSED}, ("skip", "create")),
    ("owner_refused_before_insert_mode", DELIVERED_OLD, INSERT, {"owner_refused": REFUSED}, ("skip", "update")),
    ("skipped_and_unchanged", SKIPPED, UPSERT, {"owner_refused": REFUSED}, ("unchanged", "create")),
    ("skipped_and_changed", SKIPPED_OLD, UPSERT, {"owner_refused": REFUSED}, ("skip", "create")),
    ("skipped_and_unchanged_forced_by_keys", SKIPPED, PUSH, {"owner_refused": REFUSED}, ("skip", "create")),
    ("skipped_before_and_allowed_now", SKIPPED, UPSERT, {}, ("send", "create")),
    ("pending_held", PENDING, UPSERT, {}, ("held", "create")),
    ("pending_changed_held", PENDING_OLD, UPSERT, {}, ("held", "create")),
    ("pending_held_before_operation_scope", PENDING, UPDATES_ONLY, {}, ("held", "create")),
    ("pending_pushed_resent_under_old_key", PENDING, PUSH, {}, ("resend", "create")),
    ("pending_full_resent_under_old_key", PENDING, FULL, {}, ("resend", "create")),
    ("pending_changed_pushed_sent_as_new_version", PENDING_OLD, PUSH, {}, ("send", "create")),
    ("in_flight_same_fingerprint_resent", IN_FLIGHT, UPSERT, {}, ("resend", "create")),
    ("in_flight_update_resent", IN_FLIGHT_UPDATE, UPSERT, {}, ("resend", "update")),
    ("in_flight_changed_held", IN_FLIGHT_OLD, UPSERT, {}, ("hold_in_doubt", "create")),
    ("in_flight_same_fingerprint_recovery_hold", IN_FLIGHT, HOLD, {}, ("hold_in_doubt", "create")),
    ("in_flight_changed_forced_by_full", IN_FLIGHT_OLD, FULL, {}, ("send", "create")),
    ("in_flight_changed_forced_by_keys", IN_FLIGHT_OLD, PUSH, {}, ("send", "create")),
    (
        "in_flight_recovery_hold_forced_by_keys",
        IN_FLIGHT,
        DecisionRules(pushed=True, recovery_hold=True),
        {},
        ("resend", "create"),
    ),
    ("create_not_in_scope", NEW, UPDATES_ONLY, {}, ("not_in_scope", "create")),
    ("update_not_in_scope", DELIVERED_OLD, CREATES_ONLY, {}, ("not_in_scope", "update")),
    (
        "operation_scope_before_skip",
        DELIVERED_OLD,
        DecisionRules(sync_mode="insert", operations=frozenset({"create"})),
        {},
        ("not_in_scope", "update"),
    ),
    ("operation_scope_before_hold", IN_FLIGHT_OLD, UPDATES_ONLY, {}, ("not_in_scope", "create")),
]


@pytest.mark.parametrize(("entry_", "rules", "inputs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_action_and_operation(entry_, rules, inputs, expected) -> None:
    decision = decide(entry_, FP, rules, **inputs)

    assert (decision.action, decision.operation) == expected


@pytest.mark.parametrize(
    ("entry_", "rules", "inputs", "reason"),
    [
        (DELIVERED, UPSERT, {"duplicate": True}, DUPLICATE_KEY),
        (NEW, UPSERT, {"mapping_error": "name is required"}, "name is required"),
        (DELIVERED_OLD, INSERT, {}, INSERT_ONLY_NEW_KEYS),
        (DELIVERED_OLD, INSERT, {"owner_refused": REFUSED}, REFUSED),
        (IN_FLIGHT_OLD, UPSERT, {}, HELD_IN_DOUBT_CHANGED),
        (IN_FLIGHT, HOLD, {}, HELD_IN_DOUBT),
        (IN_FLIGHT_OLD, HOLD, {}, HELD_IN_DOUBT_CHANGED),
        (NEW, UPSERT, {}, None),
        (DELIVERED, UPSERT, {}, None),
    ],
    ids=[
        "duplicate",
        "mapping",
        "insert_mode",
        "owner",
        "in_doubt_changed",
        "in_doubt_hold",
        "in_doubt_both",
        "send",
        "unchanged",
    ],
)
def test_decide_reason(entry_, rules, inputs, reason) -> None:
    assert decide(entry_, FP, rules, **inputs).reason == reason


def test_held_in_doubt_reasons_keep_their_wording() -> None:
    assert HELD_IN_DOUBT == (
        "held for review: it was in flight when an earlier run stopped; check the target, then push the key"
    )
    assert HELD_IN_DOUBT_CHANGED == (
        "held for review: it was in flight when an earlier run stopped, and has changed since; check the target, "
        "then push the key"
    )


@pytest.mark.parametrize(
    ("rules", "forced"),
    [(UPSERT, False), (FULL, True), (PUSH, True), (DecisionRules(full=True, pushed=True), True)],
    ids=["neither", "full", "keys", "both"],
)
def test_rules_are_forced_by_full_or_by_keys(rules: DecisionRules, forced: bool) -> None:
    assert rules.forced is forced


DELETE_CASES = [
    ("never_delivered", None, True, "absent"),
    ("deleted_already", DELETED, True, "absent"),
    ("failed_before_any_delivery", FAILED_NEW, True, "absent"),
    ("absent_before_scope", None, False, "absent"),
    ("delivered", DELIVERED, True, "send"),
    ("not_in_pushed_keys", DELIVERED, False, "not_in_scope"),
    ("in_flight_delete_resent", entry("in_flight", None, FP), True, "resend"),
    ("in_flight_update_sent_as_new_delete", IN_FLIGHT_UPDATE, True, "send"),
]


@pytest.mark.parametrize(
    ("entry_", "in_scope", "action"), [c[1:] for c in DELETE_CASES], ids=[c[0] for c in DELETE_CASES]
)
def test_decide_delete(entry_, in_scope: bool, action: str) -> None:
    assert decide_delete(entry_, in_scope=in_scope) == Decision(action, "delete")


@pytest.mark.parametrize(
    ("owner", "refusal"),
    [
        ("1", None),
        (1, None),
        (7, "owner 7 holds none of the roles sales, support"),
        (None, "the record has no owner, so it holds none of the roles sales, support"),
    ],
    ids=["allowed_text", "allowed_number", "refused", "no_owner"],
)
def test_owner_refusal(owner: object, refusal: str | None) -> None:
    assert owner_refusal(owner, {"1", "2", "None"}, ["sales", "support"]) == refusal
