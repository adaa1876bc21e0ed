"""read_file: arriving files as Arrow batches (all text for CSV/TSV/JSON Lines), or a precise rejection reason."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connector_pipelines.imports import file_reader
from connector_pipelines.imports.file_reader import FileRejected, read_file

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def write(tmp_path: Path):
    def write(name: str, data: bytes | str) -> Path:
        path = tmp_path / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    return write


@pytest.fixture
def small_blocks(monkeypatch):
    """64 KB CSV blocks, so 'deep in the file' needs a few thousand rows rather than 4 MB of them."""
    monkeypatch.setattr(file_reader, "CSV_BLOCK_BYTES", 64 << 10)


def rows_of(reading) -> list[dict]:
    return [row for batch in reading.batches() for row in batch.to_pylist()]


def rejection(path: Path, **options) -> str:
    """The reason, whether read_file or the iteration rejects the file."""
    with pytest.raises(FileRejected) as caught:
        rows_of(read_file(path, **options))
    assert caught.value.reason == str(caught.value)
    assert "\n" not in caught.value.reason
    return caught.value.reason


# ------------------------------------------------------------------------------------------------------------
# Reading


def test_csv_columns_are_text_as_written_and_empty_stays_empty(write):
    data = 'id,booked,amount,note\n1,31/01/2024,"1.234,56",\n002,01/02/2024,"0,50",""\n'
    path = write("orders.csv", data)

    reading = read_file(path)

    assert reading.columns == ["id", "booked", "amount", "note"]
    assert (reading.format, reading.compressed) == ("csv", False)
    assert reading.sha256 == hashlib.sha256(data.encode()).hexdigest()
    assert reading.size == len(data)
    assert reading.rows is None  # known only after iteration
    batches = list(reading.batches())
    assert all(field.type == pa.string() for field in batches[0].schema)
    assert [row for batch in batches for row in batch.to_pylist()] == [
        {"id": "1", "booked": "31/01/2024", "amount": "1.234,56", "note": ""},
        {"id": "002", "booked": "01/02/2024", "amount": "0,50", "note": ""},
    ]
    assert reading.rows == 2


def test_gzip_tsv_delimiters_bom_quoted_line_breaks_and_a_format_override(write):
    tsv = write("orders.tsv.gz", gzip.compress(b'id\tname\n1\tAda\n2\t"two\nlines"\n'))
    reading = read_file(tsv)
    assert (reading.format, reading.compressed) == ("tsv", True)
    assert rows_of(reading) == [{"id": "1", "name": "Ada"}, {"id": "2", "name": "two\nlines"}]

    semicolons = write("orders.csv", "\ufeffid;amount\n1;1.234,56\n".encode())
    assert rows_of(read_file(semicolons, csv_delimiter=";")) == [{"id": "1", "amount": "1.234,56"}]

    # Gzip is recognised by its signature, so a mislabelled name still reads; format= overrides the name.
    mislabelled = write("orders.txt", gzip.compress(b"id\n7\n"))
    assert rows_of(read_file(mislabelled, format="csv")) == [{"id": "7"}]


def test_no_header_and_another_encoding(write):
    path = write("prices.csv", "1,café\n2,crème".encode("cp1252"))
    reading = read_file(path, csv_header=False, encoding="cp1252")
    assert reading.columns == ["column_1", "column_2"]
    assert rows_of(reading) == [{"column_1": "1", "column_2": "café"}, {"column_1": "2", "column_2": "crème"}]

    single = write("single.csv", "1,2")  # one line, no line break: pyarrow alone cannot read this
    assert rows_of(read_file(single, csv_header=False)) == [{"column_1": "1", "column_2": "2"}]


def test_batches_have_batch_rows_rows_and_are_read_once(write, small_blocks):
    rows = [b"%d,row %d\n" % (i, i) for i in range(25_000)]
    path = write("big.csv.gz", gzip.compress(b"n,text\n" + b"".join(rows)))

    reading = read_file(path, batch_rows=1_000)
    sizes = [batch.num_rows for batch in reading.batches()]

    assert sizes == [1_000] * 25 and reading.rows == 25_000

    # Blocks of 64 KB hold ~5,000 rows: larger batches are put together from several blocks.
    regrouped = read_file(path, batch_rows=12_000)
    batches = list(regrouped.batches())
    assert [batch.num_rows for batch in batches] == [12_000, 12_000, 1_000]
    assert batches[2].column("text").to_pylist()[-1] == "row 24999"
    with pytest.raises(RuntimeError, match="already read"):
        reading.batches()


def test_parquet_keeps_its_types_and_may_be_gzipped(write, tmp_path):
    table = pa.table({"id": [1, 2, 3], "amount": [1.5, None, 3.25], "name": ["a", "b", "c"]})
    pq.write_table(table, tmp_path / "plain.parquet")
    packed = write("packed.parquet.gz", gzip.compress((tmp_path / "plain.parquet").read_bytes()))

    for path in (tmp_path / "plain.parquet", packed):
        reading = read_file(path, expected_columns=["id", "name"], batch_rows=2)
        assert reading.columns == ["id", "amount", "name"]
        batches = list(reading.batches())
        assert [b.num_rows for b in batches] == [2, 1]
        assert pa.Table.from_batches(batches).equals(table)


def test_jsonl_values_become_text_and_missing_keys_null(write):
    lines = [
        {"id": 1, "amount": 1234.50, "ok": True, "tags": ["a", 2], "note": None},
        {"id": 2, "amount": "7,5", "extra": {"k": 1.25}},
    ]
    text = "\n".join(json.dumps(line) for line in lines).replace("1234.5", "1234.50") + "\n\n"
    path = write("events.ndjson", text)

    reading = read_file(path)

    assert reading.columns == ["id", "amount", "ok", "tags", "note", "extra"]
    assert rows_of(reading) == [
        {"id": "1", "amount": "1234.50", "ok": "true", "tags": '["a",2]', "note": None, "extra": None},
        {"id": "2", "amount": "7,5", "ok": None, "tags": None, "note": None, "extra": '{"k":1.25}'},
    ]


def test_jsonl_expected_field_no_record_has_is_a_null_column_unless_renamed(write):
    path = write("events.jsonl", '{"id": 1}\n{"id": 2, "coupon": "X"}\n')
    reading = read_file(path, expected_columns=["id", "discount"])
    assert reading.columns == ["id", "coupon", "discount"]
    assert [row["discount"] for row in rows_of(reading)] == [None, None]

    renamed = write("renamed.jsonl", '{"orderId": 1}\n')
    reason = rejection(renamed, expected_columns=["order_id"])
    assert reason == "wrong fields: no record in the first 1 has 'order_id' (did you mean 'orderId'?)"


# ------------------------------------------------------------------------------------------------------------
# Rejections


def test_unknown_extension_is_named(write):
    assert rejection(write("orders.xlsx", b"PK\x03\x04")) == (
        "unknown file type: 'orders.xlsx' has extension '.xlsx'; "
        "expected one of .csv, .tsv, .parquet, .jsonl, .ndjson (optionally + .gz)"
    )
    assert "has no extension" in rejection(write("README", b"x"))


def test_empty_and_header_only_files(write, tmp_path):
    assert rejection(write("a.csv", b"")) == "the file is empty (0 bytes)"
    assert rejection(write("b.csv", b"id,name\n")) == "the file has a header but no rows"
    assert rejection(write("c.csv", b"id,name")) == "the file has a header but no rows"
    assert rejection(write("d.csv", b"\n\n")) == "the file has no header, only blank lines"
    assert rejection(write("e.csv.gz", gzip.compress(b""))) == "the file holds no data (it is empty once decompressed)"
    assert rejection(write("f.jsonl", b"\n \n")) == "the file has no rows"
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), tmp_path / "g.parquet")
    assert rejection(tmp_path / "g.parquet") == "the file has no rows"


def test_wrong_header_names_missing_and_unexpected_columns_with_did_you_mean(write):
    path = write("orders.csv", "Order_ID,amout,comment\n1,2,3\n")

    reason = rejection(path, expected_columns=["order_id", "amount", "booked"])

    assert reason == (
        "wrong header: missing columns 'order_id' (did you mean 'Order_ID'?), 'amount' (did you mean 'amout'?), "
        "'booked'; unexpected: 'Order_ID', 'amout', 'comment'"
    )
    # Extra columns alone are fine: the mapping reads only the columns it names.
    assert read_file(path, expected_columns=["Order_ID"]).columns == ["Order_ID", "amout", "comment"]


def test_a_wrong_delimiter_gets_a_hint(write):
    path = write("orders.csv", "id;amount\n1;2\n")
    reason = rejection(path, expected_columns=["id", "amount"])
    assert reason.endswith("(the header is one column: is the delimiter ';' rather than ','?)")


def test_duplicate_and_unnamed_columns(write):
    assert (
        rejection(write("a.csv", "id,name,id\n1,2,3\n")) == "wrong header: duplicate column names: 'id' (columns 1, 3)"
    )
    assert rejection(write("b.csv", "id,,name\n1,2,3\n")) == (
        "wrong header: column 2 has no name (an empty header cell)"
    )


def test_a_malformed_row_is_named_by_its_row_number(write):
    # Rows are records, numbered as a spreadsheet does (header = row 1): the value spanning two lines is one row.
    path = write("orders.csv", 'id,name\n1,"a\nb"\n2,c,extra\n')
    assert rejection(path) == "malformed CSV: row 3 has 3 fields where the header has 2: '2,c,extra'"

    short = write("short.csv", "1,a\n2\n")
    assert rejection(short, csv_header=False) == "malformed CSV: row 2 has 1 fields where the header has 2: '2'"


def test_a_malformed_row_deep_in_the_file_rejects_during_iteration(write, small_blocks):
    rows = b"".join(b"%d,name %d\n" % (i, i) for i in range(20_000))
    path = write("orders.csv.gz", gzip.compress(b"id,name\n" + rows + b"oops\n" + b"1,x\n"))

    reading = read_file(path, batch_rows=5_000)  # the header and first blocks are fine
    delivered = 0
    with pytest.raises(FileRejected) as caught:
        for batch in reading.batches():
            delivered += batch.num_rows

    assert caught.value.reason == "malformed CSV: row 20002 has 1 fields where the header has 2: 'oops'"
    assert 0 < delivered < 20_000
    assert reading.rows is None


def test_an_unclosed_quote_in_a_large_file(write, small_blocks):
    path = write("orders.csv", b'id,name\n1,a\n2,"never closed\n' + b"3,c\n" * 40_000)
    assert rejection(path) == (
        "malformed CSV: a quoted value that is never closed, or a row longer than 64 KB (limits.max_row_bytes), "
        "after row 2"
    )


def test_invalid_utf8_names_the_offset_line_and_column(write, small_blocks):
    path = write("orders.csv", b"id,name\n1,Ada\n2,Bj\xf6rk\n")
    assert rejection(path) == "not valid UTF-8: byte 0xf6 at offset 18 (line 3, column 'name')"

    header = write("header.csv", b"id,n\xe4me\n1,2\n")
    assert rejection(header) == "not valid UTF-8: byte 0xe4 at offset 4 (line 1)"

    deep = write("deep.csv.gz", gzip.compress(b"id,name\n" + b"1,ok\n" * 30_000 + b"2,\xff\n"))
    reason = rejection(deep)
    assert reason == f"not valid UTF-8: byte 0xff at offset {8 + 5 * 30_000 + 2:,} of the decompressed content " + (
        "(line 30002, column 'name')"
    )

    jsonl = write("events.jsonl", b'{"a": "x"}\n{"a": "\xc3("}\n')
    assert rejection(jsonl) == "not valid UTF-8: byte 0xc3 at offset 18 (line 2)"


def test_corrupt_gzip(write):
    assert rejection(write("a.csv.gz", b"id,name\n1,2\n")) == (
        "corrupt gzip: the name ends in .gz but the file does not start with the gzip signature "
        "(1f 8b; it starts with 69 64)"
    )
    packed = gzip.compress(b"id,name\n" + b"".join(b"%d,%d\n" % (i, i * 7919 % 10007) for i in range(50_000)))
    assert rejection(write("b.csv.gz", packed[: len(packed) // 2])).startswith("corrupt gzip: ")
    flipped = bytearray(packed)
    flipped[-6] ^= 0xFF  # the CRC
    assert rejection(write("c.csv.gz", bytes(flipped))) == "corrupt gzip: zlib inflate failed: incorrect data check"
    assert rejection(write("d.jsonl.gz", packed[: len(packed) // 2])).startswith("corrupt gzip: ")
    assert rejection(write("e.parquet.gz", packed[:100])).startswith("corrupt gzip: ")


def test_parquet_that_is_not_parquet(write, tmp_path):
    assert rejection(write("a.parquet", b"id,name\n1,2\n")) == (
        "not a Parquet file: Parquet magic bytes not found in footer. "
        "Either the file is corrupted or this is not a parquet file."
    )
    pq.write_table(pa.table({"id": [1]}), tmp_path / "real.parquet")
    assert rejection(tmp_path / "real.parquet", expected_columns=["ID"]) == (
        "wrong header: missing column 'ID' (did you mean 'id'?); unexpected: 'id'"
    )
    misnamed = write("b.csv", (tmp_path / "real.parquet").read_bytes())
    assert rejection(misnamed) == "the file is Parquet, not csv (it starts with Parquet's signature PAR1)"


def test_corrupt_parquet_data_rejects_during_iteration(write, tmp_path):
    values = [f"value {i * 7919 % 100_003}" for i in range(300_000)]
    pq.write_table(pa.table({"n": range(300_000), "text": values}), tmp_path / "good.parquet", row_group_size=100_000)
    data = bytearray((tmp_path / "good.parquet").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroes inside a compressed page
    path = write("bad.parquet", bytes(data))

    reason = rejection(path)

    assert reason.startswith("corrupt Parquet file: ")


def test_jsonl_line_problems_are_named(write):
    assert rejection(write("a.jsonl", '{"a": 1}\n{"a": 2,\n')).startswith("line 2 is not valid JSON: ")
    assert rejection(write("b.jsonl", '{"a": 1}\n[1, 2]\n')) == "line 2 is a JSON list, not an object"
    assert rejection(write("c.jsonl", '{"a": 1, "a": 2}\n')) == (
        "line 1 is not valid JSON: the key 'a' appears twice in one object"
    )
    late = write("d.jsonl", '{"a": 1}\n' * 3 + '{"a": 1, "b": 2}\n')
    assert rejection(late, batch_rows=2) == (
        "line 4 has field 'b', which none of the first 2 records has; "
        "name the columns in the mapping to ignore extra fields"
    )
    assert [row for row in rows_of(read_file(late, batch_rows=2, expected_columns=["a"]))] == [{"a": "1"}] * 4


def test_a_configuration_error_is_not_a_rejection(write):
    path = write("a.csv", "id\n1\n")
    with pytest.raises(ValueError, match="format 'xlsx'"):
        read_file(path, format="xlsx")
    with pytest.raises(LookupError):
        read_file(path, encoding="no-such-encoding")
    with pytest.raises(FileNotFoundError):
        read_file(path.with_name("missing.csv"))
