"""Secrets never leak: not into the event log (messages, metadata, errors), the run record, any file of the
instance, nor what the process printed or logged, whether the run succeeds or fails.

Python logging is captured at INFO: at DEBUG, botocore itself logs request headers, whose Authorization header
names the S3 access key id (never the secret key); that is the library's debug output, not ours.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path

import dagster as dg
import pytest

from connector_pipelines_tests.fixtures.extract import TICKS_QUERY, create_ticks_table, failure_text
from connector_pipelines_tests.servers import free_port

MONTHLY = {"cadence": "monthly", "inception_date": "2024-01-01"}
DATABASE_PASSWORD = "pw-db-0f3e9a77"  # PostgreSQL trusts loopback, so it is sent but never needed


def _haystack(instance: dg.DagsterInstance, run_id: str, capsys, caplog) -> str:
    parts = []
    for entry in instance.all_logs(run_id):
        parts += [repr(entry), dg.serialize_value(entry)]
    parts.append(repr(instance.get_run_by_id(run_id)))
    for path in Path(instance.root_directory).rglob("*"):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    captured = capsys.readouterr()
    parts += [captured.out, captured.err, caplog.text]
    return "\n".join(parts)


def _assert_no_secret(haystack: str, secrets: dict[str, str]) -> None:
    leaked = [name for name, value in secrets.items() if value in haystack]
    assert not leaked, f"secret value(s) of {leaked} found"


@pytest.fixture
def all_servers(sftp_server, s3_server, ftp_server, smtp_starttls_server):
    smtp_starttls_server.clear()  # shared with other tests: count this test's logins only
    return sftp_server, s3_server, ftp_server, smtp_starttls_server


def _project_with_every_transport(project, pg_database, servers, sftp_password: str | None = None) -> dict[str, str]:
    sftp, s3, ftp, smtp = servers
    folder = f"t_{uuid.uuid4().hex[:10]}"
    create_ticks_table(pg_database, {1: dt.datetime(2024, 1, 2), 2: dt.datetime(2024, 1, 3)})
    project.add_connection(
        "db",
        {"type": "sql", "url": pg_database.url, "password": "${TEST_DB_PASSWORD}"},
        {"TEST_DB_PASSWORD": DATABASE_PASSWORD},
    )
    sftp_env = {**sftp.env(), **({"TEST_SFTP_PASSWORD": sftp_password} if sftp_password else {})}
    project.add_connection("partner_sftp", sftp.connection(), sftp_env)
    project.add_connection("bucket", s3.connection(), s3.env())
    project.add_connection("partner_ftp", ftp.connection(), ftp.env())
    project.add_connection("mail", smtp.connection(), smtp.env())
    project.add_extract(
        "secretive",
        TICKS_QUERY,
        destinations=[
            {"connection": "bucket", "folder": folder},
            {"connection": "partner_ftp", "folder": folder},
            {"connection": "mail", "to": ["finance@example.test"]},
            {"connection": "partner_sftp", "folder": folder},
        ],
        schedule=MONTHLY,
    )
    secrets = {
        "database password": DATABASE_PASSWORD,
        "sftp password": sftp.password,
        "sftp private key": sftp.private_key.strip().splitlines()[1],
        "s3 access key id": s3.access_key_id,
        "s3 secret access key": s3.secret_access_key,
        "ftp password": ftp.password,
        "smtp password": smtp.password,
    }
    if sftp_password:
        secrets["wrong sftp password"] = sftp_password
    return secrets


def test_successful_run_leaks_no_secret(project, fresh_instance, pg_database, all_servers, capsys, caplog):
    caplog.set_level(logging.INFO)
    secrets = _project_with_every_transport(project, pg_database, all_servers)
    result = project.run("secretive", fresh_instance, partition_key="2024-01-01")
    assert result.success, failure_text(result)
    assert all_servers[3].logins == ["mailer"]  # the SMTP password really was used

    haystack = _haystack(fresh_instance, result.run_id, capsys, caplog)
    assert "secretive_20240101T0000_20240201T0000.csv" in haystack and "sha256" in haystack  # the search is real
    _assert_no_secret(haystack, secrets)


def test_failing_run_leaks_no_secret(project, fresh_instance, pg_database, all_servers, capsys, caplog):
    caplog.set_level(logging.INFO)
    secrets = _project_with_every_transport(project, pg_database, all_servers, sftp_password="wrong-pw-5a1b9c")
    result = project.run("secretive", fresh_instance, partition_key="2024-01-01")
    assert not result.success
    assert "authentication failed" in failure_text(result)

    haystack = _haystack(fresh_instance, result.run_id, capsys, caplog)
    assert "authentication failed" in haystack
    _assert_no_secret(haystack, secrets)


def test_unreachable_database_with_a_password_leaks_nothing(project, fresh_instance, capsys, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    project.add_connection(
        "db",
        {"type": "sql", "url": f"postgresql://postgres@127.0.0.1:{port}/test", "password": "${TEST_DB_PASSWORD}"},
        {"TEST_DB_PASSWORD": DATABASE_PASSWORD},
    )
    project.add_folder()
    project.add_extract("secretive", TICKS_QUERY, schedule=MONTHLY)
    result = project.run("secretive", fresh_instance, partition_key="2024-01-01")
    assert not result.success
    haystack = _haystack(fresh_instance, result.run_id, capsys, caplog)
    assert "Connection refused" in haystack
    _assert_no_secret(haystack, {"database password": DATABASE_PASSWORD})
