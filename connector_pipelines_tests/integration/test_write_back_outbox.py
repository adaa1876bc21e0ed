"""The write-back outbox: outcomes the ledger committed reach the source's write-back table exactly once, even
when the process dies between the two commits.

A real crash: `connector-pipelines run` in a subprocess, its write-back blocked by a lock this test holds on the
write-back table (SQLite, PostgreSQL and MariaDB sources), killed with SIGKILL once the ledger holds every outcome.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from connector_pipelines.integration import write_back
from connector_pipelines.integration.write_back import WriteBack, write_back_table
from connector_pipelines.state.database import LEDGER_URL_ENV, default_state_url
from connector_pipelines.state.ledger import (
    AttemptRow,
    DeliveryLedger,
    attempts_table,
    metadata,
    write_back_cursor_table,
)
from connector_pipelines.state.outbox import pending_count, write_back_cursor
from connector_pipelines.storage import STORAGE_ENV
from connector_pipelines.transports.sql import SqlSource
from connector_pipelines_tests.fixtures.extract import PG_SERVER_URL
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

CLI = Path(sys.executable).with_name("connector-pipelines")
AUDITED = BASIC_SYNC + "  write_back: {table: sync_audit}\n"
DIALECTS = ("sqlite", "postgresql", "mariadb")


@pytest.fixture(scope="module")
def _shared_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    return _shared_instance


class Source:
    """The integration's source database on one dialect: customers to read, the write-back table to inspect."""

    def __init__(self, dialect: str, url: str, engine: sa.Engine, sqlite_path: Path | None = None):
        self.dialect = dialect
        self.url = url
        self.engine = engine
        self.sqlite_path = sqlite_path

    def create_customers(self) -> None:
        text = "TEXT" if self.dialect != "mariadb" else "VARCHAR(100)"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name {text} NOT NULL, email {text}, "
                f"balance NUMERIC(12, 2), updated_at {text} NOT NULL)"
            )

    def add_customers(self, count: int, start: int = 1) -> None:
        rows = [
            {"id": i, "name": f"Customer {i}", "email": f"c{i}@example.test", "balance": i * 10.5}
            for i in range(start, start + count)
        ]
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO customers (customer_id, name, email, balance, updated_at) "
                    "VALUES (:id, :name, :email, :balance, '2026-01-01 00:00:00')"
                ),
                rows,
            )

    def rename(self, ids: list[int]) -> None:
        with self.engine.begin() as conn:
            for i in ids:
                conn.execute(sa.text("UPDATE customers SET name = 'Renamed' WHERE customer_id = :id"), {"id": i})

    def written_back(self) -> list[tuple]:
        """(run_id, record_key, attempt_id, status) of every write-back row."""
        with self.engine.connect() as conn:
            return [
                tuple(row)
                for row in conn.execute(sa.text("SELECT run_id, record_key, attempt_id, status FROM sync_audit"))
            ]

    @contextlib.contextmanager
    def write_back_locked(self) -> Iterator[None]:
        """Hold a lock under which the write-back table can be read but not written."""
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.sqlite_path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")  # the RESERVED lock: readers go on, no other writer
            try:
                yield
            finally:
                conn.rollback()
                conn.close()
            return
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("LOCK TABLE sync_audit IN EXCLUSIVE MODE")  # SELECT only, until rollback
                try:
                    yield
                finally:
                    conn.rollback()
            else:
                conn.exec_driver_sql("LOCK TABLES sync_audit READ")
                try:
                    yield
                finally:
                    conn.exec_driver_sql("UNLOCK TABLES")


@pytest.fixture(params=DIALECTS)
def source(request, tmp_path) -> Source:
    if request.param == "sqlite":
        path = tmp_path / "crash_source.db"
        url = f"sqlite:///{path}"
        made = Source("sqlite", url, sa.create_engine(url), path)
    else:
        database = request.getfixturevalue("pg_database" if request.param == "postgresql" else "mariadb_database")
        made = Source(request.param, database.url, database.engine)
    made.create_customers()
    return made


@pytest.fixture
def project_on(integration_project, source_db):
    """`project_on(source, yaml)`: the fixture's project with its `source` connection pointed at `source`."""

    def make(source: Source, connector_yaml: str):
        project = integration_project(connector_yaml)
        path = project.root / "resources" / "connections.yaml"
        path.write_text(path.read_text().replace(f"url: {source_db.url}", f"url: '{source.url}'"))
        return project

    return make


