"""Read an arriving file (CSV, TSV, Parquet, JSON Lines; each optionally gzip) as Arrow batches, or say why not.

`read_file` checks what can be checked up front (size, format, gzip signature, header, at least one row) and
returns a `FileReading` whose `batches()` streams the rest in batches of `batch_rows` rows; memory stays bounded
by a batch plus the CSV reader's read-ahead (~40 MB), never the whole file. Anything wrong with the file's
*content* raises `FileRejected` with a one-line reason for the quarantine report; problems of the environment
(a missing file, a disk error) stay `OSError`.

A rejection can also happen while iterating (a malformed row deep in a 2 GB file): the caller must then treat
the whole file as rejected. The importer stages rows before committing, so nothing half-loads.

Any other exception while reading (a bug, a parser's own limit) is a rejection too, naming the exception: a file
that cannot be read must be quarantined, not fail every run that tries it. Only an OSError carrying an errno (the
disk, the operating system) stays an error, since it is not the file's fault.

`ReadLimits` bound what one file may cost (`limits:` of a files or email source): the longest row or line, the
bytes a gzip file may unpack to, and the rows. Past one, the file is rejected with the limit's name.

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
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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
_DETAIL_CHARS = 200
# pyarrow reports a failed gzip stream as a plain OSError; these words tell it apart from a failing disk.
_GZIP_FAILURE = re.compile(r"zlib|compress|gzip|inflate", re.IGNORECASE)
# JSON Lines values are kept as text, nested ones re-encoded: deeper nesting than this is refused, well below
# Python's recursion limit (json.loads and json.dumps recurse once per level).
MAX_JSON_DEPTH = 64
# Python refuses to turn longer digit strings into an int (a quadratic conversion); JSON numbers beyond are refused.
_MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4_300


@dataclass(frozen=True)
class ReadLimits:
    """What one file may cost to read; past a limit the file is rejected with the limit's name in the reason.

    `max_row_bytes` (None: CSV_BLOCK_BYTES, 1 MiB) bounds a CSV/TSV row (pyarrow's block size: memory stays about
    30 blocks) and a JSON Lines line; `max_decompressed_bytes` the content of a gzip file; `max_rows` the data rows.
    """

    max_row_bytes: int | None = None
    max_decompressed_bytes: int = 10 << 30
    max_rows: int = 100_000_000

    @property
    def row_bytes(self) -> int:
        return self.max_row_bytes or CSV_BLOCK_BYTES


def read_limits(spec: Any) -> ReadLimits:
    """The limits of an import spec's files or email source (`limits:`), or the defaults for any other source."""
    source = spec.source.files or spec.source.email
    if source is None:
        return ReadLimits()
    limits = source.limits
    return ReadLimits(limits.max_row_bytes, limits.max_decompressed_bytes, limits.max_rows_per_file)


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
        content: _Content | None = None,
        max_rows: int | None = None,
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
        self._content = content
        self._max_rows = max_rows
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
                if self._max_rows is not None and self._rows_read > self._max_rows:
                    raise FileRejected(
                        f"the file has more than {self._max_rows:,} rows (limits.max_rows_per_file); "
                        "split it into smaller files or raise the limit"
                    )
                yield batch
            if self._content is not None:
                self._content.check()
            self._rows = self._rows_read
        except Exception as exc:
            rejected = _rejection(exc, self._content, self.format)
            if rejected is None:
                raise
            raise rejected from None
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
    limits: ReadLimits | None = None,
) -> FileReading:
    """Open `path` for import, or raise `FileRejected` saying exactly what is wrong with it.

    `format` defaults to the name's extension (.csv, .tsv, .parquet, .jsonl/.ndjson, each optionally + .gz).
    A file is decompressed when it starts with the gzip signature, whatever its name; a `.gz` name without
    that signature is rejected. `expected_columns` are the columns the mapping reads: each must be in the
    header; other columns are allowed (they are listed in the reason when a column is missing, since a
    renamed column shows up as one missing and one unexpected). `encoding` applies to CSV/TSV/JSON Lines.
    `limits` (default `ReadLimits()`) bound the row length, the decompressed size and the rows.
    """
    path = Path(path)
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    encoding = codecs.lookup(encoding).name  # an unknown encoding is a configuration error (LookupError)
    limits = limits or ReadLimits()
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

    content = _Content(path, compressed, limits.max_decompressed_bytes)
    try:
        if file_format in ("csv", "tsv"):
            delimiter = csv_delimiter or ("\t" if file_format == "tsv" else ",")
            columns, batches = _open_csv(
                content, delimiter=delimiter, header=csv_header, encoding=encoding, block_bytes=limits.row_bytes
            )
            _check_header(columns, expected_columns, delimiter=delimiter)
        elif file_format == "parquet":
            columns, batches = _open_parquet(path, compressed, content, batch_rows, expected_columns)
        else:
            columns, batches = _open_jsonl(content, encoding, batch_rows, expected_columns, limits.row_bytes)
        first = next((batch for batch in batches if batch.num_rows), None)
        if first is None:
            batches.close()
            content.check()
            raise FileRejected(
                "the file has a header but no rows" if file_format in ("csv", "tsv") else "the file has no rows"
            )
    except Exception as exc:
        rejected = _rejection(exc, content, file_format)
        if rejected is None:
            raise
        raise rejected from None
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
        content=content,
        max_rows=limits.max_rows,
    )


