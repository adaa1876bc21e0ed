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

import hashlib

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from connector_pipelines.state.ledger import TARGET_REF_MAX_CHARS, DeliveryLedger, sqlite_timestamp
from connector_pipelines.state.outbox import advance_outbox, open_outbox, pending_attempts
from connector_pipelines.transports.sql import SqlSource

_CHUNK = 5000
_COLUMNS = (
    "attempt_id",
    "run_id",
    "connector",
    "configuration",
    "record_key",
    "operation",
    "status",
    "http_status",
    "error",
    "target_ref",
    "idempotency_key",
    "finished_at",
)

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
        while True:
            after = open_outbox(self.ledger, self.connector, self.configuration)
            rows = pending_attempts(self.ledger, self.connector, self.configuration, after, _CHUNK)
            if not rows:
                return added
            added += self._insert_new(rows)
            advance_outbox(self.ledger, self.connector, self.configuration, rows[-1]["attempt_id"])

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

    def _insert_new(self, rows: list[dict]) -> int:
        """Insert the rows the table does not hold yet, in one transaction, through the driver's own bulk path
        (SQLAlchemy's per-row processing costs ~100 µs a row into PostgreSQL, more than the delivery itself)."""
        t = self.table
        dialect = self.source.engine.dialect.name
        stamp = sqlite_timestamp if dialect == "sqlite" else (lambda value: value)
        ids = [row["attempt_id"] for row in rows]
        held = sa.select(t.c.attempt_id).where(
            t.c.connector == self.connector,
            t.c.configuration == self.configuration,
            t.c.attempt_id.between(min(ids), max(ids)),
        )
        columns = ", ".join(self._quote(name) for name in _COLUMNS)
        with self.source.engine.begin() as conn:
            present = {row[0] for row in conn.execute(held)}
            values = [
                tuple(stamp(row[n]) if n == "finished_at" else row[n] for n in _COLUMNS)
                for row in rows
                if row["attempt_id"] not in present
            ]
            if not values:
                return 0
            cursor = conn.connection.cursor()
            try:
                if dialect == "postgresql":
                    from psycopg2.extras import execute_values

                    sql = f"INSERT INTO {self._qualified()} ({columns}) VALUES %s"
                    execute_values(cursor, sql, values, page_size=1000)
                else:
                    marker = "?" if dialect == "sqlite" else "%s"
                    placeholders = ", ".join([marker] * len(_COLUMNS))
                    cursor.executemany(f"INSERT INTO {self._qualified()} ({columns}) VALUES ({placeholders})", values)
            finally:
                cursor.close()
        return len(values)

    def _qualified(self) -> str:
        return ".".join(self._quote(part) for part in filter(None, (self.table.schema, self.table.name)))

    def _quote(self, name: str) -> str:
        return self.source.engine.dialect.identifier_preparer.quote(name)
