"""The connection registry: `resource_for` turns connections.yaml entries into resources whose secrets are dg.EnvVar,
resolved only at run time; `client_for` gives the plain clients with their secrets read from the environment; both
reach the real servers."""

# No `from __future__ import annotations` here: Dagster reads the asset's parameter annotations as real types.
import asyncio
import json
import sqlite3
import typing
from pathlib import Path

import dagster as dg
import pydantic
import pytest

from connector_pipelines.errors import ConnectorConfigError, TransportError
from connector_pipelines.spec.connections import (
    CONNECTION_TYPES,
    SECRET_FIELDS,
    Connection,
    FolderConnection,
    FtpConnection,
    HttpAuthApiKey,
    HttpAuthBasic,
    HttpAuthNone,
    HttpAuthOAuth2,
    HttpAuthOAuth2RefreshToken,
    HttpAuthToken,
    HttpConnection,
    PartnerConnection,
    RetryPolicy,
    S3Connection,
    SftpConnection,
    SmtpConnection,
    SqlConnection,
)
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports import registry, resources
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.ftp import FtpClient
from connector_pipelines.transports.http import HttpDeliveryClient, HttpOutcome, HttpRequest
from connector_pipelines.transports.http_auth import AUTHORIZE_ONLY_FIELDS
from connector_pipelines.transports.registry import client_for, resource_for
from connector_pipelines.transports.resources import (
    HTTP_AUTH_CONFIGS,
    FolderResource,
    FtpResource,
    HttpResource,
    HttpRetry,
    S3Resource,
    SftpResource,
    SmtpResource,
    SqlResource,
)
from connector_pipelines.transports.s3 import S3Client
from connector_pipelines.transports.sftp import SftpClient
from connector_pipelines.transports.smtp import SmtpClient
from connector_pipelines.transports.sql import SqlSource

pytestmark = pytest.mark.timeout(60)

CONNECTION = pydantic.TypeAdapter(Connection)
MODELS = {
    "sql": SqlConnection,
    "s3": S3Connection,
    "sftp": SftpConnection,
    "ftp": FtpConnection,
    "smtp": SmtpConnection,
    "folder": FolderConnection,
    "http": HttpConnection,
    "partner": PartnerConnection,
}
# Resource fields no connections.yaml entry holds: a partner's folders are found in the storage folder.
RESOURCE_ONLY = {"partner": {"storage_root"}}
AUTH_MODELS = {
    "none": HttpAuthNone,
    "basic": HttpAuthBasic,
    "api_key": HttpAuthApiKey,
    "token": HttpAuthToken,
    "oauth2": HttpAuthOAuth2,
    "oauth2_refresh_token": HttpAuthOAuth2RefreshToken,
}
# What a refresh token auth's config has beyond its model (the names in its messages), and what only the
# `authorize` command reads, which a run does not get.
REFRESH_MESSAGE_FIELDS = ("refresh_token_variable", "connection")
NOT_SETTINGS = {"type", "description"}


def _defaults(model: type[pydantic.BaseModel]) -> dict[str, object]:
    """Each optional field's default, nested models as plain values."""
    defaults = {}
    for name, info in model.model_fields.items():
        if not info.is_required():
            value = info.get_default(call_default_factory=True)
            defaults[name] = value.model_dump() if isinstance(value, pydantic.BaseModel) else value
    return defaults


def test_every_resource_mirrors_its_connection_model():
    assert set(registry.CONNECTION_TYPES) == set(SECRET_FIELDS) == set(CONNECTION_TYPES) == set(MODELS)
    for kind, model in MODELS.items():
        resource_type = getattr(resources, registry.CONNECTION_TYPES[kind].resource)
        model_fields = set(model.model_fields) - NOT_SETTINGS
        assert set(resource_type.model_fields) == model_fields | RESOURCE_ONLY.get(kind, set()), kind
        model_defaults = {k: v for k, v in _defaults(model).items() if k not in NOT_SETTINGS}
        assert _defaults(resource_type) == model_defaults, kind
    assert _defaults(HttpRetry) == _defaults(RetryPolicy)


