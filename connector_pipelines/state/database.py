"""The database that holds the platform's own tables (the delivery ledger, the import state).

SQLite under the storage folder by default; `$CONNECTOR_PIPELINES_LEDGER_URL` (for example PostgreSQL) when set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

LEDGER_URL_ENV = "CONNECTOR_PIPELINES_LEDGER_URL"


def default_state_url(storage_root: Path, environment: str | None = None) -> str:
    """`$CONNECTOR_PIPELINES_LEDGER_URL`, else `ledger.db` in the storage folder; `environment`'s own place in
    it (`environment_state_url`) for an environment other than production."""
    configured = os.environ.get(LEDGER_URL_ENV)
    url = configured or f"sqlite:///{(Path(storage_root) / 'ledger.db').resolve()}"
    return environment_state_url(url, environment)


ENVIRONMENT_SCHEMA_PREFIX = "connector_pipelines_"


def environment_state_url(url: str, environment: str | None) -> str:
    """Where `environment` keeps its state: production (or none) the database itself; any other its own place
    in the same server, so a sandbox run never reads or marks production's records. A SQLite file gets a sibling
    (`ledger.sandbox.db`), PostgreSQL a schema (`connector_pipelines_sandbox`, made on first use)."""
    if environment in (None, "", "production"):
        return url
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:":
            return url
        path = Path(database)
        return parsed.set(database=str(path.with_name(f"{path.stem}.{environment}{path.suffix}"))).render_as_string(
            hide_password=False
        )
    if backend == "postgresql":
        options = parsed.query.get("options", "")
        options = f"{options} -csearch_path={ENVIRONMENT_SCHEMA_PREFIX}{environment}".strip()
        return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)
    raise ValueError(f"the connectors' state cannot be kept per environment on {backend}: use PostgreSQL or SQLite")


def _make_environment_schema(engine: sa.Engine) -> None:
    """The PostgreSQL schema an environment's state URL names, made when missing."""
    found = re.search(rf"search_path=({ENVIRONMENT_SCHEMA_PREFIX}[a-z0-9_]+)", engine.url.query.get("options", ""))
    if found:
        with engine.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{found.group(1)}"'))


def state_engine(url: str) -> sa.Engine:
    """An engine for the state tables; a SQLite file's folder, an environment's schema, are made on first use."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    if engine.dialect.name == "postgresql":
        _make_environment_schema(engine)
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
