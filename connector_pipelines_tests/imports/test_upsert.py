"""The upsert engine (delivery/upsert.py, delivery/staging.py) against real PostgreSQL, MariaDB and SQLite.

Each test gets its own namespace (a PostgreSQL schema, a MariaDB database, a SQLite file) from the extract
fixtures. Tables are seeded with plain SQL, not with the code under test, and read back with plain SQL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connector_pipelines.imports.upsert import (
    ArrowMapper,
    TableUpsert,
    TargetColumn,
    UpsertConfigError,
    UpsertError,
    UpsertResult,
    UpsertSettings,
    combine_batches,
    mapped_to_arrow,
)
from connector_pipelines.mapping import CompiledMapping, FieldRule, TargetField
from connector_pipelines_tests.fixtures.extract import TestDatabase

DIALECTS = ("postgresql", "mariadb", "sqlite")
_FIXTURES = {"postgresql": "pg_database", "mariadb": "mariadb_database", "sqlite": "sqlite_database"}

COLUMNS = [
    TargetColumn("id", "integer"),
    TargetColumn("name", "text"),
    TargetColumn("amount", "currency"),
    TargetColumn("updated_at", "datetime"),
]
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("name", pa.string()),
        pa.field("amount", pa.decimal128(12, 2)),
        pa.field("updated_at", pa.timestamp("us")),
    ]
)
INVOICES_DDL = {
    "postgresql": "CREATE TABLE invoices (id integer PRIMARY KEY, name varchar(5) NOT NULL, amount numeric(12,2), "
    "updated_at timestamp)",
    "mariadb": "CREATE TABLE invoices (id INT PRIMARY KEY, name VARCHAR(5) NOT NULL, amount DECIMAL(12,2), "
    "updated_at DATETIME(6))",
    "sqlite": "CREATE TABLE invoices (id INTEGER PRIMARY KEY, name VARCHAR(5) NOT NULL, amount NUMERIC(12,2), "
    "updated_at TIMESTAMP)",
}
T0 = dt.datetime(2024, 3, 1, 10, 0, 0)


@pytest.fixture(params=DIALECTS)
def db(request: pytest.FixtureRequest) -> TestDatabase:
    return request.getfixturevalue(_FIXTURES[request.param])


# --------------------------------------------------------------------------------------------------
# Helpers


def make_batch(rows: list[tuple]) -> pa.RecordBatch:
    """(id, name, amount, updated_at) tuples as a record batch of the mapped columns."""
    return pa.RecordBatch.from_pylist(
        [{"id": i, "name": n, "amount": None if a is None else Decimal(a), "updated_at": u} for i, n, a, u in rows],
        schema=SCHEMA,
    )


def seed(db: TestDatabase, rows: list[tuple], ddl: dict[str, str] = INVOICES_DDL) -> None:
    db.execute(ddl[db.dialect])
    if rows:
        db.execute(
            "INSERT INTO invoices (id, name, amount, updated_at) VALUES (:id, :name, :amount, :updated_at)",
            [{"id": i, "name": n, "amount": a, "updated_at": db.timestamp_value(u)} for i, n, a, u in rows],
        )


def _money(value: object) -> str | None:
    return None if value is None else f"{Decimal(str(value)):.2f}"


def _when(value: object) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)  # SQLite keeps ISO text


def table_rows(db: TestDatabase, table: str = "invoices") -> list[tuple]:
    """(id, name, amount as '0.00' text, updated_at) per row, by id."""
    return [
        (row["id"], row["name"], _money(row["amount"]), _when(row["updated_at"]))
        for row in db.query(f"SELECT id, name, amount, updated_at FROM {table} ORDER BY id")
    ]


def upsert(db: TestDatabase, columns: Sequence[TargetColumn] = COLUMNS, **settings: object) -> TableUpsert:
    settings.setdefault("table", "invoices")
    settings.setdefault("key", ("id",))
    return TableUpsert(db.url, UpsertSettings(**settings), columns)


def counts(result: UpsertResult) -> dict[str, int]:
    return {
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged_or_older": result.unchanged_or_older,
        "skipped_new": result.skipped_new,
    }


# --------------------------------------------------------------------------------------------------
# Inserts, updates, counts


def test_inserts_then_updates_with_counts(db: TestDatabase):
    seed(db, [])
    with upsert(db) as target:
        first = target.write([make_batch([(1, "a", "1.00", T0), (2, "b", "2.00", T0), (3, "c", None, None)])])
        assert counts(first) == {"inserted": 3, "updated": 0, "unchanged_or_older": 0, "skipped_new": 0}
        assert (first.batches, first.rows, first.added_columns) == (1, 3, [])
        # 1 changes, 2 is sent again unchanged, 3 gets an amount, 4 is new; in two batches.
        second = target.write(
            [
                make_batch([(1, "a2", "1.50", T0), (2, "b", "2.00", T0)]),
                make_batch([(3, "c", "3.00", None), (4, "d", "4.00", T0)]),
            ]
        )
    assert counts(second) == {"inserted": 1, "updated": 2, "unchanged_or_older": 1, "skipped_new": 0}
    assert second.batches == 2
    assert table_rows(db) == [
        (1, "a2", "1.50", T0),
        (2, "b", "2.00", T0),
        (3, "c", "3.00", None),
        (4, "d", "4.00", T0),
    ]


@pytest.mark.parametrize("prefetch", [True, False])
def test_batches_are_committed_in_order_so_a_later_batch_wins(db: TestDatabase, prefetch: bool):
    """On PostgreSQL a batch is staged while the one before it merges; the merges still run in order."""
    seed(db, [])
    names = ["one", "two", "three", "four", "five", "six"]
    batches = [make_batch([(1, name, f"{n}.00", T0), (n + 10, name, "1.00", T0)]) for n, name in enumerate(names)]
    with upsert(db) as target:
        result = target.write(batches, prefetch=prefetch)
    assert (result.batches, result.rows) == (6, 12)
    assert counts(result) == {"inserted": 7, "updated": 5, "unchanged_or_older": 0, "skipped_new": 0}
    assert table_rows(db)[0] == (1, "six", "5.00", T0)


def test_allow_new_records_off_updates_existing_and_counts_new_keys(db: TestDatabase):
    seed(db, [(1, "a", "1.00", T0), (2, "b", "2.00", T0)])
    with upsert(db, allow_new_records=False) as target:
        result = target.write([make_batch([(1, "a2", "9.00", T0), (2, "b", "2.00", T0), (3, "new", "3.00", T0)])])
        again = target.write([make_batch([(4, "x", "1.00", T0), (5, "y", "1.00", T0)])])
    assert counts(result) == {"inserted": 0, "updated": 1, "unchanged_or_older": 1, "skipped_new": 1}
    assert counts(again) == {"inserted": 0, "updated": 0, "unchanged_or_older": 0, "skipped_new": 2}
    assert table_rows(db) == [(1, "a2", "9.00", T0), (2, "b", "2.00", T0)]


@pytest.mark.parametrize("allow_new_records", [True, False])
def test_most_recent_overwrites_only_newer_rows(db: TestDatabase, allow_new_records: bool):
    later, earlier, tick = T0 + dt.timedelta(hours=1), T0 - dt.timedelta(hours=1), dt.timedelta(microseconds=1)
    seed(
        db,
        [
            (1, "old1", "1.00", T0),  # incoming newer: overwritten
            (2, "old2", "2.00", T0),  # incoming equal: kept
            (3, "old3", "3.00", T0),  # incoming older: kept
            (4, "old4", "4.00", None),  # stored NULL: any incoming value is newer
            (5, "old5", "5.00", T0),  # incoming NULL: never newer
            (6, "old6", "6.00", T0),  # one microsecond newer: overwritten
        ],
    )
    batch = make_batch(
        [
            (1, "new1", "10.00", later),
            (2, "new2", "20.00", T0),
            (3, "new3", "30.00", earlier),
            (4, "new4", "40.00", earlier),
            (5, "new5", "50.00", None),
            (6, "new6", "60.00", T0 + tick),
            (7, "new7", "70.00", T0),
        ]
    )
    with upsert(db, most_recent_column="updated_at", allow_new_records=allow_new_records) as target:
        result = target.write([batch])
    assert counts(result) == {
        "inserted": 1 if allow_new_records else 0,
        "updated": 3,
        "unchanged_or_older": 3,
        "skipped_new": 0 if allow_new_records else 1,
    }
    expected = [
        (1, "new1", "10.00", later),
        (2, "old2", "2.00", T0),
        (3, "old3", "3.00", T0),
        (4, "new4", "40.00", earlier),
        (5, "old5", "5.00", T0),
        (6, "new6", "60.00", T0 + tick),
    ]
    if allow_new_records:
        expected.append((7, "new7", "70.00", T0))
    assert table_rows(db) == expected


COMPOSITE_DDL = {
    "postgresql": "CREATE TABLE order_lines (region varchar(8) NOT NULL, number integer NOT NULL, qty integer, "
    "PRIMARY KEY (region, number))",
    "mariadb": "CREATE TABLE order_lines (region VARCHAR(8) NOT NULL, number INT NOT NULL, qty INT, "
    "UNIQUE KEY lines_key (region, number))",
    "sqlite": "CREATE TABLE order_lines (region TEXT NOT NULL, number INTEGER NOT NULL, qty INTEGER)",
}


def test_composite_key(db: TestDatabase):
    db.execute(COMPOSITE_DDL[db.dialect])
    if db.dialect == "sqlite":
        db.execute("CREATE UNIQUE INDEX lines_key ON order_lines (number, region)")  # a unique index, in another order
    db.execute("INSERT INTO order_lines (region, number, qty) VALUES ('eu', 1, 10), ('us', 1, 20)")
    columns = [TargetColumn("region", "text"), TargetColumn("number", "integer"), TargetColumn("qty", "integer")]
    batch = pa.RecordBatch.from_pylist(
        [
            {"qty": 11, "region": "eu", "number": 1},  # columns in another order than the settings
            {"qty": 20, "region": "us", "number": 1},
            {"qty": 30, "region": "us", "number": 2},
        ]
    )
    with upsert(db, columns, table="order_lines", key=("region", "number")) as target:
        assert target.prepare() == []
        result = target.write([batch])
    assert counts(result) == {"inserted": 1, "updated": 1, "unchanged_or_older": 1, "skipped_new": 0}
    rows = db.query("SELECT region, number, qty FROM order_lines ORDER BY region, number")
    assert [(r["region"], r["number"], r["qty"]) for r in rows] == [("eu", 1, 11), ("us", 1, 20), ("us", 2, 30)]


def test_duplicate_keys_in_a_batch_last_row_wins(db: TestDatabase):
    seed(db, [(1, "old", "1.00", T0)])
    batch = make_batch(
        [
            (1, "one", "1.10", T0),
            (2, "two", "2.00", T0),
            (1, "uno", "1.20", T0),
            (3, "x", "3.00", T0),
            (2, "deux", "2.20", T0),
            (1, "eins", "1.30", T0),
        ]
    )
    with upsert(db) as target:
        result = target.write([batch])
    assert (result.rows, result.duplicates) == (6, 3)
    assert counts(result) == {"inserted": 2, "updated": 1, "unchanged_or_older": 0, "skipped_new": 0}
    assert table_rows(db) == [(1, "eins", "1.30", T0), (2, "deux", "2.20", T0), (3, "x", "3.00", T0)]


def test_duplicate_keys_with_most_recent_take_the_last_row_not_the_newest(db: TestDatabase):
    """Within a batch the last row wins; the most-recent rule then compares it with the stored row."""
    seed(db, [(1, "old", "1.00", T0)])
    newest, newer = T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=1)
    with upsert(db, most_recent_column="updated_at") as target:
        result = target.write([make_batch([(1, "late", "2.00", newest), (1, "last", "3.00", newer)])])
    assert (result.updated, result.duplicates) == (1, 1)
    assert table_rows(db) == [(1, "last", "3.00", newer)]


# --------------------------------------------------------------------------------------------------
# Failures: one transaction per batch


def _bad_batch(cause: str) -> pa.RecordBatch:
    bad = (5, "toolong", "5.00", T0) if cause == "too_long" else (5, None, "5.00", T0)
    # An update, an insert and then the bad row: none of them may stay.
    return make_batch([(1, "a-new", "9.99", T0), (4, "d", "4.00", T0), bad])


FAILURES = [
    pytest.param("postgresql", "too_long", "value too long for type character varying(5)", id="postgresql-too_long"),
    pytest.param("postgresql", "not_null", 'null value in column "name"', id="postgresql-not_null"),
    pytest.param("mariadb", "too_long", "Data too long for column 'name'", id="mariadb-too_long"),
    pytest.param("mariadb", "not_null", "Column 'name' cannot be null", id="mariadb-not_null"),
    pytest.param("sqlite", "not_null", "NOT NULL constraint failed", id="sqlite-not_null"),
]


@pytest.mark.parametrize(("dialect", "cause", "message"), FAILURES)
def test_a_failed_batch_is_rolled_back_and_earlier_batches_stay(
    request: pytest.FixtureRequest, dialect: str, cause: str, message: str
):
    db = request.getfixturevalue(_FIXTURES[dialect])
    seed(db, [(1, "a", "1.00", T0)])
    closed: list[bool] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield make_batch([(2, "b", "2.00", T0), (3, "c", "3.00", T0)])
            yield _bad_batch(cause)
            yield make_batch([(6, "f", "6.00", T0)])  # may be read ahead, is never written
        finally:
            closed.append(True)

    with upsert(db) as target, pytest.raises(UpsertError) as failure:
        target.write(batches())
    text = str(failure.value)
    assert "table 'invoices'" in text
    assert message in text
    assert "batch 2 (rows 3-5 of this write)" in text
    assert "rolled back" in text and "the earlier batch (2 rows) was committed and stays" in text
    assert (failure.value.result.batches, failure.value.result.inserted) == (1, 2)
    assert closed == [True]  # the source was closed (a generator's cleanup ran)
    assert table_rows(db) == [(1, "a", "1.00", T0), (2, "b", "2.00", T0), (3, "c", "3.00", T0)]


def test_postgres_copy_error_names_the_row_and_column(pg_database: TestDatabase):
    seed(pg_database, [])
    with upsert(pg_database) as target, pytest.raises(UpsertError) as failure:
        target.write([make_batch([(1, "ok", "1.00", T0), (2, "toolong", "2.00", T0)])])
    assert "row 2 of the batch, column name" in str(failure.value)


def test_an_error_while_producing_batches_is_raised_after_earlier_batches_commit(db: TestDatabase):
    seed(db, [])

    def batches() -> Iterator[pa.RecordBatch]:
        yield make_batch([(1, "a", "1.00", T0)])
        raise RuntimeError("the source went away")

    with upsert(db) as target, pytest.raises(RuntimeError, match="the source went away"):
        target.write(batches())
    assert table_rows(db) == [(1, "a", "1.00", T0)]


def test_a_null_key_fails_its_batch_with_a_clear_message(db: TestDatabase):
    seed(db, [])
    with upsert(db) as target, pytest.raises(UpsertError) as failure:
        target.write([make_batch([(1, "a", "1.00", T0)]), make_batch([(None, "b", "2.00", T0)])])
    assert "key column 'id' is empty in 1 row(s)" in str(failure.value)
    assert table_rows(db) == [(1, "a", "1.00", T0)]


# --------------------------------------------------------------------------------------------------
# New attributes


NEW_COLUMNS = [
    TargetColumn("note", "text"),
    TargetColumn("qty", "integer"),
    TargetColumn("weight", "number"),
    TargetColumn("price", "currency"),
    TargetColumn("active", "boolean"),
    TargetColumn("due", "date"),
    TargetColumn("seen_at", "datetime"),
    TargetColumn("extra", "json"),
    TargetColumn("parent_id", "foreign_key"),
]
NEW_TYPES = {
    "postgresql": [
        "TEXT",
        "BIGINT",
        "DOUBLE PRECISION",
        "NUMERIC(18, 2)",
        "BOOLEAN",
        "DATE",
        "TIMESTAMP WITH TIME ZONE",
        "JSONB",
        "INTEGER",
    ],
    "mariadb": [
        "TEXT",
        "BIGINT(20)",
        "DOUBLE",
        "DECIMAL(18, 2)",
        "TINYINT(1)",
        "DATE",
        "DATETIME(6)",
        "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",  # MariaDB's JSON: LONGTEXT with a json_valid check
        "INTEGER(11)",
    ],
    "sqlite": ["TEXT", "BIGINT", "DOUBLE", "NUMERIC(18, 2)", "BOOLEAN", "DATE", "DATETIME", "JSON", "INTEGER"],
}


def test_new_attributes_of_each_type_are_added_when_allowed(db: TestDatabase):
    seed(db, [(1, "a", "1.00", T0)])
    columns = [TargetColumn("id", "integer"), TargetColumn("name", "text"), *NEW_COLUMNS]
    seen = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    batch = pa.RecordBatch.from_pylist(
        [
            {
                "id": 1,
                "name": "a",
                "note": "hello",
                "qty": 42,
                "weight": 1.5,
                "price": Decimal("9.99"),
                "active": True,
                "due": dt.date(2024, 5, 31),
                "seen_at": seen,
                "extra": json.dumps({"a": [1, 2]}),
                "parent_id": 7,
            }
        ]
    )
    with upsert(db, columns, allow_new_attributes=True) as target:
        assert target.prepare() == []
        assert "note" not in {
            c["name"] for c in sa.inspect(db.engine).get_columns("invoices")
        }  # prepare changes nothing
        result = target.write([batch])
    assert result.added_columns == [column.name for column in NEW_COLUMNS]
    assert counts(result) == {"inserted": 0, "updated": 1, "unchanged_or_older": 0, "skipped_new": 0}
    reflected = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("invoices")}
    types = [reflected[column.name].compile(dialect=db.engine.dialect) for column in NEW_COLUMNS]
    assert types == NEW_TYPES[db.dialect]
    row = db.query("SELECT * FROM invoices")[0]
    assert (row["note"], row["qty"], row["weight"], _money(row["price"]), row["parent_id"]) == (
        "hello",
        42,
        1.5,
        "9.99",
        7,
    )
    assert bool(row["active"]) is True
    assert str(row["due"]) == "2024-05-31"
    extra = row["extra"] if isinstance(row["extra"], dict) else json.loads(row["extra"])
    assert extra == {"a": [1, 2]}
    stored = _when(row["seen_at"])
    assert (stored.astimezone(dt.UTC).replace(tzinfo=None) if stored.tzinfo else stored) == dt.datetime(
        2024, 5, 1, 12, 30
    )


def test_new_attributes_are_refused_when_not_allowed(db: TestDatabase):
    seed(db, [(1, "a", "1.00", T0)])
    columns = [*COLUMNS, TargetColumn("note", "text"), TargetColumn("price", "currency")]
    with upsert(db, columns) as target:
        problems = target.prepare()
        assert len(problems) == 2
        assert problems[0].startswith("column 'note' is mapped but table 'invoices' has no such column")
        assert "allow new attributes" in problems[0]
        assert "price" in problems[1] and ("NUMERIC(18, 2)" in problems[1])
        with pytest.raises(UpsertConfigError) as refused:
            target.write([])
    assert refused.value.problems == problems
    assert {c["name"] for c in sa.inspect(db.engine).get_columns("invoices")} == {"id", "name", "amount", "updated_at"}


# --------------------------------------------------------------------------------------------------
# prepare(): the target's problems


def test_prepare_reports_a_missing_table(db: TestDatabase):
    seed(db, [])
    with upsert(db, table="invoice") as target:
        assert target.prepare() == [
            f"table 'invoice' does not exist on {target.system} (did you mean 'invoices'?)",
        ]


def test_prepare_reports_a_missing_key_column(db: TestDatabase):
    seed(db, [])
    columns = [*COLUMNS, TargetColumn("code", "integer")]
    with upsert(db, columns, key=("code",), allow_new_attributes=True) as target:
        assert target.prepare() == ["key column 'code' is not a column of table 'invoices'"]


def test_prepare_reports_required_columns_the_mapping_does_not_fill(db: TestDatabase):
    """NOT NULL without a default: no insert can succeed, and ON CONFLICT checks the insert row even for updates."""
    seed(db, [(1, "a", "1.00", T0)])
    columns = [TargetColumn("id", "integer"), TargetColumn("amount", "currency")]
    batch = pa.RecordBatch.from_pylist([{"id": 1, "amount": Decimal("5.00")}, {"id": 2, "amount": Decimal("1.00")}])
    with upsert(db, columns) as target:
        problems = target.prepare()
        assert len(problems) == 1
        assert problems[0].startswith("table 'invoices' requires a value in 'name' (NOT NULL, no default)")
    # Updating only: the same mapping is fine.
    with upsert(db, columns, allow_new_records=False) as target:
        assert target.prepare() == []
        result = target.write([batch])
    assert (result.updated, result.skipped_new) == (1, 1)
    assert table_rows(db) == [(1, "a", "5.00", T0)]


NO_UNIQUE_DDL = {
    "postgresql": "CREATE TABLE invoices (id integer, name varchar(5) NOT NULL, amount numeric(12,2), "
    "updated_at timestamp, UNIQUE (id, name))",
    "mariadb": "CREATE TABLE invoices (id INT, name VARCHAR(5) NOT NULL, amount DECIMAL(12,2), updated_at DATETIME(6), "
    "UNIQUE KEY id_name (id, name))",
    "sqlite": "CREATE TABLE invoices (id INTEGER, name VARCHAR(5) NOT NULL, amount NUMERIC(12,2), "
    "updated_at TIMESTAMP, UNIQUE (id, name))",
}


def test_prepare_reports_a_key_without_a_unique_index(db: TestDatabase):
    seed(db, [], NO_UNIQUE_DDL)
    if db.dialect != "mariadb":  # MariaDB has no partial indexes
        db.execute("CREATE UNIQUE INDEX partial_id ON invoices (id) WHERE amount > 0")
    with upsert(db) as target:
        problems = target.prepare()
        assert len(problems) == 1
        assert problems[0].startswith(
            "table 'invoices' has no primary key or unique index on exactly (id), which the upsert needs"
        )
        assert "(id, name)" in problems[0]
        with pytest.raises(UpsertConfigError):
            target.write([make_batch([(1, "a", "1.00", T0)])])
    # A plain unique index on the key is enough.
    db.execute("CREATE UNIQUE INDEX invoices_id ON invoices (id)")
    with upsert(db) as target:
        assert target.prepare() == []


def test_settings_are_checked_before_any_database_access(tmp_path):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    bad = [
        (UpsertSettings("invoices; DROP TABLE x", ("id",)), COLUMNS, "table name 'invoices; DROP TABLE x'"),
        (UpsertSettings('a"b', ("id",)), COLUMNS, "table name 'a\"b'"),
        (UpsertSettings("a.b.c", ("id",)), COLUMNS, "table must be 'table' or 'schema.table'"),
        (UpsertSettings("invoices", ("number",)), COLUMNS, "key column 'number' is not among the mapped columns"),
        (UpsertSettings("invoices", ()), COLUMNS, "key must name at least one column"),
        (
            UpsertSettings("invoices", ("id",), most_recent_column="updated"),
            COLUMNS,
            "most_recent_column 'updated' is not among the mapped columns (did you mean 'updated_at'?)",
        ),
        (UpsertSettings("invoices", ("id",), most_recent_column="id"), COLUMNS, "is a key column"),
        (UpsertSettings("invoices", ("id",)), [*COLUMNS, TargetColumn("x`y", "text")], "column name 'x`y'"),
        (UpsertSettings("invoices", ("id",)), [*COLUMNS, TargetColumn("x", "money")], "unknown type 'money'"),
        (UpsertSettings("invoices", ("id",)), [*COLUMNS, TargetColumn("ID", "text")], "column 'ID' is mapped twice"),
    ]
    for settings, columns, message in bad:
        with pytest.raises(UpsertConfigError) as refused:
            TableUpsert(url, settings, columns)
        assert any(message in problem for problem in refused.value.problems), (message, refused.value.problems)
    assert UpsertSettings("invoices", "id").key == ("id",)
    assert not (tmp_path / "never.db").exists()


# --------------------------------------------------------------------------------------------------
# Names and values


QUOTED_DDL = {
    "postgresql": 'CREATE TABLE "Order Lines" ("Line-No" integer PRIMARY KEY, "order" text, "Total $" numeric(10,2))',
    "mariadb": "CREATE TABLE `Order Lines` (`Line-No` INT PRIMARY KEY, `order` TEXT, `Total $` DECIMAL(10,2))",
    "sqlite": 'CREATE TABLE "Order Lines" ("Line-No" INTEGER PRIMARY KEY, "order" TEXT, "Total $" NUMERIC(10,2))',
}


def test_names_that_need_quoting_and_a_schema_qualified_table(db: TestDatabase):
    db.execute(QUOTED_DDL[db.dialect])
    namespace = {
        "postgresql": "SELECT current_schema()",
        "mariadb": "SELECT DATABASE()",
        "sqlite": "SELECT 'main'",
    }[db.dialect]
    schema = next(iter(db.query(namespace)[0].values()))
    columns = [TargetColumn("Line-No", "integer"), TargetColumn("order", "text"), TargetColumn("Total $", "currency")]
    batch = pa.RecordBatch.from_pylist(
        [{"Line-No": 1, "order": "first", "Total $": Decimal("1.50")}, {"Line-No": 2, "order": None, "Total $": None}],
        schema=pa.schema([("Line-No", pa.int64()), ("order", pa.string()), ("Total $", pa.decimal128(10, 2))]),
    )
    with upsert(db, columns, table=f"{schema}.Order Lines", key=("Line-No",)) as target:
        assert target.prepare() == []
        assert counts(target.write([batch]))["inserted"] == 2
    quote = "`" if db.dialect == "mariadb" else '"'
    rows = db.query(f"SELECT * FROM {quote}Order Lines{quote} ORDER BY 1")
    assert [(r["Line-No"], r["order"], _money(r["Total $"])) for r in rows] == [(1, "first", "1.50"), (2, None, None)]


AWKWARD_TEXT = [
    "",
    'quote " and ""doubled""',
    "comma, inside",
    "multi\nline\r\nwindows",
    "Zürich — 東京 ✓",
    "NULL",
    "\\N",
    "tab\there",
]


def test_awkward_text_and_time_zones_round_trip(db: TestDatabase):
    db.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text, at_utc timestamp)")
    columns = [TargetColumn("id", "integer"), TargetColumn("body", "text"), TargetColumn("at_utc", "datetime")]
    aware = dt.datetime(2024, 1, 15, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    rows = [{"id": i, "body": text, "at_utc": aware} for i, text in enumerate(AWKWARD_TEXT, start=1)]
    rows.append({"id": 99, "body": None, "at_utc": None})
    batch = pa.RecordBatch.from_pylist(
        rows, schema=pa.schema([("id", pa.int64()), ("body", pa.string()), ("at_utc", pa.timestamp("us", tz="UTC"))])
    )
    with upsert(db, columns, table="notes") as target:
        assert counts(target.write([batch]))["inserted"] == len(rows)
    stored = db.query("SELECT id, body, at_utc FROM notes ORDER BY id")
    assert [r["body"] for r in stored] == [*AWKWARD_TEXT, None]
    assert {_when(r["at_utc"]) for r in stored[:-1]} == {dt.datetime(2024, 1, 16, 4, 0)}  # UTC wall-clock time
    assert stored[-1]["at_utc"] is None


def test_an_engine_can_be_passed_and_is_not_disposed(db: TestDatabase):
    seed(db, [])
    target = TableUpsert(db.engine, UpsertSettings("invoices", ("id",)), COLUMNS)
    target.write([make_batch([(1, "a", "1.00", T0)])])
    target.close()
    assert table_rows(db) == [(1, "a", "1.00", T0)]  # db.engine still works


# --------------------------------------------------------------------------------------------------
# From the mapping to batches


def test_mapped_rows_to_batches_drop_failed_rows_and_combine():
    mapping = CompiledMapping(
        [
            FieldRule("id", source="number"),
            FieldRule("amount", source="total", parse="currency"),
            FieldRule("day", source="day", parse="date:%d/%m/%Y"),
            FieldRule("origin", constant="crm"),
            FieldRule("extra", source="extra"),
        ],
        [
            TargetField("id", "integer", required=True),
            TargetField("amount", "currency"),
            TargetField("day", "date"),
            TargetField("origin", "text"),
            TargetField("extra", "json"),
        ],
    )
    columns = [
        TargetColumn("id", "integer"),
        TargetColumn("amount", "currency"),
        TargetColumn("day", "date"),
        TargetColumn("origin", "text"),
        TargetColumn("extra", "json"),
    ]
    source = pa.table(
        {
            "number": ["1", "2", None, "4"],
            "total": ["$1,234.50", "(12.00)", "1", "oops"],
            "day": ["31/03/2024", "01/04/2024", "02/04/2024", "03/04/2024"],
            "extra": [{"a": 1}, None, None, None],
        }
    )
    mapped = mapping.map_batch(source)
    batch = mapped_to_arrow(mapped, columns)
    assert batch.schema.types == [pa.int64(), pa.decimal128(38, 2), pa.date32(), pa.string(), pa.string()]
    assert batch.to_pylist() == [
        {"id": 1, "amount": Decimal("1234.50"), "day": dt.date(2024, 3, 31), "origin": "crm", "extra": '{"a": 1}'},
        {"id": 2, "amount": Decimal("-12.00"), "day": dt.date(2024, 4, 1), "origin": "crm", "extra": None},
    ]  # row 3 (no id) and row 4 (bad amount) failed in the mapping
    combined = list(combine_batches([batch, batch.slice(0, 0), batch, batch], rows=3))
    assert [b.num_rows for b in combined] == [4, 2]
    # A foreign_key column inferred as type null in one batch and int64 in the next is promoted, not refused.
    nulls, ints = pa.record_batch({"parent": pa.array([None])}), pa.record_batch({"parent": pa.array([1])})
    (promoted,) = combine_batches([nulls, ints], rows=10)
    assert (promoted.schema.field("parent").type, promoted.column("parent").to_pylist()) == (pa.int64(), [None, 1])


def test_mapping_to_postgres_end_to_end(pg_database: TestDatabase):
    pg_database.execute(
        "CREATE TABLE invoices (id bigint PRIMARY KEY, amount numeric(12,2), day date, origin text, "
        "updated_at timestamptz)"
    )
    pg_database.execute("INSERT INTO invoices VALUES (1, 1.00, '2024-01-01', 'seed', '2024-06-01 00:00:00+00')")
    mapping = CompiledMapping(
        [
            FieldRule("id", source="number"),
            FieldRule("amount", source="total", parse="number"),
            FieldRule("day", source="day", parse="date:%d/%m/%Y"),
            FieldRule("origin", constant="crm"),
            FieldRule("updated_at", source="changed"),
        ],
        [
            TargetField("id", "integer", required=True),
            TargetField("amount", "currency"),
            TargetField("day", "date"),
            TargetField("origin", "text"),
            TargetField("updated_at", "datetime"),
        ],
    )
    columns = [
        TargetColumn("id", "integer"),
        TargetColumn("amount", "currency"),
        TargetColumn("day", "date"),
        TargetColumn("origin", "text"),
        TargetColumn("updated_at", "datetime"),
    ]
    changed = ["2024-07-01T00:00:00+02:00", "2024-05-01T00:00:00", "2024-07-01T00:00:00"]
    sources = [
        pa.table({"number": [1, 2, 3], "total": ["10.005", "2", "3"], "day": ["01/02/2024"] * 3, "changed": changed}),
        pa.table({"number": [4], "total": ["x"], "day": ["01/02/2024"], "changed": [changed[0]]}),
    ]
    mapped = (mapped_to_arrow(mapping.map_batch(source), columns) for source in sources)
    with TableUpsert(
        pg_database.url, UpsertSettings("invoices", ("id",), most_recent_column="updated_at"), columns
    ) as target:
        result = target.write(combine_batches(mapped, rows=10))
    assert counts(result) == {"inserted": 2, "updated": 1, "unchanged_or_older": 0, "skipped_new": 0}
    rows = pg_database.query("SELECT id, amount, day, origin, updated_at FROM invoices ORDER BY id")
    assert [(r["id"], str(r["amount"]), str(r["day"]), r["origin"]) for r in rows] == [
        (1, "10.01", "2024-02-01", "crm"),
        (2, "2.00", "2024-02-01", "crm"),
        (3, "3.00", "2024-02-01", "crm"),
    ]
    # Aware values keep their instant; naive ones are UTC.
    assert [r["updated_at"].astimezone(dt.UTC).isoformat() for r in rows] == [
        "2024-06-30T22:00:00+00:00",
        "2024-05-01T00:00:00+00:00",
        "2024-07-01T00:00:00+00:00",
    ]


def test_arrow_mapper_gives_what_the_mapping_engine_gives():
    """ArrowMapper copies plain columns in Arrow; rows, values and failures must equal the engine's."""
    fields = [
        TargetField("id", "integer", required=True),
        TargetField("small", "integer"),
        TargetField("name", "text", required=True),
        TargetField("note", "text"),
        TargetField("at", "datetime"),
        TargetField("at_tz", "datetime"),
        TargetField("day", "date"),
        TargetField("flag", "boolean"),
        TargetField("cents", "currency"),
        TargetField("mills", "currency"),
        TargetField("ratio", "number"),
        TargetField("parsed", "date"),
        TargetField("fallback", "text"),
        TargetField("origin", "text"),
        TargetField("label", "text"),
    ]
    mapping = CompiledMapping(
        [
            FieldRule("id", source="id"),
            FieldRule("small", source="small"),
            FieldRule("name", source="name"),
            FieldRule("note", source="note"),
            FieldRule("at", source="at"),
            FieldRule("at_tz", source="at_tz"),
            FieldRule("day", source="day"),
            FieldRule("flag", source="flag"),
            FieldRule("cents", source="cents"),
            FieldRule("mills", source="mills"),  # four places: rounded to cents by the engine
            FieldRule("ratio", source="ratio"),
            FieldRule("parsed", source="text_day", parse="date:%d/%m/%Y"),
            FieldRule("fallback", source="note", default="n/a"),
            FieldRule("origin", constant="crm"),
            FieldRule("label", expression="upper(name)"),
        ],
        fields,
    )
    columns = [TargetColumn(f.name, f.type) for f in fields]
    at = dt.datetime(2024, 3, 1, 12, 0, 0, 123456)
    paris = dt.timezone(dt.timedelta(hours=1))

    def batch(ids, names, ratios) -> pa.RecordBatch:
        n = len(ids)
        return pa.RecordBatch.from_pydict(
            {
                "id": pa.array(ids, pa.int32()),
                "small": pa.array(list(range(n)), pa.uint16()),
                "name": pa.array(names, pa.string()),
                "note": pa.array(["x", None, "", "Zürich"][:n] + ["y"] * (n - 4), pa.string()),
                "at": pa.array([at] * (n - 1) + [None], pa.timestamp("ms")),
                "at_tz": pa.array([at.replace(tzinfo=paris)] * n, pa.timestamp("us", tz="Europe/Paris")),
                "day": pa.array([dt.date(2024, 2, 29)] * n, pa.date32()),
                "flag": pa.array([True, False, None, True][:n] + [True] * (n - 4), pa.bool_()),
                "cents": pa.array(
                    [Decimal("1.05"), None, Decimal("-0.50"), Decimal("7")][:n] + [None] * (n - 4), pa.decimal128(12, 2)
                ),
                "mills": pa.array(
                    [Decimal("1.0050"), Decimal("2.0049"), None, None][:n] + [None] * (n - 4), pa.decimal128(10, 4)
                ),
                "ratio": pa.array(ratios, pa.float64()),
                "text_day": pa.array(["31/01/2024", "bad", "01/02/2024", None][:n] + [None] * (n - 4), pa.string()),
            }
        )

    batches = [
        batch([1, 2, 3, 4], ["a", "b", "c", "d"], [0.1, None, 1e300, -2.5]),  # everything plain: copied
        batch([1, None, 3, 4, 5], ["a", "b", "", "d", "e"], [0.1, float("nan"), 1.0, 2.0, 3.0]),  # engine decides
    ]
    mapper = ArrowMapper(mapping, columns)
    for source in batches:
        mapped = mapping.map_batch(source)
        fast, failures = mapper.map(source)
        assert fast.schema == mapped_to_arrow(mapped, columns).schema
        assert fast.to_pylist() == mapped_to_arrow(mapped, columns).to_pylist()
        assert failures == mapped.failures()
    assert [row for row, _ in mapper.map(batches[0])[1]] == [1]  # the bad date
    assert [row for row, _ in mapper.map(batches[1])[1]] == [1, 2]  # no id, bad date, NaN; an empty name
    # Batch 1 copies 10 plain columns (not 'mills', with four places); batch 2 leaves the NULL id, the ''
    # name and the NaN ratio to the engine as well.
    assert sorted(len(copied) for copied in mapper._engines) == [7, 10]
