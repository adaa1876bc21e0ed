"""PostgreSQL's COPY protocol as a fast row source.

`COPY (query) TO STDOUT (FORMAT csv)` is the fastest way to get rows out of PostgreSQL: the server formats
them and psycopg2's `copy_expert` streams the bytes in C. CSV/TSV extracts write that stream straight into
the file. For Parquet and JSON Lines the stream is parsed into Arrow batches by pyarrow's multithreaded
CSV reader, with column types taken from the query's own description, so nothing is inferred from data.

COPY accepts no bind parameters, so the window values are bound client-side by psycopg2 (`mogrify`, which
quotes with libpq's escaping rules); the query text itself is never formatted with user values.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect

PIPE_BUFFER_BYTES = 1 << 20
CSV_BLOCK_BYTES = 4 << 20

# PostgreSQL type OIDs -> Arrow types. Anything not listed (json, uuid, arrays, intervals...) is kept as text,
# exactly as PostgreSQL prints it.
_OID_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
}
_NUMERIC, _TIMESTAMPTZ = 1700, 1184


def bind(connection, query: str, params: dict) -> str:
    """The query with :window_start/:window_end bound client-side by the driver (for COPY)."""
    compiled = str(sa.text(query).compile(dialect=pg_dialect.dialect()))
    if not params:
        # Without parameters psycopg2 does no %-substitution, so undo SQLAlchemy's %% escaping.
        return compiled.replace("%%", "%")
    with connection.cursor() as cursor:
        return cursor.mogrify(compiled, params).decode("utf-8")


def describe(connection, query: str, params: dict) -> pa.Schema:
    """The result's Arrow schema from PostgreSQL's own description of the query (LIMIT 0: no rows read)."""
    bound = bind(connection, query, params)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({bound}) AS described LIMIT 0")
        columns = list(cursor.description)
        timezone = _session_timezone(cursor)
        fields = [pa.field(column.name, _arrow_type(column, timezone)) for column in columns]
    return pa.schema(fields)


def copy_csv(connection, query: str, params: dict, out: BinaryIO, *, delimiter: str = ",", header: bool = True) -> int:
    """Stream the query's rows as CSV into `out`; returns the row count PostgreSQL reports."""
    bound = bind(connection, query, params)
    with connection.cursor() as cursor:
        delimiter_literal = cursor.mogrify("%s", (delimiter,)).decode()
        cursor.copy_expert(
            f"COPY ({bound}) TO STDOUT WITH (FORMAT csv, HEADER {'true' if header else 'false'}, "
            f"DELIMITER {delimiter_literal})",
            out,
            size=PIPE_BUFFER_BYTES,
        )
        return cursor.rowcount


def stream_batches(connect: Callable, query: str, params: dict, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Yield Arrow batches parsed from a COPY stream that a producer thread writes into a pipe.

    The pipe bounds memory: the producer blocks while the parser is busy. A failure on either side stops
    the other, and a producer error is raised here rather than passing for a short result.
    """
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with connect() as connection, open(write_fd, "wb", buffering=PIPE_BUFFER_BYTES) as pipe:
                copy_csv(connection, query, params, pipe, header=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread below
            failure.append(exc)

    producer = threading.Thread(target=produce, name="postgres-copy", daemon=True)
    producer.start()
    # Buffered, so each read returns a whole block rather than whatever the pipe holds (64 KB): small reads
    # would make small batches, and small batches make slow Parquet files with thousands of row groups.
    reader_file = open(read_fd, "rb", buffering=CSV_BLOCK_BYTES)
    try:
        reader = _open_csv_stream(reader_file, schema)
        if reader is None:
            producer.join()
            if failure:
                raise failure[0]
            # No rows: COPY wrote nothing, which pyarrow refuses as "Empty CSV file". An empty batch still
            # carries the columns (a Parquet file gets its schema).
            reader = iter([pa.RecordBatch.from_pylist([], schema=schema)])
        yield from reader
    except BaseException:
        reader_file.close()  # unblocks a producer still writing (it gets a broken pipe)
        producer.join()
        # A consumer-side parse error is usually the symptom of a producer failure (a cut stream).
        if failure and not isinstance(failure[0], BrokenPipeError):
            raise failure[0] from None
        raise
    reader_file.close()
    producer.join()
    if failure:
        raise failure[0]


def _open_csv_stream(reader_file, schema: pa.Schema):
    """pyarrow's streaming CSV reader over the COPY output, or None when the stream holds no bytes at all."""
    try:
        return pa_csv.open_csv(
            pa.input_stream(reader_file),
            read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=CSV_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=schema,
                # COPY writes NULL as an unquoted empty field and nothing else; pyarrow's default list would
                # also turn text such as 'NULL', 'NA' or 'nan' into NULL.
                null_values=[""],
                true_values=["t"],
                false_values=["f"],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                timestamp_parsers=[pa_csv.ISO8601],
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return None
        raise


def _session_timezone(cursor) -> str:
    cursor.execute("SHOW TimeZone")
    return cursor.fetchone()[0]


def _arrow_type(column, timezone: str) -> pa.DataType:
    oid = column.type_code
    if oid in _OID_TYPES:
        return _OID_TYPES[oid]
    if oid == _TIMESTAMPTZ:
        return pa.timestamp("us", tz=timezone)
    if oid == _NUMERIC and column.precision and 0 < column.precision <= 38:
        return pa.decimal128(column.precision, column.scale or 0)
    # Unconstrained numeric (no precision) is kept as exact text rather than rounded into a float.
    return pa.string()
