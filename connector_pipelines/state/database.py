"""The database that holds the platform's own tables (the delivery ledger, the import state).

SQLite under the storage folder by default; `$CONNECTOR_PIPELINES_LEDGER_URL` (for example PostgreSQL) when set.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

LEDGER_URL_ENV = "CONNECTOR_PIPELINES_LEDGER_URL"


def default_state_url(storage_root: Path) -> str:
    """`$CONNECTOR_PIPELINES_LEDGER_URL`, else `ledger.db` in the storage folder."""
    configured = os.environ.get(LEDGER_URL_ENV)
    if configured:
        return configured
    return f"sqlite:///{(Path(storage_root) / 'ledger.db').resolve()}"


def state_engine(url: str) -> sa.Engine:
    """An engine for the state tables; a SQLite file's folder is made on first use."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        # WAL lets readers (the CLI, sensors) look while a run writes. synchronous=NORMAL keeps every committed
        # transaction through a process crash (kill -9); only a power loss can take the last ones back.
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine
