"""The write-back outbox: which of a configuration's attempts are not yet in the source's write-back table.

The ledger's attempt table is the outbox; `cp_write_back_cursor` keeps, per (connector, configuration), the id of
the last attempt written back. The cursor moves only after the source database committed those rows, so a
process that dies anywhere in between leaves the attempts after the cursor pending, and the next run writes them
back first. (A crash after the source commit but before the cursor moved replays rows the source already has;
the write-back skips those by attempt id.)

A cursor is enough because the attempts of one configuration are committed in id order: one delivery of a
configuration runs at a time (the ledger's exactly-once guarantee already rests on that), and it commits its
chunks one after another on one thread.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from connector_pipelines.state.ledger import DeliveryLedger, attempts_table, utc_now, write_back_cursor_table


def open_outbox(ledger: DeliveryLedger, connector: str, configuration: str) -> int:
    """The cursor of this configuration, created at its latest attempt when it has none, and returned.

    Attempts made before a configuration's first write-back through the outbox (written back by the thread of
    earlier versions, or made while write-back was off) are history, not pending: they are not written again.
    Call before the run's first attempt is committed.
    """
    current = write_back_cursor(ledger, connector, configuration)
    if current is not None:
        return current
    a, c = attempts_table, write_back_cursor_table
    latest = sa.select(sa.func.coalesce(sa.func.max(a.c.id), 0)).where(
        a.c.connector == connector, a.c.configuration == configuration
    )
    try:
        with ledger.engine.begin() as conn:
            start = conn.execute(latest).scalar_one()
            conn.execute(
                c.insert().values(
                    connector=connector, configuration=configuration, attempt_id=start, updated_at=utc_now()
                )
            )
    except IntegrityError:  # another process opened it at the same moment: its cursor stands
        pass
    return write_back_cursor(ledger, connector, configuration)


def write_back_cursor(ledger: DeliveryLedger, connector: str, configuration: str) -> int | None:
    c = write_back_cursor_table
    query = sa.select(c.c.attempt_id).where(c.c.connector == connector, c.c.configuration == configuration)
    with ledger.engine.connect() as conn:
        return conn.execute(query).scalar_one_or_none()


# The columns of a pending attempt, in the order `pending_attempts` returns them: the write-back table's names.
PENDING_COLUMNS = (
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
_PENDING_SELECT = (
    "SELECT id, run_id, connector, configuration, record_key, operation, outcome, http_status, error, target_ref, "
    "idempotency_key, {finished_at} FROM cp_delivery_attempts "
    "WHERE connector = {p} AND configuration = {p} AND id > {p} ORDER BY id LIMIT {p}"
)
# `finished_at` as naive UTC text, 'YYYY-MM-DD HH:MM:SS[.ffffff]': what SQLite keeps (the ledger writes naive UTC
# text there), and what PostgreSQL formats itself, so no row becomes a datetime on the way.
_PENDING_SQL = {
    "sqlite": _PENDING_SELECT.format(finished_at="finished_at", p="?"),
    "postgresql": _PENDING_SELECT.format(
        finished_at="to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')", p="%s"
    ),
}


def pending_attempts(ledger: DeliveryLedger, connector: str, configuration: str, after: int, limit: int) -> list[tuple]:
    """Up to `limit` attempts after attempt id `after`, oldest first, as tuples in PENDING_COLUMNS order with
    `finished_at` as naive UTC text.

    Straight from the driver's cursor: SQLAlchemy's row objects, dicts and datetimes cost ~15 µs an attempt, more
    than writing it to the source."""
    dialect = ledger.engine.dialect.name
    sql = _PENDING_SQL.get(dialect)
    if sql is None:
        raise NotImplementedError(f"the delivery ledger runs on SQLite or PostgreSQL, not {dialect}")
    with ledger.engine.connect() as conn:
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, (connector, configuration, after, limit))
            return cursor.fetchall()
        finally:
            cursor.close()


def pending_count(ledger: DeliveryLedger, connector: str, configuration: str) -> int:
    """How many attempts wait to be written back (0 when the configuration has no cursor yet)."""
    after = write_back_cursor(ledger, connector, configuration)
    if after is None:
        return 0
    a = attempts_table
    query = sa.select(sa.func.count()).where(
        a.c.connector == connector, a.c.configuration == configuration, a.c.id > after
    )
    with ledger.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def advance_outbox(ledger: DeliveryLedger, connector: str, configuration: str, attempt_id: int) -> None:
    """Attempts up to `attempt_id` are written back (after the source committed them). Never moves back."""
    c = write_back_cursor_table
    statement = (
        c.update()
        .where(c.c.connector == connector, c.c.configuration == configuration, c.c.attempt_id < attempt_id)
        .values(attempt_id=attempt_id, updated_at=utc_now())
    )
    with ledger.engine.begin() as conn:
        conn.execute(statement)
