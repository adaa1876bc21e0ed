"""The HTTP delivery client against the real loopback target: auth, retries, limits, TLS and secrets."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connector_pipelines.errors import TransportError
from connector_pipelines.integration.success import SuccessCheck, extract_target_ref
from connector_pipelines.spec.connections import HttpConnection
from connector_pipelines.transports.http import (
    RESPONSE_BODY_LIMIT,
    USER_AGENT,
    HttpDeliveryClient,
    HttpOutcome,
    HttpRequest,
    parse_retry_after,
)
from connector_pipelines.transports.http_auth import resolve_secret
from connector_pipelines_tests.servers import LOOPBACK, SelfSignedCertificate, free_port
from connector_pipelines_tests.servers.http_target import RecordingTarget

# `http_target` (the loopback RecordingTarget, cleared for each test) comes from servers/http_target_fixtures.py,
# which conftest.py loads as a plugin.

PASSWORD = "pw-http-5d81c2"
CLIENT_SECRET = "cs-http-9a04e7"
API_KEY = "key-http-37be10"
ENV = {"HTTP_PASSWORD": PASSWORD, "HTTP_CLIENT_SECRET": CLIENT_SECRET, "HTTP_API_KEY": API_KEY}
SECRETS = (PASSWORD, CLIENT_SECRET, API_KEY)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and key in merged else value
    return merged


def connection(base_url: str, **overrides: Any) -> HttpConnection:
    """A connection with test-sized timings: backoffs of 10 ms, so a retry costs nothing."""
    data = {
        "type": "http",
        "base_url": base_url,
        "timeout_seconds": 2,
        "max_concurrency": 8,
        "retry": {
            "max_attempts": 3,
            "initial_backoff_seconds": 0.01,
            "max_backoff_seconds": 0.02,
            "max_retry_after_seconds": 5,
        },
    }
    return HttpConnection.model_validate(_merge(data, overrides))


def post(i: int = 1, key: str | None = None, **fields: Any) -> HttpRequest:
    body = json.dumps({"id": f"c{i}", "name": f"Contact {i}", **fields}).encode()
    return HttpRequest("POST", "/contacts", body, idempotency_key=key or f"key-{i}")


async def _deliver(
    conn: HttpConnection, requests: Iterable[HttpRequest], environ: Mapping[str, str] | None = None
) -> tuple[list[HttpOutcome], dict[str, Any]]:
    async with HttpDeliveryClient(conn, environ=ENV if environ is None else environ) as client:
        outcomes = await asyncio.gather(*(client.send(request) for request in requests))
        return list(outcomes), client.stats


def deliver(
    conn: HttpConnection, requests: Iterable[HttpRequest], environ: Mapping[str, str] | None = None
) -> tuple[list[HttpOutcome], dict[str, Any]]:
    """Send the requests concurrently through one client; the outcomes in order and the client's stats."""
    return asyncio.run(_deliver(conn, requests, environ))


def deliver_one(conn: HttpConnection, request: HttpRequest | None = None) -> tuple[HttpOutcome, dict[str, Any]]:
    outcomes, stats = deliver(conn, [request or post()])
    return outcomes[0], stats


def assert_no_secret(*texts: str | None) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in (text or ""), text


# --------------------------------------------------------------------------------------------------------------
# Plain helpers


def test_resolve_secret() -> None:
    assert resolve_secret("${HTTP_PASSWORD}", ENV) == PASSWORD
    assert resolve_secret("client_credentials", ENV) == "client_credentials"
    with pytest.raises(TransportError) as caught:
        resolve_secret("${NOT_SET_ANYWHERE}", {})
    assert "NOT_SET_ANYWHERE" in str(caught.value) and "set it" in str(caught.value)


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --------------------------------------------------------------------------------------------------------------
# Requests and responses


