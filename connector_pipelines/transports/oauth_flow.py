"""The OAuth2 authorization code flow with PKCE (RFC 7636, S256) on a loopback redirect (RFC 8252), without Dagster.

`connector-pipelines authorize NAME` runs it once per org: a person signs in in a browser, the authorization
server redirects the browser to `http://127.0.0.1:PORT/callback` with a code, and the code is exchanged for a
refresh token that runs then use (`http_auth.OAuth2RefreshTokenAuth`). The pure parts (the verifier and its
challenge, the authorization URL, reading the callback) are functions; `CallbackReceiver` is the loopback HTTP
server that waits for the one redirect, and `exchange_code` the token request.

The `state` sent with the request must come back unchanged: a callback with another state was not started by this
command (a forged or stale redirect) and is refused. Nothing here logs or raises a secret: the client secret, the
code and the verifier are redacted from every message.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from connector_pipelines.errors import TransportError, redact
from connector_pipelines.transports.bounded_json import UnreadableJson, parse_json

LOOPBACK = "127.0.0.1"
CALLBACK_PATH = "/callback"
# RFC 7636 4.1: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~]; 64 random bytes give 86 of them.
VERIFIER_BYTES = 64
# How much of a refused token response goes into the error: enough to read the server's reason, not a page.
ERROR_EXCERPT = 200


class AuthorizationError(TransportError):
    """The flow did not give a refresh token: denied, a state mismatch, a timeout, a refused code exchange."""


def code_verifier() -> str:
    """A new random PKCE code verifier (86 URL-safe characters)."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier: base64url(sha256(verifier)) without padding (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """A random `state`: what ties the callback to this run of the command."""
    return secrets.token_urlsafe(24)


def redirect_uri(port: int) -> str:
    """The loopback redirect the authorization server sends the browser back to."""
    return f"http://{LOOPBACK}:{port}{CALLBACK_PATH}"


def absolute_endpoint(url: str, base_url: str) -> str:
    """An absolute URL as is; a path is appended to the connection's base URL (as `token_url` is)."""
    if url.startswith(("http://", "https://")):
        return url
    return base_url.rstrip("/") + "/" + url.lstrip("/")


def authorization_url(
    authorize_url: str, *, client_id: str, redirect: str, challenge: str, state: str, scope: str | None = None
) -> str:
    """The URL to open in a browser: the authorization endpoint with the code request (RFC 6749 4.1.1) and the
    PKCE challenge; a query the endpoint already has (a tenant, a prompt) is kept."""
    parts = urlsplit(authorize_url)
    params: list[tuple[str, str]] = [
        (key, value) for key, values in parse_qs(parts.query, keep_blank_values=True).items() for value in values
    ]
    params += [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", state),
    ]
    if scope:
        params.append(("scope", scope))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def parse_callback(target: str, expected_state: str) -> str:
    """The authorization code of a callback request target (`/callback?code=...&state=...`).

    Raises `AuthorizationError` when the server reports an error (the user denied access, say), when the state is
    not the one this command sent, or when there is no code. The code is never part of a message.
    """
    query = parse_qs(urlsplit(target).query, keep_blank_values=True)
    state = query.get("state", [""])[0]
    if not secrets.compare_digest(state.encode(), expected_state.encode()):
        raise AuthorizationError(
            "the redirect's state does not match the one this command sent: it did not come from this "
            "authorization request (a stale browser tab, or a forged redirect); nothing was exchanged, run the "
            "command again"
        )
    if "error" in query:
        error = query["error"][0][:80]
        description = query.get("error_description", [""])[0][:ERROR_EXCERPT]
        why = f"{error}: {description}" if description else error
        raise AuthorizationError(f"the authorization server did not grant access ({why})")
    code = query.get("code", [""])[0]
    if not code:
        raise AuthorizationError("the redirect carries no authorization code")
    return code


