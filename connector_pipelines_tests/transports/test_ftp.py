"""FtpClient against a real FTP server (pyftpdlib), plain and explicit FTPS verified against a CA file."""

from __future__ import annotations

import hashlib
import logging

import pytest

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.ftp import FtpClient
from connector_pipelines_tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def destination(folder: str = "") -> FileDestination:
    return FileDestination(connection="partner_ftp", folder=folder)


@pytest.fixture(params=["ftp", "ftps"])
def server(request):
    """Each test runs against the plain and the FTPS server."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.mark.parametrize("size", [2_000, 5 * 1024 * 1024])
def test_upload_lands_complete_in_a_created_folder(server, make_file, unique_folder, size):
    local = make_file("orders.csv", size)
    client = FtpClient(**server.client_kwargs())

    receipt = client.upload(local, "orders.csv", destination(f"{unique_folder}/in/daily"))
    client.close()

    landed = server.root / unique_folder / "in" / "daily" / "orders.csv"
    assert sha256(landed.read_bytes()) == sha256(local.read_bytes())
    scheme = "ftps" if server.tls else "ftp"
    assert receipt.uri == f"{scheme}://127.0.0.1:{server.port}/{unique_folder}/in/daily/orders.csv"
    assert [p.name for p in landed.parent.iterdir()] == ["orders.csv"]


def test_uploads_replace_and_reuse_one_connection(server, make_file, unique_folder):
    client = FtpClient(**server.client_kwargs())
    client.upload(make_file("a.csv", 100), "a.csv", destination(unique_folder))
    newer = make_file("a.csv", 300)
    client.upload(newer, "a.csv", destination(unique_folder))
    client.upload(make_file("b.csv", 10), "b.csv", destination(f"{unique_folder}/other"))
    client.close()

    assert (server.root / unique_folder / "a.csv").read_bytes() == newer.read_bytes()
    assert (server.root / unique_folder / "other" / "b.csv").exists()


@pytest.mark.parametrize("name", ["../x.csv", "a/b.csv", ".hidden"])
def test_bad_remote_names_are_refused(ftp_server, make_file, unique_folder, name):
    client = FtpClient(**ftp_server.client_kwargs())
    with pytest.raises(TransportError, match="not a plain file name"):
        client.upload(make_file("x.csv", 10), name, destination(unique_folder))
    client.close()
    assert not (ftp_server.root / unique_folder).exists()


def test_a_failed_rename_removes_the_temporary_file(server, make_file):
    # In `locked_folder` the user may store and delete but not rename: STOR succeeds, RNFR is refused.
    client = FtpClient(**server.client_kwargs())
    with pytest.raises(TransportError, match=r"upload of 'x.csv' into '/locked' failed: 550 Not enough privileges"):
        client.upload(make_file("x.csv", 200_000), "x.csv", destination(server.locked_folder))
    client.close()
    assert list((server.root / server.locked_folder).iterdir()) == []


def test_a_wrong_password_fails_without_showing_it(server, make_file, caplog, render_error):
    secret = "wrong-pw-ftp-51c9d0"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransportError) as failed:
        FtpClient(**server.client_kwargs(password=secret)).upload(make_file("x.csv", 10), "x.csv", destination())
    scheme = "ftps" if server.tls else "ftp"
    assert str(failed.value) == f"{scheme} 127.0.0.1:{server.port}: authentication failed for user 'extracts'"
    rendered = render_error(failed.value)
    assert "During handling" not in rendered and secret not in rendered
    assert secret not in caplog.text and server.password not in caplog.text


def test_ftps_refuses_a_certificate_it_cannot_verify(ftps_server, make_file):
    # Without the CA file the self-signed certificate is not trusted by the system store.
    client = FtpClient(**ftps_server.client_kwargs(ca_file=None))
    with pytest.raises(TransportError, match="certificate could not be verified"):
        client.upload(make_file("x.csv", 10), "x.csv", destination())


def test_ftps_server_refuses_a_plain_login(ftps_server, make_file):
    client = FtpClient(**ftps_server.client_kwargs(tls=False, allow_plaintext_password=True))
    with pytest.raises(TransportError, match="ftp 127.0.0.1") as failed:
        client.upload(make_file("x.csv", 10), "x.csv", destination())
    assert ftps_server.password not in str(failed.value)


def test_active_mode_upload(ftp_server, make_file, unique_folder):
    client = FtpClient(**ftp_server.client_kwargs(passive=False))
    client.upload(make_file("active.csv", 50_000), "active.csv", destination(unique_folder))
    client.close()
    assert (ftp_server.root / unique_folder / "active.csv").stat().st_size == 50_000


def test_a_closed_port_is_a_transport_error(make_file):
    client = FtpClient(
        host="127.0.0.1", port=free_port(), username="u", password="p", timeout_seconds=5, allow_plaintext_password=True
    )
    with pytest.raises(TransportError, match=r"ftp 127\.0\.0\.1:\d+: cannot connect: Connection refused"):
        client.upload(make_file("x.csv", 10), "x.csv", destination())


def test_a_password_over_plain_ftp_is_refused_unless_allowed(ftp_server, make_file, unique_folder):
    with pytest.raises(TransportError) as refused:
        FtpClient(**ftp_server.client_kwargs(allow_plaintext_password=False))
    assert str(refused.value) == (
        f"ftp 127.0.0.1:{ftp_server.port}: plain FTP would send the password in clear; set tls (explicit FTPS), "
        "or allow_plaintext_password to accept that anyone on the network path can read it"
    )
    assert ftp_server.password not in str(refused.value)

    # Allowed, the same client logs in (over plain FTP, as the connection says it may).
    client = FtpClient(**ftp_server.client_kwargs(allow_plaintext_password=True))
    client.upload(make_file("plain.csv", 10), "plain.csv", destination(unique_folder))
    client.close()
    assert (ftp_server.root / unique_folder / "plain.csv").stat().st_size == 10
    # Without a password there is nothing to leak: an anonymous client needs no permission.
    assert FtpClient(host="127.0.0.1", port=ftp_server.port).system == f"ftp 127.0.0.1:{ftp_server.port}"
