"""The SFTP side of the file exchange: asyncssh's SSH server, with logins checked by `Exchange` and every file
operation done by `PartnerFiles` (confinement, temporary-name uploads, quotas).

Only SFTP is served: no shell, no exec, no SCP, no port or agent forwarding. SFTP version 3 only (what OpenSSH,
WinSCP and paramiko speak), so every request comes through the methods below; anything they do not allow
(symlinks, hard links, folders, attribute changes) is refused.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncssh

from connector_pipelines.partners.exchange import Exchange, log
from connector_pipelines.partners.files import NotFound, PartnerFiles, QuotaExceeded, Upload
from connector_pipelines.partners.paths import PathRefused

_LOGIN_TIMEOUT = 30
_READ_CHUNK_LIMIT = 1 << 20


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's ed25519 host key: read from `path`, or made there on first start (mode 0600), so partners'
    known_hosts entries stay valid across restarts."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.export_private_key("openssh"))
    return key


def host_key_line(key: asyncssh.SSHKey) -> str:
    """'ssh-ed25519 AAAA...' as a known_hosts line holds it (without the host)."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def fingerprint(key: asyncssh.SSHKey) -> str:
    """'SHA256:...', as `ssh-keygen -lf` and OpenSSH's first-connection prompt show it."""
    return key.get_fingerprint("sha256")


class _Login(asyncssh.SSHServer):
    def __init__(self, exchange: Exchange):
        self.exchange = exchange
        self.address = "?"
        self.connection: asyncssh.SSHServerConnection | None = None
        self._how: tuple[str, str] | None = None  # (partner, password | key) of the credentials that were right

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.connection = conn
        peer = conn.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"

    def begin_auth(self, username: str) -> bool:
        return True  # every session logs in

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        # scrypt takes tens of milliseconds: off the event loop, so other sessions go on meanwhile.
        ok = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.exchange.login("sftp", username, self.address, password=password)
        )
        self._how = (username, "password") if ok else None
        return ok

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Called twice for one key (the client asks whether it would do, then signs with it): logged once, below.
        line = host_key_line(key)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.exchange.login("sftp", username, self.address, key=line)
        )
        self._how = (username, "key") if ok else None
        return ok

    async def auth_completed(self) -> None:
        if self._how is not None:
            username, how = self._how
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.exchange.logged_in("sftp", username, self.address, how)
            )


