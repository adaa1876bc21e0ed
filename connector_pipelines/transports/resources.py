"""The Dagster resources of the connections: one `dg.ConfigurableResource` per connection type.

Each one holds a connection's settings as typed fields, with every secret set to `dg.EnvVar("NAME")` (so the UI and
the run config show the variable's name, and Dagster reads its value when a run initializes the resource), and
hands out the plain client of `transports/` through `get_client()` (`get_source()` for SQL). The clients' modules
do not import Dagster; this one is the Dagster side of them. `transports.registry.resource_for` builds these from
connections.yaml.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import dagster as dg
from pydantic import Field

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.connections import SECRET_FIELDS
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.ftp import FtpClient
from connector_pipelines.transports.http import HttpDeliveryClient, http_client
from connector_pipelines.transports.partner import partner_client
from connector_pipelines.transports.s3 import S3Client
from connector_pipelines.transports.sftp import SftpClient
from connector_pipelines.transports.smtp import SmtpClient
from connector_pipelines.transports.sql import SqlSource

_USUALLY_ENV_VAR = "Usually dg.EnvVar('NAME')"


def check_resolved(config: dg.Config, secret_fields: Iterable[str], system: str) -> None:
    """Refuse to build a client from a resource (or an auth part of one) whose `dg.EnvVar` secrets were never resolved.

    Outside a run (or `dg.build_resources`) an EnvVar field reads as the variable's *name*, which would then be
    sent as the password; this makes that mistake loud instead.
    """
    for field in secret_fields:
        _check_value_resolved(field, getattr(config, field, None), system)


def _check_value_resolved(field: str, value: object, system: str) -> None:
    if isinstance(value, dg.EnvVar):
        raise TransportError(
            f"{system}: {field} is still the environment reference, not its value; call get_client() inside "
            "a Dagster run, or initialize the resource first (dg.build_resources / process_config_and_initialize)"
        )


class SqlResource(dg.ConfigurableResource):
    """A `sql` connection: a database reached through SQLAlchemy; `get_source()` returns the plain `SqlSource`.

    `password` is usually `dg.EnvVar("NAME")`, so the UI shows its name only; `url` holds no password.
    """

    url: str
    password: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR)

    def get_source(self, timezone: str = "UTC") -> SqlSource:
        """The database as a `SqlSource` whose windows are expressed in `timezone`."""
        check_resolved(self, SECRET_FIELDS["sql"], "sql connection")
        return SqlSource(self.url, self.password, timezone=timezone)


class S3Resource(dg.ConfigurableResource):
    """An `s3` connection; `get_client()` returns the plain `S3Client`.

    The keys are usually `dg.EnvVar("NAME")`; leave both unset to use the AWS default credential chain.
    """

    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # repr=False: an initialized resource holds the resolved values, and a repr may end up in a log.
    access_key_id: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR)
    secret_access_key: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR)

    def get_client(self) -> S3Client:
        """The plain client for this bucket."""
        check_resolved(self, SECRET_FIELDS["s3"], f"s3 bucket '{self.bucket}'")
        return S3Client(
            bucket=self.bucket,
            prefix=self.prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )


class SftpResource(dg.ConfigurableResource):
    """An `sftp` connection; `get_client()` returns the plain `SftpClient`.

    `password` and `private_key` (the key's text) are usually `dg.EnvVar("NAME")`; `host_key` is the server's
    public key line, verified on every connection.
    """

    host: str
    port: int = 22
    username: str
    # repr=False: an initialized resource holds the resolved values, and a repr may end up in a log.
    password: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR)
    private_key: str | None = Field(default=None, repr=False, description="The key's text; usually dg.EnvVar('NAME')")
    host_key: str
    timeout_seconds: float = 30

    def get_client(self) -> SftpClient:
        """The plain client for this server."""
        check_resolved(self, SECRET_FIELDS["sftp"], f"sftp {self.host}:{self.port}")
        return SftpClient(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            private_key=self.private_key,
            host_key=self.host_key,
            timeout_seconds=self.timeout_seconds,
        )


class FtpResource(dg.ConfigurableResource):
    """An `ftp` connection; `get_client()` returns the plain `FtpClient`.

    `password` is usually `dg.EnvVar("NAME")`. With `tls`, `ca_file` names the CA bundle that signs the server
    certificate (default: the system trust store).
    """

    host: str
    port: int = 21
    username: str = "anonymous"
    # repr=False: an initialized resource holds the resolved value, and a repr may end up in a log.
    password: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR)
    tls: bool = False
    ca_file: str | None = None
    passive: bool = True
    timeout_seconds: float = 30
    allow_plaintext_password: bool = False

    def get_client(self) -> FtpClient:
        """The plain client for this server."""
        check_resolved(self, SECRET_FIELDS["ftp"], f"ftp {self.host}:{self.port}")
        return FtpClient(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            tls=self.tls,
            ca_file=self.ca_file,
            passive=self.passive,
            timeout_seconds=self.timeout_seconds,
            allow_plaintext_password=self.allow_plaintext_password,
        )


class SmtpResource(dg.ConfigurableResource):
    """An `smtp` connection; `get_client()` returns the plain `SmtpClient`.

    `password` is usually `dg.EnvVar("NAME")`; login happens only when `username` is set.
    """

    host: str
    port: int = 25
    username: str | None = None
    # repr=False: an initialized resource holds the resolved value, and a repr may end up in a log.
    password: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR)
    starttls: bool = False
    ssl: bool = False
    ca_file: str | None = None
    from_address: str
    timeout_seconds: float = 30

    def get_client(self) -> SmtpClient:
        """The plain client for this relay."""
        check_resolved(self, SECRET_FIELDS["smtp"], f"smtp {self.host}:{self.port}")
        return SmtpClient(
            host=self.host,
            port=self.port,
            from_address=self.from_address,
            username=self.username,
            password=self.password,
            starttls=self.starttls,
            ssl=self.ssl,
            ca_file=self.ca_file,
            timeout_seconds=self.timeout_seconds,
        )


class FolderResource(dg.ConfigurableResource):
    """A `folder` connection; `get_client()` returns the plain `FolderClient`.

    `path` should be absolute: `resource_for` resolves relative paths against the project root.
    """

    path: str

    def get_client(self) -> FolderClient:
        """The plain client for this folder."""
        return FolderClient(self.path)


class PartnerResource(dg.ConfigurableResource):
    """A `partner` connection; `get_client()` returns a `FolderClient` rooted at the partner's folder on our file
    exchange (`<storage_root>/partners/<partner>/`: `inbox` for imports, `outbox` for extracts)."""

    partner: str
    storage_root: str
    return_email: str | None = Field(None, description="Where processing reports go (partners.yaml)")
    email_connection: str | None = Field(None, description="The smtp connection they go through (partners.yaml)")

    def get_client(self) -> FolderClient:
        """The plain client for the partner's folders."""
        return partner_client(self.partner, self.storage_root)


# --------------------------------------------------------------------------------------------------------------
# HTTP: the auth modes and the retry policy are nested configs that mirror the `auth:` and `retry:` of an http
# connection field by field; the differences are the token request body, split into plain fields and secret ones,
# and a refresh token auth's (see HttpOAuth2RefreshTokenAuth).


class HttpNoAuth(dg.Config):
    """No credentials."""

    type: Literal["none"] = "none"


class HttpBasicAuth(dg.Config):
    """HTTP basic authentication."""

    type: Literal["basic"] = "basic"
    username: str
    password: str = Field(repr=False, description=_USUALLY_ENV_VAR)


class HttpApiKeyAuth(dg.Config):
    """A fixed key sent in a header on every request."""

    type: Literal["api_key"] = "api_key"
    header: str = "X-API-Key"
    value: str = Field(repr=False, description=_USUALLY_ENV_VAR)


class HttpTokenAuth(dg.Config):
    """A token fetched from `token_url`, cached until it expires or the target answers 401."""

    type: Literal["token"] = "token"
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    body: dict[str, str] = Field(default_factory=dict, description="Plain fields of the token request")
    secret_body: dict[str, str] = Field(
        default_factory=dict, repr=False, description="Secret fields of the token request; each usually dg.EnvVar"
    )
    body_format: Literal["json", "form"] = "json"
    token_field: str = Field("access_token", description="Dotted path of the token in the JSON response")
    expiry_seconds: int = 1800
    header: str = "Authorization"
    prefix: str = "Bearer"


class HttpOAuth2Auth(dg.Config):
    """OAuth2 client credentials: a bearer token from `token_url`, reused for its `expires_in`."""

    type: Literal["oauth2"] = "oauth2"
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    client_id: str
    client_secret: str = Field(repr=False, description=_USUALLY_ENV_VAR)
    scope: str | None = None
    audience: str | None = None
    client_auth: Literal["body", "basic"] = "body"
    expiry_seconds: int = 1800


class HttpOAuth2RefreshTokenAuth(dg.Config):
    """OAuth2 refresh token grant: bearer tokens from `token_url` for the refresh token `authorize` printed.

    `refresh_token_variable` and `connection` name the variable and the connection in the messages that tell how to
    renew the token; `authorize_url` and `redirect_port` are not here: only the `authorize` command reads them.
    """

    type: Literal["oauth2_refresh_token"] = "oauth2_refresh_token"
    token_url: str = Field(description="Absolute URL, or a path under the connection's base_url")
    client_id: str
    client_secret: str | None = Field(default=None, repr=False, description=_USUALLY_ENV_VAR + "; unset: public client")
    refresh_token: str = Field(repr=False, description=_USUALLY_ENV_VAR)
    refresh_token_variable: str = Field(description="The environment variable refresh_token is read from")
    connection: str | None = Field(None, description="The connection's name in connections.yaml")
    scope: str | None = None
    client_auth: Literal["body", "basic"] = "body"
    expiry_seconds: int = 1800


HttpAuthConfig = (
    HttpNoAuth | HttpBasicAuth | HttpApiKeyAuth | HttpTokenAuth | HttpOAuth2Auth | HttpOAuth2RefreshTokenAuth
)
HTTP_AUTH_CONFIGS: dict[str, type[HttpAuthConfig]] = {
    "none": HttpNoAuth,
    "basic": HttpBasicAuth,
    "api_key": HttpApiKeyAuth,
    "token": HttpTokenAuth,
    "oauth2": HttpOAuth2Auth,
    "oauth2_refresh_token": HttpOAuth2RefreshTokenAuth,
}


class HttpRetry(dg.Config):
    """How 429, 5xx, timeouts and dropped connections are retried within one run."""

    max_attempts: int = 5
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30
    max_retry_after_seconds: float = 120


class HttpResource(dg.ConfigurableResource):
    """An `http` connection: the API or webhook receiver an integration delivers to; `get_client()` returns the
    plain `HttpDeliveryClient`.

    The secrets of `auth` are usually `dg.EnvVar("NAME")`. `ca_file` should be absolute: `resource_for` resolves a
    relative one against the project root.
    """

    base_url: str
    auth: HttpAuthConfig = Field(default_factory=HttpNoAuth, discriminator="type")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request")
    timeout_seconds: float = 30
    max_concurrency: int = Field(16, description="Requests in flight at once")
    rate_limit_per_second: float | None = Field(None, description="Requests started per second, at most")
    retry: HttpRetry = Field(default_factory=HttpRetry)
    verify_tls: bool = True
    ca_file: str | None = None
    honours_idempotency_key: bool = Field(False, description="The target applies one request per Idempotency-Key")

    def get_client(self) -> HttpDeliveryClient:
        """A new client for one run (an async context manager); its credentials are the resolved secrets."""
        system = f"http {self.base_url}"
        check_resolved(self.auth, SECRET_FIELDS["http"], system)
        if isinstance(self.auth, HttpTokenAuth):
            for key, value in self.auth.secret_body.items():
                _check_value_resolved(f"secret_body.{key}", value, system)
        # Dagster's logger: what the auth provider reports on its own (a rotated refresh token) lands in the run's log.
        return http_client(**self.model_dump(), logger=dg.get_dagster_logger())
