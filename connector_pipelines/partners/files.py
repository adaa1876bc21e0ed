"""What a logged-in partner may do with files, on disk: list, stat, read, upload, remove, rename; nothing else.

Every path is parsed first (`paths.parse_path`: only /, /inbox, /outbox and plain file names directly in them),
then checked on disk: the two folders must be real folders inside the partner's root (resolved, never a symlink),
files are opened with O_NOFOLLOW (a symlink placed there is refused, not followed) and must be regular files.
Symlinks, hard links and folders cannot be made.

Uploads go to `.uploads/` under a random name and are renamed into `inbox/` only when the client closes the file
(`Upload.close(complete=True)`); a dropped connection discards them. The quota (files and bytes waiting in the
inbox, uploads in progress included) is checked when an upload opens and on every write.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from connector_pipelines.partners.exchange import Exchange, log
from connector_pipelines.partners.layout import INBOX, VISIBLE_FOLDERS, PartnerFolders, Usage, folder_usage
from connector_pipelines.partners.limits import quota_problem
from connector_pipelines.partners.paths import PartnerPath, PathRefused, parse_path

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_upload_ids = itertools.count(1)


class NotFound(Exception):
    """No such file or folder (for the partner)."""


class QuotaExceeded(Exception):
    """The upload would take the inbox past the partner's quota."""


@dataclass
class Upload:
    """A file being uploaded: written under `.uploads/`, published into the inbox when closed complete."""

    files: PartnerFiles
    name: str
    temporary: Path
    handle: object  # the open file
    base: Usage  # what the inbox held when the upload opened (the file it replaces included)
    size: int = 0
    failed: str | None = None
    id: int = field(default_factory=lambda: next(_upload_ids))

    def write(self, offset: int, data: bytes) -> None:
        if self.failed:
            raise QuotaExceeded(self.failed)
        size = max(self.size, offset + len(data))
        exchange, partner = self.files.exchange, self.files.partner
        projected = self.base + exchange.uploads.others(partner, self.id) + Usage(1, size)
        problem = quota_problem(projected, exchange.partners[partner].quota)
        if problem:
            self.failed = problem  # the file is discarded when closed: it could never be complete
            log.warning("upload refused: partner '%s', %r: %s", partner, self.name, problem)
            raise QuotaExceeded(problem)
        self.handle.seek(offset)
        self.handle.write(data)
        self.size = size
        exchange.uploads.set(partner, self.id, size)

    def close(self, complete: bool) -> bool:
        """Publish the file under its name in the inbox when `complete` (the client closed it) and nothing failed;
        otherwise remove it. Whether it was published."""
        exchange, partner = self.files.exchange, self.files.partner
        try:
            publish = complete and not self.failed
            if publish:
                self.handle.flush()
                os.fsync(self.handle.fileno())  # the rename is only as durable as the data it points at
            self.handle.close()
            if publish:
                inbox = self.files.folder(INBOX)
                # rename() replaces a symlink at the name itself: it never writes through one.
                os.replace(self.temporary, inbox / self.name)
                log.info("upload complete: partner '%s', inbox/%s (%d bytes)", partner, self.name, self.size)
                return True
            self.temporary.unlink(missing_ok=True)
            if not self.failed:
                log.info(
                    "upload discarded (connection closed before the file was): partner '%s', %r", partner, self.name
                )
            return False
        finally:
            exchange.uploads.drop(partner, self.id)
            self.temporary.unlink(missing_ok=True)


