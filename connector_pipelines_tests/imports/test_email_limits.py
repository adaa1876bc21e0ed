"""The email receiver's limits, against the real receiver on loopback driven by smtplib: message size (advertised,
enforced during DATA), sessions at once, recipients a message, the inbox quota and the command timeout; and mail
within the limits still accepted."""

from __future__ import annotations

import email.policy
import fnmatch
import logging
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from connector_pipelines.imports import email_inbox
from connector_pipelines.imports.email_inbox import (
    INCOMING_FOLDER,
    EmailReceiver,
    InboxRoute,
    folder_bytes,
    format_size,
    parse_size,
    quota_refusal,
)

pytestmark = pytest.mark.timeout(60)

ADDRESS = "conversions@imports.example.test"
PARTNER = "feeds@partner.example"


def route(folder: Path) -> InboxRoute:
    return InboxRoute(ADDRESS, folder, (PARTNER,), lambda name: fnmatch.fnmatchcase(name, "conversions_*.csv"))


def message(name: str, data: bytes) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = PARTNER, ADDRESS, "Conversions"
    mail.set_content("Attached.")
    mail.add_attachment(data, maintype="text", subtype="csv", filename=name)
    return mail


def connect(receiver: EmailReceiver) -> smtplib.SMTP:
    return smtplib.SMTP(receiver.host, receiver.port, local_hostname="mta.partner.example", timeout=10)


def send(receiver: EmailReceiver, mail: EmailMessage) -> dict:
    with connect(receiver) as client:
        return client.send_message(mail, PARTNER, [ADDRESS])


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.is_file())


def kinds(receiver: EmailReceiver) -> list[str]:
    return [event.kind for event in receiver.events]


# ------------------------------------------------------------------------------------------------
# message size


def test_the_size_limit_is_advertised_and_a_message_over_it_is_refused_during_data_with_nothing_written(tmp_path):
    inbox = tmp_path / "in"
    big = message("conversions_big.csv", b"x" * 40_000).as_bytes(policy=email.policy.SMTP)
    with EmailReceiver([route(inbox)], max_message_bytes=20_000, server_name="inbox.test") as receiver:
        with connect(receiver) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "20000"
            # No SIZE announced at MAIL: the receiver only learns it while reading DATA.
            assert client.mail(PARTNER)[0] == 250
            assert client.rcpt(ADDRESS)[0] == 250
            code, reply = client.data(big)
            assert (code, reply) == (552, b"5.3.4 message too big: at most 19.5 KiB (20,000 bytes) is accepted")
            assert files_in(inbox) == []
            assert list((inbox / INCOMING_FOLDER).iterdir()) == []
            # The session goes on: a message within the limit is kept.
            client.send_message(message("conversions_1.csv", b"id\n1\n"), PARTNER, [ADDRESS])

    assert files_in(inbox) == ["conversions_1.csv"]
    (refused,) = [event for event in receiver.events if event.kind == "too_large"]
    assert (refused.sender, refused.recipient) == (PARTNER, ADDRESS)
    assert refused.detail == "more than 20,000 bytes sent; the rest was not kept"


def test_a_message_announced_over_the_limit_is_refused_at_mail(tmp_path):
    with EmailReceiver([route(tmp_path / "in")], max_message_bytes=20_000, server_name="inbox.test") as receiver:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(receiver, message("conversions_big.csv", b"x" * 40_000))  # smtplib announces SIZE
    assert refused.value.smtp_code == 552
    assert files_in(tmp_path / "in") == []
    assert "too_large" in kinds(receiver)


# ------------------------------------------------------------------------------------------------
# inbox quota


