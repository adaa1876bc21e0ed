"""The one connection registry: a connection of connections.yaml becomes a Dagster resource or a plain client.

- `resource_for(connection, base_dir)`: the `dg.ConfigurableResource` that assets, checks and sensors use. Every
  secret is `dg.EnvVar(NAME)`: Dagster reads it when a run initializes the resource, and the UI shows the name only.
- `client_for(connection, base_dir)`: the plain client with its secrets read from the environment now, for the CLI
  (preview, validate, plan, trace, automap), which starts no run.

Both build the same keyword arguments (`settings_for`) from one table, `CONNECTION_TYPES` (each type's resource, its
client, and the fields naming a file or folder on this machine), and from the spec's `SECRET_FIELDS`, so a setting
means the same on both paths. Dagster is imported inside `resource_for` only: the engine modules that call
`client_for` stay plain Python.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.common import env_var_name
from connector_pipelines.spec.connections import SECRET_FIELDS, Connection
from connector_pipelines.storage import default_storage_root
from connector_pipelines.transports.folder import FolderClient
from connector_pipelines.transports.ftp import FtpClient
from connector_pipelines.transports.http import HttpDeliveryClient, http_client
from connector_pipelines.transports.http_auth import auth_settings
from connector_pipelines.transports.partner import partner_client
from connector_pipelines.transports.s3 import S3Client
from connector_pipelines.transports.sftp import SftpClient
from connector_pipelines.transports.smtp import SmtpClient
from connector_pipelines.transports.sql import SqlSource, resolve_sqlite_path

if TYPE_CHECKING:
    import dagster as dg

Client = SqlSource | S3Client | SftpClient | FtpClient | SmtpClient | FolderClient | HttpDeliveryClient
# (field, environment reference such as `${NAME}`) -> what the setting holds: a dg.EnvVar, or the variable's value.
SecretSetting = Callable[[str, str], Any]


def local_path(path: str, base_dir: Path) -> str:
    """A file or folder named in connections.yaml as an absolute path; a relative one is relative to `base_dir` (the
    project root), not to wherever a run or the CLI happens to start."""
    return str((base_dir / Path(path).expanduser()).resolve())


@dataclass(frozen=True)
class ConnectionType:
    """How one type of connection is reached. Its resource and its client take the same keyword arguments."""

    resource: str  # the class's name in transports/resources.py (the Dagster side, imported by resource_for only)
    client: Callable[..., Client]
    # Fields that name something on this machine, and how each becomes absolute against the project root.
    local_paths: Mapping[str, Callable[[str, Path], str]] = field(default_factory=dict)


CONNECTION_TYPES: dict[str, ConnectionType] = {
    "sql": ConnectionType("SqlResource", SqlSource, {"url": resolve_sqlite_path}),
    "s3": ConnectionType("S3Resource", S3Client),
    "sftp": ConnectionType("SftpResource", SftpClient),
    "ftp": ConnectionType("FtpResource", FtpClient, {"ca_file": local_path}),
    "smtp": ConnectionType("SmtpResource", SmtpClient, {"ca_file": local_path}),
    "folder": ConnectionType("FolderResource", FolderClient, {"path": local_path}),
    "partner": ConnectionType("PartnerResource", partner_client),
    "http": ConnectionType("HttpResource", http_client, {"ca_file": local_path}),
}
# Connection fields that only document the connection and configure nothing.
_NOT_SETTINGS = {"type", "description"}


def settings_for(
    connection: Connection, base_dir: Path, secret: SecretSetting, connection_name: str | None = None
) -> dict[str, Any]:
    """The keyword arguments of a connection's resource and client: its fields, local paths made absolute, and every
    secret reference replaced by `secret(field, reference)`. `connection_name` is for messages."""
    kind = CONNECTION_TYPES[connection.type]
    settings = {name: getattr(connection, name) for name in type(connection).model_fields if name not in _NOT_SETTINGS}
    for name, absolute in kind.local_paths.items():
        if settings[name]:
            settings[name] = absolute(settings[name], base_dir)
    if connection.type == "partner":
        # A hosted partner's folders are in the storage folder (`partners/<name>/`), not named in connections.yaml.
        settings["storage_root"] = str(default_storage_root(base_dir).resolve())
    if connection.type == "http":
        # An http connection's secrets live in its `auth:` model; the retry policy travels as plain values.
        settings["auth"] = auth_settings(connection.auth, secret, connection_name)
        settings["retry"] = connection.retry.model_dump()
        settings["headers"] = dict(connection.headers)
    else:
        for name in SECRET_FIELDS[connection.type]:
            if settings[name] is not None:
                settings[name] = secret(name, settings[name])
    return settings


def resource_for(connection: Connection, base_dir: Path, name: str | None = None) -> dg.ConfigurableResource:
    """The Dagster resource of a connection; its secrets are `dg.EnvVar`, read when a run needs them. `name` (the
    connection's) is for the messages that tell how to renew a credential."""
    import dagster as dg

    from connector_pipelines.transports import resources

    settings = settings_for(connection, base_dir, lambda _field, reference: dg.EnvVar(env_var_name(reference)), name)
    if connection.type == "http":
        # The auth mode is a discriminated union of configs, which Dagster builds from instances, not from dicts.
        settings["auth"] = resources.HTTP_AUTH_CONFIGS[settings["auth"]["type"]](**settings["auth"])
    resource_type: type[dg.ConfigurableResource] = getattr(resources, CONNECTION_TYPES[connection.type].resource)
    return resource_type(**settings)


def missing_variables(connection: Connection, name: str | None = None) -> list[str]:
    """One line per environment variable the connection's secrets name that is not set (names only, never values)."""
    where = f"connection '{name}'" if name else f"the {connection.type} connection"
    missing: list[str] = []

    def note(field: str, reference: str) -> None:
        variable = env_var_name(reference)
        if variable not in os.environ:
            missing.append(f"{where} needs the environment variable {variable} (its {field}); set it")

    settings_for(connection, Path("."), note)
    return missing


def client_for(connection: Connection, base_dir: Path, name: str | None = None) -> Client:
    """The plain client of a connection, its secrets read from the environment now (the CLI's path).

    A variable that is not set raises `ConnectorConfigError` naming the connection (`name`, when given), the
    variable and the field it is for, never a value.
    """
    where = f"connection '{name}'" if name else f"the {connection.type} connection"

    def environment_value(field: str, reference: str) -> str:
        variable = env_var_name(reference)
        value = os.environ.get(variable)
        if value is None:
            raise ConnectorConfigError([f"{where} needs the environment variable {variable} (its {field}); set it"])
        return value

    return CONNECTION_TYPES[connection.type].client(**settings_for(connection, base_dir, environment_value, name))