def _start_cli_run(project, home: Path) -> subprocess.Popen:
    """`connector-pipelines run sync` in its own process group, on this test's ledger (none: the default)."""
    env = dict(os.environ)
    env.update(
        CONNECTOR_PIPELINES_RESOURCES=str(project.root / "resources"),
        CONNECTOR_PIPELINES_STORAGE=os.environ[STORAGE_ENV],
        DAGSTER_HOME=str(home),
    )
    with open(project.root / "cli-run.log", "ab") as log:
        return subprocess.Popen(
            [str(CLI), "run", "sync"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _attempt_count(ledger: DeliveryLedger) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(attempts_table)).scalar_one()


def _kill_once_the_ledger_holds(process: subprocess.Popen, ledger: DeliveryLedger, attempts: int, project) -> None:
    deadline = time.monotonic() + 90
    try:
        while _attempt_count(ledger) < attempts:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (project.root / "cli-run.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"the run ended (or stalled) before it could be killed; its output:\n{log}")
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL


def test_outcomes_of_a_run_killed_before_its_write_back_are_written_back_once_by_the_next_run(
    source, project_on, http_target, tmp_path
):
    _kill_before_write_back_then_replay(source, project_on(source, AUDITED), tmp_path)


def test_the_outbox_replays_with_the_ledger_on_postgresql(tmp_path, project_on, http_target, monkeypatch):
    schema = f"cp_outbox_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    monkeypatch.setenv(LEDGER_URL_ENV, f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}")
    path = tmp_path / "crash_source.db"
    source = Source("sqlite", f"sqlite:///{path}", sa.create_engine(f"sqlite:///{path}"), path)
    source.create_customers()
    try:
        project = project_on(source, AUDITED)
        assert project.ledger().engine.dialect.name == "postgresql"
        _kill_before_write_back_then_replay(source, project, tmp_path)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _kill_before_write_back_then_replay(source: Source, project, tmp_path: Path) -> None:
    source.add_customers(20)
    first = project.run()
    assert first.success
    assert len(source.written_back()) == 20
    source.rename([3, 7, 11, 15, 19])
    ledger = project.ledger()

    with source.write_back_locked():
        process = _start_cli_run(project, tmp_path / "dagster_home")
        _kill_once_the_ledger_holds(process, ledger, 25, project)

    # The killed run delivered its 5 updates and committed them to the ledger, but wrote nothing back.
    assert ledger.counts("sync", "customers") == {"delivered": 20}
    killed_run = {row["run_id"] for row in ledger.trace("sync", "3")} - {first.run_id}
    assert len(killed_run) == 1
    assert len(source.written_back()) == 20
    assert pending_count(ledger, "sync", "customers") == 5

    after = project.run()

    assert after.success and after.metadata["customers"]["unchanged"] == 20  # nothing sent again...
    rows = source.written_back()
    replayed = sorted(row[1] for row in rows if row[0] in killed_run)
    assert replayed == ["11", "15", "19", "3", "7"]  # ...and the killed run's outcomes written back once each
    assert {row[3] for row in rows if row[0] in killed_run} == {"delivered"}
    assert len(rows) == 25 and max(Counter(row[2] for row in rows).values()) == 1
    assert pending_count(ledger, "sync", "customers") == 0
    assert project.run().success and len(source.written_back()) == 25
    ledger.dispose()


def test_a_replay_after_a_crash_between_write_back_and_cursor_adds_no_duplicate_rows(source, project_on, http_target):
    source.add_customers(12)
    project = project_on(source, AUDITED)
    assert project.run().success
    ledger = project.ledger()
    latest = write_back_cursor(ledger, "sync", "customers")
    assert latest is not None and len(source.written_back()) == 12
    # What a process killed after the source committed, before the ledger's cursor moved, leaves behind:
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(write_back_cursor_table).values(attempt_id=latest - 12))
    assert pending_count(ledger, "sync", "customers") == 12

    assert project.run().success

    rows = source.written_back()
    assert len(rows) == 12 and sorted(Counter(row[1] for row in rows).values()) == [1] * 12
    assert write_back_cursor(ledger, "sync", "customers") == latest


def test_write_back_rows_of_an_earlier_version_are_kept_and_the_table_migrated(source_db, integration_project):
    """A table made before write-back rows carried the attempt id gains the column and its unique index; the
    history already in it is neither lost nor written again."""
    source_db.add_customers(3)
    source_db.execute(
        "CREATE TABLE sync_audit (run_id VARCHAR(64) NOT NULL, connector VARCHAR(64) NOT NULL, "
        "configuration VARCHAR(64) NOT NULL, record_key VARCHAR(512) NOT NULL, operation VARCHAR(16) NOT NULL, "
        "status VARCHAR(16) NOT NULL, http_status INTEGER, error TEXT, target_ref VARCHAR(256), "
        "idempotency_key VARCHAR(64), finished_at DATETIME NOT NULL)"
    )
    source_db.execute(
        "INSERT INTO sync_audit VALUES ('old-run', 'sync', 'customers', '1', 'create', 'delivered', 201, NULL, "
        "NULL, NULL, '2025-01-01 00:00:00')"
    )
    project = integration_project(AUDITED)

    assert project.run().success

    rows = source_db.execute("SELECT run_id, record_key, attempt_id FROM sync_audit ORDER BY attempt_id")
    assert rows[0] == ("old-run", "1", None)
    assert sorted(r[1] for r in rows[1:]) == ["1", "2", "3"] and all(r[2] is not None for r in rows[1:])
    indexes = source_db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sync_audit'")
    assert ("ux_sync_audit_attempt",) in indexes


