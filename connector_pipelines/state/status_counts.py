"""How many records of each configuration the ledger holds per status, kept by the database itself.

Every run ends by reporting its configuration's records per status (metadata the UI plots). Counting them with
`GROUP BY status` reads every record of the configuration: six seconds at ten million records, longer than the rest
of a push of one key. So `cp_delivery_status_counts` holds the counts and triggers on `cp_delivery_records` keep
them, whatever writes the records (a run's upserts, `reset`, an operator's SQL): SQLite row triggers, PostgreSQL
statement triggers over transition tables (one aggregate per statement, not a function call per row).

A ledger made before this table existed gets it on open: counted once, with the triggers created in the same
transaction, so no write falls between the count and the first trigger.
"""

from __future__ import annotations

import sqlalchemy as sa

TABLE = "cp_delivery_status_counts"
RECORDS = "cp_delivery_records"
_KEY = "connector, configuration, status"

status_counts_columns = (
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("configuration", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("records", sa.BigInteger, nullable=False),
)


def _add(side: str, sign: str) -> str:
    """SQLite: add `sign`1 to the count of the row's (`side`: NEW or OLD) status."""
    return (
        f"INSERT INTO {TABLE} ({_KEY}, records) VALUES ({side}.connector, {side}.configuration, {side}.status, "
        f"{sign}1) ON CONFLICT ({_KEY}) DO UPDATE SET records = records {sign} 1;"
    )


_SQLITE_TRIGGERS = {
    "cp_records_count_insert": f"AFTER INSERT ON {RECORDS} BEGIN {_add('NEW', '+')} END",
    "cp_records_count_update": (
        f"AFTER UPDATE OF status ON {RECORDS} WHEN OLD.status IS NOT NEW.status BEGIN "
        f"{_add('OLD', '-')} {_add('NEW', '+')} END"
    ),
    "cp_records_count_delete": f"AFTER DELETE ON {RECORDS} BEGIN {_add('OLD', '-')} END",
}


def _pg_function(name: str, rows: str) -> str:
    """PostgreSQL: a trigger function adding the per-status sums of `rows` (a query over the transition tables)."""
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {TABLE} AS c ({_KEY}, records) "
        f"SELECT {_KEY}, sum(d) FROM ({rows}) AS changed GROUP BY {_KEY} HAVING sum(d) <> 0 "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET records = c.records + excluded.records; "
        "RETURN NULL; END $$"
    )


_PG_TRIGGERS = {
    "cp_records_count_insert": (
        _pg_function("cp_records_count_insert", f"SELECT {_KEY}, 1 AS d FROM new_rows"),
        f"AFTER INSERT ON {RECORDS} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    "cp_records_count_update": (
        _pg_function(
            "cp_records_count_update",
            f"SELECT {_KEY}, 1 AS d FROM new_rows UNION ALL SELECT {_KEY}, -1 AS d FROM old_rows",
        ),
        f"AFTER UPDATE ON {RECORDS} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    "cp_records_count_delete": (
        _pg_function("cp_records_count_delete", f"SELECT {_KEY}, -1 AS d FROM old_rows"),
        f"AFTER DELETE ON {RECORDS} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
    ),
}


def install(engine: sa.Engine) -> None:
    """Make sure the counts table is kept by triggers; on a ledger without them, count once and create them."""
    dialect = engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"the delivery ledger runs on SQLite or PostgreSQL, not {dialect}")
    with engine.connect() as conn:
        if _triggers_present(conn, dialect):
            return
    try:
        with engine.begin() as conn:
            if dialect == "postgresql":
                # Writers wait while the records are counted and the triggers made; readers do not.
                conn.exec_driver_sql(f"LOCK TABLE {RECORDS} IN SHARE ROW EXCLUSIVE MODE")
            # On SQLite the DELETE opens the write transaction (Python's sqlite3 begins one at the first DML), so
            # the count and the triggers after it are one transaction too. Counted again even when another process
            # installed the triggers meanwhile: under the lock, the count is right either way.
            conn.exec_driver_sql(f"DELETE FROM {TABLE}")
            conn.exec_driver_sql(
                f"INSERT INTO {TABLE} ({_KEY}, records) SELECT {_KEY}, count(*) FROM {RECORDS} GROUP BY {_KEY}"
            )
            if dialect == "sqlite":
                for name, body in _SQLITE_TRIGGERS.items():
                    conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
            elif not _triggers_present(conn, dialect):
                for name, (function, timing) in _PG_TRIGGERS.items():
                    conn.exec_driver_sql(function)
                    conn.exec_driver_sql(f"CREATE TRIGGER {name} {timing} EXECUTE FUNCTION {name}()")
    except sa.exc.DBAPIError:
        # Two processes opening a new ledger at once: the other one's triggers stand, or the error shows again.
        with engine.connect() as conn:
            if not _triggers_present(conn, dialect):
                raise


def _triggers_present(conn: sa.Connection, dialect: str) -> bool:
    names = sorted(_SQLITE_TRIGGERS)
    if dialect == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table"
    else:
        # In the schema the ledger's tables resolve to (its search_path), as `to_regclass` finds them.
        query = "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:table) AND NOT tgisinternal"
    found = {row[0] for row in conn.execute(sa.text(query), {"table": RECORDS})}
    return set(names) <= found


def counts(conn: sa.Connection, connector: str, configuration: str) -> dict[str, int]:
    """The configuration's records per status (statuses with none left out)."""
    rows = conn.execute(
        sa.text(
            f"SELECT status, records FROM {TABLE} WHERE connector = :connector AND configuration = :configuration "
            "AND records <> 0"
        ),
        {"connector": connector, "configuration": configuration},
    )
    return {status: int(records) for status, records in rows}
