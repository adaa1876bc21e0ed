"""Deliver an extract file into a folder on this machine (or a mounted share).

This module also holds what every transport shares, so it is written once: the two rules on where a file may
go (`check_remote_name`, `folder_parts`), the secret scrubber for error text (`redact`), and the guard against
building a client from a resource whose secrets were never resolved (`check_resolved`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from connector_pipelines.errors import TransportError, redact  # noqa: F401 - re-exported for the transports
from connector_pipelines.spec.models import FileDestination
from connector_pipelines.transports.base import UploadReceipt

_COPY_BUFFER = 1024 * 1024


def check_remote_name(remote_name: str, system: str) -> None:
    """Refuse anything but a plain file name, so a name can never choose its own folder."""
    if (
        not remote_name
        or "/" in remote_name
        or "\\" in remote_name
        or ".." in remote_name
        or remote_name.startswith(".")
        or "\x00" in remote_name
    ):
        raise TransportError(
            f"{system}: {remote_name!r} is not a plain file name; a file name may not contain '/', '\\' or '..' "
            "nor start with '.'; set the folder on the destination instead"
        )


def folder_parts(folder: str, system: str) -> list[str]:
    """Split a destination folder into its parts; '..' is refused (the spec refuses it too, this is defence)."""
    parts = [part for part in folder.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts or any("\x00" in part for part in parts):
        raise TransportError(f"{system}: the destination folder {folder!r} may not contain '..'")
    return parts


def check_resolved(resource: dg.ConfigurableResource, secret_fields: Iterable[str], system: str) -> None:
    """Refuse to build a client from a resource whose `dg.EnvVar` secrets were never resolved.

    Outside a run (or `dg.build_resources`) an EnvVar field reads as the variable's *name*, which would then be
    sent as the password; this makes that mistake loud instead.
    """
    for field in secret_fields:
        if isinstance(getattr(resource, field), dg.EnvVar):
            raise TransportError(
                f"{system}: {field} is still the environment reference, not its value; call get_client() inside "
                "a Dagster run, or initialize the resource first (dg.build_resources / process_config_and_initialize)"
            )


class FolderClient:
    """Writes files into a folder: first `.<name>.part` beside the target, then `os.replace`, so a reader
    of the folder sees the file complete or not at all."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def system(self) -> str:
        return f"folder {self.path}"

    def upload(self, local_path: Path, remote_name: str, destination: FileDestination) -> UploadReceipt:
        check_remote_name(remote_name, self.system)
        target_dir = self._target_dir(destination.folder)
        final = target_dir / remote_name
        temporary = target_dir / f".{remote_name}.part"
        try:
            temporary.unlink(missing_ok=True)
            try:
                # Same file system as the staging folder: a hard link publishes the finished file without
                # copying its bytes a second time.
                os.link(local_path, temporary)
                # The rename is only as durable as the data it points at (the staging file was never synced).
                with open(temporary, "rb") as linked:
                    os.fsync(linked.fileno())
            except OSError:
                with open(local_path, "rb") as source, open(temporary, "wb") as sink:
                    shutil.copyfileobj(source, sink, _COPY_BUFFER)
                    sink.flush()
                    # The rename is only as durable as the data it points at.
                    os.fsync(sink.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise TransportError(f"{self.system}: could not write {remote_name!r}: {exc.strerror or exc}") from None
        return UploadReceipt(uri=final.as_uri())

    def _target_dir(self, folder: str) -> Path:
        root = self.path.resolve()
        if not root.is_dir():
            # Creating it would hide an unmounted share and fill the local disk instead.
            raise TransportError(
                f"{self.system}: the folder does not exist; create it (or mount the share) before the extract runs"
            )
        target = root.joinpath(*folder_parts(folder, self.system))
        # Checked before and after mkdir: resolve() follows symlinks, so a link that leads out of the root is
        # caught before anything is created through it, and a link swapped in meanwhile is caught after.
        self._check_inside(root, target.resolve(), folder)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(
                f"{self.system}: could not create the folder {folder!r}: {exc.strerror or exc}"
            ) from None
        resolved = target.resolve()
        self._check_inside(root, resolved, folder)
        return resolved

    def _check_inside(self, root: Path, target: Path, folder: str) -> None:
        if not target.is_relative_to(root):
            raise TransportError(f"{self.system}: the destination folder {folder!r} leads outside the connection path")

    def close(self) -> None:
        """Nothing to release; present for the `FileTransport` protocol."""


class FolderResource(dg.ConfigurableResource):
    """A `folder` connection as a Dagster resource; `get_client()` returns the plain `FolderClient`.

    `path` should be absolute: `build_file_resource` resolves relative paths against the project root.
    """

    path: str

    def get_client(self) -> FolderClient:
        return FolderClient(self.path)