class _Content:
    """Opens the file's content (decompressed when gzip) as a stream, as often as the readers need it, and stops
    a gzip stream at `max_decompressed_bytes`: the reader then sees the content end there, `exceeded` is set and
    `check()` (or `_rejection`, for the parse error a cut row causes) rejects the file."""

    def __init__(self, path: Path, compressed: bool, max_decompressed_bytes: int):
        self.path = path
        self.compressed = compressed
        self.max_decompressed_bytes = max_decompressed_bytes
        self.exceeded = False

    def __call__(self) -> pa.NativeFile:
        stream = pa.input_stream(str(self.path), compression="gzip" if self.compressed else None)
        if not self.compressed:
            return stream
        return pa.PythonFile(_CappedReader(stream, self), mode="r")

    def reason(self) -> str:
        return (
            f"the file unpacks to more than {_bytes_label(self.max_decompressed_bytes)} "
            "(limits.max_decompressed_bytes); a compressed file this large is refused"
        )

    def check(self) -> None:
        if self.exceeded:
            raise FileRejected(self.reason())


class _CappedReader(io.RawIOBase):
    """A decompressing stream that ends (and marks its content as too large) past the content's byte limit."""

    def __init__(self, inner: pa.NativeFile, content: _Content):
        self._inner = inner
        self._content = content
        self._read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._content.exceeded:
            return b""
        limit = self._content.max_decompressed_bytes
        # Never more than one byte past the limit: that byte is what tells "exactly at the limit" from "over it".
        wanted = limit - self._read + 1 if size is None or size < 0 else min(size, limit - self._read + 1)
        chunk = self._inner.read(wanted)
        self._read += len(chunk)
        if self._read > limit:
            self._content.exceeded = True
            return b""
        return chunk

    def readinto(self, buffer) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self._inner.close()
        super().close()


def _rejection(exc: Exception, content: _Content | None, file_format: str) -> FileRejected | None:
    """The FileRejected any exception while reading stands for, or None when it is the environment's (an OSError
    with an errno: the disk, the system), which is not the file's fault and is raised as it is."""
    if content is not None and content.exceeded:
        return FileRejected(content.reason())
    if isinstance(exc, FileRejected):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        return None
    if isinstance(exc, RecursionError):
        return FileRejected(f"unreadable {file_format}: the content is nested too deeply to read")
    if isinstance(exc, MemoryError):
        return FileRejected(f"unreadable {file_format}: reading the file ran out of memory")
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else "no message"
    detail = detail if len(detail) <= _DETAIL_CHARS else detail[:_DETAIL_CHARS] + "..."
    return FileRejected(f"unreadable {file_format}: {type(exc).__name__}: {detail}")


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
    open_stream: Callable[[], pa.NativeFile], *, delimiter: str, header: bool, encoding: str, block_bytes: int
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    invalid_rows: list[pa_csv.InvalidRow] = []

    def remember(row: pa_csv.InvalidRow) -> str:
        invalid_rows.append(row)
        return "error"

    # Single-threaded: as fast here as the threaded reader, and only then does pyarrow know row numbers.
    read = {"use_threads": False, "block_size": block_bytes, "encoding": encoding}
    parse = pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=remember)

    def rejection(exc: Exception, data_rows_read: int) -> FileRejected | None:
        # Rows are numbered as pyarrow and spreadsheets do: the header is row 1.
        last_good_row = data_rows_read + (1 if header else 0)
        return _csv_rejection(
            exc, invalid_rows, open_stream, encoding, columns=names, last_good_row=last_good_row, block=block_bytes
        )

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
    block: int,
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
            f"malformed CSV: a quoted value that is never closed, or a row longer than {_bytes_label(block)} "
            f"(limits.max_row_bytes), after row {last_good_row}"
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
        check = getattr(open_stream, "check", None)
        if check is not None:
            check()
    except FileRejected:
        temporary.close()
        raise
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
    open_stream: Callable[[], pa.NativeFile],
    encoding: str,
    batch_rows: int,
    expected: Sequence[str] | None,
    max_line_bytes: int,
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """Columns: the keys of the first `batch_rows` records (in order of appearance) and the expected ones.

    JSON writers often leave out null fields, so an expected key that no early record has is a column of nulls,
    unless a key that looks like it (did-you-mean) is present: then it was renamed, and the file is rejected.
    A key first seen later is ignored when the mapping names its columns, and rejected otherwise (nothing is
    dropped silently).
    """
    records = _jsonl_records(open_stream, encoding, max_line_bytes)
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


