"""Proposing a first mapping from column and field names."""

from __future__ import annotations

import pytest

from connector_pipelines.mapping import Proposal, TargetField, propose_mapping


def fields(*names: str) -> list[TargetField]:
    return [TargetField(name) for name in names]


def pairs(proposals: list[Proposal]) -> list[tuple[str, str]]:
    return [(proposal.source, proposal.target) for proposal in proposals]


def test_styles_of_the_same_name_match() -> None:
    proposals = propose_mapping(
        ["customerID", "First Name", "last-name", "EMAIL", "createdAt", "HTTPStatusCode"],
        fields("customer_id", "first_name", "last_name", "email", "created_at", "http_status_code"),
    )
    assert pairs(proposals) == [
        ("customerID", "customer_id"),
        ("First Name", "first_name"),
        ("last-name", "last_name"),
        ("EMAIL", "email"),
        ("createdAt", "created_at"),
        ("HTTPStatusCode", "http_status_code"),
    ]
    assert all(proposal.score == 0.98 for proposal in proposals)


def test_synonyms_and_abbreviations() -> None:
    proposals = propose_mapping(
        ["e-mail", "Tel", "order_no", "unit_qty", "ZIP"],
        fields("email", "phone", "order_number", "unit_quantity", "postcode"),
    )
    assert pairs(proposals) == [
        ("e-mail", "email"),
        ("Tel", "phone"),
        ("order_no", "order_number"),
        ("unit_qty", "unit_quantity"),
        ("ZIP", "postcode"),
    ]


def test_exact_match_wins_and_nothing_is_used_twice() -> None:
    proposals = propose_mapping(["email", "Email", "e_mail"], fields("email", "e-mail address"))
    assert pairs(proposals) == [("email", "email"), ("Email", "e-mail address")]
    assert proposals[0].score == 1.0
    sources = [proposal.source for proposal in proposals]
    assert len(sources) == len(set(sources))


def test_keys_are_matched_first_and_listed_first() -> None:
    proposals = propose_mapping(
        ["customer_no", "name"],
        [TargetField("customer_number"), TargetField("name"), TargetField("customer_no")],
        keys=["customer_no"],
    )
    assert pairs(proposals) == [("customer_no", "customer_no"), ("name", "name")]
    proposals = propose_mapping(
        ["account", "name", "customer_no"],
        fields("name", "customer_number", "account"),
        keys=["account", "customer_number"],
    )
    assert pairs(proposals) == [("account", "account"), ("customer_no", "customer_number"), ("name", "name")]


def test_key_competes_with_a_better_plain_match() -> None:
    # 'cust_id' matches the plain field 'cust_id' exactly, and the key 'custid' less well: the key claims it first.
    plain, key = TargetField("cust_id"), TargetField("custid")
    assert pairs(propose_mapping(["cust_id"], [plain, key])) == [("cust_id", "cust_id")]
    assert pairs(propose_mapping(["cust_id"], [plain, key], keys=["custid"])) == [("cust_id", "custid")]


def test_weak_matches_are_not_proposed() -> None:
    proposals = propose_mapping(
        ["name", "updated_at", "first_name", "qty"], fields("last_name", "created_at", "amount")
    )
    assert proposals == []


def test_close_spelling_is_proposed_with_a_lower_score() -> None:
    (proposal,) = propose_mapping(["adress_line1"], fields("address_line_1"))
    assert proposal.target == "address_line_1"
    assert 0.8 <= proposal.score < 0.95


def test_unknown_key_is_refused() -> None:
    with pytest.raises(ValueError, match=r"key 'emial' is not a target field \(did you mean 'email'\?\)"):
        propose_mapping(["email"], fields("email"), keys=["emial"])
