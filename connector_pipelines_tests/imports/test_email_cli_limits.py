"""`receive-email` takes its limits from flags: the real command, started as a process, advertises and enforces
them; a flag that is not a size is refused before anything starts."""

from __future__ import annotations

import os
import queue
import signal
import smtplib
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from connector_pipelines.cli.main import main
from connector_pipelines_tests.imports.test_email import CLI, PARTNER, email_import, free_port, message

pytestmark = pytest.mark.timeout(60)


def test_receive_email_enforces_the_limits_given_as_flags(import_project, pg_database):
    inbox = email_import(import_project, pg_database)
    resources = import_project.write()
    port = free_port()
    command = [*CLI, "receive-email", "--port", str(port), "--resources", str(resources)]
    command += ["--max-message-size", "4KiB", "--max-sessions", "1", "--inbox-quota", "2MiB", "--timeout", "30"]
    environment = {**os.environ, "CONNECTOR_PIPELINES_STORAGE": str(import_project.storage)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any(line.startswith("receiving on") for line in output):
            assert process.poll() is None, "".join(output)
            try:
                output.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no 'receiving on' line within 30 s: {''.join(output)!r}")
        assert (
            "limits: 1 session at once, 4 KiB a message, 10 recipients a message, 2 MiB an inbox, 30 s a command\n"
            in output
        )

        with smtplib.SMTP("127.0.0.1", port, local_hostname="mta.partner.example", timeout=10) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "4096"
            with pytest.raises(smtplib.SMTPConnectError) as turned_away:
                smtplib.SMTP("127.0.0.1", port, local_hostname="mta.partner.example", timeout=10)
            assert turned_away.value.smtp_code == 421
            with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
                client.send_message(message(("Conversions_big.csv", b"x" * 8_000)), PARTNER)
            assert too_big.value.smtp_code == 552
            client.rset()
            client.send_message(message(("Conversions_2024_03.csv", b"id;campaign;amount\n1;spring;1,00\n")), PARTNER)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert exit_code == 0
    assert sorted(path.name for path in inbox.iterdir() if path.is_file()) == ["Conversions_2024_03.csv"]


def test_a_limit_that_is_not_a_size_is_refused_before_anything_starts():
    result = CliRunner().invoke(main, ["receive-email", "--inbox-quota", "lots"])
    assert result.exit_code == 2
    assert "Invalid value for '--inbox-quota': 'lots' is not a size; write bytes (52428800) or a number with" in (
        result.output
    )
