"""Authentication for HTTP delivery: fixed headers (basic, API key) and fetched tokens (token, OAuth2 client
credentials, OAuth2 refresh token).

A provider is built from resolved credentials: `auth_provider(settings)` takes an auth's settings whose secrets are
values (what `HttpResource` holds once Dagster has read its `dg.EnvVar` fields), and `make_auth_provider(auth)`
reads the `${NAME}` references of a connection's `auth:` from the environment first (the path of a client built
from the spec alone), so a missing variable is reported before anything is sent.

Fetched tokens are cached and shared by every concurrent request of one client: one fetch at a time, the others
wait for it and reuse its result (or its failure), so a burst of requests never stampedes the token endpoint.

The refresh token grant (`OAuth2RefreshTokenAuth`) exchanges a refresh token that `connector-pipelines authorize`
got once (see `oauth_flow.py`) for access tokens. A server that rotates refresh tokens answers with a new one: it is
used for the rest of the process and reported once (it cannot be written back to the environment). A refresh
token the server refuses (`invalid_grant`: expired, revoked) fails every later request at once, naming the
command that gets a new one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from connector_pipelines.errors import TransportError, redact
from connector_pipelines.spec.common import ENV_REFERENCE, env_var_name
from connector_pipelines.spec.connections import SECRET_FIELDS
from connector_pipelines.transports.bounded_json import UnreadableJson, parse_json

if TYPE_CHECKING:
    import aiohttp

    from connector_pipelines.spec.connections import HttpAuth

# How much of a failed token response goes into the error: enough to read the server's reason, not a page.
TOKEN_ERROR_EXCERPT = 200
# A token is refreshed this long before it expires (or 10% of its lifetime when that is shorter), so a request
# never leaves with a token that expires on the way.
REFRESH_MARGIN_SECONDS = 30.0
REFRESH_MARGIN_SHARE = 0.1
# Fields of an `auth:` that only `connector-pipelines authorize` reads: a run never opens a browser.
AUTHORIZE_ONLY_FIELDS = ("authorize_url", "redirect_port")

log = logging.getLogger(__name__)


def resolve_secret(reference: str, environ: Mapping[str, str] = os.environ) -> str:
    """The value behind an environment reference: `${NAME}` -> the variable's value.

    A string that is not a reference is returned as is (token request fields that are not secret, such as a
    username or a grant type). An unset variable raises `TransportError` naming the variable, never a value.
    """
    match = ENV_REFERENCE.match(reference)
    if match is None:
        return reference
    name = match.group(1)
    value = environ.get(name)
    if value is None:
        raise TransportError(
            f"environment variable {name} is not set; set it where the connector runs (for example in the "
            f"Dagster deployment's environment or a .env file) to the credential that `{reference}` refers to"
        )
    return value


def auth_settings(auth: HttpAuth, secret: Callable[[str, str], Any], connection: str | None = None) -> dict[str, Any]:
    """A connection's `auth:` as settings, each secret reference replaced by `secret(field, reference)`.

    The secret fields are the spec's (`SECRET_FIELDS["http"]`); a token request body is split into `body` (plain
    fields) and `secret_body` (the fields written as environment references). `field` names the setting for a
    message, such as `auth.password` or `auth.body.username`. With `secret` reading the environment this gives
    what `auth_provider` takes; with `dg.EnvVar` it gives a resource's auth config. A refresh token auth also
    gets the name of its variable and of the connection (`connection`), for the messages that tell how to renew
    it, and loses the fields only the `authorize` command reads.
    """
    settings = auth.model_dump()
    for field in SECRET_FIELDS["http"]:
        if settings.get(field) is not None:  # an optional secret left unset (a public client's) stays None
            settings[field] = secret(f"auth.{field}", settings[field])
    if auth.type == "oauth2_refresh_token":
        for field in AUTHORIZE_ONLY_FIELDS:
            settings.pop(field)
        settings["refresh_token_variable"] = env_var_name(auth.refresh_token)
        settings["connection"] = connection
    if auth.type == "token":
        body = settings.pop("body")
        settings["body"] = {key: value for key, value in body.items() if not ENV_REFERENCE.match(value)}
        settings["secret_body"] = {
            key: secret(f"auth.body.{key}", value) for key, value in body.items() if ENV_REFERENCE.match(value)
        }
    return settings


def token_endpoint(token_url: str, base_url: str) -> str:
    """An absolute token URL as is; a path is appended to the connection's base URL."""
    if token_url.startswith(("http://", "https://")):
        return token_url
    return base_url.rstrip("/") + "/" + token_url.lstrip("/")


