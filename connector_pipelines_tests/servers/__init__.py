"""Real servers on loopback for the transport tests: SFTP (asyncssh), S3 (moto), FTP/FTPS (pyftpdlib), SMTP
(aiosmtpd). Each is a context manager with `connection(extra)` (its connections.yaml entry) and `env()` (the
environment variables that entry names).

This module holds what several servers share: a free port and a self-signed certificate (made by the package's
`partners.certificate.self_signed`, as the hosted FTPS server's is).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from connector_pipelines.partners.certificate import self_signed

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port free right now on loopback, for servers that cannot bind port 0 and report the port they got."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class SelfSignedCertificate:
    """A certificate for 127.0.0.1 and localhost that is its own CA: `cert_file` doubles as the CA file."""

    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, folder: Path) -> SelfSignedCertificate:
        cert_pem, key_pem = self_signed("connector-pipelines test server", LOOPBACK, days=2)
        folder.mkdir(parents=True, exist_ok=True)
        cert_file = folder / "server-cert.pem"
        key_file = folder / "server-key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        return cls(cert_file=cert_file, key_file=key_file)
