"""The import commands that run and look back: run [--full], history, download, rebuild, ingest, receive-email."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage

import pyarrow.csv as pa_csv
import pytest
from click.testing import CliRunner

from connector_pipelines import progress
from connector_pipelines.cli import main
from connector_pipelines_tests.servers import free_port

SOURCE = "CREATE TABLE src (id INTEGER, name TEXT, amount TEXT, updated_at TEXT)"
TARGET = "CREATE TABLE dest (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC)"
MAPPING = [
    {"target": "id", "source": "id", "type": "integer"},
    {"target": "name", "source": "name"},
    {"target": "amount", "source": "amount", "type": "currency", "parse": "currency"},
]


@pytest.fixture
def cli(import_project, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):  # noqa: A002 - click's name
        import_project.write()
        return runner.invoke(
            main, [*args, "--resources", str(import_project.resources)], catch_exceptions=False, input=input
        )

    return invoke


@pytest.fixture
def warehouse(import_project, sqlite_database):
    sqlite_database.execute(SOURCE)
    sqlite_database.execute(TARGET)
    import_project.add_database(sqlite_database, "db")
    import_project.add_import(
        "orders",
        {
            "source": {"warehouse": {"connection": "db", "query": "SELECT * FROM src", "updated_at": "updated_at"}},
            "target": {"connection": "db", "table": "dest", "key": "id"},
            "mapping": MAPPING,
        },
    )
    return sqlite_database


def add(database, *rows):
    database.execute(
        "INSERT INTO src VALUES (:id, :name, :amount, :updated_at)",
        [dict(zip(("id", "name", "amount", "updated_at"), row, strict=True)) for row in rows],
    )


def test_run_history_download_and_full(cli, warehouse, tmp_path):
    add(warehouse, (1, "Ann", "$1,200.50", "2026-01-01 10:00:00"), (2, "Bob", "3", "2026-01-01 10:00:00"))
    first = cli("run", "orders")
    assert first.exit_code == 0, first.output
    assert "orders: 2 rows read, 2 inserted" in first.output
    run_id = first.output.split("run ")[-1].split()[0]

    again = cli("run", "orders")
    # Nothing new: only the rows at the watermark are read again (>=), and left unchanged.
    assert "2 rows read, 0 inserted, 0 updated, 2 unchanged or older" in again.output
    full = cli("run", "orders", "--full")
    assert full.exit_code == 0 and "2 rows read, 0 inserted, 0 updated, 2 unchanged or older" in full.output

    history = cli("history", "orders")
    assert history.exit_code == 0, history.output
    lines = history.output.splitlines()
    assert lines[0].split()[:4] == ["RUN", "STARTED", "(UTC)", "TRIGGER"]
    assert len(lines) == 4 and run_id[:8] in lines[3] and "SUCCESS" in lines[3]

    out = tmp_path / "first.csv"
    download = cli("download", "orders", run_id[:8], "-o", str(out), "--format", "csv")
    assert download.exit_code == 0, download.output
    table = pa_csv.read_csv(out)
    assert table.column("amount").to_pylist() == ["$1,200.50", "3"]  # the source as read, before conversion
    assert cli("download", "orders", "deadbeef").exit_code == 2


def test_a_warehouse_import_logs_its_progress_per_batch_and_before_the_merge(cli, warehouse, monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_SECONDS", 0.0)  # a line after every batch read
    add(warehouse, *[(i, f"N{i}", "1", "2026-01-01 10:00:00") for i in range(1, 26)])
    done = cli("run", "orders")
    assert done.exit_code == 0, done.output
    assert "orders: 25 rows read in 1 batch, 0 rejected so far; " in done.output
    assert "orders: 25 rows read; checking the expectations, then merging" in done.output


def test_run_exits_1_and_says_why_when_the_target_does_not_fit(cli, warehouse):
    warehouse.execute("DROP TABLE dest")
    add(warehouse, (1, "Ann", "1", "2026-01-01 10:00:00"))
    result = cli("run", "orders")
    assert result.exit_code == 1
    assert "table 'dest' does not exist" in result.output


def test_rebuild_asks_then_reads_everything(cli, warehouse):
    add(warehouse, (1, "Ann", "1", "2026-01-01 10:00:00"))
    assert cli("run", "orders").exit_code == 0
    refused = cli("rebuild", "orders", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    rebuilt = cli("rebuild", "orders", "--yes")
    assert rebuilt.exit_code == 0 and "1 rows read" in rebuilt.output


def test_ingest_loads_one_local_file_and_rejects_a_broken_one(cli, warehouse, tmp_path):
    good = tmp_path / "bulk.csv"
    good.write_text("id,name,amount\n7,Gus,12.5\n8,Hal,\n")
    result = cli("ingest", "orders", str(good))
    assert result.exit_code == 0, result.output
    assert good.exists()  # copied, not moved
    assert {r["id"]: r["name"] for r in warehouse.query("SELECT * FROM dest")} == {7: "Gus", 8: "Hal"}

    broken = tmp_path / "broken.csv"
    broken.write_text("id,nme,amount\n9,Ivy,1\n")
    rejected = cli("ingest", "orders", str(broken))
    assert rejected.exit_code == 1
    assert "broken.csv: rejected" in rejected.output and "missing column 'name'" in rejected.output


def test_ingest_refuses_other_kinds_and_missing_files(cli, warehouse, tmp_path):
    assert cli("ingest", "orders", str(tmp_path / "nope.csv")).exit_code == 2
    assert cli("history", "nosuch").exit_code == 2


def test_receive_email_command_saves_allowed_attachments_and_refuses_strangers(
    import_project, sqlite_database, tmp_path
):
    sqlite_database.execute(TARGET)
    import_project.add_database(sqlite_database, "db")
    import_project.add_import(
        "mailed",
        {
            "source": {
                "email": {
                    "address": "orders@in.acme.example",
                    "allowed_senders": ["@partner.example"],
                    "pattern": "*.csv",
                }
            },
            "target": {"connection": "db", "table": "dest", "key": "id"},
            "mapping": MAPPING,
        },
    )
    import_project.write()
    port = free_port()
    env = {
        **os.environ,
        "CONNECTOR_PIPELINES_STORAGE": str(import_project.storage),
        "DAGSTER_HOME": str(tmp_path / "dh"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector_pipelines.cli",
            "receive-email",
            "--port",
            str(port),
            "--resources",
            str(import_project.resources),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "receiving on" in line or not line:
                break
        assert any("receiving on" in line for line in lines), "".join(lines)

        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "ops@partner.example", "orders@in.acme.example", "orders"
        message.add_attachment(b"id,name,amount\n1,Ann,2\n", maintype="text", subtype="csv", filename="orders_1.csv")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                smtp.send_message(message, from_addr="someone@elsewhere.example")
        assert refused.value.recipients["orders@in.acme.example"][0] == 550
        inbox = import_project.storage / "inboxes" / "mailed"
        assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["orders_1.csv"]
    finally:
        process.terminate()
        process.wait(timeout=10)

    # The saved attachment is what the import's job loads.
    from dagster import instance_for_test

    with instance_for_test() as instance:
        run = import_project.run_import("mailed", instance)
    assert run.success and run.files["orders_1.csv"]["status"] == "imported"
    assert sqlite_database.query("SELECT name FROM dest") == [{"name": "Ann"}]