class CallbackReceiver:
    """A one-shot HTTP server on 127.0.0.1 that waits for the authorization server's redirect.

    `port` 0 takes any free port (see `port` once started). The first request to `/callback` is kept and answered
    with a page telling the person to return to the terminal; any other path gets 404 and is ignored (a browser
    asks for /favicon.ico).
    """

    def __init__(self, port: int = 0):
        self._received = threading.Event()
        self._target: str | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if urlsplit(self.path).path != CALLBACK_PATH or receiver._received.is_set():
                    self.send_error(404)
                    return
                receiver._target = self.path
                receiver._received.set()
                page = "<!doctype html><title>connector-pipelines</title><p>" + html.escape(
                    "Received. You can close this window and return to the terminal."
                )
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # The default logs each request line to stderr, and the callback's line holds the code.
                pass

        try:
            self._server = ThreadingHTTPServer((LOOPBACK, port), Handler)
        except OSError as exc:
            raise AuthorizationError(
                f"cannot listen on {LOOPBACK}:{port} for the redirect ({exc.strerror or exc}); free the port, or "
                "set redirect_port to another one registered with the authorization server"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-callback", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def redirect_uri(self) -> str:
        return redirect_uri(self.port)

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def wait(self, timeout: float) -> str:
        """The request target of the redirect (path and query); `AuthorizationError` after `timeout` seconds."""
        if not self._received.wait(timeout):
            raise AuthorizationError(
                f"no redirect reached {self.redirect_uri} within {timeout:g}s; open the URL in a browser and sign "
                "in, or give more time with --timeout"
            )
        assert self._target is not None
        return self._target


@dataclass(frozen=True)
class TokenGrant:
    """What the token endpoint answered to the code exchange. `repr` shows no token."""

    refresh_token: str
    access_token: str
    expires_in: float | None

    def __repr__(self) -> str:
        return f"TokenGrant(expires_in={self.expires_in!r})"


def exchange_code(
    token_url: str,
    *,
    code: str,
    verifier: str,
    redirect: str,
    client_id: str,
    client_secret: str | None = None,
    client_auth: str = "body",
    timeout_seconds: float = 30,
    verify: bool | str = True,
) -> TokenGrant:
    """Exchange the authorization code for tokens (RFC 6749 4.1.3, with the PKCE verifier); the refresh token must
    be in the answer. Raises `AuthorizationError` with the server's reason, never a secret."""
    import requests

    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier}
    auth = None
    if client_secret is not None and client_auth == "basic":
        auth = (client_id, client_secret)
    else:
        form["client_id"] = client_id
        if client_secret is not None:
            form["client_secret"] = client_secret
    hidden = [code, verifier, client_secret or ""]
    where = f"the code exchange at {token_url}"
    try:
        response = requests.post(
            token_url,
            data=form,
            auth=auth,
            headers={"Accept": "application/json"},
            timeout=timeout_seconds,
            allow_redirects=False,
            verify=verify,
        )
    except requests.RequestException as exc:
        raise AuthorizationError(redact(f"{where} failed: {type(exc).__name__}: {exc}", hidden)) from None
    text = response.text
    if not 200 <= response.status_code < 300:
        excerpt = " ".join(text[:ERROR_EXCERPT].split())
        hint = ""
        if '"invalid_grant"' in text:
            hint = "; the code was refused (used twice, expired, or its PKCE verifier does not match): run again"
        elif '"invalid_client"' in text:
            hint = "; check client_id and the client secret"
        message = f"{where} answered {response.status_code}: {excerpt}{hint}"
        raise AuthorizationError(redact(message, hidden))
    try:
        document = parse_json(text)
    except (UnreadableJson, ValueError):
        raise AuthorizationError(f"{where} answered {response.status_code} with a body that is not JSON") from None
    if not isinstance(document, dict):
        raise AuthorizationError(f"{where} answered with a {type(document).__name__}, not a token response")
    refresh_token = document.get("refresh_token")
    access_token = document.get("access_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        keys = ", ".join(sorted(document))
        raise AuthorizationError(
            f"{where} issued no refresh token (its answer has: {keys}); ask for the scope that grants one "
            "(Salesforce: `refresh_token`, many others: `offline_access`) and allow it for the client"
        )
    expires_in = document.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) else None
    return TokenGrant(refresh_token, access_token if isinstance(access_token, str) else "", lifetime)