def dotted_get(document: Any, path: str) -> Any:
    """The value at a dotted path (`data.token`, `items.0.id`) of a parsed JSON document; None when absent."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return None
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return None
            current = current[index]
        else:
            return None
    return current


class TokenRequestError(TransportError):
    """The token endpoint could not be reached or refused to issue a token.

    `retryable` is true for what may pass on its own (timeouts, dropped connections, 429, 5xx); a 4xx answer
    means the credentials or the token request are wrong and retrying will not help.
    """

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class AuthProvider:
    """Adds credentials to requests. The base class sends nothing (auth type `none`).

    `headers()` is called before every request and must be cheap: it returns the same dict object until the
    credentials change, and callers must not modify it. `generation` changes whenever the headers do, so a
    caller can cache what it builds from them.
    """

    #: True when the credentials can be renewed, so that a 401 is worth one retry with fresh ones.
    refreshable = False

    def __init__(self) -> None:
        self.tokens_fetched = 0
        self.generation = 0
        self._secrets: list[str] = []
        self._headers: dict[str, str] = {}

    @property
    def secrets(self) -> list[str]:
        """Every secret value this provider knows (to redact from messages), fetched tokens included."""
        return self._secrets

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """The authentication headers for the next request (do not modify the dict)."""
        return self._headers

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Renew the credentials now (a no-op for fixed credentials)."""

    def invalidate(self, generation: int | None = None) -> None:
        """Forget the current credentials so the next `headers()` renews them.

        With `generation`, only the credentials of that generation are forgotten: when many requests answer 401
        with the same stale token, the first one's renewal is not thrown away by the others.
        """

    def redact(self, message: str) -> str:
        """The message with every known secret replaced by '***'."""
        return redact(message, self._secrets)


class NoAuth(AuthProvider):
    """Auth type `none`: no credentials."""


class BasicAuth(AuthProvider):
    """HTTP basic authentication with a username and a (resolved) password."""

    def __init__(self, username: str, password: str):
        super().__init__()
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._secrets = [password, encoded]
        self._headers = {"Authorization": f"Basic {encoded}"}


class ApiKeyAuth(AuthProvider):
    """A fixed key in a header on every request."""

    def __init__(self, header: str, value: str):
        super().__init__()
        self._secrets = [value]
        self._headers = {header: value}


