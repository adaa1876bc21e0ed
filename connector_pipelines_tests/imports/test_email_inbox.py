"""EmailReceiver: a real SMTP receiver (aiosmtpd) on loopback, driven by smtplib as a partner's mail server would."""

from __future__ import annotations

import email.policy
import fnmatch
import gzip
import hashlib
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from connector_pipelines.imports.email_inbox import (
    INCOMING_FOLDER,
    EmailReceiver,
    InboxRoute,
    unsafe_name_reason,
)
from connector_pipelines_tests.servers import SelfSignedCertificate

pytestmark = pytest.mark.timeout(60)

CONVERSIONS = "conversions@imports.example.test"
REFUNDS = "refunds@imports.example.test"
PARTNER = "feeds@partner.example"


def matching(pattern: str):
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def route(folder: Path, address: str = CONVERSIONS, senders=(PARTNER,), pattern: str = "conversions_*.csv*"):
    return InboxRoute(address=address, folder=folder, allowed_senders=tuple(senders), pattern=matching(pattern))


def message(*attachments: tuple[str, bytes], sender: str = PARTNER, to: str = CONVERSIONS) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, to, "Daily conversions"
    mail.set_content("Attached.")
    for name, data in attachments:
        mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return mail


def send(receiver: EmailReceiver, mail: EmailMessage, sender: str = PARTNER, to=(CONVERSIONS,)) -> None:
    with smtplib.SMTP(receiver.host, receiver.port, local_hostname="mta.partner.example", timeout=10) as client:
        client.send_message(mail, sender, list(to))  # CRLF line ends, as on the wire


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.is_file())


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[EmailReceiver]:
    with EmailReceiver([route(tmp_path / "conversions")], server_name="inbox.example.test") as receiver:
        yield receiver


def test_an_accepted_attachment_is_saved_byte_identical(inbox, tmp_path):
    data = gzip.compress(b"id;amount\r\n1;1.234,56\r\n" * 1000) + bytes(range(256))
    csv = "id,name\r\nAda,Zoë\r\n".encode()

    send(inbox, message(("conversions_20240131.csv.gz", data), ("conversions_20240131.csv", csv)))

    folder = tmp_path / "conversions"
    assert files_in(folder) == ["conversions_20240131.csv", "conversions_20240131.csv.gz"]
    assert (folder / "conversions_20240131.csv.gz").read_bytes() == data
    assert (folder / "conversions_20240131.csv").read_bytes() == csv
    assert list((folder / INCOMING_FOLDER).iterdir()) == []  # no temporary file left behind
    saved = [event for event in inbox.events if event.kind == "saved"]
    assert [(e.attachment, e.path, e.sha256, e.size, e.sender, e.recipient) for e in saved] == [
        (
            "conversions_20240131.csv.gz",
            folder / "conversions_20240131.csv.gz",
            sha(data),
            len(data),
            PARTNER,
            CONVERSIONS,
        ),
        ("conversions_20240131.csv", folder / "conversions_20240131.csv", sha(csv), len(csv), PARTNER, CONVERSIONS),
    ]


def test_a_name_already_taken_gets_a_number_before_the_extension(inbox, tmp_path):
    for _ in range(3):
        send(inbox, message(("conversions_1.csv.gz", b"\x1f\x8b..."), ("conversions_1.csv", b"x")))

    assert files_in(tmp_path / "conversions") == [
        "conversions_1 (2).csv",
        "conversions_1 (2).csv.gz",
        "conversions_1 (3).csv",
        "conversions_1 (3).csv.gz",
        "conversions_1.csv",
        "conversions_1.csv.gz",
    ]


def test_a_sender_not_on_the_allow_list_is_refused_at_rcpt(inbox, tmp_path):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        send(inbox, message(("conversions_1.csv", b"x")), sender="mallory@elsewhere.example")

    assert caught.value.recipients == {CONVERSIONS: (550, b"5.7.1 sender not allowed")}
    assert files_in(tmp_path / "conversions") == []
    (event,) = inbox.events
    assert (event.kind, event.sender, event.recipient) == ("sender_refused", "mallory@elsewhere.example", CONVERSIONS)


def test_an_unknown_recipient_is_refused(inbox, tmp_path):
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        send(inbox, message(("conversions_1.csv", b"x")), to=["nobody@imports.example.test"])

    assert caught.value.recipients == {"nobody@imports.example.test": (550, b"5.1.1 no such mailbox")}
    assert files_in(tmp_path / "conversions") == []
    assert [event.kind for event in inbox.events] == ["unknown_recipient"]


def test_an_unsafe_attachment_name_is_never_written_outside_the_folder(inbox, tmp_path):
    send(inbox, message(("../conversions_evil.csv", b"evil"), ("conversions_ok.csv", b"ok")))

    assert files_in(tmp_path / "conversions") == ["conversions_ok.csv"]
    assert not (tmp_path / "conversions_evil.csv").exists()
    assert sorted(path.name for path in tmp_path.rglob("*evil*")) == []
    (skipped,) = [event for event in inbox.events if event.kind == "skipped"]
    assert (skipped.attachment, skipped.detail) == ("../conversions_evil.csv", "the name contains a path separator")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("..", "the name starts with a dot"),
        (".hidden.csv", "the name starts with a dot"),
        ("a\\b.csv", "the name contains a path separator"),
        ("/etc/passwd", "the name contains a path separator"),
        ("a\x00b.csv", "the name contains control or formatting characters"),
        ("report\u202evsc.exe", "the name contains control or formatting characters"),
        ("a.csv ", "the name starts or ends with a space"),
        ("   ", "the name is empty"),
        ("x" * 252 + ".csv", "the name is longer than 255 bytes"),
        ("conversions 2024-01 (final).csv", None),
        ("ventes_été.csv", None),
    ],
)
def test_unsafe_names(name, reason):
    assert unsafe_name_reason(name) == reason


