"""Deliver an extract file into a folder on this machine (or a mounted share).

It also reads the files a partner delivered into such a folder (the `FileSource` side).

This module also holds what every transport shares, so it is written once: the two rules on where a file may
go (`check_remote_name`, `folder_parts`), the rule on file names read from outside (`check_source_name`), the
numbered names a file gets when its name is taken (`numbered_names`), the atomic local write a download ends
with (`atomic_local_file`) and the secret scrubber for error text (`redact`).

A drop box is written to by partners, so on the read side every name and every folder is treated as hostile:
- symlinks are never followed: a symlinked entry is not listed (it is logged as skipped, with the reason), and
  downloads and moves refuse one; the folders are opened one component at a time with O_NOFOLLOW from the
  connection's root, and the file with O_NOFOLLOW, so a symlink swapped in after a check is refused, not
  followed (checks are done on the opened descriptors, not on the path again);
- a move never replaces a file: it hard-links the file under the first free name (`a.csv`, `a (2).csv`, ...;
  a link, unlike rename, fails when the name exists), checks that what it linked is the very file it checked,
  then removes the old name. Where the file system has no hard links, it falls back to a rename after checking
  that the name is free (a narrow race there, but still no symlink followed).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from connector_pipelines.errors import TransportError, redact  # noqa: F401 - re-exported for the transports
from connector_pipelines.imports.files import check_file_name
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.base import RemoteFile, UploadReceipt

log = logging.getLogger(__name__)

_COPY_BUFFER = 1024 * 1024
MAX_COPIES = 10_000
# Errors of a link() on a file system that has no hard links (FAT, some FUSE and SMB mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW
SYMLINK_SKIPPED = "it is a symbolic link, which is never followed (only regular files are imported)"
# Entries already logged as skipped, so a sensor listing the folder every few seconds logs each once.
_REPORTED_SKIPS: set[tuple[str, str, str]] = set()
_REPORTED_SKIPS_KEPT = 10_000


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


def numbered_names(name: str) -> Iterator[str]:
    """orders.csv.gz, then orders (2).csv.gz, orders (3).csv.gz, ... (`MAX_COPIES` in all).

    The number goes before the extension (`.csv.gz` counting as one), so patterns such as `orders_*.csv` still
    match the numbered name.
    """
    yield name
    extension = Path(name).suffix
    if extension.lower() == ".gz":
        extension = Path(name[: -len(extension)]).suffix + extension  # .csv.gz is one extension
    stem = name[: len(name) - len(extension)]
    for copy in itertools.islice(itertools.count(2), MAX_COPIES - 1):
        yield f"{stem} ({copy}){extension}"


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
        self.skipped: list[tuple[str, str]] = []

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
                # "xb": a symlink placed at the temporary name since the unlink is refused, not written through.
                with open(local_path, "rb") as source, open(temporary, "xb") as sink:
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
        """Regular files directly in `folder`; a symlink is skipped (and logged once, with the reason), never
        followed. `skipped` holds (name, reason) of what the last listing left out that way."""
        directory = self._source_dir(folder)
        self.skipped = []
        if not directory.exists():
            return []
        if not directory.is_dir():
            raise TransportError(f"{self.system}: {folder!r} is not a folder")
        files: list[RemoteFile] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        # Never listed, so never imported: it could point at any file on this machine.
                        self._skip(folder, entry.name, SYMLINK_SKIPPED)
                        continue
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

    def _skip(self, folder: str, name: str, reason: str) -> None:
        self.skipped.append((name, reason))
        # A sensor lists the folder every few seconds: say it once per entry, not on every listing.
        key = (str(self.path), folder, name)
        if key not in _REPORTED_SKIPS:
            if len(_REPORTED_SKIPS) >= _REPORTED_SKIPS_KEPT:
                _REPORTED_SKIPS.clear()
            _REPORTED_SKIPS.add(key)
            log.warning("%s: skipped %r in the folder %r: %s", self.system, name, folder or ".", reason)

    def download(self, folder: str, name: str, local_path: Path) -> None:
        check_source_name(name, self.system)
        with self._folder(self._source_dir(folder), folder, name=name) as directory:
            self._regular_entry(directory, name, folder)
            try:
                # O_NOFOLLOW: a symlink swapped in since the check is refused, not followed; O_NONBLOCK: a FIFO
                # swapped in does not hang the open (it is refused by the fstat below).
                descriptor = os.open(name, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._not_regular(name, folder, symlink=True) from None
                raise TransportError(
                    f"{self.system}: download of {name!r} from {folder!r} failed: {exc.strerror or exc}"
                ) from None
            try:
                with open(descriptor, "rb") as reader:
                    if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                        raise self._not_regular(name, folder)
                    os.set_blocking(reader.fileno(), True)
                    with atomic_local_file(local_path) as sink:
                        shutil.copyfileobj(reader, sink, _COPY_BUFFER)
            except OSError as exc:
                raise TransportError(
                    f"{self.system}: download of {name!r} from {folder!r} failed: {exc.strerror or exc}"
                ) from None

    def move(self, folder: str, name: str, to_folder: str, new_name: str | None = None) -> str:
        """Move the file into `to_folder` under `new_name` (default: its name), or the first free numbered name
        (`a (2).csv`, ...) when that is taken: a move never replaces a file. Returns the name it got."""
        target_name = name if new_name is None else new_name
        check_source_name(target_name, self.system)
        check_source_name(name, self.system)
        with ExitStack() as stack:
            source = stack.enter_context(self._folder(self._source_dir(folder), folder, name=name))
            checked = self._regular_entry(source, name, folder)
            target = stack.enter_context(self._folder(self._inside_root(to_folder), to_folder, create=True))
            if target_name == name and _same_entry(os.fstat(source), os.fstat(target)):
                return name  # onto itself: nothing to do
            try:
                return self._move_without_replacing(source, name, target, target_name, checked, folder)
            except OSError as exc:
                raise TransportError(
                    f"{self.system}: could not move {name!r} from {folder!r} to {to_folder!r}: {exc.strerror or exc}"
                ) from None

    def _move_without_replacing(
        self, source: int, name: str, target: int, target_name: str, checked: os.stat_result, folder: str
    ) -> str:
        use_links = True
        for candidate in numbered_names(target_name):
            if use_links:
                try:
                    # A link never replaces an existing name, and (follow_symlinks=False) links a symlink swapped
                    # in meanwhile as the symlink itself, which the check below then undoes.
                    os.link(name, candidate, src_dir_fd=source, dst_dir_fd=target, follow_symlinks=False)
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in _NO_HARD_LINKS:
                        raise
                    use_links = False
            if not use_links:
                if _entry(target, candidate) is not None:
                    continue
                os.rename(name, candidate, src_dir_fd=source, dst_dir_fd=target)
            moved = _entry(target, candidate)
            if moved is None or not _same_entry(moved, checked):
                # Not the regular file that was checked (swapped since): undo, and keep nothing of it.
                if use_links:
                    os.unlink(candidate, dir_fd=target)
                elif moved is not None:
                    os.rename(candidate, name, src_dir_fd=target, dst_dir_fd=source)
                raise TransportError(
                    f"{self.system}: {name!r} in the folder {folder!r} changed while it was being moved (it is no "
                    "longer the regular file that was checked); it was left in place"
                )
            if use_links:
                still = _entry(source, name)
                # Removed only when the name still holds the file that was moved (a new delivery may have taken it).
                if still is not None and _same_entry(still, checked):
                    os.unlink(name, dir_fd=source)
            _fsync_descriptor(target)
            _fsync_descriptor(source)
            return candidate
        raise FileExistsError(errno.EEXIST, f"{MAX_COPIES} files named like {target_name!r} already exist")

    def write_text(self, folder: str, name: str, text: str) -> None:
        """Write `name` (replacing a file of that name: it is our own report) through a descriptor of the folder,
        so neither a symlinked folder nor a symlink at the temporary name is followed."""
        check_source_name(name, self.system)
        temporary = temporary_name(name)
        try:
            with self._folder(self._inside_root(folder), folder, create=True) as directory:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW
                descriptor = os.open(temporary, flags, 0o666, dir_fd=directory)
                try:
                    with open(descriptor, "wb") as sink:
                        sink.write(text.encode("utf-8"))
                        sink.flush()
                        os.fsync(sink.fileno())
                    os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
                except BaseException:
                    try:
                        os.unlink(temporary, dir_fd=directory)
                    except FileNotFoundError:
                        pass
                    raise
        except OSError as exc:
            raise TransportError(f"{self.system}: could not write {name!r}: {exc.strerror or exc}") from None

    def _source_dir(self, folder: str) -> Path:
        """The resolved folder to read from (it may not exist); refused when it leads outside the root."""
        root = self._root()
        target = root.joinpath(*folder_parts(folder, self.system)).resolve()
        if not target.is_relative_to(root):
            raise TransportError(f"{self.system}: the folder {folder!r} leads outside the connection path")
        return target

    def _inside_root(self, folder: str) -> Path:
        """The resolved folder to write into (created later, by `_folder`); refused when it leads outside."""
        root = self._root()
        target = root.joinpath(*folder_parts(folder, self.system)).resolve()
        self._check_inside(root, target, folder)
        return target

    def _root(self) -> Path:
        root = self.path.resolve()
        if not root.is_dir():
            # An unmounted share must not read as "no files delivered".
            raise TransportError(f"{self.system}: the folder does not exist; create it (or mount the share)")
        return root

    @contextmanager
    def _folder(self, resolved: Path, folder: str, create: bool = False, name: str | None = None) -> Iterator[int]:
        """A descriptor of `resolved` (a folder inside the root, symlinks already resolved), opened one part at a
        time from the root with O_NOFOLLOW, so a part swapped for a symlink since it was resolved is refused
        rather than followed; missing parts are created when `create`. `name`: the file wanted there (for the
        message when the folder is missing)."""
        root = self._root()
        descriptor = -1
        try:
            descriptor = os.open(root, os.O_RDONLY | _O_DIRECTORY)
            for part in resolved.relative_to(root).parts:
                parent, descriptor = descriptor, -1
                try:
                    if create:
                        try:
                            os.mkdir(part, dir_fd=parent)
                        except FileExistsError:
                            pass
                    descriptor = os.open(part, _DIRECTORY_FLAGS, dir_fd=parent)
                finally:
                    os.close(parent)
        except FileNotFoundError:
            wanted = f"there is no file {name!r}: " if name is not None else ""
            raise TransportError(f"{self.system}: {wanted}the folder {folder!r} does not exist") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise TransportError(
                    f"{self.system}: the folder {folder!r} changed while it was being used (a part of it is now a "
                    "symbolic link or a file); nothing was done"
                ) from None
            raise TransportError(f"{self.system}: cannot open the folder {folder!r}: {exc.strerror or exc}") from None
        try:
            yield descriptor
        finally:
            os.close(descriptor)

    def _regular_entry(self, directory: int, name: str, folder: str) -> os.stat_result:
        """The entry `name` of the open folder, itself (a symlink is not followed); refused unless a regular file."""
        try:
            info = _entry(directory, name)
        except OSError as exc:
            raise TransportError(f"{self.system}: cannot read {name!r}: {exc.strerror or exc}") from None
        if info is None:
            raise TransportError(f"{self.system}: there is no file {name!r} in the folder {folder!r}")
        if not stat.S_ISREG(info.st_mode):
            raise self._not_regular(name, folder, symlink=stat.S_ISLNK(info.st_mode))
        return info

    def _not_regular(self, name: str, folder: str, symlink: bool = False) -> TransportError:
        why = " (it is a symbolic link, which is never followed)" if symlink else ""
        return TransportError(f"{self.system}: {name!r} in the folder {folder!r} is not a regular file{why}")

    def close(self) -> None:
        """Nothing to release; present for the `FileTransport` protocol."""


def _entry(directory: int, name: str) -> os.stat_result | None:
    """The entry itself (lstat) in an open folder, or None when there is none."""
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same_entry(found: os.stat_result, expected: os.stat_result) -> bool:
    """The same file system object, and of the same type (a regular file stays one, a folder stays one)."""
    return (found.st_dev, found.st_ino, stat.S_IFMT(found.st_mode)) == (
        expected.st_dev,
        expected.st_ino,
        stat.S_IFMT(expected.st_mode),
    )


def _fsync_descriptor(descriptor: int) -> None:
    """Make a rename or link in the open folder durable (a no-op where folders cannot be synced)."""
    try:
        os.fsync(descriptor)
    except OSError:
        pass