def _jsonl_records(
    open_stream: Callable[[], pa.NativeFile], encoding: str, max_line_bytes: int
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; FileRejected naming the line for anything else."""
    offset = 0
    number = 0
    stream = open_stream()
    try:
        for number, raw in enumerate(_lines(stream, max_line_bytes), start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise FileRejected(
                    f"not valid {_encoding_label(encoding)}: byte 0x{raw[exc.start]:02x} at offset "
                    f"{offset + exc.start:,}{_decompressed(open_stream)} (line {number})"
                ) from None
            offset += len(raw)
            if number == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                record = json.loads(
                    text,
                    parse_float=decimal.Decimal,
                    parse_int=_json_int,
                    parse_constant=str,
                    object_pairs_hook=_no_duplicate_keys,
                )
            except _TooManyDigits as exc:
                raise FileRejected(
                    f"line {number} has a number of {exc.digits:,} digits; at most {_MAX_INT_DIGITS:,} are read"
                ) from None
            except RecursionError:
                raise FileRejected(f"line {number} nests objects or arrays more than {MAX_JSON_DEPTH} deep") from None
            except (json.JSONDecodeError, _DuplicateKey) as exc:
                raise FileRejected(f"line {number} is not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise FileRejected(f"line {number} is a JSON {type(record).__name__}, not an object")
            if _deeper_than(record, MAX_JSON_DEPTH):
                raise FileRejected(f"line {number} nests objects or arrays more than {MAX_JSON_DEPTH} deep")
            yield number, record
    except _LineTooLong:
        raise FileRejected(
            f"line {number + 1} is longer than {_bytes_label(max_line_bytes)} (limits.max_row_bytes)"
        ) from None
    except OSError as exc:
        if not _GZIP_FAILURE.search(str(exc)):
            raise
        raise FileRejected(f"corrupt gzip: {exc}") from None
    finally:
        stream.close()


class _LineTooLong(Exception):
    pass


def _lines(stream: pa.NativeFile, max_line_bytes: int) -> Iterator[bytes]:
    """The stream's lines (with their line breaks), read in 1 MB chunks; _LineTooLong past `max_line_bytes`, before
    the line is held whole (a gigabyte without a line break must not become a gigabyte in memory)."""
    pending = b""
    while chunk := stream.read(_CHUNK_BYTES):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if len(line) + 1 > max_line_bytes:
                raise _LineTooLong
            yield line + b"\n"
        if len(pending) > max_line_bytes:
            raise _LineTooLong
    if pending:
        yield pending


class _TooManyDigits(ValueError):
    def __init__(self, digits: int):
        self.digits = digits
        super().__init__(f"{digits} digits")


def _json_int(text: str) -> int:
    # Checked before int(): past the limit Python raises a ValueError of its own, which says nothing of the line.
    digits = len(text) - (text[0] == "-")
    if digits > _MAX_INT_DIGITS:
        raise _TooManyDigits(digits)
    return int(text)


def _deeper_than(record: dict, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels in `record` (itself level 1); no recursion."""
    stack = [(value, 2) for value in record.values() if type(value) in (dict, list)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if type(value) is dict else value
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


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
                    f"{_decompressed(open_stream)} (line {line}{in_column})"
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


def _decompressed(open_stream: Callable[[], pa.NativeFile]) -> str:
    return " of the decompressed content" if getattr(open_stream, "compressed", False) else ""


def _bytes_label(size: int) -> str:
    """1 MB, 64 KB, 10 GB, or the exact count when it is not a whole number of those (decimal units are KB/MB/GB
    of 1024: the spec's defaults are powers of two)."""
    for shift, unit in ((30, "GB"), (20, "MB"), (10, "KB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:,} bytes"


def _sample(text: str) -> str:
    text = text.strip("\r\n")
    return repr(text if len(text) <= _SAMPLE_CHARS else text[:_SAMPLE_CHARS] + "...")
