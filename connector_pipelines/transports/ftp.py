"""Deliver an extract file to an FTP server, plain or explicit FTPS (AUTH TLS with a protected data channel)."""

from __future__ import annotations

import ftplib
import socket
import ssl
import uuid
from pathlib import Path

import dagster as dg
from pydantic import Field

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.models import FileDestination
from connector_pipelines.transports.base import UploadReceipt
from connector_pipelines.transports.folder import check_remote_name, check_resolved, folder_parts, redact

_BLOCK_SIZE = 256 * 1024
_FTP_ERRORS = (ftplib.Error, OSError, EOFError)


class FtpClient:
    """Uploads files over FTP or FTPS: `STOR` to a temporary name in the target folder, then `RNFR`/`RNTO`.

    With `tls`, the server certificate is verified against `ca_file` (or the system trust store) and its
    host name; both the control and the data channel are encrypted.
    """

    def __init__(
        self,
        host: str,
        port: int = 21,
        username: str = "anonymous",
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        passive: bool = True,
        timeout_seconds: float = 30,
    ):
        self.host = host
        self.port = port
        self.username = username
        self.tls = tls
        self.ca_file = ca_file
        self.passive = passive
        self.timeout_seconds = timeout_seconds
        self._password = password
        self._ftp: ftplib.FTP | None = None
        self._home = "/"

    @property
    def system(self) -> str:
        return f"{'ftps' if self.tls else 'ftp'} {self.host}:{self.port}"

    def upload(self, local_path: Path, remote_name: str, destination: FileDestination) -> UploadReceipt:
        check_remote_name(remote_name, self.system)
        parts = folder_parts(destination.folder, self.system)
        ftp = self._connect()
        try:
            folder = self._enter_folder(ftp, parts)
        except _FTP_ERRORS as exc:
            self.close()
            raise TransportError(
                f"{self.system}: cannot open the folder {destination.folder!r}: {self._describe(exc)}"
            ) from None
        temporary = f".{remote_name}.{uuid.uuid4().hex[:12]}.part"
        try:
            with open(local_path, "rb") as source:
                ftp.storbinary(f"STOR {temporary}", source, blocksize=_BLOCK_SIZE)
            self._rename_over(ftp, temporary, remote_name)
        except _FTP_ERRORS as exc:
            self._delete_quietly(ftp, temporary)
            raise TransportError(
                f"{self.system}: upload of {remote_name!r} into {folder!r} failed: {self._describe(exc)}"
            ) from None
        scheme = "ftps" if self.tls else "ftp"
        path = f"{folder.rstrip('/')}/{remote_name}"
        return UploadReceipt(uri=f"{scheme}://{self._uri_host()}:{self.port}{path}")

    def _enter_folder(self, ftp: ftplib.FTP, parts: list[str]) -> str:
        """cwd to the login folder, then into each part, creating it when missing (mkdir -p); returns pwd."""
        ftp.cwd(self._home)
        for part in parts:
            try:
                ftp.cwd(part)
            except ftplib.error_perm:
                try:
                    ftp.mkd(part)
                except ftplib.error_perm:
                    pass  # created meanwhile by another run, or refused: the cwd below says which
                ftp.cwd(part)
        return ftp.pwd()

    def _rename_over(self, ftp: ftplib.FTP, temporary: str, final: str) -> None:
        try:
            ftp.rename(temporary, final)
        except ftplib.error_perm as refused:
            # Some servers refuse to rename onto an existing file; remove it and try once more.
            # Readers then briefly see no file, but never a partial one.
            try:
                ftp.delete(final)
            except ftplib.error_perm:
                raise refused from None  # nothing to replace: the rename itself was refused
            ftp.rename(temporary, final)

    def _delete_quietly(self, ftp: ftplib.FTP, name: str) -> None:
        try:
            ftp.delete(name)
        except _FTP_ERRORS:
            pass  # best effort: the file may not exist, or the connection is gone

    def _connect(self) -> ftplib.FTP:
        if self._ftp is not None:
            try:
                self._ftp.voidcmd("NOOP")
                return self._ftp
            except _FTP_ERRORS:
                self.close()
        ftp: ftplib.FTP
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca_file)
            ftp = ftplib.FTP_TLS(context=context, timeout=self.timeout_seconds)
        else:
            ftp = ftplib.FTP(timeout=self.timeout_seconds)
        try:
            ftp.connect(self.host, self.port, timeout=self.timeout_seconds)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            ftp.login(self.username, self._password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(self.passive)
            self._home = ftp.pwd()
        except ftplib.error_perm as exc:
            ftp.close()
            if str(exc).startswith("530"):
                raise TransportError(f"{self.system}: authentication failed for user '{self.username}'") from None
            raise TransportError(f"{self.system}: the server refused the login: {self._describe(exc)}") from None
        except _FTP_ERRORS as exc:
            ftp.close()
            raise TransportError(f"{self.system}: cannot connect: {self._describe(exc)}") from None
        self._ftp = ftp
        return ftp

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            text = f"the server certificate could not be verified ({exc.verify_message}); set ca_file to its CA"
        elif isinstance(exc, socket.timeout | TimeoutError):
            text = f"timed out after {self.timeout_seconds:g} s"
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = str(exc) or type(exc).__name__
        return redact(text, [self._password])

    def _uri_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def close(self) -> None:
        if self._ftp is not None:
            try:
                self._ftp.quit()
            except _FTP_ERRORS:
                self._ftp.close()
            self._ftp = None


class FtpResource(dg.ConfigurableResource):
    """An `ftp` connection as a Dagster resource; `get_client()` returns the plain `FtpClient`.

    `password` is usually `dg.EnvVar("NAME")`. With `tls`, `ca_file` names the CA bundle that signs the server
    certificate (default: the system trust store).
    """

    host: str
    port: int = 21
    username: str = "anonymous"
    # repr=False: an initialized resource holds the resolved value, and a repr may end up in a log.
    password: str | None = Field(default=None, repr=False, description="Usually dg.EnvVar('NAME')")
    tls: bool = False
    ca_file: str | None = None
    passive: bool = True
    timeout_seconds: float = 30

    def get_client(self) -> FtpClient:
        check_resolved(self, ("password",), f"ftp {self.host}:{self.port}")
        return FtpClient(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            tls=self.tls,
            ca_file=self.ca_file,
            passive=self.passive,
            timeout_seconds=self.timeout_seconds,
        )