def test_a_first_outbox_run_does_not_write_back_attempts_made_before_it(source_db, integration_project, tmp_path):
    """Attempts of a configuration made while write-back was off are history: turning it on starts from now."""
    source_db.add_customers(4)
    assert integration_project(BASIC_SYNC).run().success
    source_db.execute("UPDATE customers SET name = 'Renamed' WHERE customer_id = 2")

    project = integration_project(AUDITED)
    assert project.run().success

    assert source_db.execute("SELECT record_key, operation FROM sync_audit") == [("2", "update")]


def test_an_older_ledger_gains_the_write_back_cursor_table(tmp_path):
    url = default_state_url(tmp_path)
    engine = sa.create_engine(url)
    older = [t for t in metadata.sorted_tables if t.name != write_back_cursor_table.name]
    metadata.create_all(engine, tables=older)
    assert "cp_write_back_cursor" not in sa.inspect(engine).get_table_names()

    DeliveryLedger(url).dispose()

    assert "cp_write_back_cursor" in sa.inspect(engine).get_table_names()
    engine.dispose()


# ---- WriteBack on its own: a ledger, a source, the rows in between ---------------------------------------------

LEDGERS = ("sqlite", "postgresql")
# Values each bulk path must escape (COPY's text format, MariaDB's string literals), and the ones it must not
# confuse: an empty string is not NULL, and the text `\N` is not NULL either.
AWKWARD = ("tab\there", "new\nline", "crlf\r\nend", "back\\slash", 'it\'s "quoted"', "\\N", "", "ctrl-z \x1a")
AWKWARD += ("ünïcødé ✓", "100% {x} %s ?", "\\", "'")


@pytest.fixture(params=DIALECTS)
def sql_source(request, tmp_path) -> Iterator[SqlSource]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'write_back_source.db'}"
    else:
        url = request.getfixturevalue("pg_database" if request.param == "postgresql" else "mariadb_database").url
    made = SqlSource(url)
    yield made
    made.engine.dispose()


@pytest.fixture(params=LEDGERS)
def any_dialect_ledger(request, tmp_path) -> Iterator[DeliveryLedger]:
    if request.param == "sqlite":
        ledger = DeliveryLedger(default_state_url(tmp_path))
        yield ledger
        ledger.dispose()
        return
    schema = f"cp_wb_ledger_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    ledger = DeliveryLedger(f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}")
    try:
        yield ledger
    finally:
        ledger.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _attempt(key: str, at: dt.datetime, **changes) -> AttemptRow:
    values = dict(
        record_key=key,
        operation="update",
        outcome="delivered",
        idempotency_key=f"ik-{key}"[:64],
        http_status=200,
        requests=1,
        response_excerpt=None,
        error=None,
        target_ref=f"ref-{key}"[:256],
        started_at=at,
        finished_at=at,
    )
    values.update(changes)
    return AttemptRow(**values)


def _many(count: int, start: int = 0) -> list[AttemptRow]:
    at = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
    return [_attempt(str(i), at + dt.timedelta(milliseconds=i)) for i in range(start, start + count)]


def _table_rows(source: SqlSource, name: str = "wb_audit") -> list[dict]:
    table = write_back_table(name)
    with source.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(table).order_by(table.c.attempt_id))]


def _instant(value: dt.datetime) -> dt.datetime:
    """A stored `finished_at` as an instant: aware on PostgreSQL, UTC wall-clock time on SQLite and MariaDB."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def test_each_value_is_written_back_as_the_ledger_holds_it(sql_source, any_dialect_ledger):
    """The bulk paths (executemany, COPY, a multi-row INSERT) escape what needs escaping and keep NULL apart from
    an empty string and from the text `\\N`; `finished_at` keeps its instant to the microsecond on every
    dialect (MariaDB's column keeps microseconds too), from either kind of ledger."""
    ledger = any_dialect_ledger
    writer = WriteBack(sql_source, "wb_audit", ledger, "sync", "customers")
    at = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)  # whole seconds: isoformat leaves out the fraction
    attempts = [
        _attempt(text or "empty", at + dt.timedelta(microseconds=n), error=text, target_ref=text, idempotency_key=text)
        for n, text in enumerate(AWKWARD)
    ]
    attempts.append(_attempt("", at, outcome="failed", http_status=None, error=None, target_ref=None))
    attempts.append(_attempt("multi", at, outcome="failed", http_status=422, error="line 1\nline 2\ttabbed\\"))
    ledger.write("sync", "customers", "run-1", [], attempts)

    assert writer.drain() == len(attempts)

    rows = _table_rows(sql_source)
    assert [(r["record_key"], r["error"], r["target_ref"], r["idempotency_key"], r["http_status"]) for r in rows] == [
        (a.record_key, a.error, a.target_ref, a.idempotency_key, a.http_status) for a in attempts
    ]
    assert [_instant(r["finished_at"]) for r in rows] == [a.finished_at for a in attempts]
    assert {(r["run_id"], r["connector"], r["configuration"], r["operation"]) for r in rows} == {
        ("run-1", "sync", "customers", "update")
    }
    assert [r["status"] for r in rows][-2:] == ["failed", "failed"]
    with ledger.engine.connect() as conn:
        ids = conn.execute(sa.select(attempts_table.c.id).order_by(attempts_table.c.id)).scalars().all()
    assert [r["attempt_id"] for r in rows] == ids