def test_every_http_auth_config_mirrors_its_auth_model():
    assert set(HTTP_AUTH_CONFIGS) == set(AUTH_MODELS)
    for kind, model in AUTH_MODELS.items():
        config = HTTP_AUTH_CONFIGS[kind]
        # The token request body is split in two: the plain fields, and the secret ones (each a dg.EnvVar).
        expected = set(model.model_fields) | ({"secret_body"} if kind == "token" else set())
        model_defaults = {**_defaults(model), **({"secret_body": {}} if kind == "token" else {})}
        if kind == "oauth2_refresh_token":
            expected = (expected - set(AUTHORIZE_ONLY_FIELDS)) | set(REFRESH_MESSAGE_FIELDS)
            model_defaults = {k: v for k, v in model_defaults.items() if k not in AUTHORIZE_ONLY_FIELDS}
            model_defaults["connection"] = None  # refresh_token_variable is required: always known
        assert set(config.model_fields) == expected, kind
        config_defaults = {k: v for k, v in _defaults(config).items() if k != "type"}  # the tag has a default here
        assert config_defaults == model_defaults, kind
        assert set(SECRET_FIELDS["http"]) & set(model.model_fields) <= set(config.model_fields)


def test_http_resource_fields_are_typed_with_no_connection_json():
    hints = typing.get_type_hints(HttpResource)
    assert "connection_json" not in HttpResource.model_fields
    assert hints["base_url"] is str and hints["timeout_seconds"] is float and hints["max_concurrency"] is int
    assert hints["headers"] == dict[str, str] and hints["retry"] is HttpRetry
    assert set(typing.get_args(hints["auth"])) == set(HTTP_AUTH_CONFIGS.values())

    connection = CONNECTION.validate_python(
        {
            "type": "http",
            "base_url": "https://api.example.test/v1",
            "headers": {"X-Tenant": "acme"},
            "timeout_seconds": 12,
            "max_concurrency": 4,
            "rate_limit_per_second": 20,
            "retry": {"max_attempts": 3},
            "ca_file": "certs/ca.pem",
            "auth": {"type": "oauth2", "token_url": "/oauth/token", "client_id": "c1", "client_secret": "${CS}"},
        }
    )
    resource = resource_for(connection, Path("/srv/project"))
    assert isinstance(resource, HttpResource)
    assert (resource.base_url, resource.headers, resource.timeout_seconds) == (
        "https://api.example.test/v1",
        {"X-Tenant": "acme"},
        12,
    )
    assert (resource.max_concurrency, resource.rate_limit_per_second, resource.retry.max_attempts) == (4, 20, 3)
    assert resource.ca_file == "/srv/project/certs/ca.pem"
    assert (resource.auth.type, resource.auth.client_id, resource.auth.token_url) == ("oauth2", "c1", "/oauth/token")


@pytest.mark.parametrize(
    ("server_fixture", "resource_type", "client_type", "secrets"),
    [
        ("sftp_server", SftpResource, SftpClient, {"password": "TEST_SFTP_PASSWORD"}),
        (
            "s3_server",
            S3Resource,
            S3Client,
            {"access_key_id": "TEST_S3_ACCESS_KEY_ID", "secret_access_key": "TEST_S3_SECRET_ACCESS_KEY"},
        ),
        ("ftps_server", FtpResource, FtpClient, {"password": "TEST_FTPS_PASSWORD"}),
        ("smtp_starttls_server", SmtpResource, SmtpClient, {"password": "TEST_SMTP_PASSWORD"}),
    ],
)
def test_secrets_become_env_vars_resolved_at_run_time(
    request, monkeypatch, make_file, unique_folder, server_fixture, resource_type, client_type, secrets
):
    server = request.getfixturevalue(server_fixture)
    resource = resource_for(CONNECTION.validate_python(server.connection()), Path("/unused"))

    assert type(resource) is resource_type
    for field, env_name in secrets.items():
        value = getattr(resource, field)
        assert isinstance(value, dg.EnvVar) and value == env_name
    # Unresolved, a client would get the variable's name as its password: refused.
    with pytest.raises(TransportError, match="still the environment reference"):
        resource.get_client()

    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    with dg.build_resources({"target": resource}) as resources:
        client = resources.target.get_client()
        assert type(client) is client_type
        assert all(value not in repr(resources.target) for value in server.env().values())
        destination = FileDestination(connection="target", folder=unique_folder, to=["ops@example.test"])
        receipt = client.upload(make_file("via-resource.csv", 1_000), "via-resource.csv", destination)
        client.close()
    assert receipt.uri

    initialized = resource.process_config_and_initialize()
    for field in secrets:
        assert getattr(initialized, field) == server.env()[secrets[field]]


