"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives.

Modes: plain; `starttls` (STARTTLS required before MAIL) or `ssl` (TLS from the first byte), both with a
self-signed certificate whose file is `ca_file`; `auth` requires a login, offered only over TLS.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from connector_pipelines_tests.servers import LOOPBACK, SelfSignedCertificate, free_port


@dataclass(frozen=True)
class Envelope:
    """What the SMTP dialogue said, as opposed to the headers: the real sender and recipients."""

    mail_from: str
    rcpt_tos: list[str]


class SmtpTestServer:
    """An SMTP server; `messages` holds each received email parsed as `EmailMessage`, `envelopes` the matching
    envelope sender and recipients, and `logins` the user names that logged in. `clear()` forgets them."""

    def __init__(
        self,
        tls: Literal["none", "starttls", "ssl"] = "none",
        auth: bool = False,
        username: str = "mailer",
        password: str = "pw-smtp-6c2a18",
        from_address: str = "extracts@example.test",
    ):
        if auth and tls == "none":
            raise ValueError("auth is only offered over TLS; choose tls='starttls' or tls='ssl'")
        self.host = LOOPBACK
        self.port = 0
        self.tls = tls
        self.auth = auth
        self.username = username
        self.password = password
        self.from_address = from_address
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Envelope] = []
        self.logins: list[str] = []
        self._workdir = Path(tempfile.mkdtemp(prefix="smtp-server-"))
        self.certificate = SelfSignedCertificate.create(self._workdir) if tls != "none" else None
        self.ca_file = str(self.certificate.cert_file) if self.certificate else None
        self._controller: Controller | None = None

    def clear(self) -> None:
        self.messages.clear()
        self.envelopes.clear()
        self.logins.clear()

    def connection(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The connections.yaml entry for this server; `extra` overrides, None drops a key."""
        entry: dict[str, Any] = {
            "type": "smtp",
            "host": self.host,
            "port": self.port,
            "from_address": self.from_address,
            "starttls": self.tls == "starttls",
            "ssl": self.tls == "ssl",
            "ca_file": self.ca_file,
            "timeout_seconds": 10,
        }
        if self.auth:
            entry |= {"username": self.username, "password": "${TEST_SMTP_PASSWORD}"}
        entry.update(extra or {})
        return {key: value for key, value in entry.items() if value is not None}

    def env(self) -> dict[str, str]:
        return {"TEST_SMTP_PASSWORD": self.password} if self.auth else {}

    def client_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Resolved values for `SmtpClient(**...)`."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "from_address": self.from_address,
            "starttls": self.tls == "starttls",
            "ssl": self.tls == "ssl",
            "ca_file": self.ca_file,
            "timeout_seconds": 10,
        }
        if self.auth:
            values |= {"username": self.username, "password": self.password}
        values.update(overrides)
        return values

    # ------------------------------------------------------------------------------------------------
    # aiosmtpd handler hooks

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append(Envelope(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        ):
            self.logins.append(self.username)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    # ------------------------------------------------------------------------------------------------

    def start(self) -> SmtpTestServer:
        options: dict[str, Any] = {}
        if self.certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certificate.cert_file, self.certificate.key_file)
            if self.tls == "starttls":
                options |= {"tls_context": context, "require_starttls": True}
            else:
                options |= {"ssl_context": context}
        if self.auth:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; on an SMTPS connection everything is TLS.
            options |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": self.tls == "starttls",
            }
        # aiosmtpd's Controller checks readiness by connecting to its own port, so it cannot bind port 0.
        self.port = free_port()
        self._controller = Controller(self, hostname=self.host, port=self.port, ready_timeout=10, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
