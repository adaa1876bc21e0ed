"""The hosted exchange's explicit FTPS (`serve-files --ftps-port`), with Python's ftplib.FTP_TLS as the partner's
client, verifying the server's self-signed certificate: the same logins, folders, confinement, temporary-name
uploads and quotas as SFTP, and TLS required on both channels."""

from __future__ import annotations

import ftplib
import io
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from connector_pipelines_tests.partners.exchange import partner_entry
from connector_pipelines_tests.servers import LOOPBACK, free_port

pytestmark = pytest.mark.timeout(120)


def ftps_exchange(exchanges, *options: str, **partner):
    exchange = exchanges([partner_entry("acme", methods=["sftp", "ftps"], **partner)])
    password = exchange.add_password("acme")
    exchange.start("--ftps-port", str(free_port()), *options)
    return exchange, password


def login(exchange, password: str) -> ftplib.FTP_TLS:
    context = ssl.create_default_context(cafile=str(exchange.ftps_certificate))
    client = ftplib.FTP_TLS(context=context, timeout=10)
    client.connect(LOOPBACK, exchange.ftps_port)
    client.login("acme", password)
    client.prot_p()
    return client


def test_a_partner_pushes_and_pulls_files_over_ftps_through_the_passive_ports_given(exchanges):
    data_port = free_port()
    exchange, password = ftps_exchange(exchanges, "--ftps-passive-ports", f"{data_port}-{data_port}")
    (exchange.folder("acme", "outbox") / "prices.csv").write_text("sku,price\nA,1\n")
    client = login(exchange, password)
    try:
        client.storbinary("STOR inbox/orders.csv", io.BytesIO(b"id\n1\n"))
        pulled = io.BytesIO()
        client.retrbinary("RETR outbox/prices.csv", pulled.write)
        listing = client.nlst()
        assert client.makepasv()[1] == data_port
    finally:
        client.quit()

    assert (exchange.folder("acme", "inbox") / "orders.csv").read_bytes() == b"id\n1\n"
    assert pulled.getvalue() == b"sku,price\nA,1\n"
    assert listing == ["inbox", "outbox"]
    certificate = x509.load_pem_x509_certificate(exchange.ftps_certificate.read_bytes())
    assert exchange.ftps_fingerprint == certificate.fingerprint(hashes.SHA256()).hex(":").upper()
    assert "ftps login: partner 'acme' from 127.0.0.1 (password)" in exchange.log()


def test_plain_ftp_is_refused_before_any_password_is_sent(exchanges):
    exchange, password = ftps_exchange(exchanges)
    client = ftplib.FTP(timeout=10)
    client.connect(LOOPBACK, exchange.ftps_port)
    try:
        with pytest.raises(ftplib.error_perm, match="SSL/TLS required"):
            client.sendcmd("USER acme")
    finally:
        client.close()
    assert password not in exchange.log()


def test_ftps_refuses_paths_outside_the_folders_a_wrong_password_and_uploads_past_the_quota(exchanges):
    exchange, password = ftps_exchange(exchanges, quota={"max_files": 5, "max_bytes": 1000})
    context = ssl.create_default_context(cafile=str(exchange.ftps_certificate))
    wrong = ftplib.FTP_TLS(context=context, timeout=10)
    wrong.connect(LOOPBACK, exchange.ftps_port)
    with pytest.raises(ftplib.error_perm):
        wrong.login("acme", password + "x")
    wrong.close()
    client = login(exchange, password)
    try:
        for command in ("RETR ../exchange/resources/partners.yaml", "RETR /etc/passwd", "RETR outbox/../../x"):
            with pytest.raises(ftplib.error_perm):
                client.retrbinary(command, lambda _: None)
        for command in ("STOR outbox/x.csv", "STOR ../x.csv", "APPE inbox/x.csv"):
            with pytest.raises(ftplib.error_perm):
                client.storbinary(command, io.BytesIO(b"x"))
        with pytest.raises(ftplib.error_perm):
            client.mkd("inbox/sub")
    finally:
        client.close()  # after refused transfers ftplib's session is not reused (a data channel may be half open)
    client = login(exchange, password)
    try:
        # The server ends the data connection at the write past the quota: the client sees the transfer fail.
        with pytest.raises((ftplib.Error, OSError)):
            client.storbinary("STOR inbox/huge.csv", io.BytesIO(b"x" * 5000))
    finally:
        client.close()
    assert list(exchange.folder("acme", "inbox").iterdir()) == []
    log = exchange.log()
    assert "quota exceeded: your inbox may hold at most 1,000 bytes" in log
    assert "ftps login refused: partner 'acme' from 127.0.0.1: wrong password" in log
    assert password not in log
    # The server discards the refused upload when it sees the data connection end: wait for it, briefly.
    uploads = exchange.storage / "partners" / "acme" / ".uploads"
    deadline = time.monotonic() + 10
    while list(uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(uploads.iterdir()) == []


def test_sessions_are_served_side_by_side(exchanges):
    """A session that holds its upload open does not hold up another's login or upload (and the open upload is
    not in the inbox until it completes)."""
    exchange, password = ftps_exchange(exchanges)
    first = login(exchange, password)
    try:
        first.voidcmd("TYPE I")
        upload = first.transfercmd("STOR inbox/slow.csv")  # open, and left open
        try:
            upload.sendall(b"id\n")
            second = login(exchange, password)
            try:
                second.storbinary("STOR inbox/quick.csv", io.BytesIO(b"id\n2\n"))
            finally:
                second.quit()
            inbox = exchange.folder("acme", "inbox")
            assert sorted(path.name for path in inbox.iterdir()) == ["quick.csv"]  # slow.csv still uploading
        finally:
            upload.close()
        first.voidresp()
    finally:
        first.quit()
    assert (exchange.folder("acme", "inbox") / "slow.csv").read_bytes() == b"id\n"
