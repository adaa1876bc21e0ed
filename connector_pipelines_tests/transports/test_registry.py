"""build_file_resource: connections.yaml entries become resources whose secrets are dg.EnvVar, resolved only at
run time, and whose clients reach the real servers."""

# No `from __future__ import annotations` here: Dagster reads the asset's parameter annotations as real types.
import json
from pathlib import Path

import dagster as dg
import pydantic
import pytest

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.models import (
    FILE_TRANSPORT_TYPES,
    Connection,
    FileDestination,
    FolderConnection,
    FtpConnection,
    S3Connection,
    SftpConnection,
    SmtpConnection,
)
from connector_pipelines.transports.folder import FolderClient, FolderResource
from connector_pipelines.transports.ftp import FtpClient, FtpResource
from connector_pipelines.transports.registry import RESOURCE_TYPES, SECRET_FIELDS, build_file_resource
from connector_pipelines.transports.s3 import S3Client, S3Resource
from connector_pipelines.transports.sftp import SftpClient, SftpResource
from connector_pipelines.transports.smtp import SmtpClient, SmtpResource

pytestmark = pytest.mark.timeout(60)

CONNECTION = pydantic.TypeAdapter(Connection)
MODELS = {
    "s3": S3Connection,
    "sftp": SftpConnection,
    "ftp": FtpConnection,
    "smtp": SmtpConnection,
    "folder": FolderConnection,
}


def test_every_resource_mirrors_its_connection_model():
    assert set(RESOURCE_TYPES) == set(SECRET_FIELDS) == set(FILE_TRANSPORT_TYPES) == set(MODELS)
    for kind, model in MODELS.items():
        model_fields = set(model.model_fields) - {"type", "description"}
        assert set(RESOURCE_TYPES[kind].model_fields) == model_fields, kind
        assert set(SECRET_FIELDS[kind]) <= model_fields


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
    resource = build_file_resource(CONNECTION.validate_python(server.connection()), Path("/unused"))

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


def test_key_auth_connection(sftp_server, monkeypatch, make_file, unique_folder):
    entry = sftp_server.connection({"password": None, "private_key": "${TEST_SFTP_PRIVATE_KEY}"})
    resource = build_file_resource(CONNECTION.validate_python(entry), Path("."))
    assert resource.password is None and resource.private_key == "TEST_SFTP_PRIVATE_KEY"
    monkeypatch.setenv("TEST_SFTP_PRIVATE_KEY", sftp_server.private_key)

    client = resource.process_config_and_initialize().get_client()
    client.upload(make_file("k.csv", 10), "k.csv", FileDestination(connection="x", folder=unique_folder))
    client.close()
    assert (sftp_server.root / unique_folder / "k.csv").exists()


def test_relative_paths_resolve_against_the_base_dir(tmp_path):
    folder = build_file_resource(FolderConnection(type="folder", path="var/outbox"), tmp_path)
    assert isinstance(folder, FolderResource)
    assert folder.path == str(tmp_path.resolve() / "var" / "outbox")
    assert isinstance(folder.get_client(), FolderClient)

    absolute = build_file_resource(FolderConnection(type="folder", path="/srv/outbox"), tmp_path)
    assert absolute.path == "/srv/outbox"

    ftp = build_file_resource(FtpConnection(type="ftp", host="h", tls=True, ca_file="certs/ca.pem"), tmp_path)
    assert ftp.ca_file == str(tmp_path.resolve() / "certs" / "ca.pem")


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

    resource = build_file_resource(CONNECTION.validate_python(sftp_server.connection()), Path("."))
    with dg.instance_for_test() as instance:
        result = dg.materialize([delivered], resources={"sftp": resource}, instance=instance)
        assert result.success
        records = instance.all_logs(result.run_id)
        run_config = instance.get_run_by_id(result.run_id).run_config
    text = json.dumps([str(record) for record in records]) + json.dumps(run_config, default=str)
    assert sftp_server.password not in text
    assert f"sftp://127.0.0.1:{sftp_server.port}/{unique_folder}/run.csv" in text
    assert (sftp_server.root / unique_folder / "run.csv").read_bytes() == local.read_bytes()


def test_other_connection_types_are_refused():
    sql = CONNECTION.validate_python({"type": "sql", "url": "sqlite:///x.db"})
    with pytest.raises(ValueError, match="not a file connection"):
        build_file_resource(sql, Path("."))
