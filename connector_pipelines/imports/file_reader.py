"""Read an arriving file (CSV, TSV, Parquet, JSON Lines; each optionally gzip) as Arrow batches, or say why not.

`read_file` checks what can be checked up front (size, format, gzip signature, header, at least one row) and
returns a `FileReading` whose `batches()` streams the rest in batches of `batch_rows` rows; memory stays bounded
by a batch plus the CSV reader's read-ahead (~40 MB), never the whole file. Anything wrong with the file's
*content* raises `FileRejected` with a one-line reason for the quarantine report; problems of the environment
(a missing file, a disk error) stay `OSError`.

A rejection can also happen while iterating (a malformed row deep in a 2 GB file): the caller must then treat
the whole file as rejected. The importer stages rows before committing, so nothing half-loads.

Values:
- CSV/TSV: every column is text. Imports parse values with the mapping's source formats (`%d/%m/%Y` dates,
  `1.234,56` amounts), so nothing is inferred here. An empty field, quoted or not, is "" (never null): CSV has
  no way to say "missing" other than a short row, and a short row is a rejection. `csv_header=False` names the
  columns column_1, column_2, ...
- JSON Lines: every column is text as well, for the same reason: strings as they are, numbers as their exact
  JSON text ("1234.50" stays "1234.50"), true/false as "true"/"false", nested objects and arrays as compact
  JSON; a key that is absent or `null` is null (the one place a value is truly missing).
- Parquet: the file's own column types, since Parquet is typed already.
"""

from __future__ import annotations

import codecs
import csv
import decimal
import hashlib
import io
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from connector_pipelines.mapping.suggest import did_you_mean

FORMATS = ("csv", "tsv", "parquet", "jsonl")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
GZIP_SIGNATURE = b"\x1f\x8b"
PARQUET_SIGNATURE = b"PAR1"
# pyarrow's streaming CSV reader parses block by block, reading ahead some 30 blocks (measured): the block size
# bounds memory (~40 MB at 1 MB) and also the longest row. Batches are then regrouped to `batch_rows`.
CSV_BLOCK_BYTES = 1 << 20
_CHUNK_BYTES = 1 << 20
_SAMPLE_CHARS = 60
# pyarrow reports a failed gzip stream as a plain OSError; these words tell it apart from a failing disk.
_GZIP_FAILURE = re.compile(r"zlib|compress|gzip|inflate", re.IGNORECASE)


