"""The OAuth2 refresh token auth of http connections, against the loopback authorization server and its API.

The client is built as the CLI builds it (`registry.client_for`, the connection named) and as a run does (the
Dagster resource, initialised); tokens are exchanged for real, expire for real and are revoked or rotated by the
server between requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.connections import HttpConnection
from connector_pipelines.transports.http import HttpDeliveryClient, HttpOutcome, HttpRequest
from connector_pipelines.transports.http_auth import RefreshTokenRejected
from connector_pipelines.transports.registry import client_for, missing_variables, resource_for
from connector_pipelines_tests.servers.oauth_server import OAuthServer

CLIENT_SECRET = "cs-oauth-4f1d9b"
AUTH_LOGGER = "connector_pipelines.transports.http_auth"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with OAuthServer(client_secret=CLIENT_SECRET) as server:
        yield server


@pytest.fixture
def refresh_token(oauth: OAuthServer, monkeypatch) -> str:
    token = oauth.issue_refresh_token()
    monkeypatch.setenv("CRM_REFRESH_TOKEN", token)
    monkeypatch.setenv("CRM_CLIENT_SECRET", CLIENT_SECRET)
    return token


def crm(server: OAuthServer, **auth: Any) -> HttpConnection:
    spec = {
        "type": "oauth2_refresh_token",
        "token_url": "/token",
        "authorize_url": "/authorize",
        "client_id": "connector-pipelines",
        "client_secret": "${CRM_CLIENT_SECRET}",
        "refresh_token": "${CRM_REFRESH_TOKEN}",
        **auth,
    }
    spec = {key: value for key, value in spec.items() if value is not None}
    retry = {"max_attempts": 3, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.02}
    return HttpConnection.model_validate(
        {"type": "http", "base_url": server.base_url, "auth": spec, "timeout_seconds": 5, "retry": retry}
    )


def post(i: int) -> HttpRequest:
    return HttpRequest("POST", f"/api/contacts/{i}", json.dumps({"id": i}).encode(), idempotency_key=f"key-{i}")


async def _send_all(client: HttpDeliveryClient, requests: list[HttpRequest]) -> list[HttpOutcome]:
    return list(await asyncio.gather(*(client.send(request) for request in requests)))


def deliver(connection: HttpConnection, requests: list[HttpRequest]) -> tuple[list[HttpOutcome], dict[str, Any]]:
    async def run() -> tuple[list[HttpOutcome], dict[str, Any]]:
        async with client_for(connection, Path("."), "crm") as client:
            return await _send_all(client, requests), client.stats

    return asyncio.run(run())


def secrets_of(server: OAuthServer, *more: str) -> list[str]:
    """Every secret the exchange involved: the client secret, each refresh and access token issued or used."""
    tokens = [CLIENT_SECRET, *more]
    for request in server.token_requests:
        tokens += [value for key, value in request.form.items() if key in ("refresh_token", "client_secret")]
    tokens += [r.token for r in server.resource_requests if r.token]
    return tokens


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in (text or ""), f"a secret leaked into: {text}"


@pytest.mark.parametrize("client_auth", ["body", "basic"])
def test_a_refresh_token_gets_one_access_token_for_many_concurrent_requests(
    oauth: OAuthServer, refresh_token: str, client_auth: str
) -> None:
    outcomes, stats = deliver(crm(oauth, client_auth=client_auth, scope="api"), [post(i) for i in range(12)])

    assert {o.status for o in outcomes} == {201}
    assert stats["tokens_fetched"] == 1
    [grant] = oauth.token_requests
    assert grant.grant_type == "refresh_token" and grant.status == 200
    assert (grant.form["refresh_token"], grant.form["scope"]) == (refresh_token, "api")
    if client_auth == "body":
        assert (grant.form["client_id"], grant.form["client_secret"]) == ("connector-pipelines", CLIENT_SECRET)
        assert grant.authorization is None
    else:
        assert "client_secret" not in grant.form and grant.authorization.startswith("Basic ")


def test_a_public_client_names_itself_and_sends_no_secret(monkeypatch) -> None:
    with OAuthServer(client_secret=None) as server:
        monkeypatch.setenv("CRM_REFRESH_TOKEN", server.issue_refresh_token())
        outcomes, _ = deliver(crm(server, client_secret=None), [post(1)])

        assert outcomes[0].status == 201
        [grant] = server.token_requests
        assert grant.form["client_id"] == "connector-pipelines" and "client_secret" not in grant.form


def test_the_access_token_is_renewed_when_it_expires_without_a_401(oauth: OAuthServer, refresh_token: str) -> None:
    oauth.access_ttl = 1

    async def run() -> list[HttpOutcome]:
        async with client_for(crm(oauth), Path("."), "crm") as client:
            first = await client.send(post(1))
            await asyncio.sleep(1.0)  # past 90% of the 1 s lifetime the server gave (`expires_in`)
            return [first, await client.send(post(2))]

    outcomes = asyncio.run(run())

    assert [o.status for o in outcomes] == [201, 201]
    assert len(oauth.grants("refresh_token")) == 2
    assert [r.status for r in oauth.resource_requests] == [201, 201]


def test_a_401_renews_the_access_token_once_for_every_waiting_request(oauth: OAuthServer, refresh_token: str) -> None:
    async def run() -> list[HttpOutcome]:
        async with client_for(crm(oauth), Path("."), "crm") as client:
            first = await client.send(post(0))
            oauth.expire_access_tokens()
            return [first, *await _send_all(client, [post(i) for i in range(1, 9)])]

    outcomes = asyncio.run(run())

    assert {o.status for o in outcomes} == {201}
    assert len(oauth.grants("refresh_token")) == 2  # one renewal, shared by the eight requests that met the 401
    assert max(o.attempts for o in outcomes) == 2
    assert [r.status for r in oauth.resource_requests if r.path == "/api/contacts/3"] == [401, 201]


def test_a_rotated_refresh_token_is_used_next_and_reported_once_without_its_value(
    oauth: OAuthServer, refresh_token: str, caplog
) -> None:
    oauth.rotate = True  # every refresh answers a new refresh token and retires the one it was given

    async def run() -> list[HttpOutcome]:
        async with client_for(crm(oauth), Path("."), "crm") as client:
            outcomes = [await client.send(post(0))]
            for i in range(1, 3):  # two more refreshes, each with the token the previous one answered
                oauth.expire_access_tokens()
                outcomes.append(await client.send(post(i)))
            return outcomes

    with caplog.at_level(logging.WARNING, logger=AUTH_LOGGER):
        outcomes = asyncio.run(run())

    assert [o.status for o in outcomes] == [201, 201, 201]
    grants = oauth.grants("refresh_token")
    assert [g.status for g in grants] == [200, 200, 200]
    used = [g.form["refresh_token"] for g in grants]
    assert used[0] == refresh_token and len(set(used)) == 3  # each refresh used the newest token
    assert not oauth.refresh_token_valid(refresh_token)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "rotated the refresh token of connection crm" in message
    assert "`connector-pipelines authorize crm`" in message and "${CRM_REFRESH_TOKEN}" in message
    assert_no_secret([caplog.text, *(o.error or "" for o in outcomes)], secrets_of(oauth))


def test_a_revoked_refresh_token_fails_every_request_at_once_saying_how_to_renew_it(
    oauth: OAuthServer, refresh_token: str, caplog
) -> None:
    oauth.revoke_refresh_tokens()

    with caplog.at_level(logging.DEBUG):
        outcomes, _ = deliver(crm(oauth), [post(i) for i in range(5)])

    errors = {o.error for o in outcomes}
    assert len(errors) == 1
    [error] = errors
    assert "connection 'crm'" in error and "invalid_grant" in error and "CRM_REFRESH_TOKEN" in error
    assert "run `connector-pipelines authorize crm`" in error
    assert {(o.status, o.attempts) for o in outcomes} == {(None, 0)}  # nothing reached the API
    assert len(oauth.token_requests) == 1  # refused once: not asked again for every record, nor retried
    assert_no_secret([error, caplog.text], secrets_of(oauth, refresh_token))


def test_authenticate_raises_the_rejection_for_a_revoked_refresh_token(oauth: OAuthServer, refresh_token: str):
    oauth.revoke_refresh_tokens()

    async def run() -> None:
        async with client_for(crm(oauth), Path("."), "crm") as client:
            await client.authenticate()

    with pytest.raises(RefreshTokenRejected, match="connector-pipelines authorize crm") as caught:
        asyncio.run(run())
    assert not caught.value.retryable
    assert refresh_token not in str(caught.value) and CLIENT_SECRET not in str(caught.value)


def test_a_missing_refresh_token_variable_is_named_and_an_unset_public_secret_is_not(monkeypatch) -> None:
    monkeypatch.delenv("CRM_REFRESH_TOKEN", raising=False)
    monkeypatch.delenv("CRM_CLIENT_SECRET", raising=False)
    with OAuthServer(client_secret=None) as server:
        public = crm(server, client_secret=None)

        assert missing_variables(public, "crm") == [
            "connection 'crm' needs the environment variable CRM_REFRESH_TOKEN (its auth.refresh_token); set it"
        ]
        with pytest.raises(TransportError, match="CRM_REFRESH_TOKEN"):
            asyncio.run(HttpDeliveryClient(public).__aenter__())


def test_the_resource_holds_variables_and_its_client_refreshes_with_their_values(
    oauth: OAuthServer, refresh_token: str
) -> None:
    resource = resource_for(crm(oauth), Path("."), "crm")

    assert resource.auth.refresh_token == dg.EnvVar("CRM_REFRESH_TOKEN")
    assert (resource.auth.refresh_token_variable, resource.auth.connection) == ("CRM_REFRESH_TOKEN", "crm")
    with resource.process_config_and_initialize_cm() as initialised:
        shown = repr(initialised)
        client = initialised.get_client()

    async def run() -> HttpOutcome:
        async with client:
            return await client.send(post(1))

    assert asyncio.run(run()).status == 201
    assert refresh_token not in shown and CLIENT_SECRET not in shown
    assert oauth.grants("refresh_token")[0].form["refresh_token"] == refresh_token


def test_basic_client_auth_without_a_client_secret_is_refused_at_load(oauth: OAuthServer) -> None:
    with pytest.raises(ValueError, match="client_auth: basic sends the client secret"):
        crm(oauth, client_secret=None, client_auth="basic")


def test_a_rotation_during_a_run_is_a_warning_in_the_runs_log(oauth: OAuthServer, refresh_token: str) -> None:
    oauth.rotate = True

    @dg.asset(required_resource_keys={"crm"})
    def pushed(context) -> None:  # unannotated: the module's postponed annotations are strings to Dagster
        async def run() -> HttpOutcome:
            async with context.resources.crm.get_client() as client:
                return await client.send(post(1))

        assert asyncio.run(run()).status == 201

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [pushed], resources={"crm": resource_for(crm(oauth), Path("."), "crm")}, instance=instance
        )
        assert result.success
        logged = instance.all_logs(result.run_id)

    [warning] = [e.user_message for e in logged if e.level == logging.WARNING and "rotated" in e.user_message]
    assert "connection crm" in warning and "connector-pipelines authorize crm" in warning
    assert_no_secret([entry.user_message for entry in logged], secrets_of(oauth))
