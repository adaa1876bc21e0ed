"""Failures: the run fails with a message that names the connector, the system and the cause, and leaves no
partial file at the destination nor in the staging folder."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncssh
import pytest

from connector_pipelines_tests.fixtures.extract import (
    TICKS_QUERY,
    create_ticks_table,
    failure_text,
    files_under,
)
from connector_pipelines_tests.servers import free_port
from connector_pipelines_tests.servers.sftp import public_key_line

MONTHLY = {"cadence": "monthly", "inception_date": "2024-01-01"}
# About 600 KB of CSV, more than the SFTP test server's quota in its `full` folder.
BIG_QUERY = (
    "SELECT g AS id, repeat('x', 200) AS filler FROM generate_series(1, 3000) AS g "
    "WHERE CAST(:window_start AS timestamptz) < CAST(:window_end AS timestamptz)"
)


def _failed_run(project, instance, name="broken", partition_key="2024-01-01"):
    result = project.run(name, instance, partition_key=partition_key)
    assert not result.success
    assert project.staging_files() == []
    return failure_text(result)


def _assert_names(text: str, *parts: str) -> None:
    for part in parts:
        assert part in text, f"{part!r} not in:\n{text}"


# --------------------------------------------------------------------------------------------------
# The source


@pytest.mark.parametrize("fmt", ["csv", "parquet"], ids=["copy-to-file", "copy-parsed-to-arrow"])
def test_missing_table_on_postgres(project, instance, pg_database, fmt):
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("broken", TICKS_QUERY.replace("ticks", "no_such_table"), format=fmt, schedule=MONTHLY)
    text = _failed_run(project, instance)
    _assert_names(
        text,
        "extract 'broken'",
        "postgresql 127.0.0.1:5432/test",
        "connection 'db'",
        'relation "no_such_table" does not exist',
    )
    assert files_under(outbox) == []


def test_missing_table_on_mariadb(project, instance, mariadb_database):
    project.add_database(mariadb_database)
    outbox = project.add_folder()
    project.add_extract("broken", TICKS_QUERY.replace("ticks", "no_such_table"), format="jsonl", schedule=MONTHLY)
    text = _failed_run(project, instance)
    database = mariadb_database.url.split("/")[-1].split("?")[0]
    _assert_names(text, "extract 'broken'", f"mysql 127.0.0.1:3306/{database}", "no_such_table' doesn't exist")
    assert files_under(outbox) == []


def test_bad_sql(project, instance, pg_database):
    create_ticks_table(pg_database, {})
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_extract("broken", TICKS_QUERY.replace("ORDER BY", "ORDER BY BY"), schedule=MONTHLY)
    text = _failed_run(project, instance)
    _assert_names(text, "extract 'broken'", "postgresql 127.0.0.1:5432/test", "syntax error at or near")
    assert "[SQL:" not in text  # the driver's cause, not SQLAlchemy's echo of the statement
    assert files_under(outbox) == []


def test_unreachable_database_port(project, instance):
    port = free_port()
    project.add_connection("db", {"type": "sql", "url": f"postgresql://postgres@127.0.0.1:{port}/test"})
    outbox = project.add_folder()
    project.add_extract("broken", TICKS_QUERY, schedule=MONTHLY)
    text = _failed_run(project, instance)
    _assert_names(text, "extract 'broken'", f"postgresql 127.0.0.1:{port}/test", "Connection refused")
    assert files_under(outbox) == []


# --------------------------------------------------------------------------------------------------
# The destination


def _ticks_to(project, pg_database, connection: dict, env: dict, folder: str, query: str = TICKS_QUERY):
    create_ticks_table(pg_database, {1: dt.datetime(2024, 1, 2)})
    project.add_database(pg_database)
    project.add_connection("partner", connection, env)
    project.add_extract("broken", query, destinations=[{"connection": "partner", "folder": folder}], schedule=MONTHLY)


def _sftp_files(sftp_server, folder: str) -> list[str]:
    return files_under(sftp_server.root / folder) if (sftp_server.root / folder).exists() else []


def test_sftp_host_key_mismatch(project, instance, pg_database, sftp_server):
    folder = f"t_{uuid.uuid4().hex[:10]}"
    impostor = public_key_line(asyncssh.generate_private_key("ssh-ed25519"))
    _ticks_to(project, pg_database, sftp_server.connection({"host_key": impostor}), sftp_server.env(), folder)
    text = _failed_run(project, instance)
    _assert_names(
        text,
        "extract 'broken'",
        "connection 'partner'",
        f"sftp 127.0.0.1:{sftp_server.port}",
        "host key did not match",
    )
    assert _sftp_files(sftp_server, folder) == []


def test_wrong_sftp_password(project, instance, pg_database, sftp_server):
    folder = f"t_{uuid.uuid4().hex[:10]}"
    env = {**sftp_server.env(), "TEST_SFTP_PASSWORD": "not-the-password-41"}
    _ticks_to(project, pg_database, sftp_server.connection(), env, folder)
    text = _failed_run(project, instance)
    _assert_names(
        text,
        "extract 'broken'",
        "connection 'partner'",
        f"sftp 127.0.0.1:{sftp_server.port}",
        "authentication failed for user 'extracts'",
    )
    assert "not-the-password-41" not in text
    assert _sftp_files(sftp_server, folder) == []


def test_sftp_upload_cut_half_way_leaves_no_partial_file(project, instance, pg_database, sftp_server):
    """The server refuses writes past its quota in `full/`: the temporary file must be removed."""
    _ticks_to(
        project, pg_database, sftp_server.connection(), sftp_server.env(), sftp_server.full_folder, query=BIG_QUERY
    )
    before = len(sftp_server.opened_for_write)
    text = _failed_run(project, instance)
    _assert_names(text, "extract 'broken'", f"sftp 127.0.0.1:{sftp_server.port}", "upload of 'full/broken_")
    # paramiko's pipelined writes report the refused write either as such or as the short file it left.
    assert "quota exceeded" in text or "size mismatch" in text, text
    # A temporary file of ours was really opened there, and is gone (other tests share the folder).
    ours = [path for path in sftp_server.opened_for_write[before:] if "broken_" in path]
    assert ours and all(path.startswith(f"{sftp_server.full_folder}/.broken_") for path in ours)
    assert [name for name in _sftp_files(sftp_server, sftp_server.full_folder) if "broken_" in name] == []


def test_ftp_rename_refused_leaves_no_temporary_file(project, instance, pg_database, ftp_server):
    _ticks_to(project, pg_database, ftp_server.connection(), ftp_server.env(), ftp_server.locked_folder)
    text = _failed_run(project, instance)
    _assert_names(
        text, "extract 'broken'", "connection 'partner'", f"ftp 127.0.0.1:{ftp_server.port}", "Not enough privileges"
    )
    assert [name for name in files_under(ftp_server.root / ftp_server.locked_folder) if "broken_" in name] == []


def test_unreachable_s3_endpoint(project, instance, pg_database, s3_server):
    port = free_port()
    connection = s3_server.connection({"endpoint_url": f"http://127.0.0.1:{port}"})
    _ticks_to(project, pg_database, connection, s3_server.env(), "unreachable")
    text = _failed_run(project, instance)
    _assert_names(
        text,
        "extract 'broken'",
        "connection 'partner'",
        f"s3 bucket '{s3_server.bucket}' at http://127.0.0.1:{port}",
        "Could not connect",
    )


def test_a_later_destination_failing_says_where_the_file_already_went(project, instance, pg_database, sftp_server):
    create_ticks_table(pg_database, {})
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_connection(
        "partner", sftp_server.connection(), {**sftp_server.env(), "TEST_SFTP_PASSWORD": "not-the-password-41"}
    )
    project.add_extract(
        "broken",
        TICKS_QUERY,
        destinations=[{"connection": "outbox"}, {"connection": "partner", "folder": "never"}],
        schedule=MONTHLY,
    )
    text = _failed_run(project, instance)
    [delivered] = files_under(outbox)
    _assert_names(
        text, "connection 'partner'", "authentication failed", f"already delivered to: {(outbox / delivered).as_uri()}"
    )
