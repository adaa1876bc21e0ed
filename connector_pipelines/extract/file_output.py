"""Write a query's rows into a local file: CSV, TSV, Parquet or JSON Lines, optionally gzip-compressed.

The file's sha256 and size are computed while it is written, so the bytes are never read twice.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from connector_pipelines.spec.extract import ExtractSpec
from connector_pipelines.transports.sql import SqlSource

WRITE_BUFFER_BYTES = 1 << 20
PREVIEW_ROWS = 5
# Parquet row groups of this many rows: big enough for fast scans and a small footer, small enough that the
# buffered batches stay a few tens of MB whatever the file's size.
PARQUET_ROW_GROUP_ROWS = 131_072
# A column's dictionary may grow to this size within a row group before the writer falls back to plain
# encoding for the rest of it. pyarrow's default (1 MB) lets unique columns (ids, timestamps, free text) hash
# most of a row group's values into a dictionary that is then abandoned: half the encoding time of the bench
# extract, and a larger file. 64 KB still holds the dictionary of a low-cardinality column (a status, a
# country, a flag) whole, where dictionary encoding pays.
PARQUET_DICTIONARY_PAGE_BYTES = 64 << 10


@dataclass(frozen=True)
class WrittenFile:
    """A finished local file and what is known about its contents."""

    path: Path
    rows: int
    bytes: int
    sha256: str
    schema: pa.Schema
    preview: list[dict[str, str]] = field(default_factory=list)


class FileSink(io.RawIOBase):
    """A writable stream that optionally gzips, and hashes and counts the bytes that reach the disk."""

    def __init__(self, path: Path, gzip_level: int | None = None):
        super().__init__()
        self._file = open(path, "wb")
        # wbits=31: a gzip container (header and CRC), readable by gzip/zcat and every gzip library.
        self._compressor = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if gzip_level else None
        self._hash = hashlib.sha256()
        self.bytes_written = 0
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        self._emit(self._compressor.compress(data) if self._compressor else data)
        self._position += size
        return size

    def tell(self) -> int:
        return self._position

    def _emit(self, data) -> None:
        if data:
            self._hash.update(data)
            self._file.write(data)
            self.bytes_written += memoryview(data).nbytes

    def close(self) -> None:
        if not self.closed:
            try:
                if self._compressor is not None:
                    self._emit(self._compressor.flush())
            finally:
                self._file.close()
                super().close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def write_extract_file(source: SqlSource, spec: ExtractSpec, params: dict, path: Path) -> WrittenFile:
    """Run the extract's query and write its rows to `path` in the spec's format."""
    query = spec.source.query
    delimiter = spec.csv.delimiter or ("\t" if spec.format == "tsv" else ",")
    sink = FileSink(path, spec.gzip_level if spec.compression == "gzip" else None)
    try:
        with io.BufferedWriter(sink, WRITE_BUFFER_BYTES) as stream:
            if spec.format in ("csv", "tsv") and source.is_postgres_copy_capable:
                # PostgreSQL formats the CSV itself; the bytes go straight to the file.
                schema = source.schema(query, params)
                rows = source.copy_csv(query, params, stream, delimiter=delimiter, header=spec.csv.header)
                preview: list[dict[str, str]] = []
            else:
                rows, schema, preview = _write_batches(source.stream_batches(query, params), spec, stream, delimiter)
    finally:
        sink.close()
    if spec.format in ("csv", "tsv") and not preview and rows:
        preview = read_csv_preview(path, schema.names, delimiter, spec.csv.header, spec.compression == "gzip")
    return WrittenFile(
        path=path, rows=rows, bytes=sink.bytes_written, sha256=sink.sha256, schema=schema, preview=preview
    )


def _write_batches(
    batches: Iterator[pa.RecordBatch], spec: ExtractSpec, stream, delimiter: str
) -> tuple[int, pa.Schema, list[dict[str, str]]]:
    rows = 0
    preview: list[dict[str, str]] = []
    writer = None
    schema = pa.schema([])
    for batch in batches:
        if writer is None:
            schema = batch.schema
            writer = _open_writer(spec, stream, schema, delimiter)
            preview = _preview(batch)
        writer.write_batch(batch)
        rows += batch.num_rows
    if writer is None and spec.format == "parquet":
        # An empty window still yields a valid (empty) Parquet file, so consumers can rely on one per window.
        writer = _open_writer(spec, stream, schema, delimiter)
    if writer is not None:
        writer.close()
    return rows, schema, preview


def _open_writer(spec: ExtractSpec, stream, schema: pa.Schema, delimiter: str):
    if spec.format == "parquet":
        return _ParquetRowGroupWriter(
            pq.ParquetWriter(
                stream, schema, compression="snappy", dictionary_pagesize_limit=PARQUET_DICTIONARY_PAGE_BYTES
            ),
            schema,
        )
    if spec.format == "jsonl":
        return _JsonLinesWriter(stream)
    return pa_csv.CSVWriter(
        stream,
        schema,
        write_options=pa_csv.WriteOptions(include_header=spec.csv.header, delimiter=delimiter, quoting_style="needed"),
    )


class _ParquetRowGroupWriter:
    """Gathers incoming batches into row groups of PARQUET_ROW_GROUP_ROWS rows (one per source batch would
    make thousands of tiny groups, a slow file and a footer that grows with the file)."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema):
        self._writer = writer
        self._schema = schema
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= PARQUET_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self._schema)
            self._writer.write_table(table, row_group_size=max(self._pending_rows, 1))  # one group, no leftover split
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


