"""Success criteria on a target's response, and the target reference read from its body."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector_pipelines.integration.success import SuccessCheck, extract_target_ref
from connector_pipelines.spec.integration import SuccessCriterion
from connector_pipelines.transports.http import HttpOutcome


def criterion(source: str, comparator: str, value: str | int) -> SuccessCriterion:
    return SuccessCriterion(source=source, comparator=comparator, value=value)


def outcome(status: int | None, body: str = "", error: str | None = None) -> HttpOutcome:
    now = datetime.now(UTC)
    return HttpOutcome(
        status=status,
        body=body,
        headers={},
        error=error,
        attempts=1,
        elapsed_seconds=0.0,
        started_at=now,
        finished_at=now,
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_default_accepts_2xx(status: int) -> None:
    assert SuccessCheck(None).check(status, "") is None
    assert SuccessCheck([]).evaluate(outcome(status)) is None


@pytest.mark.parametrize("status", [100, 199, 301, 400, 404, 500, 503])
def test_default_rejects_the_rest(status: int) -> None:
    assert SuccessCheck(None).check(status, "") == f"status_code {status} is not 2xx"


def test_no_response_always_fails_with_the_transport_error() -> None:
    check = SuccessCheck([criterion("response_body", "not_contains", "error")])
    assert check.evaluate(outcome(None, error="timed out after 5s")) == "timed out after 5s"
    assert SuccessCheck(None).check(None, "") == "no response from the target"


def test_a_client_error_fails_even_when_the_criteria_hold() -> None:
    # Retries exhausted on 503: the criteria (only on the body here) must not turn that into a delivery.
    check = SuccessCheck([criterion("response_body", "not_contains", "error")])
    failed = outcome(503, "busy", error="gave up after 5 attempts: 503")
    assert check.evaluate(failed) == "gave up after 5 attempts: 503"


@pytest.mark.parametrize("value", [201, "201", " 201 "])
def test_status_equals_compares_numbers(value: str | int) -> None:
    check = SuccessCheck([criterion("status_code", "equals", value)])
    assert check.check(201, "") is None
    assert check.check(200, "") == "status_code 200 does not equal 201"


def test_status_not_equals() -> None:
    check = SuccessCheck([criterion("status_code", "not_equals", "204")])
    assert check.check(200, "") is None
    assert check.check(204, "") == "status_code 204 must not equal 204"


@pytest.mark.parametrize("value", ["2xx", "2XX"])
def test_status_class(value: str) -> None:
    check = SuccessCheck([criterion("status_code", "equals", value)])
    assert check.check(202, "") is None
    assert check.check(302, "") == "status_code 302 is not 2xx"
    not_4xx = SuccessCheck([criterion("status_code", "not_equals", "4xx")])
    assert not_4xx.check(500, "") is None
    assert not_4xx.check(409, "") == "status_code 409 must not be 4xx"


def test_status_contains_compares_text() -> None:
    check = SuccessCheck([criterion("status_code", "contains", "20")])
    assert check.check(201, "") is None
    assert check.check(120, "") is None  # documented: text, not a class
    assert check.check(302, "") == "status_code 302 does not contain '20'"
    absent = SuccessCheck([criterion("status_code", "not_contains", 5)])
    assert absent.check(200, "") is None
    assert absent.check(503, "") == "status_code 503 must not contain '5'"


@pytest.mark.parametrize("value", ["abc", "2x", "20.5", "xx"])
def test_invalid_status_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a status; write a status such as 201 or a class such as 2xx"):
        SuccessCheck([criterion("status_code", "equals", value)])


def test_body_contains_and_not_contains() -> None:
    check = SuccessCheck([criterion("response_body", "contains", '"ok": true')])
    assert check.check(200, '{"ok": true, "id": 1}') is None
    assert check.check(200, '{"ok": false}') == "response_body does not contain '\"ok\": true'"
    refused = SuccessCheck([criterion("response_body", "not_contains", "error")])
    assert refused.check(200, "{}") is None
    assert refused.check(200, '{"error": "x"}') == "response_body must not contain 'error'"


def test_body_equals_strips_whitespace_and_is_case_sensitive() -> None:
    check = SuccessCheck([criterion("response_body", "equals", "OK")])
    assert check.check(200, "  OK\n") is None
    assert check.check(200, "ok") == "response_body does not equal 'OK'"
    differs = SuccessCheck([criterion("response_body", "not_equals", "")])
    assert differs.check(200, "accepted") is None
    assert differs.check(200, " \n") == "response_body must not equal ''"


def test_integer_value_on_the_body_is_text() -> None:
    assert SuccessCheck([criterion("response_body", "contains", 42)]).check(200, '{"id": 42}') is None


def test_every_criterion_must_hold_and_the_first_failure_is_reported() -> None:
    check = SuccessCheck(
        [
            criterion("status_code", "equals", 201),
            criterion("response_body", "contains", "created"),
            criterion("response_body", "not_contains", "warning"),
        ]
    )
    assert check.check(201, "created") is None
    assert check.check(200, "nope") == "status_code 200 does not equal 201"
    assert check.check(201, "nope") == "response_body does not contain 'created'"
    assert check.check(201, "created with warning") == "response_body must not contain 'warning'"
    # Criteria replace the default: a 200 with the right body counts when only the body is checked.
    assert SuccessCheck([criterion("response_body", "contains", "x")]).check(500, "x") is None


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        ('{"id": "c-1"}', "id", "c-1"),
        ('{"id": 42}', "id", "42"),
        ('{"data": {"id": 7}}', "data.id", "7"),
        ('{"results": [{"id": "a"}, {"id": "b"}]}', "results.1.id", "b"),
        ('{"results": [{"id": "a"}]}', "results.0.id", "a"),
        ('{"ok": true}', "ok", "true"),
        ('{"id": 1.5}', "id", "1.5"),
        ('{"results": []}', "results.0.id", None),
        ('{"data": {"id": null}}', "data.id", None),
        ('{"data": {"id": ""}}', "data.id", None),
        ('{"data": {"id": {"x": 1}}}', "data.id", None),
        ('{"data": [1, 2]}', "data.id", None),
        ('{"id": 1}', "missing", None),
        ("not json", "id", None),
        ("", "id", None),
        ('{"id": 1}', None, None),
        ('["x", "y"]', "1", "y"),
    ],
)
def test_extract_target_ref(body: str, path: str | None, expected: str | None) -> None:
    assert extract_target_ref(body, path) == expected
