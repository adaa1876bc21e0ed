"""Deliver an extract file to an FTP server, plain or explicit FTPS (AUTH TLS with a protected data channel); and
read the files a partner delivered there."""

from __future__ import annotations

import ftplib
import io
import socket
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.base import RemoteFile, UploadReceipt
from connector_pipelines.transports.folder import (
    atomic_local_file,
    check_remote_name,
    check_source_name,
    folder_parts,
    redact,
    temporary_name,
)

_BLOCK_SIZE = 256 * 1024
_FTP_ERRORS = (ftplib.Error, OSError, EOFError)
_MLSD_FACTS = ["type", "size", "modify"]


def parse_ftp_time(value: str) -> datetime:
    """An MDTM / MLSD `modify` time ('YYYYMMDDHHMMSS[.sss]', always UTC per RFC 3659) as an aware datetime."""
    whole, _, fraction = value.strip().partition(".")
    moment = datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    if fraction.isdigit():
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment


class FtpClient:
    """Uploads files over FTP or FTPS: `STOR` to a temporary name in the target folder, then `RNFR`/`RNTO`.

    With `tls`, the server certificate is verified against `ca_file` (or the system trust store) and its
    host name; both the control and the data channel are encrypted. Without it the password would cross the
    network in clear, so a client with a password and no `tls` is refused unless `allow_plaintext_password`
    says so (the spec refuses such a connection at load; this holds for a client or resource built by hand).
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
        allow_plaintext_password: bool = False,
    ):
        if password and not tls and not allow_plaintext_password:
            raise TransportError(
                f"ftp {host}:{port}: plain FTP would send the password in clear; set tls (explicit FTPS), or "
                "allow_plaintext_password to accept that anyone on the network path can read it"
            )
        self.host = host
        self.port = port
        self.username = username
        self.tls = tls
        self.ca_file = ca_file
        self.passive = passive
        self.timeout_seconds = timeout_seconds
        self.allow_plaintext_password = allow_plaintext_password
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

    # ------------------------------------------------------------------------------------------------
    # Read side (`FileSource`): the files a partner delivered, relative to the login folder

    def list_files(self, folder: str) -> list[RemoteFile]:
        parts = folder_parts(folder, self.system)
        ftp = self._connect()
        try:
            if self._open_folder(ftp, parts) is None:
                return []
            files = self._list_mlsd(ftp) if self._supports_mlsd(ftp) else self._list_nlst(ftp)
        except _FTP_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot list the folder {folder!r}: {self._describe(exc)}") from None
        return sorted(files, key=lambda file: file.name)

    def download(self, folder: str, name: str, local_path: Path) -> None:
        check_source_name(name, self.system)
        parts = folder_parts(folder, self.system)
        ftp = self._connect()
        try:
            where = self._open_folder(ftp, parts)
            size = self._file_size(ftp, name) if where is not None else None
            if where is None or size is None:
                raise TransportError(f"{self.system}: there is no file {name!r} in the folder {folder!r}")
            with atomic_local_file(local_path) as sink:
                # RETR streams block by block into the file (over the protected data channel with FTPS).
                ftp.retrbinary(f"RETR {name}", sink.write, blocksize=_BLOCK_SIZE)
                if sink.tell() != size:
                    raise TransportError(
                        f"{self.system}: download of {name!r} was cut short: {sink.tell()} of {size} bytes"
                    )
        except _FTP_ERRORS as exc:
            raise TransportError(
                f"{self.system}: download of {name!r} from {folder!r} failed: {self._describe(exc)}"
            ) from None

    def move(self, folder: str, name: str, to_folder: str, new_name: str | None = None) -> None:
        target_name = name if new_name is None else new_name
        check_source_name(name, self.system)
        check_source_name(target_name, self.system)
        parts = folder_parts(folder, self.system)
        to_parts = folder_parts(to_folder, self.system)
        ftp = self._connect()
        try:
            where = self._open_folder(ftp, parts)
            # Checked first: replacing may delete the target before renaming, which must not happen for a source
            # that is not there.
            if where is None or self._file_size(ftp, name) is None:
                raise TransportError(f"{self.system}: there is no file {name!r} in the folder {folder!r}")
            source = f"{where.rstrip('/')}/{name}"
            target = f"{self._enter_folder(ftp, to_parts).rstrip('/')}/{target_name}"
            if target != source:
                self._rename_over(ftp, source, target)
        except _FTP_ERRORS as exc:
            raise TransportError(
                f"{self.system}: could not move {name!r} from {folder!r} to {to_folder!r}: {self._describe(exc)}"
            ) from None

    def write_text(self, folder: str, name: str, text: str) -> None:
        check_source_name(name, self.system)
        parts = folder_parts(folder, self.system)
        ftp = self._connect()
        try:
            self._enter_folder(ftp, parts)
        except _FTP_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot open the folder {folder!r}: {self._describe(exc)}") from None
        temporary = temporary_name(name)
        try:
            ftp.storbinary(f"STOR {temporary}", io.BytesIO(text.encode("utf-8")))
            self._rename_over(ftp, temporary, name)
        except _FTP_ERRORS as exc:
            self._delete_quietly(ftp, temporary)
            raise TransportError(f"{self.system}: could not write {name!r}: {self._describe(exc)}") from None

    def _open_folder(self, ftp: ftplib.FTP, parts: list[str]) -> str | None:
        """cwd to the login folder, then into each part without creating any; returns pwd, or None when a part
        does not exist. A part that exists but cannot be entered raises, so a refusal never reads as "empty"."""
        ftp.cwd(self._home)
        for part in parts:
            try:
                ftp.cwd(part)
            except ftplib.error_perm:
                # FTP answers 550 both for "missing" and "not allowed": the parent's listing tells them apart.
                if part not in self._names_here(ftp):
                    return None
                raise
        return ftp.pwd()

    def _names_here(self, ftp: ftplib.FTP) -> set[str]:
        try:
            return {entry.rsplit("/", 1)[-1] for entry in ftp.nlst()}
        except ftplib.error_perm:
            return set()  # some servers answer an empty folder with 550

    def _supports_mlsd(self, ftp: ftplib.FTP) -> bool:
        """Whether FEAT announces MLST (RFC 3659), which brings MLSD: one listing with type, size and time."""
        try:
            features = ftp.sendcmd("FEAT")
        except ftplib.error_perm:
            return False  # a server without FEAT predates MLSD
        return any(line.strip().upper().startswith("MLST") for line in features.splitlines()[1:])

    def _list_mlsd(self, ftp: ftplib.FTP) -> list[RemoteFile]:
        files: list[RemoteFile] = []
        for name, facts in ftp.mlsd(facts=_MLSD_FACTS):
            if facts.get("type", "").lower() != "file":
                continue  # folders, the cdir/pdir entries and links
            size = int(facts["size"]) if "size" in facts else self._file_size(ftp, name)
            modify = facts.get("modify") or self._modified(ftp, name)
            if size is not None and modify:
                files.append(RemoteFile(name=name, size=size, modified=parse_ftp_time(modify)))
        return files

    def _list_nlst(self, ftp: ftplib.FTP) -> list[RemoteFile]:
        """NLST names everything; SIZE answers for regular files only, which is what tells a file apart."""
        files: list[RemoteFile] = []
        for name in sorted(self._names_here(ftp)):
            if name in (".", ".."):
                continue
            size = self._file_size(ftp, name)
            modify = self._modified(ftp, name) if size is not None else None
            if size is not None and modify:
                files.append(RemoteFile(name=name, size=size, modified=parse_ftp_time(modify)))
        return files

    def _file_size(self, ftp: ftplib.FTP, name: str) -> int | None:
        """SIZE of a file in the current folder (binary mode, so it counts bytes); None for a folder or a file
        that is not there."""
        ftp.voidcmd("TYPE I")
        try:
            return ftp.size(name)
        except ftplib.error_perm as exc:
            if str(exc).startswith("550"):
                return None
            raise

    def _modified(self, ftp: ftplib.FTP, name: str) -> str | None:
        try:
            return ftp.voidcmd(f"MDTM {name}")[4:].strip()
        except ftplib.error_perm as exc:
            if str(exc).startswith("550"):
                return None  # removed since the folder was listed
            raise

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
