"""The FTPS side of the file exchange (`serve-files --ftps-port`): pyftpdlib's explicit FTPS server, TLS required on
the control and the data channel, with the same logins (passwords; FTP has no keys), folders, temporary-name
uploads and quotas as SFTP: every file operation goes through `PartnerFiles`.

pyftpdlib maps a client's path to a real one (`ftp2fs`) and then asks `validpath`; here a path `parse_path`
refuses maps to a name that is never valid, so the client gets 550. Uploads are published by `on_file_received`
(the transfer ended complete) and discarded by `on_incomplete_file_received` or a disconnect. REST (resume) and
APPE (append) are refused: an upload is one whole new file.

The certificate is self-signed, made on first start beside the SSH host key and kept; partners pin its SHA-256
fingerprint (printed at start) or the certificate file itself.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pyftpdlib.authorizers import AuthenticationFailed
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import ThreadedFTPServer

from connector_pipelines.partners.certificate import self_signed
from connector_pipelines.partners.exchange import Exchange
from connector_pipelines.partners.files import NotFound, PartnerFiles, QuotaExceeded, Upload
from connector_pipelines.partners.layout import server_dir
from connector_pipelines.partners.paths import PathRefused, parse_path

CERT_FILE, KEY_FILE = "ftps-cert.pem", "ftps-key.pem"
_REFUSED = "\x00refused"  # what a refused path maps to: never a valid path (validpath says no, the client gets 550)
_POLL_SECONDS = 0.05
_PERMISSIONS = "elrwdf"  # cd, list, retrieve, store, delete, rename: PartnerFiles decides where each may happen


def load_or_create_certificate(storage_root: Path, host: str) -> tuple[Path, Path]:
    """The server's self-signed certificate and key (made on first start, key mode 0600)."""
    folder = server_dir(storage_root)
    cert_file, key_file = folder / CERT_FILE, folder / KEY_FILE
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(f"connector-pipelines file exchange {host}", host, days=3650)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_pem)
    cert_file.write_bytes(cert_pem)
    return cert_file, key_file


def certificate_fingerprint(cert_file: Path) -> str:
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


class _Authorizer:
    """pyftpdlib's authorizer interface over `Exchange` (passwords only)."""

    def __init__(self, exchange: Exchange):
        self.exchange = exchange

    def validate_authentication(self, username: str, password: str, handler) -> None:
        address = handler.remote_ip
        if not self.exchange.login("ftps", username, address, password=password):
            raise AuthenticationFailed("Authentication failed.")
        self.exchange.logged_in("ftps", username, address, "password")

    def get_home_dir(self, username: str) -> str:
        return str(self.exchange.folders(username).ensure().root.resolve())

    def has_user(self, username: str) -> bool:
        return username in self.exchange.partners

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in _PERMISSIONS

    def get_perms(self, username: str) -> str:
        return _PERMISSIONS

    def get_msg_login(self, username: str) -> str:
        return "Logged in: your folders are /inbox (uploads) and /outbox (downloads)."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        return None

    def terminate_impersonation(self, username: str) -> None:
        return None


class _FtpUpload:
    """What pyftpdlib writes a STOR into: the bytes go to the `Upload`; `close()` only ends the writing, the
    handler's callbacks then publish or discard it."""

    def __init__(self, upload: Upload, name: str):
        self.upload = upload
        self.name = name
        self.closed = False

    def write(self, data: bytes) -> int:
        try:
            self.upload.write(self.upload.size, data)
        except QuotaExceeded as exc:
            raise OSError(errno.EDQUOT, str(exc)) from None
        return len(data)

    def close(self) -> None:
        self.closed = True


