"""The connections of `connections.yaml`: how to reach each outside system, with secrets as environment references.

`SECRET_FIELDS` is the one list of the fields that hold secrets, per connection type.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from connector_pipelines.spec.common import (
    ENV_REFERENCE,
    NAME_PATTERN,
    PLATFORM_RESOURCE_PREFIX,
    SecretRef,
    StrictModel,
    error_at,
)

SECRET_KEY_WORDS = re.compile(r"(password|secret|token|api[-_]?key)", re.IGNORECASE)
# Header names that carry a credential: whatever they hold is a secret (a session cookie is as good as a password).
CREDENTIAL_HEADER = re.compile(
    r"authorization|cookie|password|passwd|secret|token|api[-_]?key|(auth|access|subscription|private)[-_]?key"
    r"|credential|session",
    re.IGNORECASE,
)
# Query-string keys (and ODBC `key=value;` pairs inside a query value) that hold a password or another secret.
URL_SECRET_KEY = re.compile(r"password|passwd|^pwd$|secret|token|api[-_]?key|credential", re.IGNORECASE)
_ODBC_SECRET = re.compile(r"(^|;)\s*(pwd|password)\s*=", re.IGNORECASE)


def url_query_secret(query: dict[str, object]) -> str | None:
    """The first key of a URL's parsed query that holds a secret (`?password=...`, an ODBC `PWD=` inside a
    value), else None. Only the key is returned, for a message: the value is the secret."""
    for key, values in query.items():
        if URL_SECRET_KEY.search(key):
            return key
        for value in values if isinstance(values, tuple | list) else (values,):
            if _ODBC_SECRET.search(str(value)):
                return key
    return None


def api_key_auth_example(header: str) -> str:
    """The `auth:` of a connection that sends a secret from the environment in `header`, for a message."""
    return f"`auth: {{type: api_key, header: {header[:60]}, value: ${{MY_SECRET}}}}`"


class SqlConnection(StrictModel):
    """A database reached through SQLAlchemy (PostgreSQL, MariaDB/MySQL, SQLite, ...)."""

    type: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL without a password, e.g. postgresql://app@db:5432/billing")
    password: SecretRef | None = Field(None, description="Environment reference for the password")
    description: str = ""

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(
                "not a valid SQLAlchemy URL; write it as dialect://user@host:port/database "
                "(or sqlite:///path/to/file.db)"
            ) from None
        if parsed.password:
            raise ValueError("the URL holds a password; remove it from the URL and set `password: ${DB_PASSWORD}`")
        key = url_query_secret(dict(parsed.query))
        if key is not None:
            raise ValueError(
                f"the URL's query string holds a secret ('{key[:40]}'); remove it from the URL and set "
                "`password: ${DB_PASSWORD}`"
            )
        return url


class S3Connection(StrictModel):
    """An S3 bucket (or any S3-compatible store through `endpoint_url`)."""

    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    description: str = ""

    @model_validator(mode="after")
    def _keys_together(self) -> S3Connection:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both access_key_id and secret_access_key, or neither (to use the AWS default chain)")
        return self


class SftpConnection(StrictModel):
    """An SFTP server. The host key is verified against `host_key`; it is never accepted blindly."""

    type: Literal["sftp"]
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    password: SecretRef | None = None
    private_key: SecretRef | None = Field(None, description="Environment reference holding a PEM/OpenSSH private key")
    host_key: str = Field(description="The server's public host key, as in known_hosts: 'ssh-ed25519 AAAA...'")
    timeout_seconds: float = Field(30, gt=0)
    description: str = ""

    @field_validator("host_key")
    @classmethod
    def _host_key_shape(cls, value: str) -> str:
        parts = value.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "rsa-")):
            raise ValueError(
                "expected a public key line such as 'ssh-ed25519 AAAAC3...'; "
                "get it with `ssh-keyscan -p PORT HOST` and check it out of band"
            )
        return " ".join(parts[:2])

    @model_validator(mode="after")
    def _some_credential(self) -> SftpConnection:
        if self.password is None and self.private_key is None:
            raise ValueError("set password or private_key (an environment reference)")
        return self


class FtpConnection(StrictModel):
    """An FTP server; `tls: true` uses explicit FTPS (AUTH TLS) with a protected data channel."""

    type: Literal["ftp"]
    host: str
    port: int = Field(21, ge=1, le=65535)
    username: str = "anonymous"
    password: SecretRef | None = None
    tls: bool = False
    ca_file: str | None = Field(None, description="CA bundle to verify the FTPS server certificate with")
    passive: bool = True
    timeout_seconds: float = Field(30, gt=0)
    allow_plaintext_password: bool = Field(
        False, description="Send the password over plain FTP (without tls), readable by anyone on the network path"
    )
    description: str = ""

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> FtpConnection:
        # Plain FTP sends `PASS <password>` unencrypted: a password is only sent so when the file says it may be.
        if self.password is not None and not self.tls and not self.allow_plaintext_password:
            raise error_at(
                ("password",),
                "plain FTP sends the password in clear over the network; set `tls: true` (explicit FTPS) if the "
                "server supports it, or `allow_plaintext_password: true` to accept that anyone on the network path "
                "can read it",
            )
        return self


class SmtpConnection(StrictModel):
    """An SMTP relay that sends extract files as attachments."""

    type: Literal["smtp"]
    host: str
    port: int = Field(25, ge=1, le=65535)
    username: str | None = None
    password: SecretRef | None = None
    starttls: bool = False
    ssl: bool = False
    ca_file: str | None = None
    from_address: str
    timeout_seconds: float = Field(30, gt=0)
    description: str = ""

    @model_validator(mode="after")
    def _one_tls_mode(self) -> SmtpConnection:
        if self.starttls and self.ssl:
            raise ValueError("choose starttls (upgrade a plain connection) or ssl (TLS from the start), not both")
        return self


class HttpAuthNone(StrictModel):
    type: Literal["none"]


class HttpAuthBasic(StrictModel):
    """HTTP basic authentication."""

    type: Literal["basic"]
    username: str
    password: SecretRef


class HttpAuthApiKey(StrictModel):
    """A fixed key sent in a header on every request."""

    type: Literal["api_key"]
    header: str = "X-API-Key"
    value: SecretRef


class HttpAuthToken(StrictModel):
    """A token fetched from `token_url` with a request body, cached until it expires or the target answers 401."""

    type: Literal["token"]
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    body: dict[str, str] = Field(
        default_factory=dict, description="Fields of the token request; values may be environment references"
    )
    body_format: Literal["json", "form"] = "json"
    token_field: str = Field("access_token", description="Dotted path of the token in the JSON response")
    expiry_seconds: int = Field(1800, ge=1, description="How long a token is reused before a new one is fetched")
    header: str = "Authorization"
    prefix: str = "Bearer"

    @field_validator("body")
    @classmethod
    def _secret_values_are_references(cls, body: dict[str, str]) -> dict[str, str]:
        for key, value in body.items():
            if SECRET_KEY_WORDS.search(key) and not ENV_REFERENCE.match(value):
                raise error_at(
                    (key,),
                    f"'{key}' looks like a secret; write an environment reference such as ${{MY_SECRET}} instead "
                    "of the value",
                )
        return body


class HttpAuthOAuth2(StrictModel):
    """OAuth2 client credentials: a bearer token from `token_url`, reused for its `expires_in`."""

    type: Literal["oauth2"]
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    client_id: str
    client_secret: SecretRef
    scope: str | None = None
    audience: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        "body", description="Send the client credentials in the body or as basic auth"
    )
    expiry_seconds: int = Field(1800, ge=1, description="Used when the token response has no expires_in")


class HttpAuthOAuth2RefreshToken(StrictModel):
    """OAuth2 refresh token grant (CRMs such as Salesforce, HubSpot): a user authorises access to an org once with
    `connector-pipelines authorize NAME` (authorization code with PKCE), stores the refresh token it prints in the
    environment, and runs exchange it for bearer tokens, each reused for its `expires_in`."""

    type: Literal["oauth2_refresh_token"]
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    client_id: str
    client_secret: SecretRef | None = Field(None, description="Environment reference; leave unset for a public client")
    refresh_token: SecretRef = Field(description="Environment reference holding what `authorize` printed")
    scope: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        "body", description="Send the client credentials in the body or as basic auth"
    )
    expiry_seconds: int = Field(1800, ge=1, description="Used when the token response has no expires_in")
    # Read by `connector-pipelines authorize` only: a run never opens a browser.
    authorize_url: str | None = Field(
        None, description="The authorization endpoint (absolute, or a path under base_url), for `authorize`"
    )
    redirect_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the loopback redirect http://127.0.0.1:PORT/callback; default any"
    )

    @model_validator(mode="after")
    def _basic_needs_a_secret(self) -> HttpAuthOAuth2RefreshToken:
        if self.client_auth == "basic" and self.client_secret is None:
            raise ValueError("client_auth: basic sends the client secret; set client_secret, or use client_auth: body")
        return self


HttpAuth = Annotated[
    HttpAuthNone | HttpAuthBasic | HttpAuthApiKey | HttpAuthToken | HttpAuthOAuth2 | HttpAuthOAuth2RefreshToken,
    Field(discriminator="type"),
]


class RetryPolicy(StrictModel):
    """How 429, 5xx, timeouts and dropped connections are retried within one run."""

    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per request, the first one included")
    initial_backoff_seconds: float = Field(0.5, ge=0, le=60)
    max_backoff_seconds: float = Field(30, ge=0, le=3600)
    max_retry_after_seconds: float = Field(120, ge=0, le=3600, description="Longest Retry-After the run waits for")


class HttpConnection(StrictModel):
    """An HTTP API or webhook receiver that integrations deliver records to."""

    type: Literal["http"]
    base_url: str = Field(description="http(s)://host[:port][/path]; request paths are appended to it")
    auth: HttpAuth = HttpAuthNone(type="none")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request")
    timeout_seconds: float = Field(30, gt=0, le=3600)
    max_concurrency: int = Field(16, ge=1, le=512, description="Requests in flight at once")
    rate_limit_per_second: float | None = Field(None, gt=0, description="Requests started per second, at most")
    retry: RetryPolicy = RetryPolicy()
    verify_tls: bool = True
    ca_file: str | None = None
    honours_idempotency_key: bool = Field(
        False,
        description="The target applies a request once per Idempotency-Key (it answers a repeat with the stored "
        "response): records in doubt are then resent, whatever the method",
    )
    description: str = ""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL such as https://api.example.com/v1")
        if "@" in value.split("/")[2]:
            raise ValueError("the URL holds credentials (user:password@); remove them and set them with `auth:`")
        from urllib.parse import parse_qs, urlsplit

        key = url_query_secret(parse_qs(urlsplit(value).query, keep_blank_values=True))
        if key is not None:
            raise ValueError(
                f"the URL's query string holds a secret ('{key[:40]}'); remove it from the URL and set it with "
                "`auth:` (type api_key sends it in a header)"
            )
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_literal_credentials(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if CREDENTIAL_HEADER.search(name):
                shown = name[:60]
                example = (
                    ""
                    if shown.lower() in ("authorization", "proxy-authorization")
                    else f", e.g. {api_key_auth_example(shown)}"
                )
                raise error_at((name,), f"header '{shown}' carries a credential; set it with `auth:` instead{example}")
        return headers


class FolderConnection(StrictModel):
    """A folder on this machine (or a mounted share). Relative paths are resolved against the project root."""

    type: Literal["folder"]
    path: str
    description: str = ""


class PartnerConnection(StrictModel):
    """A partner of partners.yaml on our own file exchange (`serve-files`): its folders under the storage folder.
    An import reads its `inbox`, an extract writes into its `outbox`."""

    type: Literal["partner"]
    partner: str = Field(pattern=NAME_PATTERN, description="The partner's name in partners.yaml")
    description: str = ""
    # Where processing reports are emailed: filled in by the loader from partners.yaml, which is the one place to
    # set them (whatever is written here is replaced).
    return_email: str | None = None
    email_connection: str | None = None


Connection = Annotated[
    SqlConnection
    | S3Connection
    | SftpConnection
    | FtpConnection
    | SmtpConnection
    | FolderConnection
    | HttpConnection
    | PartnerConnection,
    Field(discriminator="type"),
]
FILE_TRANSPORT_TYPES = ("s3", "sftp", "ftp", "smtp", "folder", "partner")
CONNECTION_TYPES = ("sql", *FILE_TRANSPORT_TYPES, "http")


class ConnectionsFile(StrictModel):
    connections: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Connection]

    @field_validator("connections")
    @classmethod
    def _not_a_platform_name(cls, connections: dict) -> dict:
        for name in connections:
            if name.startswith(PLATFORM_RESOURCE_PREFIX):
                raise ValueError(
                    f"'{name}' is reserved: names starting with {PLATFORM_RESOURCE_PREFIX!r} are the platform's own "
                    "resources (storage, ledger, import state); give the connection another name"
                )
        return connections


# The fields of each connection type that hold an environment reference to a secret (for http: the fields of its
# `auth:` models). The one list: resources turn these into `dg.EnvVar`, and problem lines never echo what was
# written in them. A test holds it to the models' SecretRef fields.
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "sql": ("password",),
    "s3": ("access_key_id", "secret_access_key"),
    "sftp": ("password", "private_key"),
    "ftp": ("password",),
    "smtp": ("password",),
    "folder": (),
    "partner": (),
    "http": ("password", "value", "client_secret", "refresh_token"),
}


def secret_field_names() -> frozenset[str]:
    """Every field name that holds a secret in some connection type."""
    return frozenset(name for names in SECRET_FIELDS.values() for name in names)
