"""Deliver an extract file as an email attachment through an SMTP relay."""

from __future__ import annotations

import mimetypes
import smtplib
import socket
import ssl
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.base import UploadReceipt
from connector_pipelines.transports.folder import check_remote_name, redact

# The formats an extract writes; mimetypes does not know all of them on every system.
_EXTRACT_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".jsonl": "application/jsonl",
    ".parquet": "application/vnd.apache.parquet",
    ".gz": "application/gzip",
}


def attachment_type(file_name: str) -> tuple[str, str]:
    """The (maintype, subtype) of an attachment; a compressed file is sent as what it is on the wire."""
    suffix = Path(file_name).suffix.lower()
    mime = _EXTRACT_TYPES.get(suffix)
    if mime is None:
        guessed, encoding = mimetypes.guess_type(file_name)
        mime = guessed if guessed and not encoding else "application/octet-stream"
    maintype, subtype = mime.split("/", 1)
    return maintype, subtype


class SmtpClient:
    """Sends a file as the attachment of one email to the destination's `to` and `cc` recipients.

    An email is atomic by nature: it is delivered whole or refused. TLS is `ssl` (from the start) or
    `starttls` (upgrade); certificates are verified against `ca_file` or the system trust store. A password is
    never sent over an unencrypted connection.
    """

    def __init__(
        self,
        host: str,
        from_address: str,
        port: int = 25,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        ca_file: str | None = None,
        timeout_seconds: float = 30,
    ):
        if starttls and ssl:
            raise TransportError(f"smtp {host}:{port}: choose starttls or ssl, not both")
        self.host = host
        self.port = port
        self.from_address = from_address
        self.username = username
        self.starttls = starttls
        self.ssl = ssl
        self.ca_file = ca_file
        self.timeout_seconds = timeout_seconds
        self._password = password

    @property
    def system(self) -> str:
        return f"smtp {self.host}:{self.port}"

    def build_message(self, local_path: Path, remote_name: str, destination: FileDestination) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = ", ".join(destination.to)
        if destination.cc:
            message["Cc"] = ", ".join(destination.cc)
        message["Subject"] = destination.subject or remote_name
        size = local_path.stat().st_size
        message.set_content(destination.body or f"Attached: {remote_name} ({size:,} bytes).\n")
        maintype, subtype = attachment_type(remote_name)
        message.add_attachment(local_path.read_bytes(), maintype=maintype, subtype=subtype, filename=remote_name)
        return message

    def upload(self, local_path: Path, remote_name: str, destination: FileDestination) -> UploadReceipt:
        check_remote_name(remote_name, self.system)
        if not destination.to:
            raise TransportError(f"{self.system}: the destination has no `to` recipients; add at least one address")
        try:
            message = self.build_message(local_path, remote_name, destination)
        except OSError as exc:
            raise TransportError(f"{self.system}: cannot read {remote_name!r}: {exc.strerror or exc}") from None
        recipients = [*destination.to, *destination.cc]
        try:
            with self._open() as smtp:
                refused = smtp.send_message(message, from_addr=self.from_address, to_addrs=recipients)
        except smtplib.SMTPAuthenticationError:
            raise TransportError(f"{self.system}: authentication failed for user '{self.username}'") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(
                f"{self.system}: every recipient was refused: {', '.join(sorted(exc.recipients))}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"{self.system}: sending {remote_name!r} failed: {self._describe(exc)}") from None
        if refused:
            raise TransportError(
                f"{self.system}: {remote_name!r} was sent, but these recipients were refused: "
                f"{', '.join(sorted(refused))}"
            )
        uri = "mailto:" + ",".join(quote(address, safe="@") for address in destination.to)
        if destination.cc:
            uri += "?cc=" + ",".join(quote(address, safe="@") for address in destination.cc)
        return UploadReceipt(uri=uri)

    def send_text(self, subject: str, text: str, to: list[str]) -> None:
        """One plain-text email (an alert) to `to`; a TransportError that never holds the password."""
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message.set_content(text + "\n")
        try:
            with self._open() as smtp:
                refused = smtp.send_message(message, from_addr=self.from_address, to_addrs=to)
        except smtplib.SMTPAuthenticationError:
            raise TransportError(f"{self.system}: authentication failed for user '{self.username}'") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"{self.system}: sending {subject!r} failed: {self._describe(exc)}") from None
        if refused:
            raise TransportError(f"{self.system}: these recipients were refused: {', '.join(sorted(refused))}")

    def _open(self) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=self.ca_file)
        smtp: smtplib.SMTP
        if self.ssl:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_seconds, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        try:
            if self.starttls:
                smtp.starttls(context=context)
            if self.username:
                if not (self.ssl or self.starttls):
                    raise TransportError(
                        f"{self.system}: refusing to send the password over an unencrypted connection; "
                        "set starttls: true or ssl: true"
                    )
                smtp.login(self.username, self._password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            text = f"the server certificate could not be verified ({exc.verify_message}); set ca_file to its CA"
        elif isinstance(exc, socket.timeout | TimeoutError):
            text = f"timed out after {self.timeout_seconds:g} s"
        elif isinstance(exc, smtplib.SMTPResponseException):
            reply = exc.smtp_error
            text = f"{exc.smtp_code} {reply.decode(errors='replace') if isinstance(reply, bytes) else reply}"
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = str(exc) or type(exc).__name__
        return redact(text, [self._password])

    def close(self) -> None:
        """Each upload opens and closes its own SMTP session; nothing stays open."""
