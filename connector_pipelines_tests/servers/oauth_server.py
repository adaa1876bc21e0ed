"""A loopback OAuth2 authorization server with a protected API, for the refresh token auth and `authorize` tests.

- `GET /authorize`: the authorization endpoint. It approves at once (the test's "browser" is a plain HTTP GET that
  follows the redirect to the CLI's loopback receiver) and redirects to `redirect_uri` with a code and the state;
  `deny_next()` makes it answer `error=access_denied`, `forge_state_next()` send back another state.
- `POST /token`: `authorization_code` (checks the redirect URI and the PKCE S256 verifier; a code works once) and
  `refresh_token` grants. Access tokens live `access_ttl` seconds; `rotate = True` issues a new refresh token on
  every refresh and retires the old one; `revoke_refresh_tokens()` makes every refresh token answer
  `invalid_grant`. Client authentication by form fields or HTTP basic; a public client (no secret) by client_id.
- `/api/...`: the protected resource. A valid bearer token gets 200 (GET) or 201 (other methods) with a JSON body;
  an unknown or expired one 401 with `WWW-Authenticate: Bearer error="invalid_token"`.

Runs in a thread of the test process (`with OAuthServer() as server`), on 127.0.0.1 and a free port. Every method
is thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from connector_pipelines_tests.servers import LOOPBACK


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str | None


@dataclass
class TokenRequest:
    """One request to `/token`, as received (the form's values, secrets included: tests compare them)."""

    grant_type: str | None
    form: dict[str, str]
    authorization: str | None
    status: int


@dataclass
class ResourceRequest:
    """One request to the protected API and its answer."""

    method: str
    path: str
    token: str | None
    status: int
    body: Any = field(default=None)


class OAuthServer:
    def __init__(
        self,
        *,
        client_id: str = "connector-pipelines",
        client_secret: str | None = "cs-oauth-4f1d9b",
        access_ttl: float = 3600.0,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self._lock = threading.Lock()
        self.access_ttl = access_ttl
        self.rotate = False
        self._deny = 0
        self._forge_state = 0
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, bool] = {}  # token -> still valid
        self._access_tokens: dict[str, float] = {}  # token -> time.monotonic() it expires at
        self.token_requests: list[TokenRequest] = []
        self.resource_requests: list[ResourceRequest] = []
        self.authorize_requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._dispatch(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                server._dispatch(self, "POST")

            def do_PUT(self) -> None:  # noqa: N802
                server._dispatch(self, "PUT")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-server", daemon=True)

    # Lifecycle ---------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> OAuthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # What a test sets or reads -----------------------------------------------------------------------------

    def issue_refresh_token(self) -> str:
        """A valid refresh token, as if someone had authorised before (tests of the client need no browser)."""
        token = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh_tokens[token] = True
        return token

    def refresh_token_valid(self, token: str) -> bool:
        with self._lock:
            return self._refresh_tokens.get(token, False)

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far answers invalid_grant from now on."""
        with self._lock:
            for token in self._refresh_tokens:
                self._refresh_tokens[token] = False

    def expire_access_tokens(self) -> None:
        """Every access token issued so far gets 401 from now on."""
        with self._lock:
            for token in self._access_tokens:
                self._access_tokens[token] = 0.0

    def deny_next(self) -> None:
        """The next authorization request is refused by the user (error=access_denied)."""
        with self._lock:
            self._deny += 1

    def forge_state_next(self) -> None:
        """The next authorization redirect carries a state other than the one asked with."""
        with self._lock:
            self._forge_state += 1

    def grants(self, grant_type: str) -> list[TokenRequest]:
        with self._lock:
            return [r for r in self.token_requests if r.grant_type == grant_type]

    @property
    def access_tokens_issued(self) -> int:
        with self._lock:
            return len(self._access_tokens)

    # The endpoints -----------------------------------------------------------------------------------------

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if parts.path == "/authorize" and method == "GET":
            self._authorize(handler, {k: v[0] for k, v in parse_qs(parts.query).items()})
        elif parts.path == "/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            status, payload = self._token(form, handler.headers.get("Authorization"))
            self._send_json(handler, status, payload)
        elif parts.path.startswith("/api/"):
            self._resource(handler, method, parts.path, raw)
        else:
            self._send_json(handler, 404, {"error": "not_found"})

    def _authorize(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        with self._lock:
            self.authorize_requests.append(dict(query))
        redirect = query.get("redirect_uri", "")
        if (
            query.get("response_type") != "code"
            or query.get("client_id") != self.client_id
            or query.get("code_challenge_method") != "S256"
            or not query.get("code_challenge")
            or not redirect.startswith(f"http://{LOOPBACK}:")
        ):
            # An authorization server never redirects a request it cannot trust: it shows an error page.
            self._send_json(handler, 400, {"error": "invalid_request"})
            return
        state = query.get("state", "")
        with self._lock:
            deny = self._deny > 0
            self._deny -= 1 if deny else 0
            forge = self._forge_state > 0
            self._forge_state -= 1 if forge else 0
            if forge:
                state = "forged-" + secrets.token_urlsafe(8)
            if deny:
                params = {"error": "access_denied", "error_description": "The user denied access", "state": state}
            else:
                code = secrets.token_urlsafe(16)
                self._codes[code] = _Code(self.client_id, redirect, query["code_challenge"], query.get("scope"))
                params = {"code": code, "state": state}
        handler.send_response(302)
        handler.send_header("Location", f"{redirect}?{urlencode(params)}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _client_ok(self, form: dict[str, str], authorization: str | None) -> bool:
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, secret = pair.partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if client_id != self.client_id:
            return False
        return self.client_secret is None or secret == self.client_secret

    def _token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        status, payload = self._grant(form, authorization)
        with self._lock:
            self.token_requests.append(TokenRequest(form.get("grant_type"), form, authorization, status))
        return status, payload

    def _grant(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        if not self._client_ok(form, authorization):
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type")
        with self._lock:
            if grant == "authorization_code":
                code = self._codes.pop(form.get("code", ""), None)  # a code works once
                if code is None:
                    return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
                if form.get("redirect_uri") != code.redirect_uri:
                    return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if not verifier or digest != code.challenge:
                    return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
                refresh = "rt-" + secrets.token_urlsafe(24)
                self._refresh_tokens[refresh] = True
                return 200, self._access_locked(refresh)
            if grant == "refresh_token":
                given = form.get("refresh_token", "")
                if not self._refresh_tokens.get(given):
                    return 400, {"error": "invalid_grant", "error_description": "expired or revoked refresh token"}
                if self.rotate:
                    self._refresh_tokens[given] = False  # the old one is retired as the new one is issued
                    rotated = "rt-" + secrets.token_urlsafe(24)
                    self._refresh_tokens[rotated] = True
                    return 200, self._access_locked(rotated)
                return 200, self._access_locked(None)
        return 400, {"error": "unsupported_grant_type"}

    def _access_locked(self, refresh_token: str | None) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(24)
        self._access_tokens[token] = time.monotonic() + self.access_ttl
        ttl = self.access_ttl
        payload: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
        }
        if refresh_token is not None:
            payload["refresh_token"] = refresh_token
        return payload

    def _resource(self, handler: BaseHTTPRequestHandler, method: str, path: str, raw: bytes) -> None:
        scheme, _, token = (handler.headers.get("Authorization") or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        with self._lock:
            expires = self._access_tokens.get(token)
            valid = expires is not None and time.monotonic() < expires
            status = (200 if method == "GET" else 201) if valid else 401
            body = json.loads(raw) if raw and valid else None
            self.resource_requests.append(ResourceRequest(method, path, token or None, status, body))
        if not valid:
            challenge = 'Bearer error="invalid_token", error_description="the access token expired or is unknown"'
            self._send_json(handler, 401, {"error": "invalid_token"}, {"WWW-Authenticate": challenge})
            return
        self._send_json(handler, status, {"ok": True, "path": path, "received": body})

    @staticmethod
    def _send_json(
        handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
