"""A real SSH/SFTP server (asyncssh) on loopback, chrooted to a temporary folder.

It accepts one user by password or by public key and presents a freshly generated ed25519 host key. Two folders
behave like other real servers: `full_folder` refuses writes past a small quota (a full disk), so an upload fails
half-way; `legacy_folder` lacks the posix-rename extension, as SFTP servers without OpenSSH's extensions do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import asyncssh

from connector_pipelines_tests.servers import LOOPBACK

_START_TIMEOUT = 15


def public_key_line(key: asyncssh.SSHKey) -> str:
    """'ssh-ed25519 AAAA...' without a comment, as connections.yaml holds it."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class SftpTestServer:
    """An SFTP server for one user; files land under `root`.

    `host_key_line` is the line a connection's `host_key` needs; `private_key` is the OpenSSH text of a client
    key that is authorized; `authorize_key(line)` authorizes more. `opened_for_write` lists every path (relative
    to `root`) a client opened for writing, so a test can prove a temporary file existed before it vanished.
    """

    def __init__(
        self,
        username: str = "extracts",
        password: str = "pw-sftp-8d1f2c",
        full_folder: str = "full",
        quota_bytes: int = 256 * 1024,
        legacy_folder: str = "legacy",
    ):
        self.host = LOOPBACK
        self.port = 0
        self.username = username
        self.password = password
        self.full_folder = full_folder
        self.quota_bytes = quota_bytes
        self.legacy_folder = legacy_folder
        self._workdir = Path(tempfile.mkdtemp(prefix="sftp-server-"))
        self.root = (self._workdir / "root").resolve()
        self.root.mkdir()
        (self.root / full_folder).mkdir()
        (self.root / legacy_folder).mkdir()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_line = public_key_line(self.host_key)
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.private_key = client_key.export_private_key("openssh").decode()
        self._authorized = {client_key.public_data}
        self.opened_for_write: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: Any = None

    # ------------------------------------------------------------------------------------------------

    def authorize_key(self, line: str) -> None:
        """Accept another client public key ('ssh-rsa AAAA...') for the user."""
        self._authorized.add(asyncssh.import_public_key(line).public_data)

    def connection(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The connections.yaml entry for this server (password auth); `extra` overrides, None drops a key."""
        entry: dict[str, Any] = {
            "type": "sftp",
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": "${TEST_SFTP_PASSWORD}",
            "host_key": self.host_key_line,
            "timeout_seconds": 10,
        }
        entry.update(extra or {})
        return {key: value for key, value in entry.items() if value is not None}

    def env(self) -> dict[str, str]:
        return {"TEST_SFTP_PASSWORD": self.password, "TEST_SFTP_PRIVATE_KEY": self.private_key}

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Resolved values for `SftpClient(**...)`: what a resource hands its client at run time."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "host_key": self.host_key_line,
            "timeout_seconds": 10,
        }
        values.update(overrides)
        return values

    # ------------------------------------------------------------------------------------------------

    def start(self) -> SftpTestServer:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sftp-test-server", daemon=True)
        self._thread.start()
        self._acceptor = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(_START_TIMEOUT)
        self.port = self._acceptor.get_port()
        return self

    async def _listen(self) -> Any:
        return await asyncssh.listen(
            self.host,
            0,
            server_host_keys=[self.host_key],
            server_factory=lambda: _Authenticator(self),
            sftp_factory=lambda channel: _QuotaSFTPServer(channel, self),
            allow_scp=False,
            login_timeout=10,
        )

    def stop(self) -> None:
        if self._loop is not None and self._acceptor is not None:
            acceptor = self._acceptor

            async def close() -> None:
                acceptor.close()
                await acceptor.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(_START_TIMEOUT)
            self._acceptor = None
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_START_TIMEOUT)
            self._loop.close()
            self._loop = None
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SftpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Authenticator(asyncssh.SSHServer):
    def __init__(self, server: SftpTestServer):
        self._server = server

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self._server.username and password == self._server.password

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self._server.username and key.public_data in self._server._authorized


class _QuotaSFTPServer(asyncssh.SFTPServer):
    """Chrooted to the server's root; a write that would grow a file in `full_folder` past the quota fails,
    as on a full disk; in `legacy_folder` posix-rename is unsupported (plain rename refuses an existing target)."""

    def __init__(self, channel: Any, server: SftpTestServer):
        super().__init__(channel, chroot=os.fsencode(server.root))
        self._server = server
        self._full = server.root / server.full_folder
        self._legacy = server.root / server.legacy_folder

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> Any:
        if Path(os.fsdecode(self.map_path(newpath))).parent == self._legacy:
            raise asyncssh.SFTPOpUnsupported("posix-rename is not supported here")
        return super().posix_rename(oldpath, newpath)

    def open(self, path: bytes, pflags: int, attrs: Any) -> Any:
        file_obj = super().open(path, pflags, attrs)
        if pflags & asyncssh.FXF_WRITE:
            local = Path(os.fsdecode(file_obj.name))
            self._server.opened_for_write.append(local.relative_to(self._server.root).as_posix())
        return file_obj

    def write(self, file_obj: Any, offset: int, data: bytes) -> Any:
        if Path(os.fsdecode(file_obj.name)).parent == self._full and offset + len(data) > self._server.quota_bytes:
            raise asyncssh.SFTPFailure("quota exceeded")
        return super().write(file_obj, offset, data)
