"""Deliver an extract file to an SFTP server, with the server's host key checked against the configured one; and
read the files a partner delivered there.

Read side, where names and entries come from the partner:
- symlinks are never followed: listing skips them (logged, with the reason); a download or a move checks the
  entry itself (lstat) and refuses anything but a regular file; a download then compares the attributes of the
  file it opened (fstat) with that entry, and checks the entry again, so a symlink swapped in between is refused;
- a move never replaces a file: it takes the first free name (`a.csv`, `a (2).csv`, ...) and uses the plain SFTP
  rename, which the protocol defines as failing when the target exists (OpenSSH does it with link()+unlink(),
  atomically); a name taken meanwhile makes it try the next one. posix-rename@openssh.com, which replaces, is
  kept for what is meant to replace: an upload, and a report written beside a quarantined file.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import logging
import socket
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.base import RemoteFile, UploadReceipt
from connector_pipelines.transports.folder import (
    MAX_COPIES,
    SYMLINK_SKIPPED,
    atomic_local_file,
    check_remote_name,
    check_source_name,
    folder_parts,
    numbered_names,
    redact,
    temporary_name,
)

log = logging.getLogger(__name__)

# The signature algorithms to ask for, per host key type: naming them makes the server present the key we
# can check (a server with several host keys would otherwise pick one we have no line for).
_RSA_ALGORITHMS = ["rsa-sha2-512", "rsa-sha2-256"]
_SFTP_ERRORS = (OSError, EOFError, paramiko.SSHException, paramiko.sftp.SFTPError)
# Read requests in flight during a download: enough to keep a long link busy, few enough that what arrives
# ahead of the local write stays a few MB (paramiko otherwise requests the whole file at once).
_PREFETCH_REQUESTS = 64
_READ_CHUNK = 32 * 1024


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _same_attributes(found: paramiko.SFTPAttributes, expected: paramiko.SFTPAttributes) -> bool:
    """Whether two attribute sets describe the same regular file (SFTP v3 has no inode number: type, size,
    modification time and owner stand in for it)."""
    if found.st_mode is not None and not stat.S_ISREG(found.st_mode):
        return False
    for name in ("st_mode", "st_size", "st_mtime", "st_uid", "st_gid"):
        # A server may leave an attribute out of one answer; only what both report is compared.
        mine, theirs = getattr(found, name), getattr(expected, name)
        if mine is not None and theirs is not None and mine != theirs:
            return False
    return True


def parse_host_key(line: str) -> paramiko.PKey:
    """'ssh-ed25519 AAAA... [comment]' (a known_hosts / .pub line) -> the public key."""
    parts = line.split()
    if len(parts) < 2:
        raise TransportError(f"the host key {line!r} is not a public key line such as 'ssh-ed25519 AAAA...'")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise TransportError(f"the host key line of type {parts[0]!r} cannot be read: {exc}") from None


def load_private_key(text: str) -> paramiko.PKey:
    """A private key from its text (OpenSSH or PEM, PKCS#1/SEC1/PKCS#8): ed25519, RSA or ECDSA.

    The key is read with `cryptography` and handed to paramiko's class-specific loader in OpenSSH form, since
    paramiko's own loaders do not read PKCS#8 ('BEGIN PRIVATE KEY').
    """
    if "\\n" in text and "\n" not in text.strip():
        # An env file often holds the key on one line with escaped newlines.
        text = text.replace("\\n", "\n")
    data = text.strip().encode() + b"\n"
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TransportError(
            "the private key is protected by a passphrase, which is not supported; store an unencrypted key in the "
            "environment variable (and protect the variable instead)"
        ) from None
    except (ValueError, binascii.Error):
        # Never echo what was read: it is the key.
        raise TransportError("the private key cannot be read; expected an OpenSSH or PEM private key") from None
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    else:
        raise TransportError(f"unsupported private key type {type(loaded).__name__}; use ed25519, RSA or ECDSA")
    openssh = loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return key_class.from_private_key(io.StringIO(openssh.decode()))


class SftpClient:
    """Uploads files over SFTP: write to a temporary name in the target folder, then rename over the final name.

    The connection is opened on first use and reused until `close()`.
    """

    def __init__(
        self,
        host: str,
        username: str,
        host_key: str,
        port: int = 22,
        password: str | None = None,
        private_key: str | None = None,
        timeout_seconds: float = 30,
    ):
        if password is None and private_key is None:
            raise TransportError(f"sftp {host}:{port}: set a password or a private key")
        self.host = host
        self.port = port
        self.username = username
        self.host_key = host_key
        self.timeout_seconds = timeout_seconds
        self._password = password
        self._private_key = private_key
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.skipped: list[tuple[str, str]] = []

    @property
    def system(self) -> str:
        return f"sftp {self.host}:{self.port}"

    # ------------------------------------------------------------------------------------------------
    # Upload

    def upload(self, local_path: Path, remote_name: str, destination: FileDestination) -> UploadReceipt:
        check_remote_name(remote_name, self.system)
        parts = folder_parts(destination.folder, self.system)
        sftp = self._connect()
        try:
            folder = self._make_folders(sftp, parts)
        except _SFTP_ERRORS as exc:
            self.close()
            raise TransportError(f"{self.system}: cannot prepare the folder: {self._describe(exc)}") from None
        final = _join(folder, remote_name)
        # A unique temporary name, so two runs writing the same file never write into one temporary file.
        temporary = _join(folder, f".{remote_name}.{uuid.uuid4().hex[:12]}.part")
        try:
            sftp.put(str(local_path), temporary, confirm=True)
            self._rename_over(sftp, temporary, final)
            absolute = sftp.normalize(final)
        except _SFTP_ERRORS as exc:
            self._remove_quietly(sftp, temporary)
            raise TransportError(f"{self.system}: upload of {final!r} failed: {self._describe(exc)}") from None
        return UploadReceipt(uri=f"sftp://{self._uri_host()}:{self.port}{absolute}")

    def _rename_over(self, sftp: paramiko.SFTPClient, temporary: str, final: str) -> None:
        try:
            # posix-rename@openssh.com replaces the target atomically.
            sftp.posix_rename(temporary, final)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.ENOENT):
                raise  # a refusal, not a missing extension: the existing file must stay
            # The server lacks the extension, and plain SFTP rename refuses an existing target: remove it
            # first. Readers then briefly see no file, but never a partial one.
            self._remove_quietly(sftp, final)
            sftp.rename(temporary, final)

    def _make_folders(self, sftp: paramiko.SFTPClient, parts: list[str]) -> str:
        """mkdir -p, relative to the login folder; returns the folder path ('' for the login folder)."""
        path = ""
        for part in parts:
            path = f"{path}/{part}" if path else part
            try:
                sftp.stat(path)
                continue
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise TransportError(f"{self.system}: cannot open the folder {path!r}: {self._describe(exc)}") from None
            try:
                sftp.mkdir(path)
            except OSError as exc:
                # Another run may have created it between stat and mkdir.
                try:
                    sftp.stat(path)
                except OSError:
                    raise TransportError(
                        f"{self.system}: cannot create the folder {path!r}: {self._describe(exc)}"
                    ) from None
        return path

    def _remove_quietly(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except _SFTP_ERRORS:
            pass  # best effort: the file may not exist, or the connection is gone

    # ------------------------------------------------------------------------------------------------
    # Read side (`FileSource`): the files a partner delivered, relative to the login folder

    def list_files(self, folder: str) -> list[RemoteFile]:
        path = "/".join(folder_parts(folder, self.system))
        sftp = self._connect()
        try:
            entries = sftp.listdir_attr(path or ".")
        except FileNotFoundError:
            return []
        except _SFTP_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot list the folder {folder!r}: {self._describe(exc)}") from None
        files: list[RemoteFile] = []
        self.skipped = []
        for entry in entries:
            # Servers report the entry itself (lstat), so symlinks and folders are both left out here.
            if entry.st_mode is not None and stat.S_ISLNK(entry.st_mode):
                self.skipped.append((entry.filename, SYMLINK_SKIPPED))
                log.warning("%s: skipped %r in the folder %r: %s", self.system, entry.filename, folder, SYMLINK_SKIPPED)
                continue
            if entry.st_mode is None or not stat.S_ISREG(entry.st_mode):
                continue
            modified = datetime.fromtimestamp(entry.st_mtime or 0, UTC)
            files.append(RemoteFile(name=entry.filename, size=entry.st_size or 0, modified=modified))
        return sorted(files, key=lambda file: file.name)

    def download(self, folder: str, name: str, local_path: Path) -> None:
        check_source_name(name, self.system)
        remote = _join("/".join(folder_parts(folder, self.system)), name)
        sftp = self._connect()
        entry = self._regular_entry(sftp, remote)
        size = entry.st_size or 0
        try:
            with sftp.open(remote, "rb") as reader:
                # SFTP has no O_NOFOLLOW: what was opened must be the entry that was checked, and the entry must
                # still be a regular file, else a symlink was swapped in between and the open followed it.
                opened = reader.stat()
                again = self._regular_entry(sftp, remote)
                if not (_same_attributes(opened, entry) and _same_attributes(again, entry)):
                    raise TransportError(
                        f"{self.system}: {remote!r} changed while it was being opened (it is no longer the regular "
                        "file that was checked); nothing was downloaded"
                    )
                reader.prefetch(size, _PREFETCH_REQUESTS)
                with atomic_local_file(local_path) as sink:
                    written = 0
                    while chunk := reader.read(_READ_CHUNK):
                        sink.write(chunk)
                        written += len(chunk)
                    if written != size:
                        raise TransportError(
                            f"{self.system}: download of {remote!r} was cut short: {written} of {size} bytes"
                        )
        except _SFTP_ERRORS as exc:
            raise TransportError(f"{self.system}: download of {remote!r} failed: {self._describe(exc)}") from None

    def move(self, folder: str, name: str, to_folder: str, new_name: str | None = None) -> str:
        """Move the file into `to_folder` under `new_name` (default: its name), or the first free numbered name
        (`a (2).csv`, ...) when that is taken: a move never replaces a file. Returns the name it got."""
        target_name = name if new_name is None else new_name
        check_source_name(name, self.system)
        check_source_name(target_name, self.system)
        source = _join("/".join(folder_parts(folder, self.system)), name)
        to_parts = folder_parts(to_folder, self.system)
        sftp = self._connect()
        self._regular_entry(sftp, source)
        try:
            to_path = self._make_folders(sftp, to_parts)
            for candidate in numbered_names(target_name):
                target = _join(to_path, candidate)
                if target == source:
                    return candidate  # onto itself: nothing to do
                if self._entry(sftp, target) is not None:
                    continue
                try:
                    # The plain SFTP rename refuses an existing target: a name taken since the check stays as it is.
                    sftp.rename(source, target)
                except OSError:
                    if self._entry(sftp, target) is not None:
                        continue  # taken meanwhile: try the next name
                    raise
                return candidate
        except _SFTP_ERRORS as exc:
            raise TransportError(
                f"{self.system}: could not move {source!r} to the folder {to_folder!r}: {self._describe(exc)}"
            ) from None
        raise TransportError(
            f"{self.system}: could not move {source!r} to the folder {to_folder!r}: {MAX_COPIES} files named like "
            f"{target_name!r} are there already"
        )

    def write_text(self, folder: str, name: str, text: str) -> None:
        check_source_name(name, self.system)
        parts = folder_parts(folder, self.system)
        sftp = self._connect()
        data = text.encode("utf-8")
        try:
            path = self._make_folders(sftp, parts)
        except _SFTP_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot prepare the folder: {self._describe(exc)}") from None
        final = _join(path, name)
        temporary = _join(path, temporary_name(name))
        try:
            sftp.putfo(io.BytesIO(data), temporary, file_size=len(data), confirm=True)
            self._rename_over(sftp, temporary, final)
        except _SFTP_ERRORS as exc:
            self._remove_quietly(sftp, temporary)
            raise TransportError(f"{self.system}: could not write {final!r}: {self._describe(exc)}") from None

    def _entry(self, sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
        """The entry itself (lstat: a symlink is not followed), or None when there is none."""
        try:
            return sftp.lstat(path)
        except FileNotFoundError:
            return None

    def _regular_entry(self, sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes:
        """The attributes of the entry at `path`; TransportError when it is missing or not a regular file (a
        symlink is refused, not followed)."""
        try:
            attributes = self._entry(sftp, path)
        except _SFTP_ERRORS as exc:
            raise TransportError(f"{self.system}: cannot read {path!r}: {self._describe(exc)}") from None
        if attributes is None:
            raise TransportError(f"{self.system}: there is no file {path!r}")
        if attributes.st_mode is not None and not stat.S_ISREG(attributes.st_mode):
            why = " (it is a symbolic link, which is never followed)" if stat.S_ISLNK(attributes.st_mode) else ""
            raise TransportError(f"{self.system}: {path!r} is not a regular file{why}")
        return attributes

    # ------------------------------------------------------------------------------------------------
    # Connection

    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self.close()
        expected = parse_host_key(self.host_key)
        credentials: list[tuple[str, paramiko.PKey | str]] = []
        if self._private_key:
            credentials.append(("private key", load_private_key(self._private_key)))
        if self._password is not None:
            credentials.append(("password", self._password))
        failures: list[str] = []
        for method, credential in credentials:
            # One connection per method: some servers (asyncssh among them) end the connection when a client
            # starts a second authentication on it, as paramiko does after a refused key.
            transport = self._open_transport(expected)
            try:
                if isinstance(credential, paramiko.PKey):
                    transport.auth_publickey(self.username, credential)
                else:
                    transport.auth_password(self.username, credential)
            except paramiko.AuthenticationException:
                failures.append(method)
                self.close()
                continue
            except _SFTP_ERRORS as exc:
                self.close()
                raise TransportError(f"{self.system}: authentication broke off: {self._describe(exc)}") from None
            return self._open_sftp(transport)
        raise TransportError(
            f"{self.system}: authentication failed for user '{self.username}' (tried: {', '.join(failures)})"
        )

    def _open_transport(self, expected: paramiko.PKey) -> paramiko.Transport:
        """Connect, negotiate and check the host key; the transport is left unauthenticated."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_seconds)
        except OSError as exc:
            raise TransportError(f"{self.system}: cannot connect: {self._describe(exc)}") from None
        transport = paramiko.Transport(sock)
        self._transport = transport
        transport.banner_timeout = self.timeout_seconds
        transport.handshake_timeout = self.timeout_seconds
        transport.auth_timeout = self.timeout_seconds
        # Ask for the configured key's algorithm only, so the server presents the key we hold a line for.
        transport.get_security_options().key_types = (
            _RSA_ALGORITHMS if isinstance(expected, paramiko.RSAKey) else [expected.get_name()]
        )
        try:
            transport.start_client(timeout=self.timeout_seconds)
        except paramiko.SSHException as exc:
            self.close()
            if "host key" in str(exc).lower():
                raise TransportError(
                    f"{self.system}: the host key did not match: the server offers no {expected.get_name()} "
                    f"host key (expected {expected.fingerprint}); check the host_key line out of band"
                ) from None
            raise TransportError(f"{self.system}: the SSH handshake failed: {self._describe(exc)}") from None
        except _SFTP_ERRORS as exc:
            self.close()
            raise TransportError(f"{self.system}: the SSH handshake failed: {self._describe(exc)}") from None
        presented = transport.get_remote_server_key()
        if presented.get_name() != expected.get_name() or presented.asbytes() != expected.asbytes():
            self.close()
            # Never accept it: a changed host key is what a man-in-the-middle looks like.
            raise TransportError(
                f"{self.system}: the host key did not match: expected {expected.get_name()} {expected.fingerprint}, "
                f"the server presented {presented.get_name()} {presented.fingerprint}; if the server's key was "
                "really changed, verify the new key out of band and update host_key"
            )
        return transport

    def _open_sftp(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        try:
            sftp = paramiko.SFTPClient.from_transport(transport)
            if sftp is None:
                raise paramiko.SSHException("the server refused the sftp subsystem")
            sftp.get_channel().settimeout(self.timeout_seconds)
        except _SFTP_ERRORS as exc:
            self.close()
            raise TransportError(f"{self.system}: cannot open an SFTP session: {self._describe(exc)}") from None
        self._sftp = sftp
        return sftp

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, socket.timeout | TimeoutError):
            text = f"timed out after {self.timeout_seconds:g} s"
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        elif isinstance(exc, EOFError):
            text = "the server closed the connection"
        else:
            text = str(exc) or type(exc).__name__
        return redact(text, [self._password, self._private_key])

    def _uri_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
