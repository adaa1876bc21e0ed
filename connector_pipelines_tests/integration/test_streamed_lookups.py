"""Lookups read per batch (`integration/lookups.py` SqlLookup) on SQLite, PostgreSQL and MariaDB (`source_database`
is parametrized over the three; each test has its own tables).

What is asserted: a mapping's `lookup(...)` gives the values a dict of the whole table gives, for text,
integer, decimal and date keys looked up with values of other types; each batch binds only its distinct values not yet
cached, 500 a statement, and no statement reads the lookup table without a WHERE; misses are not asked twice; the
cache never holds more than `cache_entries`; a lookup on another connection reads that database.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connector_pipelines.integration.data_set import DataSetReader
from connector_pipelines.integration.lookups import SqlLookup, SqlLookups
from connector_pipelines.mapping.engine import CompiledMapping, FieldRule, MappingError
from connector_pipelines.mapping.functions import lookup
from connector_pipelines.spec.integration import DataSet, LookupSpec
from connector_pipelines.transports.sql import SqlSource
from connector_pipelines_tests.fixtures.source_databases import SourceDialectDatabase

COUNTRIES = [("DE", "Germany"), ("FR", "France"), ("IT", "Italy"), ("NL", None)]  # NL: found, its value NULL
COUNTRY_RULES = [FieldRule("country", expression="lookup('country', country_code)")]


class Database:
    """This test's extra tables beside `source_database`'s, named like its own (`schema.name` on PostgreSQL), and
    dropped afterwards on MariaDB (PostgreSQL drops the schema, SQLite the file)."""

    def __init__(self, db: SourceDialectDatabase):
        self.db = db
        self.dialect = db.dialect
        self.created: list[str] = []

    def name(self, base: str) -> str:
        return self.db.tables.customers.replace("customers", base)

    def create(self, base: str, columns: str, rows: list[dict]) -> str:
        name = self.name(base)
        self.db.execute(f"CREATE TABLE {name} ({columns})")
        self.created.append(name)
        if rows:
            names = list(rows[0])
            self.db.execute(
                f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})", rows
            )
        return name

    def countries(self) -> str:
        return self.create(
            "countries",
            "code VARCHAR(10) PRIMARY KEY, name VARCHAR(100)",
            [{"code": code, "name": name} for code, name in COUNTRIES],
        )

    def source(self, **kwargs) -> SqlSource:
        return SqlSource(self.db.url, **kwargs)

    def drop(self) -> None:
        if self.dialect == "mariadb":
            with self.db.engine.begin() as connection:
                for name in self.created:
                    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def database(source_database: SourceDialectDatabase) -> Iterator[Database]:
    database = Database(source_database)
    try:
        yield database
    finally:
        database.drop()


class Statements:
    """The SQL a source's engine sends, with its bound values (SQLAlchemy's before_cursor_execute event)."""

    def __init__(self, engine: sa.Engine, table: str):
        self.engine = engine
        self.table = table
        self.sent: list[tuple[str, list]] = []
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters or ())
        self.sent.append((statement, values))

    def reading_table(self) -> list[tuple[str, list]]:
        """The statements that select from the lookup table (not the catalog queries that describe it)."""
        last = re.escape(self.table.split(".")[-1])
        return [(sql, values) for sql, values in self.sent if re.search(rf"\bFROM\s+\S*{last}\W", sql + " ")]

    def asked(self) -> list[list]:
        """The values bound in each statement reading the lookup table, all of which have a WHERE."""
        reads = self.reading_table()
        assert all(" WHERE " in sql for sql, _ in reads), [sql for sql, _ in reads]
        return [values for _, values in reads]

    def clear(self) -> None:
        self.sent.clear()


def dict_lookup(database: Database, spec: LookupSpec) -> dict:
    """The whole table in a dict, the answers a streamed lookup must give (another engine: not among the captured
    statements)."""
    source = database.source()
    quote = source.engine.dialect.identifier_preparer.quote
    table = ".".join(quote(part) for part in spec.table.split("."))
    try:
        with source.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT l.{quote(spec.key)}, l.{quote(spec.value)} FROM {table} l"))
            return {key: value for key, value in rows}
    finally:
        source.dispose()


def map_values(mapping: CompiledMapping, codes: list) -> list:
    return mapping.map_columns({"country_code": codes}, len(codes)).columns["country"]


def test_a_mapping_over_batches_gives_the_dict_lookups_values(database: Database) -> None:
    table = database.countries()
    orders = database.create(
        "orders",
        "order_id INTEGER PRIMARY KEY, country_code VARCHAR(10)",
        [
            {"order_id": i, "country_code": code}
            # 'de' and 'DE ' equal 'DE' in MariaDB's collation but not in Python: the dict misses them, so must we.
            for i, code in enumerate(["DE", "FR", "DE", "XX", None, "NL", "de", "DE ", "IT", "FR", "XX", "IT"])
        ],
    )
    spec = LookupSpec(table=table, key="code", value="name")
    source = database.source(batch_rows=4)
    try:
        streamed = CompiledMapping(COUNTRY_RULES, [], {"country": SqlLookup(source, spec)})
        loaded = CompiledMapping(COUNTRY_RULES, [], {"country": dict_lookup(database, spec)})
        reader = DataSetReader(source, DataSet(connection="source", query=f"SELECT * FROM {orders}", key="order_id"))
        # Batches of 4 rows, as the read gives them on SQLite and MariaDB (PostgreSQL's COPY batches by size).
        batches = pa.Table.from_batches(list(reader.read())).sort_by("order_id").to_batches(max_chunksize=4)
        assert [batch.num_rows for batch in batches] == [4, 4, 4]
        mapped = [streamed.map_batch(batch).columns["country"] for batch in batches]
        assert mapped == [loaded.map_batch(batch).columns["country"] for batch in batches]
        assert [value for values in mapped for value in values] == [
            *("Germany", "France", "Germany", None),
            *(None, None, None, None),
            *("Italy", "France", None, "Italy"),
        ]
    finally:
        source.dispose()


def test_each_batch_binds_only_its_distinct_values_not_cached_yet(database: Database) -> None:
    table = database.countries()
    source = database.source()
    statements = Statements(source.engine, table)
    try:
        mapping = CompiledMapping(
            COUNTRY_RULES, [], {"country": SqlLookup(source, LookupSpec(table=table, key="code", value="name"))}
        )
        assert map_values(mapping, ["DE", "FR", "DE", "XX", None, "FR"]) == [
            "Germany",
            "France",
            "Germany",
            None,
            None,
            "France",
        ]
        assert [sorted(values) for values in statements.asked()] == [["DE", "FR", "XX"]]
        statements.clear()
        assert map_values(mapping, ["FR", "IT", "XX", "IT"]) == ["France", "Italy", None, "Italy"]
        assert statements.asked() == [["IT"]]
        statements.clear()
        assert map_values(mapping, ["DE", "XX", "IT"]) == ["Germany", None, "Italy"]
        assert statements.asked() == []
    finally:
        source.dispose()


def test_values_past_one_chunk_are_bound_500_a_statement(database: Database) -> None:
    table = database.create(
        "owners",
        "owner_id INTEGER PRIMARY KEY, email VARCHAR(100)",
        [{"owner_id": i, "email": f"user{i}@example.com"} for i in range(1, 1001)],
    )
    spec = LookupSpec(table=table, key="owner_id", value="email")
    source = database.source()
    statements = Statements(source.engine, table)
    try:
        streamed = SqlLookup(source, spec)
        values = [i % 1200 + 1 for i in range(6000)]  # 1,200 distinct owners, 200 of them missing
        streamed.prefetch(values)
        asked = statements.asked()
        # Integer keys bind the integer only on a typed database; SQLite's columns may hold text too, so '7' goes too.
        per_value = 2 if database.dialect == "sqlite" else 1
        assert [len(values) for values in asked] == [500] * (2 * per_value) + [200 * per_value]
        assert sorted(v for values in asked for v in values if isinstance(v, int)) == list(range(1, 1201))
        statements.clear()
        expected = dict_lookup(database, spec)
        assert [lookup(streamed, v) for v in values] == [lookup(expected, v) for v in values]
        assert statements.sent == []
    finally:
        source.dispose()


def test_a_missing_key_is_cached_and_not_asked_again(database: Database) -> None:
    table = database.countries()
    source = database.source()
    statements = Statements(source.engine, table)
    try:
        streamed = SqlLookup(source, LookupSpec(table=table, key="code", value="name"))
        streamed.prefetch(["XX", "YY", "XX"])
        assert [sorted(values) for values in statements.asked()] == [["XX", "YY"]]
        statements.clear()
        streamed.prefetch(["YY", "XX"])
        assert [streamed.get("XX"), streamed.get("YY"), streamed.get("XX", "default")] == [None, None, "default"]
        # A key found with a NULL value is an answer too, not a miss to ask again.
        streamed.prefetch(["NL"])
        statements.clear()
        streamed.prefetch(["NL", "XX"])
        assert streamed.get("NL", "default") is None
        assert statements.asked() == []
    finally:
        source.dispose()


def test_the_cache_holds_at_most_cache_entries_dropping_the_least_recently_used(database: Database) -> None:
    table = database.countries()
    source = database.source()
    statements = Statements(source.engine, table)
    try:
        streamed = SqlLookup(source, LookupSpec(table=table, key="code", value="name"), cache_entries=3)
        for batch in (["DE", "FR", "IT"], ["DE"], ["NL"]):
            streamed.prefetch(batch)
            assert streamed.cached <= 3
        statements.clear()
        streamed.prefetch(["DE", "IT", "NL"])  # used last: still cached
        assert statements.asked() == []
        streamed.prefetch(["FR"])  # the least recently used: dropped when NL came
        assert statements.asked() == [["FR"]]
        assert streamed.cached == 3
        # A batch with more distinct values than the cache holds is still answered whole, and the cache stays bounded.
        mapping = CompiledMapping(COUNTRY_RULES, [], {"country": streamed})
        codes = ["DE", "FR", "IT", "NL", "XX", "YY", "ZZ", "DE"]
        assert map_values(mapping, codes) == ["Germany", "France", "Italy", None, None, None, None, "Germany"]
        assert streamed.cached == 3
    finally:
        source.dispose()


KIND_COLUMNS = "id INTEGER PRIMARY KEY, code VARCHAR(20), amount NUMERIC(10, 2), day DATE, label VARCHAR(20)"
KIND_ROWS = [
    {"id": 1, "code": "true", "amount": Decimal("1.00"), "day": dt.date(2024, 1, 1), "label": "one"},
    {"id": 7, "code": "7", "amount": Decimal("7.00"), "day": dt.date(2024, 1, 2), "label": "seven"},
    {"id": 8, "code": "abc", "amount": Decimal("2.50"), "day": dt.date(2024, 1, 3), "label": "eight"},
    {"id": 10, "code": "2024-01-02", "amount": Decimal("0.10"), "day": dt.date(2024, 1, 4), "label": "ten"},
]
PROBES = [
    *(7, "7", 7.0, Decimal("7"), Decimal("7.00"), True, 1, "007", "abc", "ABC", "abc "),
    *(2.5, Decimal("2.50"), Decimal("2.5"), 0.1, Decimal("0.1"), Decimal("NaN"), float("nan"), 10**30, -1),
    *(dt.date(2024, 1, 2), "2024-01-02", dt.datetime(2024, 1, 2), None, "", "x\x00y", b"abc"),
]


@pytest.mark.parametrize("key", ["id", "code", "amount", "day"])
def test_keys_of_each_type_looked_up_with_values_of_other_types_answer_as_the_dict_does(
    database: Database, key: str
) -> None:
    rows = KIND_ROWS
    if database.dialect == "sqlite":  # its driver binds no Decimal, and dates only through a deprecated adapter
        rows = [{**row, "amount": float(row["amount"]), "day": row["day"].isoformat()} for row in rows]
    table = database.create("kinds", KIND_COLUMNS, rows)
    spec = LookupSpec(table=table, key=key, value="label")
    source = database.source()
    statements = Statements(source.engine, table)
    try:
        streamed = SqlLookup(source, spec)
        streamed.prefetch(PROBES)
        expected = dict_lookup(database, spec)
        answers = [lookup(streamed, v) for v in PROBES]
        assert answers == [lookup(expected, v) for v in PROBES]
        assert any(answers)
        assert len(statements.asked()) == 1  # every answer came from the one prefetch
        if database.dialect != "sqlite":
            # Only values a key of the column's type can equal are bound, as that type: no statement is refused
            # (PostgreSQL: 'abc' for an integer) nor compares the column as another type (MariaDB: no index then).
            kind = {"id": int, "code": str, "amount": Decimal, "day": dt.date}[key]
            assert {type(v) for v in statements.asked()[0]} == {kind}
    finally:
        source.dispose()


def test_a_lookup_on_another_connection_reads_that_database(database: Database, tmp_path: Path) -> None:
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    engine = sa.create_engine(reference_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT)")
        connection.execute(sa.text("INSERT INTO countries VALUES (:c, :n)"), [{"c": "DE", "n": "Deutschland"}])
    engine.dispose()
    database.countries()  # the same table name in the data set's database, with other values
    specs = {
        "country": LookupSpec(table="countries", key="code", value="name", connection="reference"),
        "local": LookupSpec(table=database.name("countries"), key="code", value="name"),
    }
    source = database.source()
    opened: list[str] = []

    def open_source(connection: str) -> SqlSource:
        opened.append(connection)
        return SqlSource(reference_url)

    try:
        with SqlLookups(specs, source, open_source) as lookups:
            rules = [*COUNTRY_RULES, FieldRule("local", expression="lookup('local', country_code)")]
            mapped = CompiledMapping(rules, [], lookups.tables).map_columns({"country_code": ["DE", "FR"]}, 2)
            assert mapped.columns == {"country": ["Deutschland", None], "local": ["Germany", "France"]}
            assert lookups.tables["local"].source is source
        assert opened == ["reference"]
    finally:
        source.dispose()


# (table, key, value, the name the error must give)
MISSING = [
    ("countries", "cod", "name", "cod"),
    ("countries", "code", "nme", "nme"),
    ("nations", "code", "name", "nations"),
]


@pytest.mark.parametrize(("table", "key", "value", "missing"), MISSING)
def test_check_fails_for_a_lookup_table_or_column_that_is_not_there(
    database: Database, table: str, key: str, value: str, missing: str
) -> None:
    database.countries()
    source = database.source()
    try:
        with pytest.raises((MappingError, sa.exc.DBAPIError), match=missing):
            SqlLookup(source, LookupSpec(table=database.name(table), key=key, value=value)).check()
        SqlLookup(source, LookupSpec(table=database.name("countries"), key="code", value="name")).check()
    finally:
        source.dispose()


def test_a_lookup_key_that_is_not_a_column_stops_the_mapping(database: Database) -> None:
    table = database.countries()
    source = database.source()
    try:
        mapping = CompiledMapping(
            COUNTRY_RULES, [], {"country": SqlLookup(source, LookupSpec(table=table, key="cod", value="name"))}
        )
        with pytest.raises((MappingError, sa.exc.DBAPIError), match="cod"):
            map_values(mapping, ["DE"])
    finally:
        source.dispose()
