"""Write-back: each outcome of a run, as a row in a table of the source database.

So the source system sees what happened to each of its records (delivered, failed with which reason, skipped)
without reading our ledger. The table is created when missing (and given its `attempt_id` column and unique index
when an earlier version created it without them).

The write-back is an outbox over the ledger (state/outbox.py): it copies attempts the ledger has committed, and
moves the configuration's cursor only after the source committed them. A process that dies before that leaves
them pending, and the next run writes them back before it delivers anything. Each row carries its ledger attempt
id, and rows already in the table are skipped, so a replay after a crash between the two commits adds nothing.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from connector_pipelines.state.ledger import TARGET_REF_MAX_CHARS, DeliveryLedger
from connector_pipelines.state.outbox import PENDING_COLUMNS, advance_outbox, open_outbox, pending_attempts
from connector_pipelines.transports.sql import SqlSource

_CHUNK = 5000
_COLUMNS = PENDING_COLUMNS  # the pending attempts' tuples go into the table as they come
# A MariaDB INSERT is cut at about this many characters, well under the server's max_allowed_packet (16 MiB by
# default, 1 MiB on old servers): the size pymysql's own executemany cuts at.
_MAX_STATEMENT_CHARS = 1_000_000

_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def write_back_table(name: str) -> sa.Table:
    schema, _, table = name.rpartition(".")
    return sa.Table(
        table,
        sa.MetaData(),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("configuration", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(512), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("target_ref", sa.String(TARGET_REF_MAX_CHARS)),
        sa.Column("idempotency_key", sa.String(64)),
        # MariaDB's DATETIME keeps whole seconds unless told otherwise; attempts a second apart would tie.
        sa.Column("finished_at", _TIMESTAMP, nullable=False),
        # The ledger's attempt id: what makes a replayed row recognisable. NULL in rows of earlier versions.
        sa.Column("attempt_id", sa.BigInteger),
        sa.Index(_index_name(table), "connector", "configuration", "attempt_id", unique=True),
        schema=schema or None,
    )


def _index_name(table: str) -> str:
    """Index names share a namespace per schema (PostgreSQL) and are at most 64 characters (MariaDB)."""
    name = f"ux_{table}_attempt"
    if len(name) <= 60:
        return name
    return f"ux_{table[:40]}_{hashlib.blake2b(table.encode(), digest_size=6).hexdigest()}"


class WriteBack:
    """Writes one configuration's outcomes from the ledger to one table in the source database."""

    def __init__(self, source: SqlSource, table_name: str, ledger: DeliveryLedger, connector: str, configuration: str):
        self.source = source
        self.ledger = ledger
        self.connector = connector
        self.configuration = configuration
        self.table = write_back_table(table_name)
        self._migrate()
        # Before the run's first attempt: from here on every attempt of this configuration is written back.
        open_outbox(ledger, connector, configuration)

    def drain(self) -> int:
        """Write back every attempt after the cursor, a chunk at a time, moving the cursor after each source
        commit. Returns how many rows were added (rows the table already had are not counted)."""
        added = 0
        # Read once: only this configuration's one delivery moves its cursor, and each move is ours, below.
        after = open_outbox(self.ledger, self.connector, self.configuration)
        while True:
            rows = pending_attempts(self.ledger, self.connector, self.configuration, after, _CHUNK)
            if not rows:
                return added
            added += self._insert_new(rows)
            after = rows[-1][0]
            advance_outbox(self.ledger, self.connector, self.configuration, after)
            # A short chunk was every attempt committed when it was read; a later commit has its own drain.
            if len(rows) < _CHUNK:
                return added

    # ---- the source side ------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create the table, or give one an earlier version made its `attempt_id` column and unique index."""
        engine = self.source.engine
        table = self.table
        inspector = sa.inspect(engine)
        if not inspector.has_table(table.name, schema=table.schema):
            table.create(engine)
            return
        columns = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        with engine.begin() as conn:
            if "attempt_id" not in columns:
                kind = sa.BigInteger().compile(dialect=engine.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {self._qualified()} ADD {self._quote('attempt_id')} {kind}")
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes(table.name, schema=table.schema)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(conn)

    def _insert_new(self, rows: list[tuple]) -> int:
        """Insert the rows (PENDING_COLUMNS tuples, in attempt id order) the table does not hold yet, in one
        transaction, through the driver's own bulk path: SQLAlchemy's per-row processing costs ~100 µs a row
        into PostgreSQL, more than the delivery itself.

        Rows already there are found by one indexed range read, not left to INSERT IGNORE (which on MariaDB would
        also turn a value too long for its column into a silent truncation) nor to ON CONFLICT (which COPY, the
        fastest path into PostgreSQL, does not have). The unique index stays the backstop: a row written twice
        fails the chunk's transaction, and the cursor does not move past it."""
        engine = self.source.engine
        with engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                present = self._present(cursor, rows[0][0], rows[-1][0])
                values = [row for row in rows if row[0] not in present] if present else rows
                if not values:
                    return 0
                dialect, driver = engine.dialect.name, engine.dialect.driver
                if dialect == "postgresql" and driver == "psycopg2":
                    text = io.StringIO("".join(copy_lines(values)))
                    cursor.copy_expert(f"COPY {self._qualified()} ({self._columns()}) FROM STDIN", text, size=1 << 20)
                elif dialect in ("mysql", "mariadb") and driver == "pymysql":
                    row_sql = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
                    literal = functools.partial(cursor.mogrify, row_sql)
                    head = f"INSERT INTO {self._qualified()} ({self._columns()}) VALUES "
                    for statement in _mysql_values(values, literal, _MAX_STATEMENT_CHARS):
                        cursor.execute(head + statement)
                else:  # SQLite, and any other driver: its executemany, the rows as they are
                    if dialect == "postgresql":  # naive UTC text would be read in the session's time zone
                        values = [(*row[:-1], row[-1] + "+00") for row in values]
                    marker = self._marker()
                    placeholders = ", ".join([marker] * len(_COLUMNS))
                    sql = f"INSERT INTO {self._escaped_qualified()} ({self._columns()}) VALUES ({placeholders})"
                    cursor.executemany(sql, values)
            finally:
                cursor.close()
        return len(values)

    def _present(self, cursor, first: int, last: int) -> set[int]:
        """The attempt ids between `first` and `last` the table already holds (rows of a replay)."""
        m = self._marker()
        q = self._quote
        cursor.execute(
            f"SELECT {q('attempt_id')} FROM {self._escaped_qualified()} WHERE {q('connector')} = {m} "
            f"AND {q('configuration')} = {m} AND {q('attempt_id')} BETWEEN {m} AND {m}",
            (self.connector, self.configuration, first, last),
        )
        return {row[0] for row in cursor.fetchall()}

    def _columns(self) -> str:
        return ", ".join(self._quote(name) for name in _COLUMNS)

    def _marker(self) -> str:
        return "?" if self.source.engine.dialect.paramstyle == "qmark" else "%s"

    def _escaped_qualified(self) -> str:
        """The table's name in SQL run with parameters: a `%` in it is not a parameter marker."""
        name = self._qualified()
        return name.replace("%", "%%") if self._marker() == "%s" else name

    def _qualified(self) -> str:
        return ".".join(self._quote(part) for part in filter(None, (self.table.schema, self.table.name)))

    def _quote(self, name: str) -> str:
        return self.source.engine.dialect.identifier_preparer.quote(name)


# ---- rows as the source's bulk paths take them ---------------------------------------------------------------

_NULL = "\\N"
# What COPY's text format escapes. A row holding none of these (nearly every row) is written as it is.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_value(value) -> str:
    if value is None:
        return _NULL
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_lines(rows: list[tuple]) -> Iterator[str]:
    """PENDING_COLUMNS tuples as lines of COPY's text format; `finished_at` (naive UTC text) marked as UTC.

    One regular-expression search per row decides whether it needs escaping: escaping every value costs three
    times as much, for rows that almost never need it. Integers (the ids, the HTTP status) never do."""
    search = _COPY_SPECIAL.search
    for attempt_id, run_id, connector, configuration, key, operation, status, http, error, ref, ikey, at in rows:
        e = "" if error is None else error
        r = "" if ref is None else ref
        i = "" if ikey is None else ikey
        if search(f"{run_id}{connector}{configuration}{key}{operation}{status}{e}{r}{i}{at}"):
            values = (attempt_id, run_id, connector, configuration, key, operation, status, http, error, ref, ikey)
            yield "\t".join(map(_copy_value, values)) + f"\t{_copy_value(at)}+00\n"
            continue
        e = _NULL if error is None else error
        r = _NULL if ref is None else ref
        i = _NULL if ikey is None else ikey
        h = _NULL if http is None else http
        yield (
            f"{attempt_id}\t{run_id}\t{connector}\t{configuration}\t{key}\t{operation}\t{status}\t"
            f"{h}\t{e}\t{r}\t{i}\t{at}+00\n"
        )


# What a MariaDB string literal escapes (the driver's escape_string); a row holding none is quoted as it is.
_MYSQL_SPECIAL = re.compile("[\\x00\\\\\n\r\x1a\"']")


def mysql_row(row: tuple, literal: Callable[[tuple], str]) -> str:
    """One PENDING_COLUMNS tuple as `(v, ...)` of a MariaDB INSERT; `literal` is the driver's own quoting of a
    whole row, for the rare row with a character that needs escaping (one search decides, as in copy_lines)."""
    attempt_id, run_id, connector, configuration, key, operation, status, http, error, ref, ikey, at = row
    e = "" if error is None else error
    r = "" if ref is None else ref
    i = "" if ikey is None else ikey
    if _MYSQL_SPECIAL.search(f"{run_id}{connector}{configuration}{key}{operation}{status}{e}{r}{i}{at}"):
        return literal(row)
    e = "NULL" if error is None else f"'{error}'"
    r = "NULL" if ref is None else f"'{ref}'"
    i = "NULL" if ikey is None else f"'{ikey}'"
    h = "NULL" if http is None else int(http)
    return (
        f"({int(attempt_id)},'{run_id}','{connector}','{configuration}','{key}','{operation}','{status}',"
        f"{h},{e},{r},{i},'{at}')"
    )


def _mysql_values(rows: list[tuple], literal: Callable[[tuple], str], max_chars: int) -> Iterator[str]:
    """The VALUES lists of the fewest INSERTs of at most about `max_chars` characters that hold the rows."""
    batch: list[str] = []
    length = 0
    for row in rows:
        text = mysql_row(row, literal)
        if batch and length + len(text) > max_chars:
            yield ",".join(batch)
            batch, length = [], 0
        batch.append(text)
        length += len(text) + 1
    if batch:
        yield ",".join(batch)