def test_headers_body_and_target_ref(http_target: RecordingTarget) -> None:
    conn = connection(http_target.base_url, headers={"X-Tenant": "acme", "X-Source": "connection"})
    request = HttpRequest(
        "POST",
        "/contacts",
        b'{"id": "c7", "name": "Ada"}',
        headers={"x-source": "request"},
        idempotency_key="contact-c7-v1",
    )
    outcome, stats = deliver_one(conn, request)
    assert (outcome.status, outcome.error, outcome.attempts) == (201, None, 1)
    assert json.loads(outcome.body) == {"id": "c7", "name": "Ada"}
    assert outcome.headers["content-type"].startswith("application/json")
    assert outcome.started_at.tzinfo is not None and outcome.finished_at >= outcome.started_at
    assert extract_target_ref(outcome.body, "id") == "c7"
    assert SuccessCheck(None).evaluate(outcome) is None
    (received,) = http_target.requests
    assert received.headers["user-agent"] == USER_AGENT
    assert received.headers["content-type"] == "application/json"
    assert received.headers["idempotency-key"] == "contact-c7-v1"
    assert received.headers["x-tenant"] == "acme"
    assert received.headers["x-source"] == "request"  # the request's headers override the connection's
    assert stats["requests_sent"] == 1 and stats["retries"] == 0


def test_absolute_url_and_get_without_body(http_target: RecordingTarget) -> None:
    conn = connection(http_target.base_url)
    outcomes, _ = deliver(conn, [post(3)])
    outcome, _ = deliver_one(conn, HttpRequest("GET", http_target.url("/contacts/c3")))
    assert (outcome.status, json.loads(outcome.body)["id"]) == (200, "c3")
    assert "content-type" not in http_target.requests[-1].headers


def test_body_is_capped(http_target: RecordingTarget) -> None:
    http_target.respond_with(200, "x" * (RESPONSE_BODY_LIMIT + 5000), times=1)
    outcome, _ = deliver_one(connection(http_target.base_url))
    assert outcome.status == 200 and len(outcome.body) == RESPONSE_BODY_LIMIT


# --------------------------------------------------------------------------------------------------------------
# Authentication


def test_basic_auth(http_target: RecordingTarget) -> None:
    http_target.require_basic(password=PASSWORD)
    conn = connection(
        http_target.base_url, auth={"type": "basic", "username": "pipelines", "password": "${HTTP_PASSWORD}"}
    )
    outcome, _ = deliver_one(conn)
    assert (outcome.status, outcome.attempts) == (201, 1)


def test_basic_auth_wrong_password_is_not_retried(http_target: RecordingTarget) -> None:
    http_target.require_basic(password=PASSWORD)
    conn = connection(
        http_target.base_url, auth={"type": "basic", "username": "pipelines", "password": "${HTTP_PASSWORD}"}
    )
    outcome = deliver(conn, [post()], environ={"HTTP_PASSWORD": "wrong-password"})[0][0]
    assert (outcome.status, outcome.attempts, outcome.error) == (401, 1, None)
    assert SuccessCheck(None).evaluate(outcome) == "status_code 401 is not 2xx"
    assert http_target.receipts == {"key-1": 1}


def test_api_key(http_target: RecordingTarget) -> None:
    http_target.require_api_key(value=API_KEY, header="X-Api-Token")
    conn = connection(
        http_target.base_url, auth={"type": "api_key", "header": "X-Api-Token", "value": "${HTTP_API_KEY}"}
    )
    outcomes, _ = deliver(conn, [post(1), post(2)])
    assert [o.status for o in outcomes] == [201, 201]
    wrong, _ = deliver(conn, [post(3)], environ={"HTTP_API_KEY": "not-the-key"})
    assert (wrong[0].status, wrong[0].attempts) == (401, 1)


def token_connection(target: RecordingTarget, **auth: Any) -> HttpConnection:
    spec = {
        "type": "token",
        "token_url": "/oauth/token",
        "body": {"username": "pipelines", "password": "${HTTP_PASSWORD}"},
    }
    return connection(target.base_url, auth={**spec, **auth})


def oauth2_connection(target: RecordingTarget, **auth: Any) -> HttpConnection:
    spec = {
        "type": "oauth2",
        "token_url": target.url("/oauth/token"),
        "client_id": "connector-pipelines",
        "client_secret": "${HTTP_CLIENT_SECRET}",
    }
    return connection(target.base_url, auth={**spec, **auth}, max_concurrency=16)


def test_token_is_fetched_once_for_many_concurrent_requests(http_target: RecordingTarget) -> None:
    http_target.require_bearer(password=PASSWORD)
    outcomes, stats = deliver(token_connection(http_target), [post(i) for i in range(40)])
    assert {o.status for o in outcomes} == {201}
    assert stats["tokens_fetched"] == 1 and http_target.tokens_issued == 1
    token_request = http_target.requests[0]
    assert token_request.path == "/oauth/token" and token_request.body == {
        "username": "pipelines",
        "password": PASSWORD,
    }