@pytest.mark.parametrize(
    ("server_fixture", "client_type"),
    [
        ("sftp_server", SftpClient),
        ("s3_server", S3Client),
        ("ftps_server", FtpClient),
        ("smtp_starttls_server", SmtpClient),
    ],
)
def test_client_for_reads_the_secrets_from_the_environment(
    request, monkeypatch, make_file, unique_folder, server_fixture, client_type
):
    server = request.getfixturevalue(server_fixture)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)

    client = client_for(CONNECTION.validate_python(server.connection()), Path("/unused"), "partner")

    assert type(client) is client_type
    destination = FileDestination(connection="partner", folder=unique_folder, to=["ops@example.test"])
    receipt = client.upload(make_file("via-client.csv", 1_000), "via-client.csv", destination)
    client.close()
    assert receipt.uri


def test_a_missing_variable_is_named_without_any_value(s3_server, monkeypatch):
    connection = CONNECTION.validate_python(s3_server.connection())
    secret_key = s3_server.env()["TEST_S3_SECRET_ACCESS_KEY"]
    monkeypatch.setenv("TEST_S3_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.delenv("TEST_S3_ACCESS_KEY_ID", raising=False)

    with pytest.raises(ConnectorConfigError) as raised:
        client_for(connection, Path("."), "bucket")
    assert str(raised.value) == (
        "connection 'bucket' needs the environment variable TEST_S3_ACCESS_KEY_ID (its access_key_id); set it"
    )

    # A run: Dagster refuses to initialize the resource, naming the variable; the value that is set never shows.
    with (
        pytest.raises(dg.DagsterInvalidConfigError) as failed,
        dg.build_resources({"bucket": resource_for(connection, Path("."))}),
    ):
        pass
    message = str(failed.value)
    assert "TEST_S3_ACCESS_KEY_ID" in message and "not set" in message
    assert secret_key not in message


def test_key_auth_connection(sftp_server, monkeypatch, make_file, unique_folder):
    entry = sftp_server.connection({"password": None, "private_key": "${TEST_SFTP_PRIVATE_KEY}"})
    resource = resource_for(CONNECTION.validate_python(entry), Path("."))
    assert resource.password is None and resource.private_key == "TEST_SFTP_PRIVATE_KEY"
    monkeypatch.setenv("TEST_SFTP_PRIVATE_KEY", sftp_server.private_key)

    client = resource.process_config_and_initialize().get_client()
    client.upload(make_file("k.csv", 10), "k.csv", FileDestination(connection="x", folder=unique_folder))
    client.close()
    assert (sftp_server.root / unique_folder / "k.csv").exists()


def test_relative_paths_resolve_against_the_base_dir(tmp_path):
    folder = resource_for(FolderConnection(type="folder", path="var/outbox"), tmp_path)
    assert isinstance(folder, FolderResource)
    assert folder.path == str(tmp_path.resolve() / "var" / "outbox")
    assert isinstance(folder.get_client(), FolderClient)
    assert client_for(FolderConnection(type="folder", path="var/outbox"), tmp_path).path == Path(folder.path)

    absolute = resource_for(FolderConnection(type="folder", path="/srv/outbox"), tmp_path)
    assert absolute.path == "/srv/outbox"

    ftp = resource_for(FtpConnection(type="ftp", host="h", tls=True, ca_file="certs/ca.pem"), tmp_path)
    assert ftp.ca_file == str(tmp_path.resolve() / "certs" / "ca.pem")


def test_a_sqlite_path_resolves_against_the_base_dir(tmp_path):
    (tmp_path / "var").mkdir()
    with sqlite3.connect(tmp_path / "var" / "crm.db") as database:
        database.execute("CREATE TABLE contacts (id INTEGER, name TEXT)")
        database.execute("INSERT INTO contacts VALUES (1, 'Ada'), (2, 'Grace')")
    connection = SqlConnection(type="sql", url="sqlite:///var/crm.db")

    resource = resource_for(connection, tmp_path)
    assert isinstance(resource, SqlResource)
    assert resource.url == f"sqlite:///{tmp_path.resolve() / 'var' / 'crm.db'}"
    source = client_for(connection, tmp_path)
    assert isinstance(source, SqlSource)
    batches = source.stream_batches("SELECT name FROM contacts ORDER BY id", {})
    assert [row for batch in batches for row in batch.to_pylist()] == [{"name": "Ada"}, {"name": "Grace"}]
    source.dispose()


def test_a_sql_password_is_an_env_var_for_the_resource_and_read_by_client_for(pg_database, monkeypatch):
    # PostgreSQL trusts loopback here: the password is sent but not checked, so this shows where it comes from.
    connection = SqlConnection(type="sql", url=pg_database.url, password="${TEST_DB_PASSWORD}")
    resource = resource_for(connection, Path("."))
    assert isinstance(resource.password, dg.EnvVar) and resource.password == "TEST_DB_PASSWORD"
    with pytest.raises(TransportError, match="still the environment reference"):
        resource.get_source()

    monkeypatch.setenv("TEST_DB_PASSWORD", "pw-db-2c6e11")
    source = client_for(connection, Path("."), "warehouse")
    assert source.engine.url.password == "pw-db-2c6e11"
    assert source.schema("SELECT 1 AS one", {}).names == ["one"]
    source.dispose()
    with dg.build_resources({"warehouse": resource}) as resources:
        run_source = resources.warehouse.get_source(timezone="Europe/Paris")
        assert (run_source.engine.url.password, run_source.timezone) == ("pw-db-2c6e11", "Europe/Paris")
        run_source.dispose()


# --------------------------------------------------------------------------------------------------------------
# HTTP: every auth mode against the loopback target, which requires that mode's credentials

HTTP_PASSWORD = "pw-http-5d81c2"  # the credentials the target requires by default
HTTP_API_KEY = "key-http-37be10"
HTTP_CLIENT_SECRET = "cs-http-9a04e7"
HTTP_ENV = {
    "TEST_HTTP_PASSWORD": HTTP_PASSWORD,
    "TEST_HTTP_API_KEY": HTTP_API_KEY,
    "TEST_HTTP_CLIENT_SECRET": HTTP_CLIENT_SECRET,
}
# mode -> (the connection's auth:, its secret settings in the resource -> variable name, what the target requires)
HTTP_AUTH = {
    "basic": (
        {"type": "basic", "username": "pipelines", "password": "${TEST_HTTP_PASSWORD}"},
        {"password": "TEST_HTTP_PASSWORD"},
        lambda target: target.require_basic(),
    ),
    "api_key": (
        {"type": "api_key", "value": "${TEST_HTTP_API_KEY}"},
        {"value": "TEST_HTTP_API_KEY"},
        lambda target: target.require_api_key(),
    ),
    "token": (
        {
            "type": "token",
            "token_url": "/oauth/token",
            "body": {"username": "pipelines", "password": "${TEST_HTTP_PASSWORD}"},
        },
        {"secret_body.password": "TEST_HTTP_PASSWORD"},
        lambda target: target.require_bearer(),
    ),
    "oauth2": (
        {
            "type": "oauth2",
            "token_url": "/oauth/token",
            "client_id": "connector-pipelines",
            "client_secret": "${TEST_HTTP_CLIENT_SECRET}",
        },
        {"client_secret": "TEST_HTTP_CLIENT_SECRET"},
        lambda target: target.require_bearer(),
    ),
}


def _http_connection(target, auth: dict) -> Connection:
    return CONNECTION.validate_python(
        {"type": "http", "base_url": target.base_url, "auth": auth, "retry": {"max_attempts": 1}}
    )


def _auth_setting(resource: HttpResource, setting: str) -> object:
    if setting.startswith("secret_body."):
        return resource.auth.secret_body[setting.removeprefix("secret_body.")]
    return getattr(resource.auth, setting)


def _post_one(client: HttpDeliveryClient) -> HttpOutcome:
    async def send() -> HttpOutcome:
        async with client:
            body = json.dumps({"id": "c1", "name": "Contact 1"}).encode()
            return await client.send(HttpRequest("POST", "/contacts", body, idempotency_key="registry-1"))

    return asyncio.run(send())


@pytest.mark.parametrize("mode", list(HTTP_AUTH))
def test_http_resource_shows_secrets_as_variable_names_and_delivers_once_resolved(http_target, monkeypatch, mode):
    auth, secret_settings, require = HTTP_AUTH[mode]
    require(http_target)
    resource = resource_for(_http_connection(http_target, auth), Path("."))

    assert isinstance(resource, HttpResource) and resource.auth.type == mode
    for setting, variable in secret_settings.items():
        value = _auth_setting(resource, setting)
        assert isinstance(value, dg.EnvVar) and value == variable
    if mode == "token":
        assert resource.auth.body == {"username": "pipelines"}  # a plain field stays a plain value
    with pytest.raises(TransportError, match="still the environment reference"):
        resource.get_client()

    for name, value in HTTP_ENV.items():
        monkeypatch.setenv(name, value)
    with dg.build_resources({"crm": resource}) as resources:
        assert all(value not in repr(resources.crm) for value in HTTP_ENV.values())
        outcome = _post_one(resources.crm.get_client())
    assert (outcome.status, outcome.error) == (201, None)
    assert http_target.records("contacts")["c1"]["name"] == "Contact 1"


@pytest.mark.parametrize("mode", list(HTTP_AUTH))
def test_http_client_for_reads_the_secrets_from_the_environment(http_target, monkeypatch, mode):
    auth, _, require = HTTP_AUTH[mode]
    require(http_target)
    for name, value in HTTP_ENV.items():
        monkeypatch.setenv(name, value)

    client = client_for(_http_connection(http_target, auth), Path("."), "crm")

    assert isinstance(client, HttpDeliveryClient)
    outcome = _post_one(client)
    assert (outcome.status, outcome.error) == (201, None)


def test_a_missing_http_secret_is_named_with_its_field(http_target, monkeypatch):
    monkeypatch.setenv("TEST_HTTP_USER", "pipelines")
    monkeypatch.delenv("TEST_HTTP_PASSWORD", raising=False)
    auth = {
        "type": "token",
        "token_url": "/oauth/token",
        "body": {"user": "${TEST_HTTP_USER}", "password": "${TEST_HTTP_PASSWORD}"},
    }

    with pytest.raises(ConnectorConfigError) as raised:
        client_for(_http_connection(http_target, auth), Path("."), "crm")

    assert str(raised.value) == (
        "connection 'crm' needs the environment variable TEST_HTTP_PASSWORD (its auth.body.password); set it"
    )


def test_a_real_run_shows_no_secret_in_its_events(sftp_server, monkeypatch, make_file, unique_folder):
    for name, value in sftp_server.env().items():
        monkeypatch.setenv(name, value)
    local = make_file("run.csv", 2_000)

    @dg.asset
    def delivered(context: dg.AssetExecutionContext, sftp: SftpResource) -> dg.MaterializeResult:
        client = sftp.get_client()
        try:
            receipt = client.upload(local, "run.csv", FileDestination(connection="sftp", folder=unique_folder))
        finally:
            client.close()
        context.log.info(f"uploaded to {receipt.uri}")
        return dg.MaterializeResult(metadata={"uri": dg.MetadataValue.url(receipt.uri)})

    resource = resource_for(CONNECTION.validate_python(sftp_server.connection()), Path("."))
    with dg.instance_for_test() as instance:
        result = dg.materialize([delivered], resources={"sftp": resource}, instance=instance)
        assert result.success
        records = instance.all_logs(result.run_id)
        run_config = instance.get_run_by_id(result.run_id).run_config
    text = json.dumps([str(record) for record in records]) + json.dumps(run_config, default=str)
    assert sftp_server.password not in text
    assert f"sftp://127.0.0.1:{sftp_server.port}/{unique_folder}/run.csv" in text
    assert (sftp_server.root / unique_folder / "run.csv").read_bytes() == local.read_bytes()
