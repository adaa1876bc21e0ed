"""What every file transport offers the extract: upload one finished local file, atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from connector_pipelines.spec.models import FileDestination


@dataclass(frozen=True)
class UploadReceipt:
    """Where an uploaded file now lives. The URI never holds a credential."""

    uri: str


class FileTransport(Protocol):
    """A plain (Dagster-free) client for one connection.

    `upload` must be atomic for readers: the file appears under `remote_name` complete or not at all
    (write under a temporary name, then rename; S3 objects and emails are atomic by nature). On failure it
    removes what it wrote and raises `TransportError` with a message that names the system and the cause
    and holds no secret.
    """

    def upload(self, local_path: Path, remote_name: str, destination: FileDestination) -> UploadReceipt: ...

    def close(self) -> None: ...