def test_a_full_inbox_refuses_the_next_message_with_452_and_a_log_line(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(email_inbox, "QUOTA_RESCAN_SECONDS", 0.0)  # measure the folder on every check
    inbox = tmp_path / "in"
    (inbox / "archive").mkdir(parents=True)
    (inbox / "archive" / "conversions_0.csv").write_bytes(b"a" * 1_000)  # archived files count too
    with EmailReceiver([route(inbox)], inbox_quota_bytes=4_000, server_name="inbox.test") as receiver:
        send(receiver, message("conversions_1.csv", b"1" * 2_000))
        with caplog.at_level(logging.WARNING, logger="connector_pipelines.imports.email_inbox"):
            # 1,000 + 2,000 held: 2,000 more would not fit, so the message is refused at DATA, nothing kept.
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(receiver, message("conversions_2.csv", b"2" * 2_000))
            assert refused.value.smtp_code == 452
            assert refused.value.smtp_error == b"4.2.2 the inbox is full (2.9 KiB of 3.9 KiB used); try again later"
            assert files_in(inbox) == ["conversions_1.csv"]
            # 1,000 more fit exactly; after that the inbox is full and refuses recipients at RCPT.
            send(receiver, message("conversions_3.csv", b"3" * 1_000))
            with pytest.raises(smtplib.SMTPRecipientsRefused) as full:
                send(receiver, message("conversions_4.csv", b"4"))
            assert full.value.recipients[ADDRESS][0] == 452
        assert files_in(inbox) == ["conversions_1.csv", "conversions_3.csv"]
        assert list((inbox / INCOMING_FOLDER).iterdir()) == []
        logged = [record.getMessage() for record in caplog.records if "over_quota" in record.getMessage()]
        assert len(logged) == 2
        assert logged[0].startswith(f"inbox over_quota: from {PARTNER} to {ADDRESS} ({inbox}: 2,000 bytes would not")

        # The import moves the files out (here: they are removed), and mail is accepted again.
        (inbox / "conversions_1.csv").unlink()
        (inbox / "conversions_3.csv").unlink()
        send(receiver, message("conversions_5.csv", b"5"))
    assert files_in(inbox) == ["conversions_5.csv"]


def test_quota_decisions():
    assert quota_refusal(used=0, incoming=100, quota=100) is None
    assert quota_refusal(used=99, incoming=0, quota=100) is None
    assert quota_refusal(used=100, incoming=0, quota=100) == (
        "452 4.2.2 the inbox is full (100 bytes of 100 bytes used); try again later"
    )
    assert quota_refusal(used=50, incoming=51, quota=100).startswith("452 4.2.2 the inbox is full")
    assert quota_refusal(used=0, incoming=101, quota=100) == (
        "552 5.3.4 the files are bigger than the inbox's whole quota of 100 bytes"
    )


def test_folder_bytes_counts_regular_files_below_and_not_what_symlinks_point_at(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 10_000)
    inbox = tmp_path / "in"
    (inbox / "archive" / "2024").mkdir(parents=True)
    (inbox / "a.csv").write_bytes(b"a" * 10)
    (inbox / "archive" / "2024" / "b.csv").write_bytes(b"b" * 20)
    (inbox / "link.csv").symlink_to(outside)
    assert folder_bytes(inbox) == 30
    assert folder_bytes(tmp_path / "missing") == 0


# ------------------------------------------------------------------------------------------------
# sessions, recipients, timeout


def test_too_many_sessions_are_turned_away_with_421_until_one_ends(tmp_path):
    inbox = tmp_path / "in"
    with EmailReceiver([route(inbox)], max_sessions=2, server_name="inbox.test") as receiver:
        first, second = connect(receiver), connect(receiver)
        with pytest.raises(smtplib.SMTPConnectError) as turned_away:
            connect(receiver)
        assert turned_away.value.smtp_code == 421
        assert turned_away.value.smtp_error == b"4.7.0 too many connections at once; try again later"
        # The open sessions still work.
        first.send_message(message("conversions_1.csv", b"1"), PARTNER, [ADDRESS])
        second.quit()
        deadline = time.monotonic() + 10
        while True:  # the receiver sees the session end a moment after QUIT
            try:
                third = connect(receiver)
                break
            except smtplib.SMTPConnectError:
                assert time.monotonic() < deadline, "a session slot was not freed after QUIT"
                time.sleep(0.05)
        third.send_message(message("conversions_2.csv", b"2"), PARTNER, [ADDRESS])
        third.quit()
        first.quit()

    assert files_in(inbox) == ["conversions_1.csv", "conversions_2.csv"]
    refusals = [event for event in receiver.events if event.kind == "too_many_sessions"]
    assert refusals and refusals[0].detail.endswith("turned away: 2 sessions are open")


def test_recipients_past_the_limit_are_refused_with_452(tmp_path):
    with EmailReceiver([route(tmp_path / "in")], max_recipients=2, server_name="inbox.test") as receiver:
        with connect(receiver) as client:
            client.ehlo()
            client.mail(PARTNER)
            assert client.rcpt("nobody@imports.example.test")[0] == 550  # refused ones count too
            assert client.rcpt(ADDRESS)[0] == 250
            assert client.rcpt(ADDRESS) == (452, b"4.5.3 too many recipients: at most 2 a message")
            # The recipients accepted before the limit still get the message.
            assert client.data(message("conversions_1.csv", b"1").as_bytes(policy=email.policy.SMTP))[0] == 250
            # A new message starts a new count.
            client.mail(PARTNER)
            assert client.rcpt(ADDRESS)[0] == 250
    assert "too_many_recipients" in kinds(receiver)
    assert files_in(tmp_path / "in") == ["conversions_1.csv"]


def test_a_session_idle_past_the_timeout_is_ended(tmp_path):
    with EmailReceiver([route(tmp_path / "in")], timeout_seconds=0.5, server_name="inbox.test") as receiver:
        with connect(receiver) as client:
            client.ehlo()
            time.sleep(1.5)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.mail(PARTNER)
                client.rcpt(ADDRESS)  # the closed connection shows at the first or the second command


def test_the_defaults_and_their_validation(tmp_path):
    receiver = EmailReceiver([route(tmp_path / "in")])
    assert (
        receiver.max_sessions,
        receiver.max_message_bytes,
        receiver.max_recipients,
        receiver.inbox_quota_bytes,
        receiver.timeout_seconds,
    ) == (10, 50 * 1024**2, 10, 10 * 1024**3, 300)
    assert receiver.describe_limits() == (
        "10 sessions at once, 50 MiB a message, 10 recipients a message, 10 GiB an inbox, 300 s a command"
    )
    for setting in ("max_sessions", "max_message_bytes", "max_recipients", "inbox_quota_bytes", "timeout_seconds"):
        with pytest.raises(ValueError, match=f"{setting} must be a positive number, not 0"):
            EmailReceiver([route(tmp_path / "in")], **{setting: 0})


@pytest.mark.parametrize(
    ("text", "size"),
    [("52428800", 52_428_800), ("50MiB", 50 * 1024**2), ("50 MB", 50_000_000), ("10GiB", 10 * 1024**3), ("1.5k", 1500)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-5MB", "0", "12 parsecs"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="is not a size; write bytes"):
        parse_size(text)


def test_format_size():
    assert [format_size(size) for size in (999, 1024, 1536, 50 * 1024**2, 10 * 1024**3)] == [
        "999 bytes",
        "1 KiB",
        "1.5 KiB",
        "50 MiB",
        "10 GiB",
    ]
