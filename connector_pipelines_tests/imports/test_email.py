"""Email imports end to end: a partner's mail server (smtplib) sends files to the import's address; the receiver
(routes built from the project, in process and through the real `receive-email` command) keeps the attachments
that an allowed sender sent and that match the pattern, in the import's inbox folder; the file sensor asks for a
run and the Dagster job loads them into PostgreSQL, archives them, and recognises a file sent twice.
"""

from __future__ import annotations

import os
import queue
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
import pytest

from connector_pipelines.imports.email_inbox import EmailReceiver
from connector_pipelines.imports.email_routes import inbox_routes
from connector_pipelines.storage import Storage

pytestmark = pytest.mark.timeout(60)

NAME = "conversions_mail"
SENSOR = f"import_{NAME}_files"
ADDRESS = "conversions@imports.example.test"
PARTNER = "feeds@partner.example"
# The installed command (beside this interpreter in a virtual environment), else the same entry point by module.
_SCRIPT = Path(sys.executable).with_name("connector-pipelines")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "connector_pipelines.cli"]
TARGET_DDL = "CREATE TABLE conversions (conversion_id INTEGER PRIMARY KEY, campaign VARCHAR(80), amount NUMERIC(12,2))"
MAPPING = [
    {"target": "conversion_id", "source": "id", "type": "integer", "parse": "integer"},
    {"target": "campaign", "source": "campaign"},
    {"target": "amount", "source": "amount", "type": "currency", "parse": "currency:eu"},
]
CSV = "id;campaign;amount\n1;spring;1.234,50 €\n2;summer;0,99\n"


def email_import(import_project, database, **connector) -> Path:
    """The import's spec and target table; returns its inbox folder (where the receiver saves attachments)."""
    database.execute(TARGET_DDL)
    import_project.add_database(database, "crm")
    import_project.add_import(
        NAME,
        {
            "source": {
                "email": {
                    "address": ADDRESS,
                    "allowed_senders": [PARTNER, "@trusted.example"],
                    "pattern": "Conversions_*.csv",
                    "csv": {"delimiter": ";"},
                }
            },
            "target": {"connection": "crm", "table": "conversions", "key": "conversion_id"},
            "mapping": MAPPING,
        },
        **connector,
    )
    project = import_project.project()
    return Storage.for_project(project.base_dir).import_inbox_dir(NAME)


def message(*attachments: tuple[str, bytes], sender: str = PARTNER) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = sender, ADDRESS, "Conversions"
    mail.set_content("Attached.")
    for name, data in attachments:
        mail.add_attachment(data, maintype="text", subtype="csv", filename=name)
    return mail


def send(port: int, mail: EmailMessage, sender: str = PARTNER) -> dict:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mta.partner.example", timeout=10) as client:
        return client.send_message(mail, sender, [ADDRESS])


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.is_file()) if folder.exists() else []


def table(database) -> dict:
    return {r["conversion_id"]: r for r in database.query("SELECT * FROM conversions ORDER BY conversion_id")}


@pytest.fixture
def receiver(import_project, pg_database) -> Iterator[tuple[EmailReceiver, Path]]:
    inbox = email_import(import_project, pg_database)
    with EmailReceiver(inbox_routes(import_project.project()), server_name="inbox.example.test") as running:
        yield running, inbox


def tick(import_project, instance, cursor: str | None):
    """One evaluation of the import's file sensor (which lists the inbox folder itself: no resources)."""
    return import_project.sensor_tick(SENSOR, instance, cursor)


