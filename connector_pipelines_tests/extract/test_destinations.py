"""Every destination on a real server: folder, S3 (moto), SFTP, FTP, FTPS and email (SMTP attachment).

The file that arrives has the sha256 the materialization reports, and the metadata carries what the UI shows
(rows, bytes, uri, sha256, window, row count, a preview table and the column schema).
"""

from __future__ import annotations

import uuid

import pytest

from connector_pipelines_tests.fixtures.extract import (
    SAMPLE_COLUMNS,
    SAMPLE_QUERY,
    create_sample_table,
    failure_text,
    files_under,
    materialization_metadata,
    read_extract_file,
    sha256_of,
)

FILE_NAME = "sample_extract_20240101T0000_20240201T0000.csv"


@pytest.fixture
def folder_name() -> str:
    """A folder of its own on the shared servers."""
    return f"t_{uuid.uuid4().hex[:10]}"


def _run_to(project, instance, database, connection: dict, destination: dict, env: dict | None = None):
    create_sample_table(database)
    project.add_database(database)
    project.add_connection("target", connection, env)
    project.add_extract(
        "sample_extract",
        SAMPLE_QUERY,
        destinations=[{"connection": "target", **destination}],
        schedule={"cadence": "monthly", "inception_date": "2024-01-01"},
    )
    result = project.run("sample_extract", instance, partition_key="2024-01-01")
    assert result.success, failure_text(result)
    assert project.staging_files() == []
    return materialization_metadata(result)


def _check_delivered(metadata: dict, data: bytes, uri: str) -> None:
    assert sha256_of(data) == metadata["sha256"]
    assert metadata["bytes"] == len(data)
    assert metadata["uri"] == uri
    assert metadata["file_name"] == FILE_NAME
    assert metadata["rows"] == metadata["dagster/row_count"] == 10
    assert metadata["window_start"] == "2024-01-01T00:00:00+00:00"
    assert metadata["window_end"] == "2024-02-01T00:00:00+00:00"
    assert [column.name for column in metadata["dagster/column_schema"].columns] == list(SAMPLE_COLUMNS)
    preview = metadata["preview"]
    assert [column.name for column in preview.schema.columns] == list(SAMPLE_COLUMNS)
    assert [record.data["id"] for record in preview.records] == ["1", "2", "3", "4", "5"]
    assert preview.records[1].data["label"] == "comma, inside"
    rows = read_extract_file(data, "csv", list(SAMPLE_COLUMNS))
    assert [int(row["id"]) for row in rows] == list(range(1, 11))


def test_folder(project, instance, pg_database, folder_name):
    outbox = project.root / "drop"
    outbox.mkdir()
    metadata = _run_to(project, instance, pg_database, {"type": "folder", "path": str(outbox)}, {"folder": folder_name})
    target = outbox / folder_name / FILE_NAME
    assert files_under(outbox) == [f"{folder_name}/{FILE_NAME}"]  # no temporary file left beside it
    _check_delivered(metadata, target.read_bytes(), target.as_uri())


def test_s3(project, instance, pg_database, s3_server, folder_name):
    metadata = _run_to(
        project,
        instance,
        pg_database,
        s3_server.connection({"prefix": "exports"}),
        {"folder": folder_name},
        s3_server.env(),
    )
    key = f"exports/{folder_name}/{FILE_NAME}"
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"exports/{folder_name}/")
    assert [item["Key"] for item in listed.get("Contents", [])] == [key]
    data = client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    _check_delivered(metadata, data, f"s3://{s3_server.bucket}/{key}")


def test_sftp(project, instance, pg_database, sftp_server, folder_name):
    metadata = _run_to(
        project, instance, pg_database, sftp_server.connection(), {"folder": f"{folder_name}/daily"}, sftp_server.env()
    )
    folder = sftp_server.root / folder_name / "daily"
    assert files_under(folder) == [FILE_NAME]
    # It was written under a temporary name first, then renamed.
    written = [path for path in sftp_server.opened_for_write if path.startswith(f"{folder_name}/")]
    assert len(written) == 1 and written[0].endswith(".part") and written[0] != f"{folder_name}/daily/{FILE_NAME}"
    uri = f"sftp://127.0.0.1:{sftp_server.port}/{folder_name}/daily/{FILE_NAME}"
    _check_delivered(metadata, (folder / FILE_NAME).read_bytes(), uri)


@pytest.mark.parametrize("server_fixture", ["ftp_server", "ftps_server"])
def test_ftp_and_ftps(request, project, instance, pg_database, server_fixture, folder_name):
    server = request.getfixturevalue(server_fixture)
    metadata = _run_to(project, instance, pg_database, server.connection(), {"folder": folder_name}, server.env())
    folder = server.root / folder_name
    assert files_under(folder) == [FILE_NAME]
    scheme = "ftps" if server.tls else "ftp"
    _check_delivered(
        metadata, (folder / FILE_NAME).read_bytes(), f"{scheme}://127.0.0.1:{server.port}/{folder_name}/{FILE_NAME}"
    )


def test_email_attachment(project, instance, pg_database, smtp_inbox):
    metadata = _run_to(
        project,
        instance,
        pg_database,
        smtp_inbox.connection(),
        {"to": ["finance@example.test"], "cc": ["audit@example.test"], "subject": "January invoices"},
    )
    assert len(smtp_inbox.messages) == 1
    message = smtp_inbox.messages[0]
    assert message["Subject"] == "January invoices"
    assert sorted(smtp_inbox.envelopes[0].rcpt_tos) == ["audit@example.test", "finance@example.test"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == FILE_NAME
    assert attachment.get_content_type() == "text/csv"
    _check_delivered(metadata, attachment.get_payload(decode=True), "mailto:finance@example.test?cc=audit@example.test")


def test_several_destinations_get_the_same_file(project, instance, pg_database, s3_server, sftp_server, folder_name):
    create_sample_table(pg_database)
    project.add_database(pg_database)
    outbox = project.add_folder()
    project.add_connection("bucket", s3_server.connection(), s3_server.env())
    project.add_connection("partner", sftp_server.connection(), sftp_server.env())
    project.add_extract(
        "sample_extract",
        SAMPLE_QUERY,
        format="parquet",
        destinations=[
            {"connection": "outbox"},
            {"connection": "bucket", "folder": folder_name},
            {"connection": "partner", "folder": folder_name},
        ],
        schedule={"cadence": "monthly", "inception_date": "2024-01-01"},
    )
    result = project.run("sample_extract", instance, partition_key="2024-01-01")
    assert result.success, failure_text(result)
    metadata = materialization_metadata(result)
    name = FILE_NAME.replace(".csv", ".parquet")
    copies = [
        (outbox / name).read_bytes(),
        s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{folder_name}/{name}")["Body"].read(),
        (sftp_server.root / folder_name / name).read_bytes(),
    ]
    assert {sha256_of(copy) for copy in copies} == {metadata["sha256"]}
    assert metadata["uri"] == [
        (outbox / name).as_uri(),
        f"s3://{s3_server.bucket}/{folder_name}/{name}",
        f"sftp://127.0.0.1:{sftp_server.port}/{folder_name}/{name}",
    ]