class FileRejected(Exception):
    """The file's content cannot be imported; `reason` is one line for the quarantine report."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class FileReading:
    """An opened file: `columns` and `sha256`/`size` now, the rows through `batches()` (once), then `rows`.

    `batches()` yields record batches of at most `batch_rows` rows and may raise `FileRejected` part-way.
    Close it (or use it as a context manager) when not iterating to the end, to release the open file.
    """

    def __init__(
        self,
        *,
        path: Path,
        format: str,
        compressed: bool,
        columns: list[str],
        sha256: str,
        size: int,
        first: pa.RecordBatch,
        rest: Iterator[pa.RecordBatch],
        batch_rows: int,
    ):
        self.path = path
        self.format = format
        self.compressed = compressed
        self.columns = columns
        self.sha256 = sha256
        self.size = size
        self._first: pa.RecordBatch | None = first
        self._rest = rest
        self._batch_rows = batch_rows
        self._started = False
        self._rows_read = 0
        self._rows: int | None = None

    @property
    def rows(self) -> int | None:
        """The number of data rows, known once `batches()` has run to the end; None before."""
        return self._rows

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows in record batches; single use, since the file is streamed rather than held."""
        if self._started:
            raise RuntimeError(f"the batches of {self.path.name} were already read; call read_file() again")
        self._started = True
        return self._iterate()

    def _iterate(self) -> Iterator[pa.RecordBatch]:
        first, self._first = self._first, None
        try:
            for batch in _regroup(itertools.chain([first], self._rest), self._batch_rows):
                self._rows_read += batch.num_rows
                yield batch
            self._rows = self._rows_read
        finally:
            self.close()

    def close(self) -> None:
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()  # runs the generator's `finally`, which closes the file

    def __enter__(self) -> FileReading:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _regroup(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `size` rows (the last one fewer), whatever sizes the reader produced."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            piece = batch.slice(offset, size - pending_rows)
            pending.append(piece)
            pending_rows += piece.num_rows
            offset += piece.num_rows
            if pending_rows == size:
                yield _combine(pending)
                pending, pending_rows = [], 0
    if pending:
        yield _combine(pending)


def _combine(pieces: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(pieces) == 1:
        return pieces[0]
    return pa.Table.from_batches(pieces).combine_chunks().to_batches()[0]


def read_file(
    path: Path,
    *,
    format: str | None = None,
    expected_columns: Sequence[str] | None = None,
    csv_delimiter: str | None = None,
    csv_header: bool = True,
    encoding: str = "utf-8",
    batch_rows: int = 100_000,
) -> FileReading:
    """Open `path` for import, or raise `FileRejected` saying exactly what is wrong with it.

    `format` defaults to the name's extension (.csv, .tsv, .parquet, .jsonl/.ndjson, each optionally + .gz).
    A file is decompressed when it starts with the gzip signature, whatever its name; a `.gz` name without
    that signature is rejected. `expected_columns` are the columns the mapping reads: each must be in the
    header; other columns are allowed (they are listed in the reason when a column is missing, since a
    renamed column shows up as one missing and one unexpected). `encoding` applies to CSV/TSV/JSON Lines.
    """
    path = Path(path)
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    encoding = codecs.lookup(encoding).name  # an unknown encoding is a configuration error (LookupError)
    file_format, named_gzip = _format_from_name(path.name) if format is None else (format, _named_gzip(path.name))

    size = path.stat().st_size
    if size == 0:
        raise FileRejected("the file is empty (0 bytes)")
    sha256, signature = _sha256_and_signature(path)
    compressed = signature.startswith(GZIP_SIGNATURE)
    if signature == PARQUET_SIGNATURE and file_format != "parquet":
        raise FileRejected(f"the file is Parquet, not {file_format} (it starts with Parquet's signature PAR1)")
    if named_gzip and not compressed:
        raise FileRejected(
            f"corrupt gzip: the name ends in .gz but the file does not start with the gzip signature "
            f"(1f 8b; it starts with {signature[:2].hex(' ')})"
        )

    def open_stream() -> pa.NativeFile:
        return pa.input_stream(str(path), compression="gzip" if compressed else None)

    if file_format in ("csv", "tsv"):
        delimiter = csv_delimiter or ("\t" if file_format == "tsv" else ",")
        columns, batches = _open_csv(open_stream, delimiter=delimiter, header=csv_header, encoding=encoding)
        _check_header(columns, expected_columns, delimiter=delimiter)
    elif file_format == "parquet":
        columns, batches = _open_parquet(path, compressed, open_stream, batch_rows, expected_columns)
    else:
        columns, batches = _open_jsonl(open_stream, encoding, batch_rows, expected_columns)

    first = next((batch for batch in batches if batch.num_rows), None)
    if first is None:
        batches.close()
        raise FileRejected(
            "the file has a header but no rows" if file_format in ("csv", "tsv") else "the file has no rows"
        )
    return FileReading(
        path=path,
        format=file_format,
        compressed=compressed,
        columns=columns,
        sha256=sha256,
        size=size,
        first=first,
        rest=batches,
        batch_rows=batch_rows,
    )


# ------------------------------------------------------------------------------------------------------------
# Format, signature, hash


def _named_gzip(name: str) -> bool:
    return name.lower().endswith(".gz")


def _format_from_name(name: str) -> tuple[str, bool]:
    """(format, named as gzip) from a name such as orders.csv.gz; FileRejected for an unknown extension."""
    lowered = name.lower()
    gz = lowered.endswith(".gz")
    stem = lowered[: -len(".gz")] if gz else lowered
    extension = Path(stem).suffix
    if extension in EXTENSIONS:
        return EXTENSIONS[extension], gz
    known = ", ".join(EXTENSIONS)
    shown = f"extension '{extension}'" if extension else "no extension"
    raise FileRejected(f"unknown file type: '{name}' has {shown}; expected one of {known} (optionally + .gz)")


def _sha256_and_signature(path: Path) -> tuple[str, bytes]:
    """The SHA-256 of the file's bytes and its first four bytes (gzip or Parquet signature), in one pass."""
    digest = hashlib.sha256()
    signature = b""
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            if not signature:
                signature = chunk[:4]
            digest.update(chunk)
    return digest.hexdigest(), signature


# ------------------------------------------------------------------------------------------------------------
# CSV / TSV


def _open_csv(
    open_stream: Callable[[], pa.NativeFile], *, delimiter: str, header: bool, encoding: str
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    invalid_rows: list[pa_csv.InvalidRow] = []

    def remember(row: pa_csv.InvalidRow) -> str:
        invalid_rows.append(row)
        return "error"

    # Single-threaded: as fast here as the threaded reader, and only then does pyarrow know row numbers.
    read = {"use_threads": False, "block_size": CSV_BLOCK_BYTES, "encoding": encoding}
    parse = pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=remember)

    def rejection(exc: Exception, data_rows_read: int) -> FileRejected | None:
        # Rows are numbered as pyarrow and spreadsheets do: the header is row 1.
        last_good_row = data_rows_read + (1 if header else 0)
        return _csv_rejection(exc, invalid_rows, open_stream, encoding, columns=names, last_good_row=last_good_row)

    names: list[str] = []
    try:
        names = _csv_column_names(open_stream, read, parse, header, delimiter)
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
        if (rejected := rejection(exc, 0)) is not None:
            raise rejected from None
        raise
    if len(set(names)) != len(names):
        # Rejected before the real read, which keys column types by name.
        _check_header(names, None, delimiter=delimiter)

    def batches() -> Iterator[pa.RecordBatch]:
        data_rows_read = 0
        stream = open_stream()
        try:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(**read, column_names=None if header else names),
                parse_options=parse,
                # All text, and "" stays "": the mapping decides what an empty value means.
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                data_rows_read += batch.num_rows
                yield batch
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
            if (rejected := rejection(exc, data_rows_read)) is not None:
                raise rejected from None
            raise
        finally:
            stream.close()

    return names, batches()


def _csv_column_names(
    open_stream: Callable[[], pa.NativeFile], read: dict, parse: pa_csv.ParseOptions, header: bool, delimiter: str
) -> list[str]:
    """The header's names (or column_1.. by count without a header), from a look at the first block only."""
    names: list[str] | None = None
    with open_stream() as stream:
        try:
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(**read, autogenerate_column_names=not header),
                parse_options=parse,
            )
            names = list(reader.schema.names)
            reader.close()
        except pa.ArrowInvalid as exc:
            if "cannot infer number of columns" not in str(exc):
                raise
    if names is None:
        # pyarrow cannot read a file of one line without a line break, or of blank lines only.
        first_line = _first_record(open_stream, read["encoding"], delimiter)
        if not first_line:
            raise FileRejected("the file has no header, only blank lines" if header else "the file has no rows")
        if header:
            raise FileRejected("the file has a header but no rows")
        return [f"column_{n}" for n in range(1, len(first_line) + 1)]
    return names if header else [f"column_{n}" for n in range(1, len(names) + 1)]


def _first_record(open_stream: Callable[[], pa.NativeFile], encoding: str, delimiter: str) -> list[str]:
    with open_stream() as stream:
        text = stream.read(_CHUNK_BYTES).decode(encoding, errors="replace").lstrip("\ufeff")
    if not text.strip():
        return []
    return next(csv.reader(io.StringIO(text), delimiter=delimiter), [])


def _csv_rejection(
    exc: Exception,
    invalid_rows: list[pa_csv.InvalidRow],
    open_stream: Callable[[], pa.NativeFile],
    encoding: str,
    *,
    columns: list[str],
    last_good_row: int,
) -> FileRejected | None:
    """The FileRejected a pyarrow CSV error stands for, or None when it is not about the file's content."""
    if isinstance(exc, FileRejected):
        return exc
    message = str(exc)
    if invalid_rows:
        row = invalid_rows[0]
        # pyarrow counts records, the header being row 1: the line number unless a quoted value spans lines
        # (and the row number a spreadsheet shows either way).
        where = f"row {row.number}" if row.number not in (None, -1) else f"after row {last_good_row}"
        return FileRejected(
            f"malformed CSV: {where} has {row.actual_columns} fields where the header has {row.expected_columns}: "
            f"{_sample(row.text)}"
        )
    if isinstance(exc, UnicodeDecodeError) or "invalid UTF8" in message:
        column = re.search(r"column #(\d+)", message)
        name = columns[int(column.group(1))] if column and int(column.group(1)) < len(columns) else None
        return FileRejected(_decoding_reason(open_stream, encoding, column=name))
    if isinstance(exc, OSError):
        return FileRejected(f"corrupt gzip: {message}") if _GZIP_FAILURE.search(message) else None
    if "straddles" in message:
        return FileRejected(
            f"malformed CSV: a quoted value that is never closed, or a row longer than {_block_label()}, "
            f"after row {last_good_row}"
        )
    if "Empty CSV file" in message:
        return FileRejected("the file holds no data (it is empty once decompressed)")
    return FileRejected(f"unreadable CSV: {message}")


# ------------------------------------------------------------------------------------------------------------
# Header checks


def _check_header(columns: list[str], expected: Sequence[str] | None, *, delimiter: str | None) -> None:
    """Reject unnamed or duplicate columns, and a header that lacks an expected column."""
    unnamed = [str(n) for n, name in enumerate(columns, start=1) if not name.strip()]
    if unnamed:
        raise FileRejected(f"wrong header: column {', '.join(unnamed)} has no name (an empty header cell)")
    positions: dict[str, list[int]] = {}
    for n, name in enumerate(columns, start=1):
        positions.setdefault(name, []).append(n)
    duplicates = [f"{name!r} (columns {', '.join(map(str, at))})" for name, at in positions.items() if len(at) > 1]
    if duplicates:
        raise FileRejected(f"wrong header: duplicate column names: {'; '.join(duplicates)}")
    if not expected:
        return
    missing = [name for name in expected if name not in positions]
    if not missing:
        return
    unexpected = [name for name in columns if name not in set(expected)]
    described = ", ".join(f"{name!r}{did_you_mean(name, unexpected)}" for name in missing)
    reason = f"wrong header: missing column{'s' if len(missing) > 1 else ''} {described}"
    if unexpected:
        reason += f"; unexpected: {', '.join(repr(name) for name in unexpected)}"
    if delimiter is not None and len(columns) == 1:
        other = next((d for d in (";", "\t", "|", ",") if d != delimiter and d in columns[0]), None)
        if other is not None:
            reason += f" (the header is one column: is the delimiter {other!r} rather than {delimiter!r}?)"
    raise FileRejected(reason)


# ------------------------------------------------------------------------------------------------------------
# Parquet


def _open_parquet(
    path: Path,
    compressed: bool,
    open_stream: Callable[[], pa.NativeFile],
    batch_rows: int,
    expected: Sequence[str] | None,
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    # Parquet needs random access: a gzip-compressed one is unpacked into a temporary file, not into memory.
    source: IO[bytes] | None = _unpack_to_temporary(open_stream) if compressed else None
    try:
        parquet = pq.ParquetFile(source if source is not None else str(path))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        if source is not None:
            source.close()
        if not _parquet_content_error(exc):
            raise
        raise FileRejected(f"not a Parquet file: {exc}") from None
    columns = list(parquet.schema_arrow.names)
    try:
        _check_header(columns, expected, delimiter=None)
    except FileRejected:
        # Checked here, while the file can still be closed: an unstarted generator's `finally` never runs.
        parquet.close()
        if source is not None:
            source.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet.iter_batches(batch_size=batch_rows)
        except (pa.ArrowException, OSError) as exc:
            if not _parquet_content_error(exc):
                raise
            raise FileRejected(f"corrupt Parquet file: {exc}") from None
        finally:
            parquet.close()
            if source is not None:
                source.close()

    return columns, batches()


def _parquet_content_error(exc: Exception) -> bool:
    # pyarrow raises OSError without an errno for corrupt data ("Corrupt snappy compressed data."); an OSError
    # from the operating system (a failing disk) carries one and is not the file's fault.
    return not isinstance(exc, OSError) or exc.errno is None


def _unpack_to_temporary(open_stream: Callable[[], pa.NativeFile]) -> IO[bytes]:
    temporary = tempfile.TemporaryFile()
    try:
        with open_stream() as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                temporary.write(chunk)
    except OSError as exc:
        temporary.close()
        if _GZIP_FAILURE.search(str(exc)):
            raise FileRejected(f"corrupt gzip: {exc}") from None
        raise
    temporary.seek(0)
    return temporary


# ------------------------------------------------------------------------------------------------------------
# JSON Lines


def _open_jsonl(
    open_stream: Callable[[], pa.NativeFile], encoding: str, batch_rows: int, expected: Sequence[str] | None
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Columns: the keys of the first `batch_rows` records (in order of appearance) and the expected ones.

    JSON writers often leave out null fields, so an expected key that no early record has is a column of nulls,
    unless a key that looks like it (did-you-mean) is present: then it was renamed, and the file is rejected.
    A key first seen later is ignored when the mapping names its columns, and rejected otherwise (nothing is
    dropped silently).
    """
    records = _jsonl_records(open_stream, encoding)
    first = list(itertools.islice(records, batch_rows))
    seen: dict[str, None] = {}
    for _, record in first:
        seen.update(dict.fromkeys(record))
    if expected:
        absent = [name for name in expected if name not in seen]
        renamed = [(name, did_you_mean(name, [key for key in seen if key not in expected])) for name in absent]
        renamed = [(name, hint) for name, hint in renamed if hint]
        if renamed:
            records.close()
            described = ", ".join(f"{name!r}{hint}" for name, hint in renamed)
            raise FileRejected(f"wrong fields: no record in the first {len(first):,} has {described}")
        seen.update(dict.fromkeys(absent))
    columns = list(seen)
    schema = pa.schema([pa.field(name, pa.string()) for name in columns])
    strict = not expected

    def to_batch(chunk: list[tuple[int, dict]]) -> pa.RecordBatch:
        if strict:
            for line, record in chunk:
                new = [key for key in record if key not in seen]
                if new:
                    raise FileRejected(
                        f"line {line} has field {new[0]!r}, which none of the first {len(first):,} records has; "
                        "name the columns in the mapping to ignore extra fields"
                    )
        arrays = []
        for name in columns:
            values = [record.get(name) for _, record in chunk]
            # Most values are already text or missing: only the others go through the conversion.
            text = [value if value is None or type(value) is str else _jsonl_text(value) for value in values]
            arrays.append(pa.array(text, pa.string()))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            if first:
                yield to_batch(first)
            while chunk := list(itertools.islice(records, batch_rows)):
                yield to_batch(chunk)
        finally:
            records.close()

    return columns, batches()


def _jsonl_records(open_stream: Callable[[], pa.NativeFile], encoding: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; FileRejected naming the line for anything else."""
    offset = 0
    stream = open_stream()
    try:
        for number, raw in enumerate(_lines(stream), start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise FileRejected(
                    f"not valid {_encoding_label(encoding)}: byte 0x{raw[exc.start]:02x} at offset "
                    f"{offset + exc.start:,}{_decompressed(stream)} (line {number})"
                ) from None
            offset += len(raw)
            if number == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                record = json.loads(
                    text, parse_float=decimal.Decimal, parse_constant=str, object_pairs_hook=_no_duplicate_keys
                )
            except (json.JSONDecodeError, _DuplicateKey) as exc:
                raise FileRejected(f"line {number} is not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise FileRejected(f"line {number} is a JSON {type(record).__name__}, not an object")
            yield number, record
    except OSError as exc:
        if not _GZIP_FAILURE.search(str(exc)):
            raise
        raise FileRejected(f"corrupt gzip: {exc}") from None
    finally:
        stream.close()


def _lines(stream: pa.NativeFile) -> Iterator[bytes]:
    """The stream's lines (with their line breaks), read in 1 MB chunks."""
    pending = b""
    while chunk := stream.read(_CHUNK_BYTES):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(f"the key {twice!r} appears twice in one object")
    return record


def _jsonl_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | decimal.Decimal):
        return str(value)  # the number as written: parse_float=Decimal keeps "1234.50"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=float)


# ------------------------------------------------------------------------------------------------------------
# Encoding errors


def _decoding_reason(open_stream: Callable[[], pa.NativeFile], encoding: str, *, column: str | None) -> str:
    """Where the content first fails to decode: pyarrow says only that it does, so scan the stream for it."""
    label = _encoding_label(encoding)
    in_column = f", column {column!r}" if column else ""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset, line = 0, 1
    with open_stream() as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                before = exc.object[: exc.start]
                line += codecs.decode(before, encoding, "replace").count("\n")
                byte = exc.object[exc.start]
                return (
                    f"not valid {label}: byte 0x{byte:02x} at offset {offset - pending + exc.start:,}"
                    f"{_decompressed(stream)} (line {line}{in_column})"
                )
            line += text.count("\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return f"not valid {label}: the content ends in the middle of a character{in_column}"
    return f"not valid {label}{in_column}"


def _encoding_label(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8" else encoding


def _decompressed(stream: pa.NativeFile) -> str:
    return " of the decompressed content" if isinstance(stream, pa.CompressedInputStream) else ""


def _block_label() -> str:
    size = CSV_BLOCK_BYTES
    return f"{size >> 20} MB" if size >= 1 << 20 else f"{size >> 10} KB"


def _sample(text: str) -> str:
    text = text.strip("\r\n")
    return repr(text if len(text) <= _SAMPLE_CHARS else text[:_SAMPLE_CHARS] + "...")
