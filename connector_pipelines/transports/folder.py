"""Deliver an extract file into a folder on this machine (or a mounted share).

It also reads the files a partner delivered into such a folder (the `FileSource` side).

This module also holds what every transport shares, so it is written once: the two rules on where a file may
go (`check_remote_name`, `folder_parts`), the rule on file names read from outside (`check_source_name`), the
atomic local write a download ends with (`atomic_local_file`) and the secret scrubber for error text (`redact`).
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from connector_pipelines.errors import TransportError, redact  # noqa: F401 - re-exported for the transports
from connector_pipelines.imports.files import check_file_name
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.base import RemoteFile, UploadReceipt

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


def check_source_name(name: str, system: str) -> None:
    """Refuse a file name from outside that may not be used as one path component (see `check_file_name`)."""
    reason = check_file_name(name)
    if reason:
        raise TransportError(f"{system}: refusing the file name {name!r}: {reason}")


def temporary_name(name: str) -> str:
    """A unique hidden name beside `name` to write under before the rename; cut short so that a name near the
    255-byte limit still leaves room for the suffix."""
    return f".{name[:40]}.{uuid.uuid4().hex[:12]}.part"


@contextmanager
def atomic_local_file(local_path: Path) -> Iterator[BinaryIO]:
    """A new local file that appears at `local_path` complete or not at all.

    The caller writes into the yielded file, which is a temporary one beside `local_path` (the parent folder is
    created); on a clean exit it is synced and renamed over `local_path`, on any error it is removed and the
    error re-raised, so a failed download never leaves a partial file.
    """
    local_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = local_path.with_name(temporary_name(local_path.name))
    try:
        with open(temporary, "xb") as sink:
            yield sink
            sink.flush()
            # The rename is only as durable as the data it points at.
            os.fsync(sink.fileno())
        os.replace(temporary, local_path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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

    # ------------------------------------------------------------------------------------------------
    # Read side (`FileSource`): the files a partner delivered into the folder

    def list_files(self, folder: str) -> list[RemoteFile]:
        directory = self._source_dir(folder)
        if not directory.exists():
            return []
        if not directory.is_dir():
            raise TransportError(f"{self.system}: {folder!r} is not a folder")
        files: list[RemoteFile] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    # Symlinks are never listed: one could point at any file on this machine.
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed since the folder was read
                    modified = datetime.fromtimestamp(info.st_mtime, UTC)
                    files.append(RemoteFile(name=entry.name, size=info.st_size, modified=modified))
        except OSError as exc:
            raise TransportError(f"{self.system}: cannot list the folder {folder!r}: {exc.strerror or exc}") from None
        return sorted(files, key=lambda file: file.name)

    def download(self, folder: str, name: str, local_path: Path) -> None:
        source = self._source_file(folder, name)
        try:
            # O_NOFOLLOW: a file swapped for a symlink since it was checked is refused, not followed outside.
            descriptor = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with open(descriptor, "rb") as reader, atomic_local_file(local_path) as sink:
                shutil.copyfileobj(reader, sink, _COPY_BUFFER)
        except OSError as exc:
            raise TransportError(
                f"{self.system}: download of {name!r} from {folder!r} failed: {exc.strerror or exc}"
            ) from None

    def move(self, folder: str, name: str, to_folder: str, new_name: str | None = None) -> None:
        target_name = name if new_name is None else new_name
        check_source_name(target_name, self.system)
        source = self._source_file(folder, name)
        target = self._target_dir(to_folder) / target_name
        try:
            os.replace(source, target)
        except OSError as exc:
            raise TransportError(
                f"{self.system}: could not move {name!r} from {folder!r} to {to_folder!r}: {exc.strerror or exc}"
            ) from None

    def write_text(self, folder: str, name: str, text: str) -> None:
        check_source_name(name, self.system)
        target = self._target_dir(folder) / name
        try:
            with atomic_local_file(target) as sink:
                sink.write(text.encode("utf-8"))
        except OSError as exc:
            raise TransportError(f"{self.system}: could not write {name!r}: {exc.strerror or exc}") from None

    def _source_dir(self, folder: str) -> Path:
        """The resolved folder to read from (it may not exist); refused when it leads outside the root."""
        root = self.path.resolve()
        if not root.is_dir():
            # An unmounted share must not read as "no files delivered".
            raise TransportError(f"{self.system}: the folder does not exist; create it (or mount the share)")
        target = root.joinpath(*folder_parts(folder, self.system)).resolve()
        if not target.is_relative_to(root):
            raise TransportError(f"{self.system}: the folder {folder!r} leads outside the connection path")
        return target

    def _source_file(self, folder: str, name: str) -> Path:
        """The path of a regular file to read or move; its folder is resolved, and the file itself may not be a
        symlink, so the path stays inside the root."""
        check_source_name(name, self.system)
        path = self._source_dir(folder) / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise TransportError(f"{self.system}: there is no file {name!r} in the folder {folder!r}") from None
        except OSError as exc:
            raise TransportError(f"{self.system}: cannot read {name!r}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise TransportError(f"{self.system}: {name!r} in the folder {folder!r} is not a regular file")
        return path

    def close(self) -> None:
        """Nothing to release; present for the `FileTransport` protocol."""
