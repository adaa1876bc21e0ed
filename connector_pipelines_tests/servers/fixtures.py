"""pytest fixtures that start the loopback servers once per session (loaded as a plugin by conftest.py).

A server that cannot start fails the tests that need it, with the reason: these tests must run in CI, so they
are never skipped. Tests share a server, so each writes under its own folder or file name; `smtp_inbox`
empties the plain SMTP server's mailbox for one test.
"""

from __future__ import annotations

import random
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

# The server modules are imported inside the fixtures: moto, asyncssh and pyftpdlib are slow to import and
# pyftpdlib warns on import, which every test run would otherwise pay for and print.
if TYPE_CHECKING:
    from connector_pipelines_tests.servers.ftp import FtpTestServer
    from connector_pipelines_tests.servers.s3 import S3TestServer
    from connector_pipelines_tests.servers.sftp import SftpTestServer
    from connector_pipelines_tests.servers.smtp import SmtpTestServer

Server = TypeVar("Server", bound=Any)


def pytest_configure(config: pytest.Config) -> None:
    # What the server libraries warn about their own internals (and the SMTPS server's chosen settings).
    for line in (
        r"ignore:Session\.login_data is deprecated:DeprecationWarning",
        "ignore:Requiring AUTH while not requiring TLS:UserWarning",
        "ignore:The asyncore module is deprecated:DeprecationWarning",
        "ignore:The asynchat module is deprecated:DeprecationWarning",
    ):
        config.addinivalue_line("filterwarnings", line)


def _serve(name: str, make: Callable[[], Server]) -> Iterator[Server]:
    server = make()
    try:
        server.start()
    except Exception as exc:  # any reason at all: report it as a failure, never a skip
        server.stop()
        pytest.fail(f"could not start the {name} test server: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SftpTestServer]:
    """asyncssh SFTP; user `extracts`, password or `private_key`; `host_key_line`; files under `root`."""
    from connector_pipelines_tests.servers.sftp import SftpTestServer

    yield from _serve("SFTP", SftpTestServer)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3TestServer]:
    """moto S3 with `bucket` created; `endpoint_url`; `client()` reads objects back."""
    from connector_pipelines_tests.servers.s3 import S3TestServer

    yield from _serve("S3", S3TestServer)


@pytest.fixture(scope="session")
def ftp_server() -> Iterator[FtpTestServer]:
    """pyftpdlib plain FTP; user `extracts`; files under `root`."""
    from connector_pipelines_tests.servers.ftp import FtpTestServer

    yield from _serve("FTP", FtpTestServer)


@pytest.fixture(scope="session")
def ftps_server() -> Iterator[FtpTestServer]:
    """pyftpdlib explicit FTPS (TLS required on control and data); verify against `ca_file`."""
    from connector_pipelines_tests.servers.ftp import FtpTestServer

    yield from _serve("FTPS", lambda: FtpTestServer(tls=True))


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpTestServer]:
    """aiosmtpd, plain, no login; received mail in `messages` / `envelopes`."""
    from connector_pipelines_tests.servers.smtp import SmtpTestServer

    yield from _serve("SMTP", SmtpTestServer)


@pytest.fixture(scope="session")
def smtp_starttls_server() -> Iterator[SmtpTestServer]:
    """aiosmtpd requiring STARTTLS and a login (user `mailer`); verify against `ca_file`."""
    from connector_pipelines_tests.servers.smtp import SmtpTestServer

    yield from _serve("SMTP (STARTTLS)", lambda: SmtpTestServer(tls="starttls", auth=True))


@pytest.fixture(scope="session")
def smtps_server() -> Iterator[SmtpTestServer]:
    """aiosmtpd speaking TLS from the first byte (SMTPS), with a login (user `mailer`)."""
    from connector_pipelines_tests.servers.smtp import SmtpTestServer

    yield from _serve("SMTPS", lambda: SmtpTestServer(tls="ssl", auth=True))


@pytest.fixture
def smtp_inbox(smtp_server: SmtpTestServer) -> SmtpTestServer:
    """The plain SMTP server with an empty mailbox for this test."""
    smtp_server.clear()
    return smtp_server


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[[str, int], Path]:
    """`make_file(name, size)`: a local file of `size` pseudo-random (incompressible) bytes, new per call."""
    counter = iter(range(1_000_000))

    def make(name: str, size: int) -> Path:
        folder = tmp_path / f"local-{next(counter)}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(random.Random(f"{name}:{size}:{folder.name}").randbytes(size))
        return path

    return make


@pytest.fixture
def unique_folder() -> str:
    """A folder name no other test uses, for tests that share a session-scoped server."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def render_error() -> Callable[[BaseException], str]:
    """An exception as a traceback would print it, chained exceptions included unless suppressed: what a log or
    Dagster's error view would show, so tests can check it holds no secret."""
    return lambda exc: "".join(traceback.format_exception(exc))