def test_token_is_renewed_after_expiry_seconds(http_target: RecordingTarget) -> None:
    http_target.require_bearer(password=PASSWORD)

    async def run() -> dict[str, Any]:
        async with HttpDeliveryClient(token_connection(http_target, expiry_seconds=1), environ=ENV) as client:
            assert (await client.send(post(1))).status == 201
            assert (await client.send(post(2))).status == 201
            await asyncio.sleep(1.0)  # past 90% of the 1 s lifetime: renewed before use, no 401 needed
            assert (await client.send(post(3))).status == 201
            return client.stats

    stats = asyncio.run(run())
    assert stats["tokens_fetched"] == 2
    assert [r.status for r in http_target.requests if r.path != "/oauth/token"] == [201, 201, 201]


def test_oauth2_token_lives_for_expires_in(http_target: RecordingTarget) -> None:
    http_target.require_bearer(client_secret=CLIENT_SECRET, token_ttl=1)

    async def run() -> dict[str, Any]:
        async with HttpDeliveryClient(oauth2_connection(http_target), environ=ENV) as client:
            assert (await client.send(post(1))).status == 201
            await asyncio.sleep(1.0)
            assert (await client.send(post(2))).status == 201
            return client.stats

    assert asyncio.run(run())["tokens_fetched"] == 2
    assert not [r for r in http_target.requests if r.status == 401]


def test_token_is_refetched_once_on_401(http_target: RecordingTarget) -> None:
    http_target.require_bearer(password=PASSWORD)

    async def run() -> tuple[list[HttpOutcome], dict[str, Any]]:
        async with HttpDeliveryClient(token_connection(http_target), environ=ENV) as client:
            first = await client.send(post(0))
            http_target.expire_tokens()
            # Many requests meet the revoked token at once: still one new token, not one per request.
            rest = await asyncio.gather(*(client.send(post(i)) for i in range(1, 13)))
            return [first, *rest], client.stats

    outcomes, stats = asyncio.run(run())
    assert {o.status for o in outcomes} == {201}
    assert stats["tokens_fetched"] == 2 and http_target.tokens_issued == 2
    assert max(o.attempts for o in outcomes) == 2
    assert [r.status for r in http_target.requests if r.idempotency_key == "key-1"] == [401, 201]


def test_a_401_with_a_fresh_token_is_not_retried_again(http_target: RecordingTarget) -> None:
    http_target.require_bearer(password=PASSWORD)
    http_target.respond_with(401, {"error": "forbidden for this tenant"})
    outcome, stats = deliver_one(token_connection(http_target))
    assert (outcome.status, outcome.attempts, outcome.error) == (401, 2, None)
    assert stats["tokens_fetched"] == 2


@pytest.mark.parametrize("client_auth", ["body", "basic"])
def test_oauth2_client_credentials(http_target: RecordingTarget, client_auth: str) -> None:
    http_target.require_bearer(client_secret=CLIENT_SECRET)
    conn = oauth2_connection(http_target, client_auth=client_auth, scope="contacts:write", audience="crm")
    outcomes, stats = deliver(conn, [post(i) for i in range(10)])
    assert {o.status for o in outcomes} == {201} and stats["tokens_fetched"] == 1
    token_request = http_target.requests[0]
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_request.body["grant_type"] == "client_credentials"
    assert (token_request.body["scope"], token_request.body["audience"]) == ("contacts:write", "crm")
    if client_auth == "body":
        assert token_request.body["client_secret"] == CLIENT_SECRET
        assert "authorization" not in token_request.headers
    else:
        assert "client_secret" not in token_request.body
        assert token_request.headers["authorization"].startswith("Basic ")


