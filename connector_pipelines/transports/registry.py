"""Turn a file connection from connections.yaml into its Dagster resource.

Secrets stay environment references all the way: `${NAME}` in the YAML becomes `dg.EnvVar("NAME")`, which
Dagster resolves at run time and shows by name, never by value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from connector_pipelines.spec.models import (
    FolderConnection,
    FtpConnection,
    S3Connection,
    SftpConnection,
    SmtpConnection,
    env_var_name,
)
from connector_pipelines.transports.folder import FolderResource
from connector_pipelines.transports.ftp import FtpResource
from connector_pipelines.transports.s3 import S3Resource
from connector_pipelines.transports.sftp import SftpResource
from connector_pipelines.transports.smtp import SmtpResource

FileConnection = S3Connection | SftpConnection | FtpConnection | SmtpConnection | FolderConnection

RESOURCE_TYPES: dict[str, type[dg.ConfigurableResource]] = {
    "s3": S3Resource,
    "sftp": SftpResource,
    "ftp": FtpResource,
    "smtp": SmtpResource,
    "folder": FolderResource,
}
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "s3": ("access_key_id", "secret_access_key"),
    "sftp": ("password", "private_key"),
    "ftp": ("password",),
    "smtp": ("password",),
    "folder": (),
}
# Connection fields that only document the connection and configure nothing.
_NOT_CONFIG = {"type", "description"}


def build_file_resource(connection: FileConnection, base_dir: Path) -> dg.ConfigurableResource:
    """The resource for one s3, sftp, ftp, smtp or folder connection.

    Secret fields become `dg.EnvVar`; a relative folder path or `ca_file` is resolved against `base_dir` (the
    project root).
    """
    resource_type = RESOURCE_TYPES.get(connection.type)
    if resource_type is None:
        raise ValueError(f"'{connection.type}' is not a file connection; expected one of {', '.join(RESOURCE_TYPES)}")
    values: dict[str, Any] = {
        field: getattr(connection, field) for field in type(connection).model_fields if field not in _NOT_CONFIG
    }
    for field in SECRET_FIELDS[connection.type]:
        if values[field] is not None:
            values[field] = dg.EnvVar(env_var_name(values[field]))
    # Files the connection names are resolved here, not against whatever directory a run starts in.
    if isinstance(connection, FolderConnection):
        values["path"] = str((base_dir / Path(connection.path).expanduser()).resolve())
    if isinstance(connection, FtpConnection | SmtpConnection) and connection.ca_file:
        values["ca_file"] = str((base_dir / Path(connection.ca_file).expanduser()).resolve())
    return resource_type(**values)