def test_a_replay_across_chunks_adds_only_the_rows_the_source_lacks(sql_source, tmp_path):
    """A crash between a source commit and the cursor's move, over more than one chunk: each attempt is in the
    table once, the ones it lacked (here: removed by hand, at the chunks' edges) are added, and nothing else."""
    ledger = DeliveryLedger(default_state_url(tmp_path))
    writer = WriteBack(sql_source, "wb_audit", ledger, "sync", "customers")
    total = 2 * write_back._CHUNK + 7
    ledger.write("sync", "customers", "run-1", [], _many(total))
    assert writer.drain() == total
    last = write_back_cursor(ledger, "sync", "customers")
    ids = [r["attempt_id"] for r in _table_rows(sql_source)]
    lost = [ids[0], ids[write_back._CHUNK - 1], ids[write_back._CHUNK], ids[-1]]
    table = write_back_table("wb_audit")
    with sql_source.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.attempt_id.in_(lost)))
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(write_back_cursor_table).values(attempt_id=ids[0] - 1))

    assert writer.drain() == len(lost)

    assert [r["attempt_id"] for r in _table_rows(sql_source)] == ids
    assert write_back_cursor(ledger, "sync", "customers") == last
    assert writer.drain() == 0 and pending_count(ledger, "sync", "customers") == 0
    ledger.dispose()


def test_attempts_committed_between_drains_are_written_back_by_the_next_one(sql_source, tmp_path):
    ledger = DeliveryLedger(default_state_url(tmp_path))
    writer = WriteBack(sql_source, "wb_audit", ledger, "sync", "customers")
    for start in (0, 3, 2003):
        count = 3 if start == 0 else 2000
        ledger.write("sync", "customers", "run-1", [], _many(count, start))
        assert writer.drain() == count
    rows = _table_rows(sql_source)
    assert [r["record_key"] for r in rows] == [str(i) for i in range(4003)]
    ledger.dispose()


_OLD_TIMESTAMP = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITH TIME ZONE", "mariadb": "DATETIME"}


def test_rows_of_an_earlier_version_are_kept_on_every_dialect(sql_source, tmp_path):
    """The table of a version before attempt ids gains the column and the index; its rows (NULL attempt_id) stay,
    and neither the drain nor a replay touches them."""
    dialect = "mariadb" if sql_source.dialect == "mysql" else sql_source.dialect
    with sql_source.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE wb_audit (run_id VARCHAR(64) NOT NULL, connector VARCHAR(64) NOT NULL, "
            "configuration VARCHAR(64) NOT NULL, record_key VARCHAR(512) NOT NULL, operation VARCHAR(16) NOT NULL, "
            "status VARCHAR(16) NOT NULL, http_status INTEGER, error TEXT, target_ref VARCHAR(256), "
            f"idempotency_key VARCHAR(64), finished_at {_OLD_TIMESTAMP[dialect]} NOT NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO wb_audit VALUES ('old-run', 'sync', 'customers', '1', 'create', 'delivered', 201, NULL, "
            "NULL, NULL, '2025-01-01 00:00:00')"
        )
    ledger = DeliveryLedger(default_state_url(tmp_path))
    writer = WriteBack(sql_source, "wb_audit", ledger, "sync", "customers")
    ledger.write("sync", "customers", "run-1", [], _many(3, 1))
    assert writer.drain() == 3
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(write_back_cursor_table).values(attempt_id=0))

    assert writer.drain() == 0

    rows = sorted(_table_rows(sql_source), key=lambda r: (r["attempt_id"] is not None, r["attempt_id"] or 0))
    assert [(r["run_id"], r["record_key"], r["attempt_id"] is None) for r in rows] == [
        ("old-run", "1", True),
        ("run-1", "1", False),
        ("run-1", "2", False),
        ("run-1", "3", False),
    ]
    ledger.dispose()