class _JsonLinesWriter:
    """One JSON object per line. Exact decimals stay numbers; timestamps are ISO 8601 strings."""

    def __init__(self, stream):
        self._stream = stream

    def write_batch(self, batch: pa.RecordBatch) -> None:
        lines = [
            json.dumps(row, default=_json_value, ensure_ascii=False, separators=(",", ":"))
            for row in _json_ready(batch).to_pylist()
        ]
        if lines:
            self._stream.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self) -> None:
        pass


def _json_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Decimals that a float64 holds exactly become JSON numbers; wider ones stay exact strings."""
    columns = []
    for column in batch.columns:
        if pa.types.is_decimal(column.type):
            column = column.cast(pa.float64() if column.type.precision <= 15 else pa.string())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _json_value(value):
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _preview(batch: pa.RecordBatch) -> list[dict[str, str]]:
    """The batch's first rows as text, for the run's preview table."""
    head = batch.slice(0, PREVIEW_ROWS)
    columns = [_python_values(column) for column in head.columns]
    return [{name: _text(values[i]) for name, values in zip(head.schema.names, columns)} for i in range(head.num_rows)]


def _python_values(column: pa.Array) -> list:
    """The column's values as Python objects, the same ones `to_pylist` gives."""
    if pa.types.is_timestamp(column.type) and column.type.tz and column.type.unit != "ns":
        # pyarrow's as_py on a zoned timestamp imports pandas when it is installed, to decide between a pandas
        # Timestamp and a datetime: 0.2 s and 60 MB of RSS on every extract, for five rows. The UTC instants
        # (the same buffers viewed without the zone; a cast would import pyarrow.compute, another 0.2 s) with
        # the zone attached here give the same datetimes.
        zone = pa.lib.string_to_tzinfo(column.type.tz)
        instants = column.view(pa.timestamp(column.type.unit)).to_pylist()
        return [None if value is None else value.replace(tzinfo=dt.UTC).astimezone(zone) for value in instants]
    return column.to_pylist()


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)


def read_csv_preview(path: Path, names: list[str], delimiter: str, header: bool, gzipped: bool) -> list[dict[str, str]]:
    """The first rows of a written CSV file, read back from its head only."""
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        if header:
            next(reader, None)
        rows: Iterable[list[str]] = (row for _, row in zip(range(PREVIEW_ROWS), reader))
        return [dict(zip(names, row)) for row in rows]