class _FetchedTokenAuth(AuthProvider):
    """A token fetched from a token endpoint, cached until shortly before it expires and shared by all requests."""

    refreshable = True

    def __init__(self, url: str, header: str, prefix: str, default_lifetime: float, timeout_seconds: float):
        super().__init__()
        self.url = url
        self._header = header
        self._prefix = prefix
        self._default_lifetime = default_lifetime
        self._timeout_seconds = timeout_seconds
        self._lock = asyncio.Lock()
        self._refresh_at = 0.0  # monotonic time after which the cached token is renewed
        self._fixed_secrets: list[str] = []
        # Bumped after every fetch attempt: a waiter that sees it move while it waited reuses that fetch's result.
        self._fetch_epoch = 0
        self._last_failure: TokenRequestError | None = None

    # What the concrete types supply --------------------------------------------------------------------------

    def _request_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _read_token(self, document: Any) -> tuple[str, float | None]:
        """(token, lifetime in seconds or None for the configured default) from the parsed response."""
        raise NotImplementedError

    def _refusal(self, status: int, text: str) -> TokenRequestError | None:
        """A more telling error than the generic one for a refused token request, or None."""
        return None

    # ---------------------------------------------------------------------------------------------------------

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """The token header, fetching a token first when none is cached or the cached one is about to expire."""
        if self._headers and time.monotonic() < self._refresh_at:
            return self._headers
        epoch = self._fetch_epoch
        async with self._lock:
            if self._headers and time.monotonic() < self._refresh_at:
                return self._headers
            if self._fetch_epoch != epoch and self._last_failure is not None:
                # The fetch we waited for failed: share its failure instead of asking again straight away.
                raise self._last_failure
            await self._fetch(session)
            return self._headers

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Fetch a new token now, whatever the cached one's age."""
        async with self._lock:
            await self._fetch(session)

    def invalidate(self, generation: int | None = None) -> None:
        """Drop the cached token (only if it is still the one of `generation`, when given)."""
        if generation is None or generation == self.generation:
            self._refresh_at = 0.0

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        import aiohttp

        self._fetch_epoch += 1
        try:
            token, lifetime = await self._request(session, aiohttp)
        except TokenRequestError as exc:
            self._last_failure = exc
            raise
        self._last_failure = None
        self.tokens_fetched += 1
        self.generation += 1
        lifetime = self._default_lifetime if lifetime is None or lifetime <= 0 else lifetime
        margin = min(REFRESH_MARGIN_SECONDS, lifetime * REFRESH_MARGIN_SHARE)
        self._refresh_at = time.monotonic() + lifetime - margin
        self._headers = {self._header: f"{self._prefix} {token}" if self._prefix else token}
        # Only the current token is kept for redaction: older ones are expired and the list must not grow.
        self._secrets = [*self._fixed_secrets, token]

    async def _request(self, session: aiohttp.ClientSession, aiohttp: Any) -> tuple[str, float | None]:
        where = f"token request to {self.url}"
        try:
            async with session.post(
                self.url,
                timeout=aiohttp.ClientTimeout(total=self._timeout_seconds),
                allow_redirects=False,
                **self._request_kwargs(),
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
        except TimeoutError:
            raise TokenRequestError(f"{where} timed out after {self._timeout_seconds:g}s", retryable=True) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise TokenRequestError(
                self.redact(f"{where} failed: connection error ({type(exc).__name__}: {exc})"), retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise TokenRequestError(self.redact(f"{where} failed: {type(exc).__name__}: {exc}")) from None
        if not 200 <= status < 300:
            refusal = self._refusal(status, text)
            if refusal is not None:
                raise refusal
            excerpt = " ".join(text[:TOKEN_ERROR_EXCERPT].split())
            raise TokenRequestError(
                self.redact(f"{where} answered {status}: {excerpt}" if excerpt else f"{where} answered {status}"),
                status=status,
                retryable=status == 429 or status >= 500,
            )
        try:
            document = parse_json(text)  # never recurses into a nesting the parser cannot take
        except UnreadableJson as exc:
            raise TokenRequestError(f"{where} answered {status} with a body it does not parse: {exc}") from None
        except ValueError:
            # The body of a successful token response may hold the token itself: it is not quoted.
            raise TokenRequestError(f"{where} answered {status} with a body that is not JSON") from None
        token, lifetime = self._read_token(document)
        return token, lifetime


def _lifetime(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _missing_field(url: str, field: str, document: Any) -> TokenRequestError:
    keys = ", ".join(sorted(document)) if isinstance(document, dict) else type(document).__name__
    return TokenRequestError(f"token response from {url} has no '{field}' (it has: {keys}); check token_field")


class TokenAuth(_FetchedTokenAuth):
    """Auth type `token`: POST the body (JSON or form) to `token_url`, read `token_field`, reuse for `expiry_seconds`.

    The request body is `body` and `secret_body` together; the values of `secret_body` (resolved) are redacted.
    """

    def __init__(
        self,
        token_url: str,
        base_url: str,
        body: Mapping[str, str],
        secret_body: Mapping[str, str],
        body_format: str = "json",
        token_field: str = "access_token",
        expiry_seconds: float = 1800,
        header: str = "Authorization",
        prefix: str = "Bearer",
        timeout_seconds: float = 30,
    ):
        super().__init__(token_endpoint(token_url, base_url), header, prefix, expiry_seconds, timeout_seconds)
        self._body = {**body, **secret_body}
        self._fixed_secrets = list(secret_body.values())
        self._secrets = list(self._fixed_secrets)
        self._body_format = body_format
        self._token_field = token_field

    def _request_kwargs(self) -> dict[str, Any]:
        if self._body_format == "json":
            return {"json": self._body}
        return {"data": self._body}

    def _read_token(self, document: Any) -> tuple[str, float | None]:
        token = dotted_get(document, self._token_field)
        if token is None or isinstance(token, dict | list) or token == "":
            raise _missing_field(self.url, self._token_field, document)
        # The configured expiry rules for this type: many token endpoints do not say how long a token lives.
        return str(token), None


class OAuth2Auth(_FetchedTokenAuth):
    """Auth type `oauth2`: the client credentials grant; the token is reused for its `expires_in`."""

    def __init__(
        self,
        token_url: str,
        base_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        audience: str | None = None,
        client_auth: str = "body",
        expiry_seconds: float = 1800,
        timeout_seconds: float = 30,
    ):
        super().__init__(
            token_endpoint(token_url, base_url), "Authorization", "Bearer", expiry_seconds, timeout_seconds
        )
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        if audience:
            form["audience"] = audience
        self._request_headers: dict[str, str] = {}
        self._fixed_secrets = [client_secret]
        if client_auth == "basic":
            # RFC 6749 2.3.1: the id and the secret are form-encoded before they are joined and base64-encoded.
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            encoded = base64.b64encode(pair.encode()).decode("ascii")
            self._request_headers["Authorization"] = f"Basic {encoded}"
            self._fixed_secrets.append(encoded)
        else:
            form["client_id"] = client_id
            form["client_secret"] = client_secret
        self._form = form
        self._secrets = list(self._fixed_secrets)

    def _request_kwargs(self) -> dict[str, Any]:
        return {"data": self._form, "headers": self._request_headers}

    def _read_token(self, document: Any) -> tuple[str, float | None]:
        token = document.get("access_token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise _missing_field(self.url, "access_token", document)
        return token, _lifetime(document.get("expires_in"))


class RefreshTokenRejected(TokenRequestError):
    """The authorization server refused the refresh token (`invalid_grant`): expired, revoked, or rotated away.

    Final for the process: nothing but a new authorization gives a working one.
    """


class OAuth2RefreshTokenAuth(_FetchedTokenAuth):
    """Auth type `oauth2_refresh_token`: the refresh token grant; each access token is reused for its `expires_in`.

    `refresh_token_variable` and `connection` (the connection's name) are for messages only: a rotated refresh
    token is reported once at WARNING on `logger`, and an `invalid_grant` answer becomes `RefreshTokenRejected`,
    both telling to run `connector-pipelines authorize CONNECTION` and store its token in that variable.
    """

    def __init__(
        self,
        token_url: str,
        base_url: str,
        client_id: str,
        refresh_token: str,
        refresh_token_variable: str = "the refresh token's variable",
        connection: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        client_auth: str = "body",
        expiry_seconds: float = 1800,
        timeout_seconds: float = 30,
        logger: logging.Logger | None = None,
    ):
        super().__init__(
            token_endpoint(token_url, base_url), "Authorization", "Bearer", expiry_seconds, timeout_seconds
        )
        self._variable = refresh_token_variable
        self._connection = connection
        self._log = logger or log
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope:
            form["scope"] = scope
        self._request_headers: dict[str, str] = {}
        self._client_secrets: list[str] = []
        if client_secret is not None and client_auth == "basic":
            # RFC 6749 2.3.1: the id and the secret are form-encoded before they are joined and base64-encoded.
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            encoded = base64.b64encode(pair.encode()).decode("ascii")
            self._request_headers["Authorization"] = f"Basic {encoded}"
            self._client_secrets = [client_secret, encoded]
        else:
            # A public client (no secret) still names itself in the body (RFC 6749 6 and 3.2.1).
            form["client_id"] = client_id
            if client_secret is not None:
                form["client_secret"] = client_secret
                self._client_secrets = [client_secret]
        self._form = form
        self._original_refresh_token = refresh_token
        self.refresh_token_rotated = False
        self._rejected: RefreshTokenRejected | None = None
        self._set_fixed_secrets()
        self._secrets = list(self._fixed_secrets)

    def _set_fixed_secrets(self) -> None:
        # The refresh token the process started with stays redacted after a rotation: it may still work.
        tokens = {self._original_refresh_token, self._form["refresh_token"]}
        self._fixed_secrets = [*self._client_secrets, *sorted(tokens)]

    @property
    def _name(self) -> str:
        return self._connection or "CONNECTION"

    @property
    def _where(self) -> str:
        return f"connection '{self._connection}'" if self._connection else "the http connection"

    def _request_kwargs(self) -> dict[str, Any]:
        return {"data": self._form, "headers": self._request_headers}

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        if self._rejected is not None:
            raise self._rejected  # a refused refresh token stays refused: do not ask again for every record
        try:
            await super()._fetch(session)
        except RefreshTokenRejected as exc:
            self._rejected = exc
            raise

    def _refusal(self, status: int, text: str) -> TokenRequestError | None:
        try:
            document = parse_json(text)
        except ValueError:  # UnreadableJson included: the generic error quotes the body's start
            return None
        if not isinstance(document, dict) or document.get("error") != "invalid_grant":
            return None
        description = document.get("error_description")
        detail = f" ({' '.join(str(description)[:TOKEN_ERROR_EXCERPT].split())})" if description else ""
        message = (
            f"{self._where}: the authorization server at {self.url} refused the refresh token in {self._variable} "
            f"(invalid_grant{detail}): it expired, was revoked or was replaced; run `connector-pipelines authorize "
            f"{self._name}` and store the refresh token it prints in {self._variable}"
        )
        return RefreshTokenRejected(self.redact(message), status=status, retryable=False)

    def _read_token(self, document: Any) -> tuple[str, float | None]:
        token = document.get("access_token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise _missing_field(self.url, "access_token", document)
        rotated = document.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._form["refresh_token"]:
            # Rotation (RFC 6749 6, OAuth 2.1): the new one is the one to use from now on; the old may stop working.
            self._form["refresh_token"] = rotated
            self._set_fixed_secrets()
            if not self.refresh_token_rotated:
                self.refresh_token_rotated = True
                self._log.warning(
                    "the authorization server rotated the refresh token of connection %s; this process uses the "
                    "new one until it ends, but it cannot be written back to %s, and the old one may stop working: "
                    "run `connector-pipelines authorize %s` and store the new token in ${%s}",
                    self._name,
                    self._variable,
                    self._name,
                    self._variable,
                )
        return token, _lifetime(document.get("expires_in"))


def auth_provider(
    settings: Mapping[str, Any], base_url: str, timeout_seconds: float = 30, logger: logging.Logger | None = None
) -> AuthProvider:
    """The provider for an auth's settings whose secrets are already values (see `auth_settings`); `logger` gets
    what a provider reports on its own (a rotated refresh token), default this module's."""
    kind = settings.get("type")
    fields = {key: value for key, value in settings.items() if key != "type"}
    if kind == "none":
        return NoAuth()
    if kind == "basic":
        return BasicAuth(**fields)
    if kind == "api_key":
        return ApiKeyAuth(**fields)
    if kind == "token":
        return TokenAuth(**fields, base_url=base_url, timeout_seconds=timeout_seconds)
    if kind == "oauth2":
        return OAuth2Auth(**fields, base_url=base_url, timeout_seconds=timeout_seconds)
    if kind == "oauth2_refresh_token":
        return OAuth2RefreshTokenAuth(**fields, base_url=base_url, timeout_seconds=timeout_seconds, logger=logger)
    raise TransportError(f"unknown HTTP auth type {kind!r}")


def make_auth_provider(
    auth: HttpAuth,
    base_url: str,
    environ: Mapping[str, str] | None = None,
    timeout_seconds: float = 30,
    connection: str | None = None,
    logger: logging.Logger | None = None,
) -> AuthProvider:
    """The provider for a connection's `auth:`; its secrets are read from `environ` now (a missing variable raises
    here, naming it). `connection` (its name) is for messages."""
    env = os.environ if environ is None else environ
    settings = auth_settings(auth, lambda _field, reference: resolve_secret(reference, env), connection)
    return auth_provider(settings, base_url, timeout_seconds, logger)