def test_oauth2_wrong_secret(http_target: RecordingTarget) -> None:
    http_target.require_bearer(client_secret=CLIENT_SECRET)
    conn = oauth2_connection(http_target)
    wrong = {"HTTP_CLIENT_SECRET": "not-the-secret"}
    outcome = deliver(conn, [post()], environ=wrong)[0][0]
    # A refused token request is not retried and nothing reaches the target's data routes.
    assert (outcome.status, outcome.attempts) == (None, 0)
    assert "token request to" in outcome.error and "answered 401" in outcome.error and "invalid_client" in outcome.error
    assert SuccessCheck(None).evaluate(outcome) == outcome.error

    async def authenticate() -> None:
        async with HttpDeliveryClient(conn, environ=wrong) as client:
            await client.authenticate()

    with pytest.raises(TransportError, match="answered 401"):
        asyncio.run(authenticate())


def test_secrets_never_reach_errors_or_bodies(http_target: RecordingTarget) -> None:
    # A login endpoint that quotes the password back when it fails.
    http_target.respond_with(500, f"login refused for pipelines/{PASSWORD}")
    outcome, _ = deliver_one(token_connection(http_target, token_url="/login"))
    assert outcome.status is None and outcome.error.startswith("gave up after 3 attempts: token request to")
    assert "***" in outcome.error
    assert_no_secret(outcome.error)
    # A login endpoint that answers 200 without a token (here: echoing the login as a record).
    http_target.clear()
    outcome, _ = deliver_one(token_connection(http_target, token_url="/login"))
    assert "has no 'access_token'" in outcome.error
    assert_no_secret(outcome.error)
    # A target that echoes the credentials in a rejection: the kept body is redacted too.
    http_target.clear()
    http_target.require_basic(password=PASSWORD)
    http_target.respond_with(403, f"user pipelines:{PASSWORD} may not write contacts")
    conn = connection(
        http_target.base_url, auth={"type": "basic", "username": "pipelines", "password": "${HTTP_PASSWORD}"}
    )
    outcome, _ = deliver_one(conn)
    assert outcome.status == 403 and "***" in outcome.body
    assert_no_secret(outcome.body, outcome.error)


@pytest.mark.parametrize(
    ("auth", "variable"),
    [
        ({"type": "basic", "username": "u", "password": "${MISSING_PASSWORD}"}, "MISSING_PASSWORD"),
        ({"type": "api_key", "value": "${MISSING_KEY}"}, "MISSING_KEY"),
        ({"type": "token", "token_url": "/t", "body": {"password": "${MISSING_TOKEN_PW}"}}, "MISSING_TOKEN_PW"),
        ({"type": "oauth2", "token_url": "/t", "client_id": "c", "client_secret": "${MISSING_CS}"}, "MISSING_CS"),
    ],
)
def test_missing_environment_variable_raises_at_enter(auth: dict[str, Any], variable: str) -> None:
    async def enter() -> None:
        async with HttpDeliveryClient(connection("http://127.0.0.1:9", auth=auth), environ={}):
            pass

    with pytest.raises(TransportError, match=variable):
        asyncio.run(enter())


# --------------------------------------------------------------------------------------------------------------
# Retries


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_then_success(http_target: RecordingTarget, status: int) -> None:
    http_target.fail_next(1, status)
    outcome, stats = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.attempts, outcome.error) == (201, 2, None)
    assert http_target.receipts == {"key-1": 2} and http_target.applied == {"key-1": 1}
    assert (stats["retries"], stats["server_errors"]) == (1, 1)


def test_429_retry_after_is_honoured(http_target: RecordingTarget) -> None:
    http_target.rate_limit_next(1, retry_after=1)
    outcome, stats = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.attempts) == (201, 2)
    assert outcome.elapsed_seconds >= 0.95 and stats["waited_seconds"] >= 0.95
    assert stats["throttled_429"] == 1


def test_retry_after_beyond_the_limit_gives_up(http_target: RecordingTarget) -> None:
    http_target.rate_limit_next(1, retry_after=600)
    outcome, _ = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.attempts) == (429, 1)
    assert "retry after 600s" in outcome.error and "max_retry_after_seconds (5s)" in outcome.error
    assert outcome.elapsed_seconds < 1
    assert SuccessCheck(None).evaluate(outcome) == outcome.error


