"""The loopback HTTP target (connector_pipelines_tests.servers.http_target) with real clients (requests,
aiohttp): the REST store, atomic batches, idempotent replay, each injected fault, the auth modes, /_control over
HTTP and the target in its own process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import requests

from connector_pipelines_tests.servers.http_target import RecordingTarget, run_in_subprocess

pytestmark = pytest.mark.timeout(60)


def post(target: Any, path: str, body: Any, key: str | None = None, timeout: float = 10, **kwargs: Any):
    """POST `body` as JSON, with an Idempotency-Key when `key` is given."""
    headers = kwargs.pop("headers", {}) | ({"Idempotency-Key": key} if key else {})
    return requests.post(target.url(path), json=body, headers=headers, timeout=timeout, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# the REST store


def test_crud_round_trip(http_target: RecordingTarget):
    created = post(http_target, "/customers", {"id": "c1", "name": "Ada"})
    assert (created.status_code, created.json()) == (201, {"id": "c1", "name": "Ada"})
    made_up = post(http_target, "/customers", {"name": "Bob"})
    assert made_up.status_code == 201
    bob = made_up.json()["id"]
    assert isinstance(bob, str) and bob and made_up.json()["name"] == "Bob"

    assert requests.get(http_target.url("/customers/c1"), timeout=10).json() == {"id": "c1", "name": "Ada"}
    listed = requests.get(http_target.url("/customers"), timeout=10).json()
    assert listed["count"] == 2 and {r["id"] for r in listed["records"]} == {"c1", bob}

    replaced = requests.put(http_target.url("/customers/c1"), json={"name": "Ada L."}, timeout=10)
    assert (replaced.status_code, replaced.json()) == (200, {"id": "c1", "name": "Ada L."})
    new = requests.put(http_target.url("/customers/c3"), json={"name": "Cy"}, timeout=10)
    assert (new.status_code, new.json()) == (201, {"id": "c3", "name": "Cy"})
    patched = requests.patch(http_target.url("/customers/c3"), json={"tier": "gold"}, timeout=10)
    assert (patched.status_code, patched.json()) == (200, {"id": "c3", "name": "Cy", "tier": "gold"})
    assert requests.patch(http_target.url("/customers/none"), json={"x": 1}, timeout=10).status_code == 404
    mismatch = requests.put(http_target.url("/customers/c3"), json={"id": "c4"}, timeout=10)
    assert mismatch.status_code == 400

    deleted = requests.delete(http_target.url("/customers/c3"), timeout=10)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert requests.delete(http_target.url("/customers/c3"), timeout=10).status_code == 404
    assert requests.get(http_target.url("/customers/c3"), timeout=10).status_code == 404

    again = post(http_target, "/customers", {"id": "c1", "name": "Ada again"})
    assert again.status_code == 200  # a POST with a known id replaces the record
    assert http_target.records("customers") == {"c1": {"id": "c1", "name": "Ada again"}, bob: made_up.json()}
    assert http_target.record("customers", "c1") == {"id": "c1", "name": "Ada again"}
    assert http_target.records("orders") == {}


def test_bad_requests_are_refused_and_not_applied(http_target: RecordingTarget):
    not_json = requests.post(http_target.url("/customers"), data=b"{not json", timeout=10)
    assert (not_json.status_code, not_json.json()) == (400, {"error": "the body is not JSON"})
    assert post(http_target, "/customers", [1, 2]).status_code == 400
    assert post(http_target, "/a/b/c", {"id": 1}).status_code == 404
    assert requests.delete(http_target.url("/customers"), timeout=10).status_code == 405
    assert http_target.stats()["records"] == 0
    assert [r.outcome for r in http_target.requests] == ["rejected"] * 4


def test_every_request_is_recorded(http_target: RecordingTarget):
    before = time.time()
    post(http_target, "/customers?source=crm", {"id": 7, "name": "Eve"}, key="k-7", headers={"X-Trace": "abc"})
    requests.get(http_target.url("/_health"), timeout=10)  # harness endpoints are not recorded

    (recorded,) = http_target.requests
    assert (recorded.method, recorded.path, recorded.query) == ("POST", "/customers", {"source": "crm"})
    assert recorded.headers["x-trace"] == "abc" and recorded.headers["content-type"] == "application/json"
    assert recorded.headers["idempotency-key"] == "k-7" == recorded.idempotency_key
    assert recorded.body == {"id": 7, "name": "Eve"}
    assert (recorded.status, recorded.outcome, recorded.fault) == (201, "applied", None)
    assert before <= recorded.time <= time.time()
    # A numeric id stays a number in the record; URLs and the store's keys use its string form.
    assert http_target.record("customers", "7") == {"id": 7, "name": "Eve"}


# ----------------------------------------------------------------------------------------------------------------
# batches


def test_a_batch_upserts_every_record(http_target: RecordingTarget):
    post(http_target, "/invoices", {"id": "i1", "amount": 1})
    answer = post(http_target, "/invoices/batch", {"records": [{"id": "i1", "amount": 10}, {"amount": 20}]})

    assert answer.status_code == 200
    results = answer.json()["results"]
    assert results[0] == {"id": "i1"} and set(results[1]) == {"id"}
    assert http_target.records("invoices") == {
        "i1": {"id": "i1", "amount": 10},
        results[1]["id"]: {"id": results[1]["id"], "amount": 20},
    }


def test_a_rejected_record_refuses_its_whole_batch(http_target: RecordingTarget):
    http_target.reject_field = ("email", "bad@example.test")

    single = post(http_target, "/customers", {"id": "c1", "email": "bad@example.test"})
    assert (single.status_code, single.json()) == (422, {"error": "invalid email"})
    batch = [{"id": "c2", "email": "a@example.test"}, {"id": "c3", "email": "bad@example.test"}, {"id": "c4"}]
    refused = post(http_target, "/customers/batch", {"records": batch}, key="batch-1")
    assert (refused.status_code, refused.json()) == (422, {"error": "invalid email", "index": 1})
    assert http_target.records("customers") == {}  # nothing of the batch was applied
    assert http_target.applied == {} and http_target.receipts == {"batch-1": 1}

    # A refusal is not stored for its key: the corrected batch, same key, is applied.
    batch[1]["email"] = "c@example.test"
    accepted = post(http_target, "/customers/batch", {"records": batch}, key="batch-1")
    assert accepted.status_code == 200
    assert sorted(http_target.records("customers")) == ["c2", "c3", "c4"]
    assert http_target.applied == {"batch-1": 1}
    assert post(http_target, "/customers/batch", {"records": "nope"}).status_code == 400


# ----------------------------------------------------------------------------------------------------------------
# idempotency


def test_a_repeated_idempotency_key_is_replayed_not_applied(http_target: RecordingTarget):
    first = post(http_target, "/payments", {"amount": 5}, key="pay-1")
    second = post(http_target, "/payments", {"amount": 5}, key="pay-1")

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()  # the made-up id too: the stored answer is replayed
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert http_target.receipts == {"pay-1": 2} and http_target.applied == {"pay-1": 1}
    assert len(http_target.records("payments")) == 1
    assert [r.outcome for r in http_target.requests] == ["applied", "replayed"]

    reused = post(http_target, "/payments", {"amount": 6}, key="pay-1")  # same key, another request
    assert reused.status_code == 409
    assert http_target.applied == {"pay-1": 1} and http_target.stats()["conflicts"] == 1

    # Without keys nothing can be recognised: two creates, two records.
    post(http_target, "/payments", {"amount": 7})
    post(http_target, "/payments", {"amount": 7})
    assert len(http_target.records("payments")) == 3
    assert http_target.stats()["applied_without_key"] == 2


def test_concurrent_requests_with_one_key_are_applied_once(http_target: RecordingTarget):
    async def deliver() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> int:
                key = f"k-{i // 2}"  # every key twice, at the same time
                async with session.post(
                    http_target.url("/events"), json={"id": key, "n": i // 2}, headers={"Idempotency-Key": key}
                ) as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one(i) for i in range(200)))

    statuses = asyncio.run(deliver())

    assert statuses == [201] * 200
    assert set(http_target.applied.values()) == {1} and len(http_target.applied) == 100
    stats = http_target.stats()
    assert (stats["receipts"], stats["applied"], stats["replays"], stats["duplicates"]) == (200, 100, 100, 0)
    assert stats["distinct_keys"] == 100 and stats["records"] == 100


# ----------------------------------------------------------------------------------------------------------------
# faults


def test_fail_next_answers_the_status_without_applying(http_target: RecordingTarget):
    http_target.fail_next(2, status=503, body={"error": "down for maintenance"})

    answers = [post(http_target, "/orders", {"id": "o1"}, key="o1") for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 201]
    assert answers[0].json() == {"error": "down for maintenance"}
    assert http_target.receipts == {"o1": 3} and http_target.applied == {"o1": 1}
    assert [(r.outcome, r.fault) for r in http_target.requests] == [
        ("fault", "fail:503"),
        ("fault", "fail:503"),
        ("applied", None),
    ]


def test_rate_limit_answers_429_with_retry_after(http_target: RecordingTarget):
    http_target.rate_limit_next(1, retry_after=2)

    limited = post(http_target, "/orders", {"id": "o1"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert http_target.records("orders") == {}
    assert post(http_target, "/orders", {"id": "o1"}).status_code == 201

    http_target.rate_limit_next(1, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert post(http_target, "/orders", {"id": "o2"}).headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"


def test_faults_run_in_the_order_they_were_queued(http_target: RecordingTarget):
    http_target.fail_next(1, status=500)
    http_target.rate_limit_next(1)
    http_target.fail_next(1, status=502)

    statuses = [post(http_target, "/orders", {"id": "o"}).status_code for _ in range(4)]

    assert statuses == [500, 429, 502, 201]


def test_a_delayed_request_is_applied_after_its_client_timed_out(http_target: RecordingTarget):
    http_target.delay_next(1, seconds=1.0)

    with pytest.raises(requests.ReadTimeout):
        post(http_target, "/orders", {"id": "o1"}, key="o1", timeout=0.2)
    assert http_target.records("orders") == {}  # still sleeping
    assert http_target.wait_idle(5)
    assert http_target.records("orders") == {"o1": {"id": "o1"}} and http_target.applied == {"o1": 1}

    retry = post(http_target, "/orders", {"id": "o1"}, key="o1")
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert http_target.receipts == {"o1": 2} and http_target.applied == {"o1": 1}


def test_a_retry_while_the_first_attempt_still_waits_is_deduplicated_by_its_key(http_target: RecordingTarget):
    http_target.delay_next(1, seconds=1.5)  # ample time for the retry to overtake it, even on a busy machine

    with pytest.raises(requests.ReadTimeout):
        post(http_target, "/orders", {"id": "o1"}, key="o1", timeout=0.2)
    retry = post(http_target, "/orders", {"id": "o1"}, key="o1")  # the first one still sleeps
    assert retry.status_code == 201
    assert http_target.wait_idle(5)

    # The retry was applied; the first attempt woke up later and found its key answered.
    assert http_target.receipts == {"o1": 2} and http_target.applied == {"o1": 1}
    first, second = http_target.requests
    assert (first.outcome, first.fault, second.outcome) == ("replayed", "delay:1.5", "applied")


def test_without_a_key_a_retry_during_a_delay_applies_twice(http_target: RecordingTarget):
    http_target.delay_next(1, seconds=0.6)

    with pytest.raises(requests.ReadTimeout):
        post(http_target, "/orders", {"amount": 1}, timeout=0.2)
    post(http_target, "/orders", {"amount": 1})
    assert http_target.wait_idle(5)

    assert len(http_target.records("orders")) == 2  # the duplicate a client without keys causes
    assert http_target.stats()["applied_without_key"] == 2


def test_clear_while_a_request_waits_keeps_it_out(http_target: RecordingTarget):
    http_target.delay_next(1, seconds=1.0)
    with pytest.raises(requests.ReadTimeout):
        post(http_target, "/orders", {"id": "o1"}, key="o1", timeout=0.1)

    http_target.clear()
    assert http_target.wait_idle(5)

    assert http_target.records("orders") == {} and http_target.applied == {} and http_target.requests == []
    assert http_target.stats()["requests"] == 0


def test_a_dropped_connection_raises_on_the_client_and_is_not_applied(http_target: RecordingTarget):
    http_target.drop_next(1)
    session = requests.Session()

    with pytest.raises(requests.ConnectionError):
        session.post(http_target.url("/orders"), json={"id": "o1"}, headers={"Idempotency-Key": "o1"}, timeout=10)
    assert http_target.records("orders") == {} and http_target.applied == {}
    (dropped,) = http_target.requests
    assert (dropped.status, dropped.outcome, dropped.fault) == (None, "dropped", "drop")
    assert http_target.stats()["dropped"] == 1

    retry = session.post(http_target.url("/orders"), json={"id": "o1"}, headers={"Idempotency-Key": "o1"}, timeout=10)
    assert retry.status_code == 201
    assert http_target.receipts == {"o1": 2} and http_target.applied == {"o1": 1}


def test_a_dropped_connection_raises_on_an_aiohttp_client(http_target: RecordingTarget):
    http_target.drop_next(1)

    async def deliver() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(http_target.url("/orders"), json={"id": "o1"}) as response:
                await response.read()

    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(deliver())
    assert http_target.records("orders") == {}


def test_failure_rate_fails_about_p_of_the_requests_the_same_way_each_time(http_target: RecordingTarget):
    def statuses(n: int) -> list[int]:
        with requests.Session() as session:
            return [session.post(http_target.url("/events"), json={"n": i}, timeout=10).status_code for i in range(n)]

    http_target.failure_rate(0.2, seed=7)
    run = statuses(1000)
    failed = run.count(500)
    assert 150 <= failed <= 250 and failed + run.count(201) == 1000
    assert len(http_target.records("events")) == 1000 - failed

    http_target.clear()
    http_target.failure_rate(0.2, seed=7)
    assert statuses(1000) == run  # the same seed fails the same requests
    http_target.failure_rate(0)
    assert set(statuses(50)) == {201}


def test_failure_rate_can_mix_dropped_connections(http_target: RecordingTarget):
    http_target.failure_rate(0.3, seed=3, drop_fraction=0.5, status=503)
    outcomes = []
    with requests.Session() as session:
        for i in range(400):
            try:
                outcomes.append(session.post(http_target.url("/events"), json={"n": i}, timeout=10).status_code)
            except requests.ConnectionError:
                outcomes.append("dropped")

    dropped, unavailable = outcomes.count("dropped"), outcomes.count(503)
    assert dropped > 20 and unavailable > 20 and 80 <= dropped + unavailable <= 160
    stats = http_target.stats()
    assert stats["dropped"] == dropped and stats["statuses"]["503"] == unavailable
    assert stats["records"] == outcomes.count(201)


def test_respond_with_overrides_the_answer(http_target: RecordingTarget):
    http_target.respond_with(200, {"ok": False}, times=1)
    answer = post(http_target, "/orders", {"id": "o1"}, key="o1")
    assert (answer.status_code, answer.json()) == (200, {"ok": False})
    assert http_target.records("orders") == {} and http_target.applied == {}  # not applied, not stored

    http_target.respond_with(200, {"ok": True}, apply=True)
    applied = post(http_target, "/orders", {"id": "o1"}, key="o1")
    assert (applied.status_code, applied.json()) == (200, {"ok": True})
    assert http_target.records("orders") == {"o1": {"id": "o1"}} and http_target.applied == {"o1": 1}
    assert post(http_target, "/orders", {"id": "o1"}, key="o1").json() == {"ok": True}  # replayed as answered

    http_target.clear_faults()
    assert post(http_target, "/orders", {"id": "o2"}).status_code == 201


# ----------------------------------------------------------------------------------------------------------------
# auth


def test_basic_auth(http_target: RecordingTarget):
    http_target.require_basic("reporter", "s3cret")

    missing = post(http_target, "/orders", {"id": "o1"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Basic ")
    assert post(http_target, "/orders", {"id": "o1"}, auth=("reporter", "wrong")).status_code == 401
    assert post(http_target, "/orders", {"id": "o1"}, auth=("reporter", "s3cret")).status_code == 201
    assert requests.get(http_target.url("/_health"), timeout=10).status_code == 200  # never needs auth

    # A refused login does not use up a queued fault: auth comes first.
    http_target.fail_next(1)
    assert post(http_target, "/orders", {"id": "o2"}).status_code == 401
    assert post(http_target, "/orders", {"id": "o2"}, auth=("reporter", "s3cret")).status_code == 500
    assert [r.outcome for r in http_target.requests] == ["unauthorized", "unauthorized", "applied"] + [
        "unauthorized",
        "fault",
    ]


def test_bearer_tokens_are_issued_expire_and_can_be_revoked(http_target: RecordingTarget):
    http_target.require_bearer(client_id="cid", client_secret="csecret", username="u", password="p", token_ttl=1)
    token_url = http_target.url("/oauth/token")

    def call(token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return post(http_target, "/orders", {"id": "o1"}, headers=headers)

    refused = call(None)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer ")

    form = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "csecret"}
    issued = requests.post(token_url, data=form, timeout=10)
    assert issued.status_code == 200
    body = issued.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 1
    token = body["access_token"]
    assert call(token).status_code == 201

    by_basic = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=("cid", "csecret"), timeout=10)
    by_login = requests.post(token_url, json={"username": "u", "password": "p"}, timeout=10)
    assert by_basic.status_code == by_login.status_code == 200
    assert call(by_login.json()["access_token"]).status_code == 200  # the record exists: a replace

    bad = requests.post(token_url, data=form | {"client_secret": "nope"}, timeout=10)
    assert (bad.status_code, bad.json()["error"]) == (401, "invalid_client")
    assert requests.post(token_url, json={"username": "u", "password": "x"}, timeout=10).status_code == 401
    assert requests.post(token_url, data={"grant_type": "implicit"}, timeout=10).status_code == 400

    time.sleep(1.1)
    expired = call(token)
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["WWW-Authenticate"]

    http_target.token_ttl = 60
    fresh = requests.post(token_url, data=form, timeout=10).json()["access_token"]
    assert call(fresh).status_code == 200
    http_target.expire_tokens()
    assert call(fresh).status_code == 401
    assert http_target.tokens_issued == 4
    assert [r.path for r in http_target.requests].count("/oauth/token") == 7  # token requests are recorded


def test_api_key(http_target: RecordingTarget):
    http_target.require_api_key("k-123", header="X-Api-Key")

    assert post(http_target, "/orders", {"id": "o1"}).status_code == 401
    assert post(http_target, "/orders", {"id": "o1"}, headers={"X-Api-Key": "wrong"}).status_code == 401
    assert post(http_target, "/orders", {"id": "o1"}, headers={"x-api-key": "k-123"}).status_code == 201
    assert http_target.auth["mode"] == "api_key"


# ----------------------------------------------------------------------------------------------------------------
# control and counts over HTTP, and the target in its own process


def test_control_over_http(http_target: RecordingTarget):
    def control(**options: Any) -> requests.Response:
        return requests.post(http_target.url("/_control"), json=options, timeout=10)

    assert control(action="fail_next", n=1, status=502).status_code == 200
    assert post(http_target, "/orders", {"id": "o1"}).status_code == 502
    control(action="rate_limit_next", retry_after=3)
    assert post(http_target, "/orders", {"id": "o1"}).headers["Retry-After"] == "3"
    control(action="reject_field", name="state", value="bad")
    assert post(http_target, "/orders", {"id": "o1", "state": "bad"}).status_code == 422
    control(action="reject_field")
    assert post(http_target, "/orders", {"id": "o1", "state": "bad"}).status_code == 201
    control(action="respond_with", status=200, body={"ok": False}, times=1)
    assert post(http_target, "/orders", {"id": "o2"}).json() == {"ok": False}
    control(action="auth", mode="api_key", value="k")
    assert post(http_target, "/orders", {"id": "o2"}).status_code == 401

    assert control(action="no such thing").status_code == 400
    assert control(action="fail_next", bogus=1).status_code == 400
    assert requests.post(http_target.url("/_control"), data=b"[]", timeout=10).status_code == 400

    stats = requests.get(http_target.url("/_stats"), timeout=10).json()
    assert stats["requests"] == 6 and stats["statuses"] == {"201": 1, "200": 1, "401": 1, "422": 1, "429": 1, "502": 1}

    assert control(action="clear").status_code == 200
    assert http_target.auth["mode"] == "none" and http_target.requests == [] and http_target.records("orders") == {}
    assert post(http_target, "/orders", {"id": "o3"}).status_code == 201


def test_stats_count_keys_replays_and_statuses(http_target: RecordingTarget):
    for key in ("a", "b", "a"):
        post(http_target, "/orders", {"id": key}, key=key)
    http_target.fail_next(1)
    post(http_target, "/orders", {"id": "c"}, key="c")

    stats = http_target.stats()
    assert stats["requests"] == 4 and stats["statuses"] == {"201": 3, "500": 1}
    assert (stats["receipts"], stats["applied"], stats["replays"], stats["duplicates"]) == (4, 2, 1, 0)
    assert stats["distinct_keys"] == 3 and stats["records"] == 2 and stats["collections"] == {"orders": 2}


def test_clear_resets_everything(http_target: RecordingTarget):
    http_target.reject_field = ("x", 1)
    http_target.require_basic()
    post(http_target, "/orders", {"id": "o1"}, key="o1", auth=("pipelines", "pw-http-5d81c2"))
    http_target.fail_next(3)
    http_target.failure_rate(0.5)

    http_target.clear()

    assert http_target.requests == [] and http_target.receipts == {} and http_target.applied == {}
    assert http_target.reject_field is None and http_target.auth["mode"] == "none"
    assert http_target.stats()["requests"] == 0
    assert [post(http_target, "/orders", {"id": "o1", "x": 1}).status_code for _ in range(5)] == [
        201,
        200,
        200,
        200,
        200,
    ]


def test_a_target_of_its_own_starts_and_stops():
    with RecordingTarget(reject_field=("kind", "spam")) as target:
        assert requests.get(target.url("/_health"), timeout=10).json() == {"ok": True}
        assert post(target, "/notes", {"kind": "spam"}).status_code == 422
        target.clear()
        assert target.reject_field == ("kind", "spam")  # clear() keeps the constructor's settings
        url = target.url("/_health")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_the_target_in_its_own_process_reports_stats_and_takes_control():
    with run_in_subprocess(fast=True) as target:
        with requests.Session() as session:
            for i in range(50):
                answer = session.post(
                    target.url("/invoices"), json={"id": f"i{i}", "amount": i}, headers={"Idempotency-Key": f"k{i}"}
                )
                assert answer.status_code == 201 and answer.json() == {"id": f"i{i}"}  # fast: ids only
            replay = session.post(
                target.url("/invoices"), json={"id": "i0", "amount": 0}, headers={"Idempotency-Key": "k0"}
            )
            assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
            assert session.get(target.url("/invoices/i3")).json() == {"id": "i3"}

            stats = target.stats()
            assert stats["fast"] is True and stats["requests"] == 52
            assert stats["statuses"] == {"200": 1, "201": 51}
            assert (stats["receipts"], stats["applied"], stats["duplicates"], stats["distinct_keys"]) == (51, 50, 0, 50)
            assert stats["replays"] == 1 and stats["records"] == 50

            target.control("fail_next", n=1, status=503)
            assert session.post(target.url("/invoices"), json={"id": "x"}).status_code == 503
            target.clear()
            assert target.stats()["requests"] == 0
        process = target.process
    assert process.poll() is not None
