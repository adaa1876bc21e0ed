"""A real FTP server (pyftpdlib) on loopback, plain or explicit FTPS with a self-signed certificate.

The user's home is `root`. Inside it, `locked_folder` lets the user store and delete files but not rename
them, so an upload fails at its last step (RNFR/RNTO) and a test can check that the temporary file is gone.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from connector_pipelines_tests.servers import LOOPBACK, SelfSignedCertificate

# Full rights: e(cd) l(ist) r(etrieve) a(ppend) d(elete) f(rename) m(kdir) w(rite) M(chmod) T(mtime).
_ALL_PERMISSIONS = "elradfmwMT"
_NO_RENAME = "elrdw"
_POLL_SECONDS = 0.02


class FtpTestServer:
    """An FTP (or, with `tls=True`, FTPS) server for one user; files land under `root`.

    With TLS, `ca_file` is the server's self-signed certificate, to verify it against; TLS is required on both
    the control and the data channel.
    """

    def __init__(
        self,
        tls: bool = False,
        username: str = "extracts",
        password: str | None = None,
        locked_folder: str = "locked",
    ):
        self.host = LOOPBACK
        self.port = 0
        self.tls = tls
        self.username = username
        self.password = password or ("pw-ftps-4a7c1e" if tls else "pw-ftp-3b9e47")
        self.locked_folder = locked_folder
        self._workdir = Path(tempfile.mkdtemp(prefix="ftps-server-" if tls else "ftp-server-"))
        self.root = (self._workdir / "home").resolve()
        self.root.mkdir()
        (self.root / locked_folder).mkdir()
        self.certificate = SelfSignedCertificate.create(self._workdir / "tls") if tls else None
        self.ca_file = str(self.certificate.cert_file) if self.certificate else None
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def env_prefix(self) -> str:
        return "TEST_FTPS" if self.tls else "TEST_FTP"

    def connection(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The connections.yaml entry for this server; `extra` overrides, None drops a key."""
        entry: dict[str, Any] = {
            "type": "ftp",
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": "${" + self.env_prefix + "_PASSWORD}",
            "tls": self.tls,
            "ca_file": self.ca_file,
            "timeout_seconds": 10,
            # The plain server takes the password in clear, as plain FTP does: the connection must say it may.
            "allow_plaintext_password": None if self.tls else True,
        }
        entry.update(extra or {})
        return {key: value for key, value in entry.items() if value is not None}

    def env(self) -> dict[str, str]:
        return {f"{self.env_prefix}_PASSWORD": self.password}

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Resolved values for `FtpClient(**...)`."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls": self.tls,
            "ca_file": self.ca_file,
            "timeout_seconds": 10,
            "allow_plaintext_password": not self.tls,
        }
        values.update(overrides)
        return values

    # ------------------------------------------------------------------------------------------------

    def start(self) -> FtpTestServer:
        # pyftpdlib logs every command at INFO, and when its logger has no handler it configures process-wide
        # logging itself; a handler of our own keeps it from doing that.
        ftp_logger = logging.getLogger("pyftpdlib")
        ftp_logger.setLevel(logging.WARNING)
        if not ftp_logger.handlers:
            ftp_logger.addHandler(logging.NullHandler())
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.username, self.password, str(self.root), perm=_ALL_PERMISSIONS)
        authorizer.override_perm(self.username, str(self.root / self.locked_folder), _NO_RENAME, recursive=True)
        # A subclass per server: pyftpdlib configures handlers through class attributes.
        base: type[FTPHandler] = TLS_FTPHandler if self.tls else FTPHandler
        attributes: dict[str, Any] = {
            "authorizer": authorizer,
            "banner": "connector-pipelines test FTP server",
            # pyftpdlib waits 3 s before answering a failed login; the tests need not.
            "auth_failed_timeout": 0.05,
        }
        if self.certificate is not None:
            attributes |= {
                "certfile": str(self.certificate.cert_file),
                "keyfile": str(self.certificate.key_file),
                "tls_control_required": True,
                "tls_data_required": True,
                # pyftpdlib caches the TLS context on the handler class; None makes this subclass build its own.
                "ssl_context": None,
            }
        handler = type("TestFtpHandler", (base,), attributes)
        # An IO loop of its own: pyftpdlib's default is one per process, which two servers in two threads share.
        self._server = FTPServer((self.host, 0), handler, ioloop=IOLoop())
        self.port = self._server.address[1]
        self._thread = threading.Thread(target=self._serve, name="ftp-test-server", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        # pyftpdlib's IO loop is not thread-safe: run it in slices here and close it from this thread too.
        assert self._server is not None
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
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> FtpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