def test_a_non_matching_attachment_is_skipped_and_a_message_with_nothing_kept_is_refused(inbox, tmp_path):
    send(inbox, message(("image001.png", b"\x89PNG"), ("conversions_1.csv", b"x")))
    assert files_in(tmp_path / "conversions") == ["conversions_1.csv"]
    (skipped,) = [event for event in inbox.events if event.kind == "skipped"]
    assert (skipped.attachment, skipped.detail) == ("image001.png", "the name does not match the connector's pattern")

    with pytest.raises(smtplib.SMTPDataError) as caught:
        send(inbox, message(("orders.xlsx", b"PK")))
    assert caught.value.smtp_code == 554
    assert caught.value.smtp_error == b"5.6.0 no attachment with a name this address accepts; nothing was kept"
    assert files_in(tmp_path / "conversions") == ["conversions_1.csv"]
    assert inbox.events[-1].kind == "nothing_kept"


def test_two_routes_save_into_their_own_folders(tmp_path):
    routes = [
        route(tmp_path / "conversions"),
        route(tmp_path / "refunds", address="Refunds@Imports.Example.Test", pattern="refunds_*.csv"),
    ]
    with EmailReceiver(routes, server_name="inbox.example.test") as receiver:
        send(receiver, message(("conversions_1.csv", b"c")))
        send(receiver, message(("refunds_1.csv", b"r"), to=REFUNDS), to=[REFUNDS.upper()])
        # One message to both: each route keeps what matches its own pattern.
        send(receiver, message(("conversions_2.csv", b"c2"), ("refunds_2.csv", b"r2")), to=[CONVERSIONS, REFUNDS])

    assert files_in(tmp_path / "conversions") == ["conversions_1.csv", "conversions_2.csv"]
    assert files_in(tmp_path / "refunds") == ["refunds_1.csv", "refunds_2.csv"]
    assert (tmp_path / "refunds" / "refunds_2.csv").read_bytes() == b"r2"


def test_a_domain_on_the_allow_list_admits_its_addresses_only(tmp_path):
    conversions = route(tmp_path / "conversions", senders=("@partner.example", "ops@other.example"))
    with EmailReceiver([conversions], server_name="inbox.example.test") as receiver:
        send(receiver, message(("conversions_1.csv", b"1")), sender="Anyone@Partner.Example")
        send(receiver, message(("conversions_2.csv", b"2")), sender="ops@other.example")
        for refused in ("a@sub.partner.example", "a@evilpartner.example", "partner.example@evil.example", ""):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send(receiver, message(("conversions_3.csv", b"3")), sender=refused)

    assert files_in(tmp_path / "conversions") == ["conversions_1.csv", "conversions_2.csv"]


def test_an_oversized_message_is_refused(tmp_path):
    big = message(("conversions_1.csv", b"x" * 40_000))
    with EmailReceiver([route(tmp_path / "in")], max_message_bytes=20_000, server_name="inbox.test") as receiver:
        # A client that announces the size (smtplib does) is refused at MAIL ...
        with pytest.raises(smtplib.SMTPSenderRefused) as announced:
            send(receiver, big)
        assert announced.value.smtp_code == 552
        # ... and one that does not is refused after DATA, without anything being kept.
        with smtplib.SMTP(receiver.host, receiver.port, local_hostname="mta.test", timeout=10) as client:
            client.ehlo()
            assert client.mail(PARTNER)[0] == 250
            assert client.rcpt(CONVERSIONS)[0] == 250
            code, _ = client.data(big.as_bytes(policy=email.policy.SMTP))
        assert code == 552

    assert files_in(tmp_path / "in") == []


def test_starttls_can_be_required(tmp_path):
    certificate = SelfSignedCertificate.create(tmp_path / "tls")
    receiver = EmailReceiver(
        [route(tmp_path / "in")],
        tls_cert=certificate.cert_file,
        tls_key=certificate.key_file,
        require_tls=True,
        server_name="localhost",
    )
    with receiver:
        with smtplib.SMTP(receiver.host, receiver.port, local_hostname="mta.test", timeout=10) as client:
            client.ehlo()
            assert client.mail(PARTNER)[0] == 530  # "Must issue a STARTTLS command first"
        with smtplib.SMTP(receiver.host, receiver.port, local_hostname="mta.test", timeout=10) as client:
            client.starttls(context=ssl.create_default_context(cafile=str(certificate.cert_file)))
            client.send_message(message(("conversions_1.csv", b"secret")), PARTNER, [CONVERSIONS])

    assert (tmp_path / "in" / "conversions_1.csv").read_bytes() == b"secret"


def test_port_zero_binds_a_free_port_and_stop_releases_it(tmp_path):
    receiver = EmailReceiver([route(tmp_path / "in")], server_name="inbox.test").start()
    port = receiver.port
    assert port > 0
    send(receiver, message(("conversions_1.csv", b"x")))
    receiver.stop()
    receiver.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", port, local_hostname="mta.test", timeout=5)


def test_route_validation(tmp_path):
    with pytest.raises(ValueError, match="allowed_senders is empty"):
        InboxRoute(CONVERSIONS, tmp_path, (), matching("*"))
    with pytest.raises(ValueError, match="neither an address nor @domain"):
        InboxRoute(CONVERSIONS, tmp_path, ("partner.example",), matching("*"))
    with pytest.raises(ValueError, match="two routes"):
        EmailReceiver([route(tmp_path / "a"), route(tmp_path / "b", address=CONVERSIONS.upper())])
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        EmailReceiver([route(tmp_path / "a")], tls_cert=tmp_path / "cert.pem")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
