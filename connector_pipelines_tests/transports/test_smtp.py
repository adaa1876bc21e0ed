"""SmtpClient against a real SMTP server (aiosmtpd): the file arrives as an attachment; TLS and login."""

from __future__ import annotations

import hashlib
import logging

import pytest

from connector_pipelines.errors import TransportError
from connector_pipelines.spec.extract import FileDestination
from connector_pipelines.transports.smtp import SmtpClient, attachment_type
from connector_pipelines_tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mail(to=("ops@example.test",), cc=(), subject=None, body=None) -> FileDestination:
    return FileDestination(connection="mailer", to=list(to), cc=list(cc), subject=subject, body=body)


def the_attachment(message):
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    return attachments[0]


def test_the_file_arrives_as_an_attachment_with_defaults(smtp_inbox, make_file):
    local = make_file("orders_20240101.csv", 4_000)
    client = SmtpClient(**smtp_inbox.client_kwargs())

    receipt = client.upload(local, "orders_20240101.csv", mail(to=["a@example.test", "b@example.test"]))

    assert receipt.uri == "mailto:a@example.test,b@example.test"
    (message,) = smtp_inbox.messages
    assert message["Subject"] == "orders_20240101.csv"
    assert message["From"] == smtp_inbox.from_address
    assert message["To"] == "a@example.test, b@example.test"
    assert message["Cc"] is None
    assert message.get_body(("plain",)).get_content().strip() == "Attached: orders_20240101.csv (4,000 bytes)."
    attachment = the_attachment(message)
    assert attachment.get_filename() == "orders_20240101.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_payload(decode=True) == local.read_bytes()


def test_cc_subject_body_and_a_large_gzip_attachment(smtp_inbox, make_file):
    local = make_file("orders.csv.gz", 3 * 1024 * 1024)
    destination = mail(to=["a@example.test"], cc=["c@example.test"], subject="Daily orders", body="See attached.")

    receipt = SmtpClient(**smtp_inbox.client_kwargs()).upload(local, "orders.csv.gz", destination)

    assert receipt.uri == "mailto:a@example.test?cc=c@example.test"
    (message,) = smtp_inbox.messages
    (envelope,) = smtp_inbox.envelopes
    assert envelope.rcpt_tos == ["a@example.test", "c@example.test"]
    assert envelope.mail_from == smtp_inbox.from_address
    assert message["Cc"] == "c@example.test"
    assert message["Subject"] == "Daily orders"
    assert message.get_body(("plain",)).get_content().strip() == "See attached."
    attachment = the_attachment(message)
    assert attachment.get_content_type() == "application/gzip"
    assert sha256(attachment.get_payload(decode=True)) == sha256(local.read_bytes())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", "text/csv"),
        ("a.tsv", "text/tab-separated-values"),
        ("a.jsonl", "application/jsonl"),
        ("a.parquet", "application/vnd.apache.parquet"),
        ("a.csv.gz", "application/gzip"),
        ("a.pdf", "application/pdf"),
        ("a.unknownext", "application/octet-stream"),
    ],
)
def test_attachment_types(name, expected):
    assert "/".join(attachment_type(name)) == expected


def test_starttls_with_login(smtp_starttls_server, make_file):
    smtp_starttls_server.clear()
    local = make_file("secure.csv", 10_000)

    SmtpClient(**smtp_starttls_server.client_kwargs()).upload(local, "secure.csv", mail())

    assert smtp_starttls_server.logins == [smtp_starttls_server.username]
    (message,) = smtp_starttls_server.messages
    assert the_attachment(message).get_payload(decode=True) == local.read_bytes()


def test_smtps_with_login(smtps_server, make_file):
    smtps_server.clear()
    SmtpClient(**smtps_server.client_kwargs()).upload(make_file("s.csv", 100), "s.csv", mail())
    assert smtps_server.logins == [smtps_server.username]
    assert len(smtps_server.messages) == 1


def test_a_wrong_password_fails_without_showing_it(smtp_starttls_server, make_file, caplog, render_error):
    smtp_starttls_server.clear()
    secret = "wrong-pw-smtp-0e4f72"
    caplog.set_level(logging.DEBUG)

    with pytest.raises(TransportError) as failed:
        SmtpClient(**smtp_starttls_server.client_kwargs(password=secret)).upload(
            make_file("x.csv", 10), "x.csv", mail()
        )

    assert str(failed.value) == (f"smtp 127.0.0.1:{smtp_starttls_server.port}: authentication failed for user 'mailer'")
    rendered = render_error(failed.value)
    assert "During handling" not in rendered and secret not in rendered
    assert secret not in caplog.text and smtp_starttls_server.password not in caplog.text
    assert smtp_starttls_server.messages == []


def test_an_unverifiable_certificate_is_refused(smtp_starttls_server, make_file):
    smtp_starttls_server.clear()
    with pytest.raises(TransportError, match="certificate could not be verified"):
        SmtpClient(**smtp_starttls_server.client_kwargs(ca_file=None)).upload(make_file("x.csv", 10), "x.csv", mail())
    assert smtp_starttls_server.messages == []


def test_a_password_is_never_sent_in_clear(smtp_inbox, make_file):
    client = SmtpClient(**smtp_inbox.client_kwargs(username="mailer", password="pw-never-sent-2d8e"))
    with pytest.raises(TransportError, match="refusing to send the password over an unencrypted connection"):
        client.upload(make_file("x.csv", 10), "x.csv", mail())
    assert smtp_inbox.messages == []


def test_recipients_are_required_and_names_are_checked(smtp_inbox, make_file):
    client = SmtpClient(**smtp_inbox.client_kwargs())
    with pytest.raises(TransportError, match="no `to` recipients"):
        client.upload(make_file("x.csv", 10), "x.csv", mail(to=()))
    for name in ("../x.csv", "a/b.csv", ".hidden"):
        with pytest.raises(TransportError, match="not a plain file name"):
            client.upload(make_file("x.csv", 10), name, mail())
    assert smtp_inbox.messages == []


def test_a_closed_port_is_a_transport_error(make_file):
    client = SmtpClient(host="127.0.0.1", port=free_port(), from_address="x@example.test", timeout_seconds=5)
    with pytest.raises(TransportError, match=r"smtp 127\.0\.0\.1:\d+: sending 'x.csv' failed: Connection refused"):
        client.upload(make_file("x.csv", 10), "x.csv", mail())
