"""Locks in the state database, across processes and machines: one delivering run per configuration, and one
process at a time creating or upgrading the state tables.

A run decides what to send from the ledger (what was delivered, what is in flight) and then sends. Two runs of one
configuration deciding at once would both see a record as new and both send it; and a run turning the in-flight
markers it finds into in-flight records (`recover_in_flight`) must only ever find those of a run that is dead.
Dagster's pools keep two runs of a connector apart inside one instance, but not two instances, a run started by
hand beside the daemon's, or a pool limit raised by mistake. So every delivery holds this lock from its first
ledger read to its last write, and a second run waits for it, then decides from what the first one recorded.

The lock dies with its holder (a crashed run never leaves one behind):
- PostgreSQL: a session-level advisory lock on a connection held for the delivery;
- MySQL/MariaDB: `GET_LOCK` on such a connection;
- SQLite (one machine only): an exclusive `flock` on a file beside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import sqlalchemy as sa

DEFAULT_WAIT_SECONDS = 3600.0
POLL_SECONDS = 0.5
SAY_EVERY_SECONDS = 60.0


_SQL = {  # (take without waiting, release)
    "postgresql": (sa.text("SELECT pg_try_advisory_lock(:n)"), sa.text("SELECT pg_advisory_unlock(:n)")),
    "mysql": (sa.text("SELECT GET_LOCK(:n, 0)"), sa.text("SELECT RELEASE_LOCK(:n)")),
}
_SQL["mariadb"] = _SQL["mysql"]


class DeliveryLocked(RuntimeError):
    """Another run held the configuration's lock for longer than this run would wait."""


def lock_name(connector: str, configuration: str) -> str:
    return f"connector-pipelines/{connector}/{configuration}"


def lock_number(name: str) -> int:
    """A signed 64-bit number for `pg_advisory_lock`, the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def delivery_lock(
    engine: sa.Engine,
    connector: str,
    configuration: str,
    *,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    on_wait: Callable[[float], None] | None = None,
) -> AbstractContextManager[None]:
    """Hold the lock of (connector, configuration) while the block runs.

    When another run holds it, `on_wait(seconds waited)` is called at once and then every minute; after
    `wait_seconds` `DeliveryLocked` is raised (nothing was read or sent).
    """
    busy = f"another run has been delivering {connector}/{configuration} for longer than {wait_seconds:g} s"
    return state_lock(engine, lock_name(connector, configuration), busy, wait_seconds=wait_seconds, on_wait=on_wait)


def schema_lock(engine: sa.Engine) -> AbstractContextManager[None]:
    """Held while the state tables are created or upgraded: two runs starting on a new database at once would
    both try to create them, and one would fail on the other's table."""
    return state_lock(engine, "connector-pipelines/schema", "the state tables were being created for too long")


@contextmanager
def state_lock(
    engine: sa.Engine,
    name: str,
    busy: str,
    *,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    on_wait: Callable[[float], None] | None = None,
) -> Iterator[None]:
    """The lock called `name` in the state database (see the module's text); `busy` starts the error's text."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        with _file_lock(engine, name, busy, wait_seconds, on_wait):
            yield
        return
    if dialect not in _SQL:
        raise ValueError(f"the state database cannot lock on {dialect}: use PostgreSQL, MySQL/MariaDB or SQLite")
    take_sql, release_sql = _SQL[dialect]
    # PostgreSQL's advisory locks are numbered; MySQL's are named (at most 64 characters).
    argument = lock_number(name) if dialect == "postgresql" else f"cp-{hashlib.sha256(name.encode()).hexdigest()[:32]}"
    with engine.connect() as connection:
        # Autocommit: the lock belongs to the session, and no transaction should stay open for the whole delivery.
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        take = lambda: bool(connection.execute(take_sql, {"n": argument}).scalar())  # noqa: E731
        _wait_for(take, busy, wait_seconds, on_wait)
        try:
            yield
        finally:
            connection.execute(release_sql, {"n": argument})


@contextmanager
def _file_lock(engine: sa.Engine, name: str, busy: str, wait_seconds: float, on_wait) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield  # an in-memory ledger lives in this process only
        return
    folder = Path(database).resolve().parent / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.lock"
    with path.open("a") as handle:

        def take() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        _wait_for(take, busy, wait_seconds, on_wait)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for(take: Callable[[], bool], busy: str, wait_seconds: float, on_wait) -> None:
    started = time.monotonic()
    said = None
    while not take():
        waited = time.monotonic() - started
        if waited >= wait_seconds:
            raise DeliveryLocked(f"{busy}; nothing was sent (the next run will deliver)")
        if on_wait is not None and (said is None or waited - said >= SAY_EVERY_SECONDS):
            on_wait(waited)
            said = waited
        time.sleep(POLL_SECONDS)
