"""The pure parts of the authorization code flow (PKCE, the URL, the callback), and the code exchange against the
loopback authorization server: a wrong PKCE verifier or a reused code is refused without leaking a secret."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from connector_pipelines.transports import oauth_flow
from connector_pipelines.transports.oauth_flow import AuthorizationError, CallbackReceiver
from connector_pipelines_tests.servers.oauth_server import OAuthServer

CLIENT_SECRET = "cs-flow-7a2c51"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with OAuthServer(client_secret=CLIENT_SECRET) as server:
        yield server


def test_the_s256_challenge_is_the_one_of_rfc_7636() -> None:
    # RFC 7636, appendix B.
    assert oauth_flow.code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier = oauth_flow.code_verifier()
    assert 43 <= len(verifier) <= 128 and set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    assert oauth_flow.code_verifier() != verifier and oauth_flow.new_state() != oauth_flow.new_state()


def test_the_authorization_url_asks_for_a_code_with_pkce_and_keeps_the_endpoints_query() -> None:
    url = oauth_flow.authorization_url(
        "https://login.example/authorize?prompt=consent",
        client_id="app",
        redirect="http://127.0.0.1:8765/callback",
        challenge="CHALLENGE",
        state="STATE",
        scope="api refresh_token",
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "login.example", "/authorize")
    assert {key: values[0] for key, values in parse_qs(parts.query).items()} == {
        "prompt": "consent",
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": "http://127.0.0.1:8765/callback",
        "code_challenge": "CHALLENGE",
        "code_challenge_method": "S256",
        "state": "STATE",
        "scope": "api refresh_token",
    }
    assert oauth_flow.absolute_endpoint("/oauth/authorize", "https://org.example/api/") == (
        "https://org.example/api/oauth/authorize"
    )


def test_the_callback_gives_its_code_only_with_the_state_that_was_sent() -> None:
    assert oauth_flow.parse_callback("/callback?code=abc&state=s1", "s1") == "abc"
    with pytest.raises(AuthorizationError, match="state does not match") as caught:
        oauth_flow.parse_callback("/callback?code=abc&state=other", "s1")
    assert "abc" not in str(caught.value)
    with pytest.raises(AuthorizationError, match="state does not match"):
        oauth_flow.parse_callback("/callback?code=abc", "s1")
    with pytest.raises(AuthorizationError, match=r"did not grant access \(access_denied: no\)"):
        oauth_flow.parse_callback("/callback?error=access_denied&error_description=no&state=s1", "s1")
    with pytest.raises(AuthorizationError, match="no authorization code"):
        oauth_flow.parse_callback("/callback?state=s1", "s1")


def test_the_receiver_keeps_the_first_callback_and_ignores_other_paths() -> None:
    with CallbackReceiver() as receiver:
        base = f"http://127.0.0.1:{receiver.port}"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/favicon.ico", timeout=5)
        assert missing.value.code == 404
        with urllib.request.urlopen(base + "/callback?code=c&state=s", timeout=5) as answer:
            assert answer.status == 200 and b"return to the terminal" in answer.read()
        assert receiver.wait(1) == "/callback?code=c&state=s"


def test_the_receiver_times_out_naming_its_redirect() -> None:
    with CallbackReceiver() as receiver, pytest.raises(AuthorizationError, match="no redirect reached http://127"):
        receiver.wait(0.2)


def _code(server: OAuthServer, receiver: CallbackReceiver, verifier: str) -> str:
    """Sign in as the browser would: GET the authorization URL, follow the redirect to the receiver."""
    state = oauth_flow.new_state()
    url = oauth_flow.authorization_url(
        server.url("/authorize"),
        client_id=server.client_id,
        redirect=receiver.redirect_uri,
        challenge=oauth_flow.code_challenge(verifier),
        state=state,
    )
    urllib.request.urlopen(url, timeout=5).close()
    return oauth_flow.parse_callback(receiver.wait(5), state)


def test_the_code_exchange_gives_a_refresh_token(oauth: OAuthServer) -> None:
    verifier = oauth_flow.code_verifier()
    with CallbackReceiver() as receiver:
        code = _code(oauth, receiver, verifier)
        grant = oauth_flow.exchange_code(
            oauth.url("/token"),
            code=code,
            verifier=verifier,
            redirect=receiver.redirect_uri,
            client_id=oauth.client_id,
            client_secret=CLIENT_SECRET,
        )
    assert oauth.refresh_token_valid(grant.refresh_token)
    assert grant.refresh_token not in repr(grant) and grant.access_token not in repr(grant)


def test_a_wrong_pkce_verifier_is_refused_and_no_secret_is_told(oauth: OAuthServer) -> None:
    verifier = oauth_flow.code_verifier()
    with CallbackReceiver() as receiver:
        code = _code(oauth, receiver, verifier)
        wrong = oauth_flow.code_verifier()
        with pytest.raises(AuthorizationError, match="PKCE verification failed") as caught:
            oauth_flow.exchange_code(
                oauth.url("/token"),
                code=code,
                verifier=wrong,
                redirect=receiver.redirect_uri,
                client_id=oauth.client_id,
                client_secret=CLIENT_SECRET,
            )
    message = str(caught.value)
    assert "invalid_grant" in message and "run again" in message
    for secret in (code, verifier, wrong, CLIENT_SECRET):
        assert secret not in message
    assert [r.status for r in oauth.grants("authorization_code")] == [400]
