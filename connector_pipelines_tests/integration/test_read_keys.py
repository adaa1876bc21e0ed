"""Reading an integration's data set for chosen record keys only (`DataSetReader.read_keys`), on SQLite, PostgreSQL
and MariaDB (`source_database` is parametrized over the three; each test has its own tables).

What is asserted: the rows that come back are exactly those whose record key was asked (integer, text and composite
keys; keys no row has; keys the database would match loosely; more keys than one chunk), and the SQL the source
received carries the keys as bound parameters in its WHERE clause, so no statement reads the whole data set.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2.extensions
import pyarrow as pa
import pytest
import sqlalchemy as sa

from connector_pipelines.integration.data_set import (
    DataSetReader,
    key_condition,
    postgres_key_problem,
    record_key,
    record_keys,
    split_record_key,
)
from connector_pipelines.spec.integration import DataSet
from connector_pipelines.transports.sql import SqlSource
from connector_pipelines_tests.fixtures.source_databases import SourceDialectDatabase

UPDATED = dt.datetime(2026, 1, 2, 10, 15, 30, tzinfo=dt.UTC)
# Codes a key must survive: a quote (bound, not formatted), and '|' and '\' (escaped in a composite key's text).
ODD_CODES = {11: "O'Neil", 12: "X|Y\\Z", 13: "back\\"}


# ---- split_record_key: the inverse of record_key ----------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        ["1", "a"],
        ["a|b", "c"],
        ["a\\", "|"],
        ["\\|", "\\\\"],
        ["", ""],
        ["|", "|", "|"],
        ["x\\|y", "z|\\w", ""],
    ],
)
def test_split_record_key_inverts_record_key(values: list[str]) -> None:
    assert split_record_key(record_key(values), len(values)) == values


@pytest.mark.parametrize("text", ["a|b", "a\\b", "", "|"])
def test_split_record_key_of_one_column_is_the_text_itself(text: str) -> None:
    assert split_record_key(text, 1) == [text] == [record_key([text])]


@pytest.mark.parametrize(
    ("text", "width", "message"),
    [
        ("a|b|c", 2, "has 3 part(s) but the data set's key has 2 columns"),
        ("a\\|b", 2, "has 1 part(s) but the data set's key has 2 columns"),
        ("a|b\\", 2, "ends in a lone '\\'"),
        ("a\\x|b", 2, "escapes 'x'"),
    ],
)
def test_split_record_key_refuses_text_record_key_cannot_write(text: str, width: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split_record_key(text, width)


def test_key_condition_binds_every_value_and_on_sqlite_also_numbers() -> None:
    where, params = key_condition(['ds."a"', 'ds."b"'], [["1", "x"], ["2.5", "y"]], numbers=True)
    assert (
        where == '((ds."a" IN (:k0_0, :k0_0_n) AND ds."b" = :k1_0) OR (ds."a" IN (:k0_1, :k0_1_n) AND ds."b" = :k1_1))'
    )
    assert params == {"k0_0": "1", "k0_0_n": 1, "k1_0": "x", "k0_1": "2.5", "k0_1_n": 2.5, "k1_1": "y"}


@pytest.mark.parametrize(
    ("text", "oid", "refused"),
    [
        ("12", 23, False),
        ("-2147483648", 23, False),
        ("abc", 23, True),
        ("01", 23, True),
        ("1.0", 23, True),
        ("99999999999", 23, True),
        ("99999999999", 20, False),
        ("2026-01-02", 1082, False),
        ("2026-02-30", 1082, True),
        ("12.50", 1700, False),
        ("1.2.3", 1700, True),
        ("not-a-uuid", 2950, True),
        ("a\x00b", 25, True),
        ("anything at all", 25, False),
        ("{}", 114, False),  # json: compared as text, nothing to refuse
    ],
)
def test_postgres_key_problem_refuses_only_text_no_value_of_the_type_has(text: str, oid: int, refused: bool) -> None:
    assert (postgres_key_problem(text, oid) is not None) is refused


# ---- reading by key on each dialect ------------------------------------------------------------------------------


def _seed(db: SourceDialectDatabase, count: int = 10) -> None:
    codes = {i: f"C-{i:03d}" for i in range(1, count + 1)} | ODD_CODES
    db.add_customers(
        [
            {"customer_id": i, "code": code, "name": f"n{i}", "balance": db.balance("1.50"), "updated_at": UPDATED}
            for i, code in codes.items()
        ]
    )


def _reader(db: SourceDialectDatabase, key: list[str], *, query: str | None = None) -> DataSetReader:
    table = None if query else db.tables.customers
    data_set = DataSet(connection="source", table=table, query=db.sql(query) if query else None, key=key)
    return DataSetReader(SqlSource(db.url), data_set)


def _keys_read(reader: DataSetReader, keys: list[str], **options) -> list[str]:
    """The record keys of the rows `read_keys` returned, in order (a row that came twice shows twice)."""
    return [k for batch in reader.read_keys(keys, **options) for k in record_keys(batch, reader.key)]


@pytest.fixture
def source(source_database: SourceDialectDatabase) -> Iterator[SourceDialectDatabase]:
    _seed(source_database)
    yield source_database


def test_read_keys_by_integer_key_returns_exactly_the_asked_rows(source: SourceDialectDatabase) -> None:
    """'01' is matched by 1 on SQLite and MariaDB (and refused by PostgreSQL's integer input): either way no row is
    returned for it; 'abc' is no integer (PostgreSQL would fail the statement on it); 999 is no customer."""
    reader = _reader(source, ["customer_id"])
    try:
        assert sorted(_keys_read(reader, ["5", "2", "999", "01", "abc", "2"]), key=int) == ["2", "5"]
    finally:
        reader.source.dispose()


def test_read_keys_by_text_key_returns_exactly_the_asked_rows(source: SourceDialectDatabase) -> None:
    """'c-003' equals 'C-003' under MariaDB's case-insensitive collation, and 'C-003 ' under its trailing-space
    padding: only the exact key's row comes back. A quote in a key is bound, not formatted."""
    reader = _reader(source, ["code"])
    try:
        assert sorted(_keys_read(reader, ["C-003", "c-003", "C-003 ", "C-404", "O'Neil"])) == ["C-003", "O'Neil"]
    finally:
        reader.source.dispose()


def test_read_keys_by_composite_key_returns_exactly_the_asked_rows(source: SourceDialectDatabase) -> None:
    """A composite key's text is split back into its values, '|' and '\\' inside a value included. A pair whose
    values exist but not together (4, 'C-005'), and a key of the wrong width, return nothing."""
    reader = _reader(source, ["customer_id", "code"])
    asked = [record_key([3, "C-003"]), record_key([12, "X|Y\\Z"]), record_key([13, "back\\"])]
    absent = [record_key([4, "C-005"]), "7", "1|2|3"]
    try:
        assert sorted(_keys_read(reader, asked + absent)) == sorted(asked)
    finally:
        reader.source.dispose()


def test_read_keys_with_more_keys_than_a_chunk_returns_each_row_once(source: SourceDialectDatabase) -> None:
    """Chunks of 3 keys: the 10 customers in 4 queries (plus absent keys). '1' and '01' fall into different chunks;
    where the database matches '01' to customer 1 that chunk drops the row, so customer 1 comes once."""
    reader = _reader(source, ["customer_id"])
    keys = ["01", *(str(i) for i in range(10, 0, -1)), "404", "405"]
    try:
        assert sorted(_keys_read(reader, keys, chunk=3), key=int) == [str(i) for i in range(1, 11)]
    finally:
        reader.source.dispose()


def test_read_keys_of_no_keys_yields_nothing_and_issues_no_query(source: SourceDialectDatabase) -> None:
    reader = _reader(source, ["customer_id"])
    statements = _capture(reader.source)
    try:
        assert list(reader.read_keys([])) == []
        assert statements.executed == [] and statements.bound == []
    finally:
        reader.source.dispose()


def test_read_keys_with_no_match_yields_one_empty_batch_with_the_columns(source: SourceDialectDatabase) -> None:
    reader = _reader(source, ["customer_id"])
    try:
        batches = list(reader.read_keys(["404", "405"]))
        assert [b.num_rows for b in batches] == [0]
        assert batches[0].schema.names == ["customer_id", "code", "name", "balance", "owner_id", "updated_at"]
    finally:
        reader.source.dispose()


def test_read_keys_keeps_the_first_chunk_s_types(source: SourceDialectDatabase) -> None:
    """SQLite and MariaDB types are inferred per query: owner_id is NULL for customers 1..10 and set for 11, so
    the chunk holding 11 alone would type it as an integer after a chunk typed it as text."""
    source.execute("UPDATE {customers} SET owner_id = 7 WHERE customer_id = 11")
    reader = _reader(source, ["customer_id"])
    try:
        batches = [b for b in reader.read_keys(["1", "11"], chunk=1)]
        assert len({b.schema for b in batches}) == 1
        owners = pa.Table.from_batches(batches).sort_by("customer_id").column("owner_id").to_pylist()
        assert [None if v is None else int(v) for v in owners] == [None, 7]
    finally:
        reader.source.dispose()


@pytest.mark.parametrize("source_database", ["sqlite", "postgresql"], indirect=True)
def test_read_keys_on_a_data_set_declared_with_a_with_query(source: SourceDialectDatabase) -> None:
    query = "WITH c AS (SELECT customer_id, code, name FROM {customers} WHERE customer_id < 11) SELECT * FROM c"
    reader = _reader(source, ["customer_id"], query=query)
    try:
        assert sorted(_keys_read(reader, ["3", "1", "12"]), key=int) == ["1", "3"]
    finally:
        reader.source.dispose()


def test_read_keys_on_a_key_the_query_computes(source: SourceDialectDatabase) -> None:
    """On SQLite an expression's column has no type affinity, so the integer 4 never equals the text '4' there:
    the key is bound as both."""
    query = "SELECT customer_id + 0 AS k, code FROM {customers}"
    reader = _reader(source, ["k"], query=query)
    try:
        assert sorted(_keys_read(reader, ["4", "6", "x"]), key=int) == ["4", "6"]
    finally:
        reader.source.dispose()


@pytest.mark.parametrize("source_database", ["postgresql"], indirect=True)
def test_read_keys_on_postgresql_skips_keys_the_column_s_type_refuses(source: SourceDialectDatabase) -> None:
    """PostgreSQL fails a whole statement on one literal its type refuses ('abc' for an integer, 'no-uuid' for a
    uuid): such keys are not sent. A key column of a type without a check (interval) is compared as its text, so
    'nonsense' matches nothing instead of failing."""
    query = "SELECT customer_id, md5(code)::uuid AS token, (customer_id || ' days')::interval AS wait FROM {customers}"
    token = source.query("SELECT md5(code)::uuid::text FROM {customers} WHERE customer_id = 2")[0][0]
    by_token = _reader(source, ["token"], query=query)
    by_wait = _reader(source, ["wait"], query=query)
    try:
        assert _keys_read(by_token, [token, "no-uuid", token.upper()]) == [token]
        assert _keys_read(by_wait, ["3 days", "nonsense"]) == ["3 days"]
        assert list(by_token.read_keys(["no-uuid"])) == []
    finally:
        by_token.source.dispose()
        by_wait.source.dispose()


# ---- the SQL the source received --------------------------------------------------------------------------------


@dataclass
class Statements:
    """What the source's driver was given.

    `executed`: (statement, parameters) as the driver received them (on PostgreSQL the COPY statements too, whose
    values psycopg2 has bound client-side, since COPY takes no parameters). `bound`: on PostgreSQL, each
    `mogrify(template, parameters)` call, i.e. the statement before binding and the values bound into it.
    """

    executed: list[tuple[str, object]] = field(default_factory=list)
    bound: list[tuple[str, object]] = field(default_factory=list)


def _capture(source: SqlSource) -> Statements:
    """Record the statements `source` sends, before its engine opens a connection.

    SQLite and MariaDB: SQLAlchemy's `before_cursor_execute`. PostgreSQL reads through COPY on the raw psycopg2
    connection, past SQLAlchemy's events, so there every new connection gets a recording cursor class (psycopg2's
    `cursor_factory`, which `connection.cursor()` uses) that notes execute, copy_expert and mogrify: deterministic,
    unlike server-side statistics, which are flushed asynchronously.
    """
    statements = Statements()
    engine = source.engine
    if source.dialect == "postgresql":

        class Recording(psycopg2.extensions.cursor):
            def execute(self, query, vars=None):
                statements.executed.append((_text(query), vars))
                return super().execute(query, vars)

            def copy_expert(self, sql, file, size=8192):
                statements.executed.append((_text(sql), None))
                return super().copy_expert(sql, file, size)

            def mogrify(self, query, vars=None):
                statements.bound.append((_text(query), vars))
                return super().mogrify(query, vars)

        sa.event.listen(engine, "connect", lambda connection, _record: setattr(connection, "cursor_factory", Recording))
    else:

        def record(_conn, _cursor, statement, parameters, _context, _executemany) -> None:
            statements.executed.append((statement, parameters))

        sa.event.listen(engine, "before_cursor_execute", record)
    return statements


def _text(query) -> str:
    return query.decode() if isinstance(query, bytes) else str(query)


def _parameter_values(parameters) -> list:
    if isinstance(parameters, dict):
        return list(parameters.values())
    return list(parameters or [])


def test_read_keys_sends_the_keys_as_bound_parameters_in_its_where_clause(source: SourceDialectDatabase) -> None:
    """Every statement that reads the customers has the key condition, `IN (` with one placeholder per key (SQLite
    `?`, MariaDB `%(k_0)s`, PostgreSQL `%(k_0)s` before psycopg2 binds it for COPY) and the keys among the bound
    values; the only other statement naming the table is the `LIMIT 0` description, which reads no row."""
    reader = _reader(source, ["code"])
    statements = _capture(reader.source)
    keys = ["C-001", "C-002", "C-003", "C-004", "C-005"]
    try:
        assert sorted(_keys_read(reader, keys, chunk=2)) == keys
    finally:
        reader.source.dispose()
    table = source.tables.customers.split(".")[-1]
    reading = [(s, p) for s, p in statements.executed if table in s]
    assert reading, "no statement named the customers"
    # The preparer quotes a name only where the dialect needs it: ds.code, ds."code" or ds.`code`.
    with_keys = [(s, p) for s, p in reading if KEY_CONDITION.search(s)]
    others = [s for s, p in reading if (s, p) not in with_keys]
    assert all(s.rstrip().endswith("ds LIMIT 0") and "WHERE" not in s for s in others), others
    assert len(others) == 1
    if source.dialect == "postgresql":
        # The statements PostgreSQL ran hold the values as libpq-escaped literals; psycopg2 put them there from
        # the parameters of mogrify, whose templates hold placeholders only.
        templates = [(t, v) for t, v in statements.bound if KEY_CONDITION.search(t)]
        assert len(templates) >= 3  # one chunk of keys per COPY (and per description of its result)
        assert all(re.search(r"IN \(%\(k_0\)s(, %\(k_1\)s)?\)", t) for t, _ in templates)
        assert all(not any(k in t for k in keys) for t, _ in templates)
        assert sorted({v for _, values in templates for v in values.values()}) == keys
        copies = [s for s, _ in with_keys if s.startswith("COPY (")]
        assert len(copies) == 3 and all("WHERE" in s for s in copies)
    else:
        assert len(with_keys) == 3  # chunks of 2, 2 and 1 key
        assert all(not any(k in s for k in keys) for s, _ in with_keys)
        assert sorted(v for _, p in with_keys for v in _parameter_values(p)) == keys


KEY_CONDITION = re.compile(r"WHERE ds\.[`\"]?code[`\"]? IN \(")


def _table_scans(db: SourceDialectDatabase) -> tuple[int, int]:
    schema, table = db.tables.customers.split(".")
    with db.engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            sa.text("SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE schemaname = :s AND relname = :t"),
            {"s": schema, "t": table},
        ).one()
    return int(row[0] or 0), int(row[1] or 0)