def launch(import_project, instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return import_project.launch_request(NAME, instance, request)


def test_an_allowed_senders_attachment_is_kept_and_the_sensor_and_job_import_it(
    import_project, fresh_instance, pg_database, receiver
):
    running, inbox = receiver
    assert inbox == import_project.storage / "inboxes" / NAME
    refused = send(running.port, message(("Conversions_2024_03.csv", CSV.encode()), ("logo.png", b"\x89PNG")))
    assert refused == {}
    # Only the attachment matching the pattern is kept; the other one is skipped.
    assert files_in(inbox) == ["Conversions_2024_03.csv"]
    assert (inbox / "Conversions_2024_03.csv").read_text() == CSV
    skipped = [(e.attachment, e.detail) for e in running.events if e.kind == "skipped"]
    assert skipped == [("logo.png", "the name does not match the connector's pattern")]

    import_project.record_preview(NAME)
    first = tick(import_project, fresh_instance, None)  # just received: it waits one tick to settle
    assert first.run_requests == [] and first.skip_message == "1 file(s) waiting to settle"
    second = tick(import_project, fresh_instance, first.cursor)
    (request,) = second.run_requests
    assert request.run_config["ops"][f"import__{NAME}__conversions"]["config"] == {"files": ["Conversions_2024_03.csv"]}
    assert launch(import_project, fresh_instance, request).success
    rows = table(pg_database)
    assert {key: (r["campaign"], str(r["amount"])) for key, r in rows.items()} == {
        1: ("spring", "1234.50"),
        2: ("summer", "0.99"),
    }
    assert files_in(inbox) == [] and files_in(inbox / "archive") == ["Conversions_2024_03.csv"]

    # The partner sends the same file again: saved beside under a numbered name, recognised by its checksum.
    send(running.port, message(("Conversions_2024_03.csv", CSV.encode())), sender="ops@trusted.example")
    assert files_in(inbox) == ["Conversions_2024_03.csv"]  # the first one was archived: its name is free again
    pg_database.execute("DELETE FROM conversions")
    run = import_project.run_import(NAME, fresh_instance)
    assert run.success, run.failure()
    assert run.files["Conversions_2024_03.csv"]["status"] == "duplicate"
    assert table(pg_database) == {}  # not loaded again
    state = import_project.state()
    try:
        latest = state.files(NAME)[-1]
    finally:
        state.dispose()
    assert (latest.name, latest.status, latest.run_id) == ("Conversions_2024_03.csv", "duplicate", run.run_id)
    # (Same name and same bytes: see test_import_files.py::test_a_file_redelivered_under_the_same_name_is_never_
    # loaded_twice for what becomes of the first record.)


def test_a_file_sent_twice_before_the_import_ran_gets_a_numbered_name_and_is_a_duplicate(
    import_project, instance, pg_database, receiver
):
    running, inbox = receiver
    for _ in range(2):
        send(running.port, message(("Conversions_2024_03.csv", CSV.encode())))
    assert files_in(inbox) == ["Conversions_2024_03 (2).csv", "Conversions_2024_03.csv"]
    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert {name: f["status"] for name, f in run.files.items()} == {
        "Conversions_2024_03 (2).csv": "imported",  # taken first, in name order
        "Conversions_2024_03.csv": "duplicate",
    }
    assert sorted(table(pg_database)) == [1, 2]
    assert files_in(inbox / "archive") == ["Conversions_2024_03 (2).csv", "Conversions_2024_03.csv"]


def test_an_unknown_sender_is_refused_with_550_and_nothing_is_saved(receiver):
    running, inbox = receiver
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        send(running.port, message(("Conversions_2024_03.csv", CSV.encode())), sender="mallory@elsewhere.example")
    ((code, text),) = caught.value.recipients.values()
    assert (code, text) == (550, b"5.7.1 sender not allowed")
    # A subdomain of an allowed domain is another domain.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as sub:
        send(running.port, message(("Conversions_2024_03.csv", CSV.encode())), sender="x@evil.trusted.example")
    assert sub.value.recipients[ADDRESS][0] == 550
    assert files_in(inbox) == []
    assert list((inbox / ".incoming").iterdir()) == []
    assert [e.kind for e in running.events] == ["sender_refused", "sender_refused"]


def test_an_attachment_not_matching_the_pattern_is_not_kept(receiver):
    running, inbox = receiver
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send(running.port, message(("conversions_2024_03.csv", CSV.encode()), ("Conversions_2024.xlsx", b"PK")))
    assert caught.value.smtp_code == 554  # nothing kept: the sender's server bounces the message back
    assert files_in(inbox) == [] and list((inbox / ".incoming").iterdir()) == []
    assert sorted(e.attachment for e in running.events if e.kind == "skipped") == [
        "Conversions_2024.xlsx",
        "conversions_2024_03.csv",  # the pattern is case-sensitive
    ]


def test_a_disabled_email_import_gets_no_route(import_project, pg_database):
    email_import(import_project, pg_database, enabled=False)
    assert inbox_routes(import_project.project()) == []


# ---- the real command ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_receive_email_command_keeps_the_file_and_the_import_loads_it(import_project, instance, pg_database):
    inbox = email_import(import_project, pg_database)
    resources = import_project.write()
    port = free_port()
    environment = {**os.environ, "CONNECTOR_PIPELINES_STORAGE": str(import_project.storage)}
    process = subprocess.Popen(
        [*CLI, "receive-email", "--port", str(port), "--resources", str(resources)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any(line.startswith("receiving on") for line in output):
            assert process.poll() is None, "".join(output)
            try:
                output.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no 'receiving on' line within 30 s: {''.join(output)!r}")
        assert f"{ADDRESS} -> {inbox} (from {PARTNER}, @trusted.example)\n" in output
        assert output[-1] == f"receiving on 127.0.0.1:{port}; Ctrl-C stops\n"

        assert send(port, message(("Conversions_2024_03.csv", CSV.encode()))) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            send(port, message(("Conversions_2024_04.csv", CSV.encode())), sender="mallory@elsewhere.example")
        assert caught.value.recipients[ADDRESS][0] == 550
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        reader.join(timeout=5)
    assert exit_code == 0
    assert files_in(inbox) == ["Conversions_2024_03.csv"]
    assert (inbox / "Conversions_2024_03.csv").read_text() == CSV

    run = import_project.run_import(NAME, instance)
    assert run.success, run.failure()
    assert run.files["Conversions_2024_03.csv"]["status"] == "imported"
    assert sorted(table(pg_database)) == [1, 2]
    assert files_in(inbox / "archive") == ["Conversions_2024_03.csv"]
