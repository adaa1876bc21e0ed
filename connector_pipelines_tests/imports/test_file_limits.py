"""`read_file`'s limits (`ReadLimits`) and its rule that any failure to read a file is a rejection with a reason."""

from __future__ import annotations

import gzip
import io
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector_pipelines.imports.file_reader import FileRejected, ReadLimits, read_file, read_limits
from connector_pipelines.spec.imports import ImportSpec


@pytest.fixture
def write(tmp_path: Path):
    def write(name: str, data: bytes | str) -> Path:
        path = tmp_path / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    return write


def rows_of(reading) -> list[dict]:
    return [row for batch in reading.batches() for row in batch.to_pylist()]


def rejection(path: Path, **options) -> str:
    with pytest.raises(FileRejected) as caught:
        rows_of(read_file(path, **options))
    assert "\n" not in caught.value.reason
    return caught.value.reason


def bomb_reason(size: str) -> str:
    return (
        f"the file unpacks to more than {size} (limits.max_decompressed_bytes); a compressed file this large is refused"
    )


def test_a_json_lines_line_longer_than_the_limit_is_refused_before_it_is_held_whole(write):
    path = write("a.jsonl.gz", gzip.compress(b'{"a": "1"}\n{"a": "' + b"x" * (64 << 20) + b'"}\n', 1))
    started = time.perf_counter()
    assert rejection(path) == "line 2 is longer than 1 MB (limits.max_row_bytes)"
    assert time.perf_counter() - started < 2
    # The limit is the setting's: a line of exactly max_row_bytes (line break included) is read.
    exact = write("b.jsonl", '{"a": "' + "x" * (1024 - 10) + '"}\n')
    assert len(rows_of(read_file(exact, limits=ReadLimits(max_row_bytes=1024)))) == 1
    assert (
        rejection(exact, limits=ReadLimits(max_row_bytes=1023))
        == "line 1 is longer than 1,023 bytes (limits.max_row_bytes)"
    )


def test_a_csv_row_longer_than_the_limit_is_refused_with_the_limit_named(write):
    # pyarrow reads a row that spans two blocks; one spanning three is refused.
    path = write("a.csv", "id,note\n1,short\n2," + "x" * 9000 + "\n3,short\n")
    assert rejection(path, limits=ReadLimits(max_row_bytes=4096)) == (
        "malformed CSV: a quoted value that is never closed, or a row longer than 4 KB (limits.max_row_bytes), "
        "after row 2"
    )
    assert len(rows_of(read_file(path, limits=ReadLimits(max_row_bytes=9216)))) == 3


@pytest.mark.parametrize("name", ["a.csv.gz", "a.jsonl.gz", "a.parquet.gz"])
def test_gzip_content_past_max_decompressed_bytes_is_refused(write, name):
    if name.startswith("a.parquet"):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"a": [str(n) * 20 for n in range(20_000)]}), buffer)
        content = buffer.getvalue()
    elif name.startswith("a.csv"):
        content = ("a\n" + "1\n" * 200_000).encode()
    else:
        content = b'{"a": "1"}\n' * 40_000
    path = write(name, gzip.compress(content))
    assert rejection(path, limits=ReadLimits(max_decompressed_bytes=64 << 10)) == bomb_reason("64 KB")
    # Exactly at the limit is within it.
    assert rows_of(read_file(path, limits=ReadLimits(max_decompressed_bytes=len(content))))


def test_a_bomb_of_blank_lines_is_refused_though_it_has_no_rows_to_count(write):
    path = write("a.csv.gz", gzip.compress(b"a\n1\n" + b"\n" * (4 << 20)))
    assert rejection(path, limits=ReadLimits(max_decompressed_bytes=1 << 20)) == bomb_reason("1 MB")


def test_uncompressed_files_are_not_held_to_max_decompressed_bytes(write):
    path = write("a.csv", "a\n" + "1\n" * 1000)
    assert len(rows_of(read_file(path, limits=ReadLimits(max_decompressed_bytes=1024)))) == 1000


@pytest.mark.parametrize("name", ["a.csv", "a.jsonl", "a.parquet"])
def test_more_rows_than_max_rows_are_refused_and_exactly_max_rows_are_read(write, name):
    if name.endswith("csv"):
        content: bytes | str = "a\n" + "1\n" * 10
    elif name.endswith("jsonl"):
        content = '{"a": "1"}\n' * 10
    else:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"a": ["1"] * 10}), buffer)
        content = buffer.getvalue()
    path = write(name, content)
    assert rejection(path, limits=ReadLimits(max_rows=9), batch_rows=3) == (
        "the file has more than 9 rows (limits.max_rows_per_file); split it into smaller files or raise the limit"
    )
    assert len(rows_of(read_file(path, limits=ReadLimits(max_rows=10), batch_rows=3))) == 10


def test_json_numbers_too_long_for_python_and_nesting_too_deep_are_refused_naming_the_line(write):
    long_number = write("a.jsonl", '{"a": 1}\n{"a": -' + "9" * 4301 + "}\n")
    assert rejection(long_number) == "line 2 has a number of 4,301 digits; at most 4,300 are read"
    assert rows_of(read_file(write("b.jsonl", '{"a": ' + "9" * 4300 + "}\n"))) == [{"a": "9" * 4300}]
    deep = "[" * 63 + "]" * 63
    assert rows_of(read_file(write("c.jsonl", '{"a": ' + deep + "}\n"))) == [{"a": deep}]  # 64 levels
    too_deep = write("d.jsonl", '{"a": 1}\n{"a": [' + deep + "]}\n")
    assert rejection(too_deep) == "line 2 nests objects or arrays more than 64 deep"
    recursion = write("e.jsonl", '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    assert rejection(recursion) == "line 1 nests objects or arrays more than 64 deep"


def test_limits_come_from_the_spec_of_a_files_or_email_source():
    spec = ImportSpec.model_validate(
        {
            "source": {
                "files": {
                    "connection": "c",
                    "pattern": "*.csv",
                    "limits": {"max_row_bytes": 4096, "max_decompressed_bytes": 1 << 20, "max_rows_per_file": 7},
                }
            },
            "target": {"connection": "t", "table": "x", "key": "id"},
            "mapping": [{"target": "id", "source": "id"}],
        }
    )
    assert read_limits(spec) == ReadLimits(max_row_bytes=4096, max_decompressed_bytes=1 << 20, max_rows=7)
    default = spec.model_copy(update={"source": spec.source.model_copy(update={"files": None})})
    assert read_limits(default) == ReadLimits() and ReadLimits().row_bytes == 1 << 20


def test_any_other_failure_to_read_is_a_rejection_naming_the_exception(write):
    # A JSON escape for half a surrogate pair is valid JSON but no text Arrow can hold.
    path = write("a.jsonl", '{"a": "ok"}\n{"a": "\\ud800"}\n')
    assert rejection(path).startswith("unreadable jsonl: UnicodeEncodeError: ")