@pytest.mark.parametrize("source_database", ["postgresql"], indirect=True)
def test_read_keys_on_postgresql_uses_the_key_s_index_not_a_sequential_scan(
    source_database: SourceDialectDatabase,
) -> None:
    """The server's side of the same claim: reading 3 keys out of 20,000 rows scans the primary key's index and
    never the table (a key bound as text is coerced to the column's integer type, so the index serves it).

    PostgreSQL counts scans per backend and publishes them asynchronously. The seeding session and the reader's
    connections are closed (a backend publishes its counts when it exits) and the view is read again, with
    `pg_stat_clear_snapshot()`, until the counts settle, so no scan is missed or counted late.
    """
    db = source_database
    db.execute(
        "INSERT INTO {customers} (customer_id, code, name, balance, updated_at) "
        "SELECT g, 'C-' || g, 'n', 0, now() FROM generate_series(1, 20000) g"
    )
    db.execute("ANALYZE {customers}")
    db.engine.dispose()
    before = _settled(db)
    reader = _reader(db, ["customer_id"])
    try:
        assert sorted(_keys_read(reader, ["17", "9000", "19999"]), key=int) == ["17", "9000", "19999"]
    finally:
        reader.source.dispose()
    after = _settled(db, changed_from=before)
    assert after[0] == before[0], f"sequential scans of the table went from {before[0]} to {after[0]}"
    assert after[1] > before[1], f"index scans of the table stayed at {before[1]}"


def _settled(db: SourceDialectDatabase, changed_from: tuple[int, int] | None = None) -> tuple[int, int]:
    """The table's (seq_scan, idx_scan) once two readings 1 s apart agree (and differ from `changed_from`)."""
    deadline = time.monotonic() + 20
    last = _table_scans(db)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = _table_scans(db)
        db.engine.dispose()
        if now == last and now != changed_from:
            return now
        last = now
    return last