class PartnerFiles:
    """The file operations of one partner's session."""

    def __init__(self, exchange: Exchange, partner: str):
        self.exchange = exchange
        self.partner = partner
        self.folders: PartnerFolders = exchange.folders(partner).ensure()
        self.root = self.folders.root.resolve()

    # ---- paths ---------------------------------------------------------------------------------------------

    def parse(self, raw: bytes | str) -> PartnerPath:
        return parse_path(raw)

    def folder(self, name: str) -> Path:
        """The real folder `inbox` or `outbox`, checked: a folder (not a symlink) directly in the partner's root."""
        assert name in VISIBLE_FOLDERS
        path = self.root / name
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or path.resolve() != path:
            log.error("partner '%s': %s is not a plain folder (a symbolic link?); refused", self.partner, path)
            raise PathRefused(f"/{name} is not available")
        return path

    def real(self, path: PartnerPath) -> Path:
        if path.folder is None:
            return self.root
        folder = self.folder(path.folder)
        return folder if path.name is None else folder / path.name

    # ---- reading -------------------------------------------------------------------------------------------

    def lstat(self, path: PartnerPath) -> os.stat_result:
        try:
            return os.lstat(self.real(path))
        except FileNotFoundError:
            raise NotFound(path.virtual) from None

    def listing(self, path: PartnerPath) -> list[tuple[str, os.stat_result]]:
        """(name, stat) of what the folder shows: at `/` the two folders, in a folder its regular files."""
        if path.is_file:
            raise PathRefused(f"{path.virtual} is not a folder")
        if path.folder is None:
            return [(name, os.lstat(self.folder(name))) for name in VISIBLE_FOLDERS]
        found = []
        with os.scandir(self.folder(path.folder)) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):  # symlinks and anything else are not shown
                    found.append((entry.name, info))
        return sorted(found)

    def open_read(self, path: PartnerPath):
        """The file opened for reading (a symlink at its name is refused: O_NOFOLLOW)."""
        if not path.is_file:
            raise PathRefused(f"{path.virtual} is a folder")
        real = self.real(path)
        try:
            descriptor = os.open(real, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NotFound(path.virtual) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                log.warning("partner '%s': refused to follow the symbolic link %s", self.partner, path.virtual)
                raise PathRefused(f"{path.virtual} is a symbolic link, which is never followed") from None
            raise
        handle = os.fdopen(descriptor, "rb")
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            handle.close()
            raise PathRefused(f"{path.virtual} is not a regular file")
        os.set_blocking(handle.fileno(), True)
        return handle

    # ---- writing -------------------------------------------------------------------------------------------

    def open_upload(self, path: PartnerPath) -> Upload:
        """A new upload of `path` (a file in /inbox), refused when the inbox holds as many files as the quota allows."""
        if path.folder != INBOX or not path.is_file:
            raise PathRefused(f"uploads go into /inbox; {path.virtual} is read-only")
        inbox = self.folder(INBOX)
        base = folder_usage(inbox)
        replaced = 0 if not (inbox / path.name).is_file() else 1
        pending = self.exchange.uploads.others(self.partner, -1)
        problem = quota_problem(base + pending + Usage(1 - replaced, 0), self.exchange.partners[self.partner].quota)
        if problem:
            log.warning("upload refused: partner '%s', %r: %s", self.partner, path.name, problem)
            raise QuotaExceeded(problem)
        uploads = self.folders.uploads
        temporary = uploads / f"{uuid.uuid4().hex}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW
        handle = os.fdopen(os.open(temporary, flags, 0o640), "wb")
        upload = Upload(self, path.name, temporary, handle, Usage(base.files - replaced, base.bytes))
        self.exchange.uploads.set(self.partner, upload.id, 0)
        return upload

    def remove(self, path: PartnerPath) -> None:
        """Remove a file from /inbox (not yet imported) or /outbox (downloaded)."""
        if not path.is_file:
            raise PathRefused("folders cannot be removed")
        info = self.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            raise PathRefused(f"{path.virtual} is a folder")
        os.unlink(self.real(path))  # unlink never follows a symlink: it removes the link itself
        log.info("removed: partner '%s', %s", self.partner, path.virtual)

    def rename(self, old: PartnerPath, new: PartnerPath, replace: bool = True) -> None:
        """Rename a file within /inbox."""
        if old.folder != INBOX or new.folder != INBOX or not (old.is_file and new.is_file):
            raise PathRefused("files can be renamed within /inbox only")
        source, target = self.real(old), self.real(new)
        if not stat.S_ISREG(self.lstat(old).st_mode):
            raise PathRefused(f"{old.virtual} is not a regular file")
        if not replace and os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, f"{new.virtual} exists")
        os.replace(source, target)

    @staticmethod
    def refuse(what: str) -> PathRefused:
        return PathRefused(f"{what} is not allowed on this server")
