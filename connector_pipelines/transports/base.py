"""What every file transport offers: the extract uploads one finished local file atomically (`FileTransport`); an
import lists, downloads, archives and quarantines the files a partner delivered (`FileSource`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from connector_pipelines.spec.extract import FileDestination


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


@dataclass(frozen=True)
class RemoteFile:
    """A regular file found directly in a folder of a connection; `modified` is timezone-aware UTC."""

    name: str
    size: int
    modified: datetime

    def __post_init__(self) -> None:
        # A naive or local time would compare wrongly with other servers' times (and with a cursor) by hours.
        if self.modified.utcoffset() != timedelta(0):
            raise ValueError(f"RemoteFile.modified must be an aware UTC time, got {self.modified!r}")


class FileSource(Protocol):
    """The read side of a plain client: what an import needs to pick up delivered files.

    Folders are relative to the connection's root (login folder, S3 prefix, folder path; "" is the root) and
    may not lead out of it. Every `name` is checked with `check_file_name`; an unsafe one is refused with
    `TransportError` before the server is contacted. Failures raise `TransportError` naming the system and the
    cause, never a secret.
    """

    @property
    def system(self) -> str: ...

    def list_files(self, folder: str) -> list[RemoteFile]:
        """Regular files directly in `folder`, sorted by name; a missing folder gives an empty list."""
        ...

    def download(self, folder: str, name: str, local_path: Path) -> None:
        """Stream the file into `local_path` atomically (temporary name, then rename); nothing is left on failure."""
        ...

    def move(self, folder: str, name: str, to_folder: str, new_name: str | None = None) -> str | None:
        """Rename the file on the server into `to_folder` (created when missing).

        Folder and SFTP never replace a file: a taken name becomes `name (2).ext`, ... and the name the file got
        is returned. S3 and FTP replace a file of that name and return None (the file kept the name asked for).
        """
        ...

    def write_text(self, folder: str, name: str, text: str) -> None:
        """Write a small UTF-8 text file atomically (such as the report beside a quarantined file)."""
        ...

    def close(self) -> None: ...