def test_timeout_then_success_with_the_same_idempotency_key(http_target: RecordingTarget) -> None:
    http_target.delay_next(1, seconds=1.0)
    outcome, stats = deliver_one(connection(http_target.base_url, timeout_seconds=0.3), post(5, key="contact-5"))
    assert (outcome.status, outcome.attempts) == (201, 2)
    assert stats["timeouts"] == 1
    assert http_target.wait_idle()
    # Both attempts carried the key; the late first one was deduplicated by the target, not applied twice.
    assert [r.idempotency_key for r in http_target.requests] == ["contact-5", "contact-5"]
    assert http_target.applied == {"contact-5": 1}


def test_dropped_connection_then_success(http_target: RecordingTarget) -> None:
    http_target.drop_next(1)
    outcome, stats = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.attempts) == (201, 2)
    assert stats["connection_errors"] == 1


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_client_errors_are_not_retried(http_target: RecordingTarget, status: int) -> None:
    http_target.respond_with(status, {"error": "no"}, times=1)
    outcome, stats = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.attempts, outcome.error) == (status, 1, None)
    assert stats["retries"] == 0


def test_exhaustion_after_max_attempts(http_target: RecordingTarget) -> None:
    http_target.fail_next(5, 503)
    outcome, _ = deliver_one(connection(http_target.base_url))
    assert (outcome.status, outcome.attempts, outcome.error) == (503, 3, "gave up after 3 attempts: 503")
    assert http_target.receipts == {"key-1": 3} and http_target.applied == {}


def test_no_server_at_all() -> None:
    conn = connection(f"http://{LOOPBACK}:{free_port()}")
    outcome, stats = deliver_one(conn)
    assert (outcome.status, outcome.attempts) == (None, 3)
    assert outcome.error.startswith("gave up after 3 attempts: connection refused")
    assert stats["connection_errors"] == 3


# --------------------------------------------------------------------------------------------------------------
# Limits


def test_concurrency_limit(http_target: RecordingTarget) -> None:
    http_target.delay_next(16, seconds=0.1)
    conn = connection(http_target.base_url, max_concurrency=4)

    async def run() -> tuple[list[HttpOutcome], int]:
        seen = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal seen
            while not done.is_set():
                seen = max(seen, http_target.in_flight)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        outcomes, _ = await _deliver(conn, [post(i) for i in range(16)])
        done.set()
        await watcher
        return outcomes, seen

    started = time.monotonic()
    outcomes, seen = asyncio.run(run())
    assert {o.status for o in outcomes} == {201}
    assert seen == 4
    assert time.monotonic() - started >= 0.4  # four waves of four


def test_rate_limit(http_target: RecordingTarget) -> None:
    conn = connection(http_target.base_url, rate_limit_per_second=20, max_concurrency=20)
    started = time.monotonic()
    outcomes, stats = deliver(conn, [post(i) for i in range(20)])
    elapsed = time.monotonic() - started
    assert {o.status for o in outcomes} == {201}
    assert elapsed >= 0.9  # 20 starts, 50 ms apart
    arrivals = sorted(r.time for r in http_target.requests)
    assert arrivals[-1] - arrivals[0] >= 0.9
    assert stats["rate_limited_seconds"] > 0


# --------------------------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory):
    """The recording target's application served over TLS with a self-signed certificate, in its own loop."""
    import threading

    folder = tmp_path_factory.mktemp("http-tls")
    certificate = SelfSignedCertificate.create(folder / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    target = RecordingTarget()
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(target.app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, LOOPBACK, port, ssl_context=context).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"https://{LOOPBACK}:{port}", folder
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_tls_with_a_custom_ca(tls_target: tuple[str, Path]) -> None:
    base_url, folder = tls_target

    async def run(conn: HttpConnection, base_dir: Path | None = None) -> HttpOutcome:
        async with HttpDeliveryClient(conn, base_dir=base_dir) as client:
            return await client.send(post())

    trusted = asyncio.run(run(connection(base_url, ca_file="certs/server-cert.pem"), base_dir=folder))
    assert trusted.status == 201
    untrusted = asyncio.run(run(connection(base_url)))
    assert (untrusted.status, untrusted.attempts) == (None, 1)
    assert "TLS certificate verification failed" in untrusted.error and "ca_file" in untrusted.error
    unverified = asyncio.run(run(connection(base_url, verify_tls=False)))
    assert unverified.status in (200, 201)
    with pytest.raises(TransportError, match="cannot load ca_file"):
        asyncio.run(run(connection(base_url, ca_file="certs/missing.pem"), base_dir=folder))
