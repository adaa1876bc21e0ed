"""Every file format, from PostgreSQL (the COPY fast path) and from MariaDB and SQLite (the generic path): the
file's rows equal the rows a SQLAlchemy query returns for the same window, awkward values included."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector_pipelines_tests.fixtures.extract import (
    JANUARY_IDS,
    SAMPLE_COLUMNS,
    SAMPLE_QUERY,
    UTC,
    create_sample_table,
    failure_text,
    file_bytes,
    files_under,
    materialization_metadata,
    normalize_rows,
    read_extract_file,
)

DATABASE_FIXTURES = {"postgresql": "pg_database", "mariadb": "mariadb_database", "sqlite": "sqlite_database"}
FORMATS = [("csv", "none"), ("tsv", "none"), ("parquet", "none"), ("jsonl", "none"), ("csv", "gzip")]
JANUARY = (dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 2, 1, tzinfo=UTC))
MONTHLY_FROM_DECEMBER = {"cadence": "monthly", "inception_date": "2023-12-01"}


def _extract_january(request, project, instance, dialect: str, fmt: str, compression: str = "none", **extract):
    database = request.getfixturevalue(DATABASE_FIXTURES[dialect])
    create_sample_table(database)
    project.add_database(database)
    outbox = project.add_folder()
    project.add_extract(
        "sample_extract", SAMPLE_QUERY, format=fmt, compression=compression, schedule=MONTHLY_FROM_DECEMBER, **extract
    )
    result = project.run("sample_extract", instance, partition_key="2024-01-01")
    assert result.success, failure_text(result)
    files = files_under(outbox)
    assert len(files) == 1, files
    return database, outbox / files[0], result


@pytest.mark.parametrize("dialect", list(DATABASE_FIXTURES))
@pytest.mark.parametrize(("fmt", "compression"), FORMATS, ids=["csv", "tsv", "parquet", "jsonl", "csv-gzip"])
def test_file_rows_equal_the_query_rows_of_the_window(request, project, instance, dialect, fmt, compression):
    database, path, result = _extract_january(request, project, instance, dialect, fmt, compression)

    extension = fmt + (".gz" if compression == "gzip" else "")
    assert path.name == f"sample_extract_20240101T0000_20240201T0000.{extension}"
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (compression == "gzip")  # gzip magic bytes
    rows = read_extract_file(file_bytes(path, compression), fmt, list(SAMPLE_COLUMNS))

    reference = database.query(SAMPLE_QUERY, database.bind_window(*JANUARY))
    assert [row["id"] for row in reference] == JANUARY_IDS  # the reference itself saw the right window
    assert normalize_rows(rows, SAMPLE_COLUMNS) == normalize_rows(reference, SAMPLE_COLUMNS)

    metadata = materialization_metadata(result)
    assert metadata["rows"] == metadata["dagster/row_count"] == len(JANUARY_IDS)
    assert metadata["bytes"] == len(raw)


@pytest.mark.parametrize("dialect", list(DATABASE_FIXTURES))
def test_text_values_survive_csv_exactly(request, project, instance, dialect):
    """No normalization for text: commas, quotes, newlines, tabs, non-ASCII, '' and the word NULL, byte for byte."""
    _, path, _ = _extract_january(request, project, instance, dialect, "csv")
    labels = [row["label"] for row in read_extract_file(path.read_bytes(), "csv", list(SAMPLE_COLUMNS))]
    assert labels == [
        "plain",
        "comma, inside",
        'quote " inside and ""doubled""',
        "multi\nline\r\nwindows",
        "Zürich — 東京 ✓ café\u2028line separator",
        None,
        "",
        "NULL",
        "tab\there;  padded  ",
        "last instant",
    ]


def test_postgres_parquet_keeps_the_column_types(request, project, instance):
    """Parquet from PostgreSQL carries exact types: numeric(12,2) stays a decimal, timestamptz stays an instant."""
    _, path, result = _extract_january(request, project, instance, "postgresql", "parquet")
    table = pq.read_table(path)
    assert table.schema.field("id").type == pa.int32()
    assert table.schema.field("amount").type == pa.decimal128(12, 2)
    assert table.schema.field("happened_at").type == pa.timestamp("us")
    assert pa.types.is_timestamp(table.schema.field("happened_tz").type)
    assert table.schema.field("happened_tz").type.tz is not None
    assert table.schema.field("flag").type == pa.bool_()
    assert table.column("amount").to_pylist()[3] == decimal.Decimal("9999999999.99")
    assert table.column("happened_tz").to_pylist()[1] == dt.datetime(2024, 1, 5, 8, 30, tzinfo=UTC)
    schema = materialization_metadata(result)["dagster/column_schema"]
    assert {column.name: column.type for column in schema.columns} == {
        "id": "int32",
        "label": "string",
        "amount": "decimal128(12, 2)",
        "happened_at": "timestamp[us]",
        "happened_tz": "timestamp[us, tz=UTC]",
        "flag": "bool",
    }


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_csv_options_delimiter_and_no_header(request, project, instance, dialect):
    _, path, _ = _extract_january(request, project, instance, dialect, "csv", csv={"header": False, "delimiter": ";"})
    data = path.read_bytes()
    assert not data.startswith(b"id;")
    rows = read_extract_file(data, "csv", list(SAMPLE_COLUMNS), delimiter=";", header=False)
    assert [int(row["id"]) for row in rows] == JANUARY_IDS
    assert rows[8]["label"] == "tab\there;  padded  "  # the delimiter inside a value is quoted


@pytest.mark.parametrize("dialect", list(DATABASE_FIXTURES))
def test_an_empty_window_still_gives_a_parquet_file_with_its_columns(request, project, instance, dialect):
    database = request.getfixturevalue(DATABASE_FIXTURES[dialect])
    create_sample_table(database)
    project.add_database(database)
    outbox = project.add_folder()
    project.add_extract("sample_extract", SAMPLE_QUERY, format="parquet", schedule=MONTHLY_FROM_DECEMBER)
    result = project.run("sample_extract", instance, partition_key="2024-03-01")
    assert result.success, failure_text(result)
    [name] = files_under(outbox)
    table = pq.read_table(outbox / name)
    assert table.num_rows == 0
    assert table.schema.names == list(SAMPLE_COLUMNS)
    assert materialization_metadata(result)["rows"] == 0