class PartnerSFTP(asyncssh.SFTPServer):
    """One partner's SFTP session (the partner is the login name)."""

    def __init__(self, channel: asyncssh.SSHServerChannel, exchange: Exchange):
        super().__init__(channel)
        self.partner = channel.get_extra_info("username")
        self.files = PartnerFiles(exchange, self.partner)

    # ---- paths and attributes ------------------------------------------------------------------------------

    def _path(self, raw: bytes):
        try:
            return self.files.parse(raw)
        except PathRefused as exc:
            log.warning("partner '%s': path refused: %s", self.partner, exc)
            raise asyncssh.SFTPPermissionDenied(str(exc)) from None

    def realpath(self, path: bytes) -> bytes:
        return self._path(path).virtual.encode()

    def stat(self, path: bytes) -> os.stat_result:
        return self.lstat(path)

    def lstat(self, path: bytes) -> os.stat_result:
        with _answers():
            return self.files.lstat(self._path(path))

    async def scandir(self, path: bytes):
        with _answers():
            parsed = self._path(path)
            listing = self.files.listing(parsed)
            here = self.files.lstat(parsed)
        for name, info in [(".", here), ("..", here), *listing]:
            yield asyncssh.SFTPName(os.fsencode(name), attrs=asyncssh.SFTPAttrs.from_local(info))

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self.lstat(path)  # the file must be there; times and modes stay the server's (nothing to gain, much to lose)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self.lstat(path)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        return None

    def fstat(self, file_obj: object) -> os.stat_result | asyncssh.SFTPAttrs:
        if isinstance(file_obj, Upload):
            return asyncssh.SFTPAttrs(size=file_obj.size, permissions=0o100640)
        return os.fstat(file_obj.fileno())

    # ---- files ---------------------------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        parsed = self._path(path)
        with _answers():
            if pflags & asyncssh.FXF_WRITE:
                if pflags & asyncssh.FXF_APPEND or not pflags & (asyncssh.FXF_TRUNC | asyncssh.FXF_CREAT):
                    # An upload is one whole new file; appending to or patching one the import may be reading is not.
                    raise PathRefused("uploads replace a file whole; appending or resuming is not supported")
                if pflags & asyncssh.FXF_EXCL and self.files.real(parsed).exists():
                    raise asyncssh.SFTPFileAlreadyExists(f"{parsed.virtual} exists")
                return self.files.open_upload(parsed)
            return self.files.open_read(parsed)

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs) -> object:
        raise asyncssh.SFTPOpUnsupported("SFTP version 3 only")

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, Upload):
            raise asyncssh.SFTPPermissionDenied("an upload in progress cannot be read")
        file_obj.seek(offset)
        return file_obj.read(min(size, _READ_CHUNK_LIMIT))

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, Upload):
            raise asyncssh.SFTPPermissionDenied("the file was opened for reading")
        with _answers():
            file_obj.write(offset, data)
        return len(data)

    def close(self, file_obj: object) -> None:
        if isinstance(file_obj, Upload):
            # asyncssh also closes the files a session left open when the connection ends: those are not complete.
            file_obj.close(complete=not self.channel.is_closing())
        else:
            file_obj.close()

    def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, Upload):
            file_obj.handle.flush()
            os.fsync(file_obj.handle.fileno())

    def remove(self, path: bytes) -> None:
        with _answers():
            self.files.remove(self._path(path))

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        with _answers():
            self.files.rename(self._path(oldpath), self._path(newpath), replace=False)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        with _answers():
            self.files.rename(self._path(oldpath), self._path(newpath), replace=True)

    # ---- refused -------------------------------------------------------------------------------------------

    def _refused(self, what: str, path: bytes | None = None) -> None:
        shown = f" ({os.fsdecode(path)!r})" if path is not None else ""
        log.warning("partner '%s': %s refused%s", self.partner, what, shown)
        raise asyncssh.SFTPPermissionDenied(f"{what} is not allowed on this server")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._refused("creating a symbolic link", newpath)

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._refused("creating a hard link", newpath)

    def readlink(self, path: bytes) -> bytes:
        self._refused("reading a link", path)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._refused("creating a folder", path)

    def rmdir(self, path: bytes) -> None:
        self._refused("removing a folder", path)

    def statvfs(self, path: bytes):
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    def fstatvfs(self, file_obj: object):
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")


class _answers:
    """Turns the file layer's refusals into SFTP status codes (the message is for the partner)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _traceback) -> bool:
        if exc is None or isinstance(exc, asyncssh.SFTPError):
            return False
        if isinstance(exc, PathRefused):
            raise asyncssh.SFTPPermissionDenied(str(exc)) from None
        if isinstance(exc, NotFound | FileNotFoundError):
            raise asyncssh.SFTPNoSuchFile("no such file") from None
        if isinstance(exc, QuotaExceeded):
            raise asyncssh.SFTPFailure(str(exc)) from None
        if isinstance(exc, FileExistsError):
            raise asyncssh.SFTPFailure("the file exists") from None
        if isinstance(exc, OSError):
            raise asyncssh.SFTPFailure(exc.strerror or "failed") from None
        return False


async def listen_sftp(exchange: Exchange, host: str, port: int, host_key: asyncssh.SSHKey) -> Any:
    """Start the SFTP server; returns asyncssh's acceptor (`get_port()`, `close()`)."""
    return await asyncssh.listen(
        host,
        port,
        server_host_keys=[host_key],
        server_factory=lambda: _Login(exchange),
        sftp_factory=lambda channel: PartnerSFTP(channel, exchange),
        sftp_version=3,
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
        login_timeout=_LOGIN_TIMEOUT,
        # Keepalives find connections a partner's network dropped, so their uploads are discarded.
        keepalive_interval=60,
    )
