"""Where the file exchange keeps things in the storage folder, and what a partner's inbox holds.

    <storage>/partners/.server/ssh_host_ed25519_key    the SFTP host key (0600), made on first start
    <storage>/partners/.server/ftps-cert.pem, -key.pem  the FTPS certificate, made on first start
    <storage>/partners/<name>/inbox/                    the partner's uploads (an import reads them)
    <storage>/partners/<name>/outbox/                   files for the partner (an extract writes them)
    <storage>/partners/<name>/.uploads/                 uploads in progress, renamed into inbox/ when complete

`.server` and `.uploads` start with a dot: no partner name can (names are `[a-z][a-z0-9_]*`), and a partner sees
only `inbox` and `outbox`. Imports set aside their files beside them (`archive/`, `quarantine/`), out of sight too.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

INBOX, OUTBOX = "inbox", "outbox"
VISIBLE_FOLDERS = (INBOX, OUTBOX)
UPLOADS = ".uploads"


def exchange_root(storage_root: Path) -> Path:
    return Path(storage_root) / "partners"


def server_dir(storage_root: Path) -> Path:
    """The server's own files (host key, certificate): never inside a partner's folder."""
    return exchange_root(storage_root) / ".server"


@dataclass(frozen=True)
class PartnerFolders:
    root: Path

    @classmethod
    def of(cls, storage_root: Path, partner: str) -> PartnerFolders:
        return cls(exchange_root(storage_root) / partner)

    @property
    def inbox(self) -> Path:
        return self.root / INBOX

    @property
    def outbox(self) -> Path:
        return self.root / OUTBOX

    @property
    def uploads(self) -> Path:
        return self.root / UPLOADS

    def ensure(self) -> PartnerFolders:
        """Create the folders (private to this service's user), refusing any that is a symlink."""
        for folder in (self.root, self.inbox, self.outbox, self.uploads):
            folder.mkdir(mode=0o750, parents=True, exist_ok=True)
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise OSError(f"{folder} is not a folder (a symbolic link?); remove it and start again")
        return self


@dataclass(frozen=True)
class Usage:
    """Regular files and their bytes: what counts against a partner's quota."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.files + other.files, self.bytes + other.bytes)


def folder_usage(folder: Path) -> Usage:
    """The regular files directly in `folder` (symlinks and folders do not count; a missing folder holds none)."""
    files = size = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        files += 1
                        size += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # taken by an import since the folder was read
    except FileNotFoundError:
        pass
    return Usage(files, size)


def remove_stale_uploads(folders: PartnerFolders) -> int:
    """Uploads a stopped server left unfinished: never published, removed at start so they hold no quota."""
    removed = 0
    try:
        with os.scandir(folders.uploads) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    os.unlink(entry.path)
                    removed += 1
    except FileNotFoundError:
        pass
    return removed