class PartnerFS(AbstractedFS):
    """One partner's view: `/`, `/inbox`, `/outbox` and the files in those two, through `PartnerFiles`."""

    def __init__(self, root: str, cmd_channel):
        super().__init__(root, cmd_channel)
        self.files = PartnerFiles(cmd_channel.exchange, cmd_channel.username)

    def _virtual(self, path: str):
        """The partner path of a real path this class made (`ftp2fs`), or PathRefused."""
        if path == _REFUSED:
            raise PathRefused("refused")
        relative = os.path.relpath(path, self.root)
        if relative.startswith(".."):
            raise PathRefused("outside your folders")
        return parse_path("/" if relative == "." else "/" + relative)

    def ftp2fs(self, ftppath: str) -> str:
        if ".." in ftppath.replace("\\", "/").split("/"):
            return _REFUSED  # not resolved away: '..' is refused, as over SFTP
        try:
            parsed = parse_path(self.ftpnorm(ftppath))
        except PathRefused:
            return _REFUSED
        return os.path.join(self.root, *(part for part in (parsed.folder, parsed.name) if part))

    def fs2ftp(self, fspath: str) -> str:
        try:
            return self._virtual(fspath).virtual
        except PathRefused:
            return "/"

    def validpath(self, path: str) -> bool:
        try:
            parsed = self._virtual(path)
            if parsed.folder is not None:
                self.files.folder(parsed.folder)
        except (PathRefused, OSError):
            return False
        return True

    def open(self, filename: str, mode: str):
        parsed = self._virtual(filename)
        if "a" in mode or "+" in mode:
            raise PermissionError(errno.EACCES, "appending or resuming is not supported: upload the whole file")
        try:
            if "w" in mode:
                upload = _FtpUpload(self.files.open_upload(parsed), filename)
                self.cmd_channel.uploads[filename] = upload
                return upload
            return self.files.open_read(parsed)
        except PathRefused as exc:
            raise PermissionError(errno.EACCES, str(exc)) from None
        except QuotaExceeded as exc:
            raise OSError(errno.EDQUOT, str(exc)) from None
        except NotFound:
            raise FileNotFoundError(errno.ENOENT, "no such file") from None

    def chdir(self, path: str) -> None:
        parsed = self._virtual(path)
        if parsed.is_file:
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        self.cwd = parsed.virtual  # never os.chdir: the process's working folder is not the session's

    def listdir(self, path: str) -> list[str]:
        return [name for name, _ in self._refusing(self.files.listing, self._virtual(path))]

    def lstat(self, path: str) -> os.stat_result:
        return self._refusing(self.files.lstat, self._virtual(path))

    stat = lstat

    def remove(self, path: str) -> None:
        self._refusing(self.files.remove, self._virtual(path))

    def rename(self, src: str, dst: str) -> None:
        self._refusing(self.files.rename, self._virtual(src), self._virtual(dst))

    def _refusing(self, operation, *args):
        try:
            return operation(*args)
        except PathRefused as exc:
            raise PermissionError(errno.EACCES, str(exc)) from None
        except NotFound:
            raise FileNotFoundError(errno.ENOENT, "no such file") from None

    def mkdir(self, path: str) -> None:
        raise PermissionError(errno.EACCES, "creating a folder is not allowed on this server")

    def rmdir(self, path: str) -> None:
        raise PermissionError(errno.EACCES, "removing a folder is not allowed on this server")

    def chmod(self, path: str, mode) -> None:
        raise PermissionError(errno.EACCES, "changing modes is not allowed on this server")

    def utime(self, path: str, timeval) -> None:
        raise PermissionError(errno.EACCES, "changing times is not allowed on this server")

    def readlink(self, path: str) -> str:
        raise PermissionError(errno.EACCES, "reading a link is not allowed on this server")

    def islink(self, path: str) -> bool:
        return False  # a symlink is neither listed nor opened (PartnerFiles)

    def mkstemp(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "STOU is not supported: name the file")


class _Handler(TLS_FTPHandler):
    """One FTPS session. Class attributes are set per server (pyftpdlib configures handlers so)."""

    exchange: Exchange

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.uploads: dict[str, _FtpUpload] = {}

    def on_file_received(self, file: str) -> None:
        upload = self.uploads.pop(file, None)
        if upload is not None:
            upload.upload.close(complete=True)

    def on_incomplete_file_received(self, file: str) -> None:
        upload = self.uploads.pop(file, None)
        if upload is not None:
            upload.upload.close(complete=False)

    def on_disconnect(self) -> None:
        for upload in self.uploads.values():
            upload.upload.close(complete=False)
        self.uploads = {}


MAX_SESSIONS = 64
MAX_SESSIONS_PER_ADDRESS = 8


class FtpsServer:
    """The FTPS server in a thread of its own (pyftpdlib's IO loop accepting sessions, each in a thread of its
    own), beside the SFTP server's asyncio loop."""

    def __init__(
        self,
        exchange: Exchange,
        host: str,
        port: int,
        passive_ports: range | None = None,
        masquerade_address: str | None = None,
    ):
        self.exchange = exchange
        self.host = host
        cert_file, key_file = load_or_create_certificate(exchange.storage_root, host)
        self.fingerprint = certificate_fingerprint(cert_file)
        ftp_logger = logging.getLogger("pyftpdlib")
        ftp_logger.setLevel(logging.WARNING)  # its INFO lines are every command of every session
        handler = type(
            "PartnerFtpsHandler",
            (_Handler,),
            {
                "exchange": exchange,
                "authorizer": _Authorizer(exchange),
                "abstracted_fs": PartnerFS,
                "banner": "connector-pipelines file exchange (explicit FTPS: AUTH TLS first)",
                "certfile": str(cert_file),
                "keyfile": str(key_file),
                "tls_control_required": True,
                "tls_data_required": True,
                "ssl_context": None,  # pyftpdlib caches the TLS context on the class; this one builds its own
                "use_sendfile": False,
                # Behind a firewall or NAT: the data ports to open, and the address clients are told to connect to.
                "passive_ports": list(passive_ports) if passive_ports else None,
                "masquerade_address": masquerade_address,
            },
        )
        # A thread per session: a password check (scrypt, tens of ms) holds up its own session only. Bounded, as all
        # that partners can open is: at most MAX_SESSIONS at once, MAX_SESSIONS_PER_ADDRESS from one address.
        self._server = ThreadedFTPServer((host, port), handler, ioloop=IOLoop())
        self._server.max_cons = MAX_SESSIONS
        self._server.max_cons_per_ip = MAX_SESSIONS_PER_ADDRESS
        self.port = self._server.address[1]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="ftps-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # pyftpdlib's IO loop is not thread-safe: run it in slices here and close it from this thread too.
        try:
            while not self._stopping.is_set():
                self._server.ioloop.loop(_POLL_SECONDS, blocking=False)
        finally:
            self._server.close_all()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
