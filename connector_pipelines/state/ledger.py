"""The delivery ledger: what each record's last delivery was, and every attempt ever made.

Two tables, through SQLAlchemy Core, so the ledger lives in SQLite by default and in PostgreSQL in production:
- `cp_delivery_records`: one row per (connector, configuration, record key): the fingerprint last delivered, the
  status, the current version and its idempotency key, the target's reference for the record.
- `cp_delivery_attempts`: append-only, one row per outcome (delivered, failed, dead_letter, skipped, held,
  in_doubt): the audit trail.

A record the target refused carries `failed_runs` (how many runs in a row it failed, for its current version) and
`retry_after` (when a run may send it again); after `retry_across_runs.max_attempts` failed runs its status is
`dead_letter` (`integration.retries`). A ledger made before those columns existed gets them when it is opened.

Writes are batched, one transaction per chunk of records (a commit per record is three times slower here).
The order is what makes delivery exactly-once: a chunk's records are marked in flight with their idempotency keys
and committed *before* its requests leave, and their outcomes are committed after. The mark is one row per chunk
(`cp_in_flight_markers`, its members as JSON) rather than one update per record; the outcomes' transaction removes
it. A run killed in between leaves the marker; the next run first turns its members into `in_flight` records
(`recover_in_flight`), and resends those with the same idempotency key (the target answers a repeated key with its
stored response instead of applying it twice), probes, or holds them, as their recovery says.

A run reads the ledger a batch of keys at a time (`entries`), never the whole state: memory does not grow with
the data set. Deletes of vanished records stream the ledger's keys in key order (`iter_entries`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa

from connector_pipelines.state import status_counts
from connector_pipelines.state.database import state_engine
from connector_pipelines.state.locks import delivery_lock, schema_lock

EXCERPT_CHARS = 500
_CHUNK = 2000
# The longest target id (`target_ref`) the ledger keeps: the width of its columns here and in the write-back
# table. PostgreSQL refuses a longer value (and with it the whole chunk's transaction), so a longer id is refused
# per record before it is written (`target_ref_refusal`), never truncated: a cut id would name another record.
TARGET_REF_MAX_CHARS = 256

STATUSES = ("pending", "in_flight", "delivered", "failed", "dead_letter", "skipped")

metadata = sa.MetaData()
records_table = sa.Table(
    "cp_delivery_records",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("configuration", sa.String(64), primary_key=True),
    sa.Column("record_key", sa.String(512), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("fingerprint", sa.String(32)),  # of the version being (or last) handled
    sa.Column("delivered_fingerprint", sa.String(32)),  # of the version the target holds; NULL: none/deleted
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(64)),
    sa.Column("batch_key", sa.String(64)),  # the batch request an in-flight record went out in
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("http_status", sa.Integer),
    sa.Column("target_ref", sa.String(TARGET_REF_MAX_CHARS)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    # Retries across runs (integration/retries.py); added to older ledgers by `_add_missing_columns`.
    sa.Column("failed_runs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry_after", sa.DateTime(timezone=True)),
    # An incremental run reads again the records that failed or were in flight (`keys_with_status`): without this
    # index that read scanned every record of the configuration (five seconds at ten million).
    sa.Index("ix_cp_records_status", "connector", "configuration", "status"),
)
# Records per status of each configuration, kept by triggers on cp_delivery_records (`status_counts`).
status_counts_table = sa.Table(status_counts.TABLE, metadata, *status_counts.status_counts_columns)
attempts_table = sa.Table(
    "cp_delivery_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("connector", sa.String(64), nullable=False),
    sa.Column("configuration", sa.String(64), nullable=False),
    sa.Column("record_key", sa.String(512), nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(64)),
    sa.Column("http_status", sa.Integer),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("response_excerpt", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("target_ref", sa.String(TARGET_REF_MAX_CHARS)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_cp_attempts_record", "connector", "configuration", "record_key"),
    # The write-back outbox reads a configuration's attempts after its cursor, in id order: without this index
    # each read sorted every attempt the configuration ever had, so write-back slowed as history grew.
    sa.Index("ix_cp_attempts_outbox", "connector", "configuration", "id"),
    # The duplicate-delivery check after every run looks up each idempotency key this run delivered.
    sa.Index("ix_cp_attempts_idempotency", "connector", "configuration", "idempotency_key"),
)
# One row per chunk of records whose requests are about to leave (or went out with no outcome committed yet): their
# in-flight states as JSON. Written before the requests, removed with the outcomes (`DeliveryLedger.write`).
in_flight_markers_table = sa.Table(
    "cp_in_flight_markers",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("connector", sa.String(64), nullable=False),
    sa.Column("configuration", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("members", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_cp_in_flight_markers", "connector", "configuration", "id"),
)
# Per configuration: how far the scheduled runs have read the data set (the highest updated_at delivered), and when
# the last complete read (a full diff) was delivered (integration/read_cursor.py).
read_cursors_table = sa.Table(
    "cp_read_cursors",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("configuration", sa.String(64), primary_key=True),
    sa.Column("read_until", sa.String(64)),
    sa.Column("full_diff_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
# The write-back outbox (state/outbox.py): per configuration, the last attempt whose outcome is in the source
# database's write-back table. Attempts after it are still to be written back, by this run or the next one.
write_back_cursor_table = sa.Table(
    "cp_write_back_cursor",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("configuration", sa.String(64), primary_key=True),
    sa.Column("attempt_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def idempotency_key(connector: str, configuration: str, record_key: str, fingerprint: str, version: int) -> str:
    """Stable for one version of one record, so a resend after a crash carries the key of the first send.

    The version is in it because a record may change back to an earlier payload (A, B, A): the third send is a
    new change and must not be taken for a replay of the first.
    """
    text = f"{connector}\0{configuration}\0{record_key}\0{fingerprint}\0{version}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def batch_idempotency_key(member_keys: Iterable[str]) -> str:
    return hashlib.blake2b("\0".join(member_keys).encode(), digest_size=16).hexdigest()


def target_ref_refusal(target_ref: str | None) -> str | None:
    """Why the ledger cannot keep this target id (longer than TARGET_REF_MAX_CHARS), or None when it can.

    The id comes from the target's answer to a request it applied, so the caller records the delivery all the
    same (sending it again would apply it twice) and keeps the record's previous id, with this reason.
    """
    if target_ref is None or len(target_ref) <= TARGET_REF_MAX_CHARS:
        return None
    return (
        f"delivered, but the target's id for the record is {len(target_ref):,} characters, longer than the "
        f"{TARGET_REF_MAX_CHARS} the ledger keeps: it was not recorded, and a request that needs {{{{target_ref}}}} "
        "uses the record's previous id, if it has one"
    )


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LedgerEntry(NamedTuple):
    """What the ledger knows about one record, as the diff needs it (a named tuple: 200,000 of them are built
    from database rows at the start of every run, and a tuple is the cheapest thing to build)."""

    status: str
    fingerprint: str | None
    delivered_fingerprint: str | None
    version: int
    idempotency_key: str | None
    batch_key: str | None
    target_ref: str | None
    attempts: int
    failed_runs: int = 0  # runs in a row the target refused this version in (integration/retries.py)
    retry_after: dt.datetime | None = None  # a failed record is not sent before this (UTC)


@dataclass(slots=True)
class RecordUpdate:
    """One record's new ledger state; written in batches by `DeliveryLedger.write`."""

    record_key: str
    status: str
    operation: str
    fingerprint: str | None
    delivered_fingerprint: str | None
    version: int
    idempotency_key: str | None
    attempts: int
    batch_key: str | None = None
    last_error: str | None = None
    http_status: int | None = None
    target_ref: str | None = None
    delivered_at: dt.datetime | None = None
    failed_runs: int = 0
    retry_after: dt.datetime | None = None


@dataclass(slots=True)
class AttemptRow:
    """One outcome for the append-only audit."""

    record_key: str
    operation: str
    outcome: str
    idempotency_key: str | None
    http_status: int | None
    requests: int
    response_excerpt: str | None
    error: str | None
    target_ref: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime


class DeliveryLedger:
    """The ledger for one database; every method takes the connector and configuration it is about."""

    def __init__(self, url: str):
        self.url = url
        self.engine = state_engine(url)
        with schema_lock(self.engine):
            metadata.create_all(self.engine, checkfirst=True)
            _add_missing_columns(self.engine)
            _add_missing_indexes(self.engine)
            status_counts.install(self.engine)
        self._dialect = self.engine.dialect.name
        self._stamp = sqlite_timestamp if self._dialect == "sqlite" else (lambda value: value)

    def dispose(self) -> None:
        self.engine.dispose()

    def delivering(self, connector: str, configuration: str, **wait) -> AbstractContextManager[None]:
        """The configuration's lock, held by a run from its first ledger read to its last write
        (`delivery_lock`; `wait`: its `wait_seconds` and `on_wait`)."""
        return delivery_lock(self.engine, connector, configuration, **wait)

    # ---- reads ----------------------------------------------------------------------------------------------

    def state(self, connector: str, configuration: str) -> dict[str, LedgerEntry]:
        """Every record the ledger knows for this configuration, records in open in-flight markers as in flight.

        For inspection and tests: a run never holds the whole state (`entries`, `iter_entries`)."""
        entries = dict(self._entry_rows(connector, configuration, "", ()))
        entries.update(self._marker_entries(connector, configuration))
        return entries

    def entries(self, connector: str, configuration: str, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        """The ledger's entries for these record keys (keys it has no entry for are absent): one indexed query per
        chunk of keys, so a run holds the entries of one batch of records at a time."""
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[start : start + _KEYS_PER_QUERY])
            if self._dialect == "postgresql":
                where, params = " AND record_key = ANY(%s)", (chunk,)
            else:
                where, params = f" AND record_key IN ({', '.join('?' * len(chunk))})", tuple(chunk)
            found.update(self._entry_rows(connector, configuration, where, params))
        return found

    def iter_entries(
        self, connector: str, configuration: str, chunk: int = 10_000
    ) -> Iterator[list[tuple[str, LedgerEntry]]]:
        """Every entry of a configuration in record-key order, `chunk` at a time (keyset pagination on the primary
        key: each page is one index range scan, however large the ledger)."""
        after: str | None = None
        mark = "%s" if self._dialect == "postgresql" else "?"
        while True:
            where = f" AND record_key > {mark}" if after is not None else ""
            params = (after,) if after is not None else ()
            rows = self._entry_rows(connector, configuration, f"{where} ORDER BY record_key LIMIT {int(chunk)}", params)
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def _entry_rows(self, connector: str, configuration: str, where: str, params: tuple) -> list:
        """(record_key, LedgerEntry) rows through the driver's own cursor: SQLAlchemy's row objects cost more than
        the query for 200,000 records."""
        mark = "%s" if self._dialect == "postgresql" else "?"
        sql = (
            f"SELECT {_ENTRY_COLUMNS} FROM cp_delivery_records WHERE connector = {mark} AND configuration = {mark}"
            + where
        )
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql, (connector, configuration, *params))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        make = LedgerEntry._make
        if self._dialect != "sqlite":
            return [(row[0], make(row[1:])) for row in rows]
        # SQLite's driver hands the timestamp back as text; only failed records have one.
        return [(row[0], make(row[1:] if row[-1] is None else _read_retry_after(row[1:]))) for row in rows]

    # ---- in-flight markers ----------------------------------------------------------------------------------

    def mark_in_flight(self, connector: str, configuration: str, run_id: str, updates: Sequence[RecordUpdate]) -> int:
        """Commit one marker holding these records' in-flight states (before their requests leave); its id, for
        the `write` that commits their outcomes to remove it."""
        members = json.dumps([[getattr(u, name) for name in _MARKER_FIELDS] for u in updates], separators=(",", ":"))
        statement = in_flight_markers_table.insert().values(
            connector=connector, configuration=configuration, run_id=run_id, members=members, created_at=utc_now()
        )
        with self.engine.begin() as conn:
            return conn.execute(statement).inserted_primary_key[0]

    def recover_in_flight(self, connector: str, configuration: str) -> int:
        """Turn the records of markers left by a run that stopped before their outcomes were committed into
        `in_flight` records (a later marker of a record wins: a batch split in two re-marks its halves), and remove
        the markers, in one transaction. Returns how many records were in them. Cheap when there is none."""
        markers = self._markers(connector, configuration)
        if not markers:
            return 0
        updates = _marker_updates(markers)
        self.write(connector, configuration, markers[-1][1], list(updates.values()), settle=[m[0] for m in markers])
        return len(updates)

    def _markers(self, connector: str, configuration: str) -> list[tuple[int, str, str]]:
        t = in_flight_markers_table
        query = (
            sa.select(t.c.id, t.c.run_id, t.c.members)
            .where(t.c.connector == connector, t.c.configuration == configuration)
            .order_by(t.c.id)
        )
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def _marker_entries(self, connector: str, configuration: str) -> dict[str, LedgerEntry]:
        return {
            key: LedgerEntry(
                "in_flight",
                u.fingerprint,
                u.delivered_fingerprint,
                u.version,
                u.idempotency_key,
                u.batch_key,
                u.target_ref,
                u.attempts,
                u.failed_runs,
            )
            for key, u in _marker_updates(self._markers(connector, configuration)).items()
        }

    def keys_with_status(self, connector: str, configuration: str, statuses: Sequence[str]) -> set[str]:
        t = records_table
        query = sa.select(t.c.record_key).where(
            t.c.connector == connector, t.c.configuration == configuration, t.c.status.in_(list(statuses))
        )
        with self.engine.connect() as conn:
            keys = {row[0] for row in conn.execute(query)}
        if "in_flight" in statuses:
            keys |= set(self._marker_entries(connector, configuration))
        return keys

    def counts(self, connector: str, configuration: str) -> dict[str, int]:
        """The configuration's records per status, those in open in-flight markers as in flight. Read from the
        counts the database keeps (`status_counts`): as cheap at ten million records as at ten."""
        with self.engine.connect() as conn:
            counts = status_counts.counts(conn, connector, configuration)
        for key in self._marker_entries(connector, configuration):  # only while a run is sending, or after a crash
            status = (self.record(connector, configuration, key, markers=False) or {}).get("status")
            if status is not None:
                counts[status] -= 1
            counts["in_flight"] = counts.get("in_flight", 0) + 1
        return {status: count for status, count in counts.items() if count}

    def trace(self, connector: str, record_key: str, configuration: str | None = None) -> list[dict]:
        """Every attempt for one record, oldest first."""
        t = attempts_table
        query = sa.select(t).where(t.c.connector == connector, t.c.record_key == record_key).order_by(t.c.id)
        if configuration is not None:
            query = query.where(t.c.configuration == configuration)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def record(self, connector: str, configuration: str, record_key: str, markers: bool = True) -> dict | None:
        """One record's ledger row; in flight as an open marker says, when one holds it (`markers`)."""
        t = records_table
        query = sa.select(t).where(
            t.c.connector == connector, t.c.configuration == configuration, t.c.record_key == record_key
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        record = dict(row._mapping) if row else None
        marked = _marker_updates(self._markers(connector, configuration)).get(record_key) if markers else None
        if marked is not None:
            record = {**(record or {}), **{name: getattr(marked, name) for name in _MARKER_FIELDS}}
            record.update(status="in_flight", connector=connector, configuration=configuration)
        return record

    def last_attempt_id(self, connector: str, configuration: str) -> int:
        """The id of the configuration's latest attempt (0: none): attempts after it are a later run's."""
        a = attempts_table
        query = sa.select(sa.func.coalesce(sa.func.max(a.c.id), 0)).where(
            a.c.connector == connector, a.c.configuration == configuration
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def duplicate_deliveries(self, connector: str, configuration: str, after_attempt: int = 0) -> list[tuple[str, int]]:
        """Idempotency keys delivered by the attempts after `after_attempt` (this run's) that are recorded as
        delivered more than once, in this run or any earlier one: should always be empty.

        Reads this run's attempts through the (configuration, id) index and looks each key up in the idempotency
        key index, so its cost follows the run's size, not the history's."""
        a, b = attempts_table, attempts_table.alias("earlier")
        this_run = (
            sa.select(a.c.idempotency_key)
            .where(
                a.c.connector == connector,
                a.c.configuration == configuration,
                a.c.id > after_attempt,
                a.c.outcome == "delivered",
                a.c.idempotency_key.is_not(None),
            )
            .distinct()
            .subquery()
        )
        query = (
            sa.select(b.c.idempotency_key, sa.func.count())
            .join(this_run, this_run.c.idempotency_key == b.c.idempotency_key)
            .where(b.c.connector == connector, b.c.configuration == configuration, b.c.outcome == "delivered")
            .group_by(b.c.idempotency_key)
            .having(sa.func.count() > 1)
        )
        with self.engine.connect() as conn:
            return [(key, count) for key, count in conn.execute(query)]

    # ---- writes ---------------------------------------------------------------------------------------------

    def write(
        self,
        connector: str,
        configuration: str,
        run_id: str,
        updates: Sequence[RecordUpdate],
        attempts: Sequence[AttemptRow] = (),
        settle: Sequence[int] = (),
    ) -> None:
        """Record new states (and their audit rows) in one transaction per chunk of records; with `settle` (the
        in-flight markers these outcomes replace), all of it and the markers' removal in one transaction, so a crash
        leaves either the markers or every outcome, never part of them.

        This is the hot path of every delivery (two rows per record), so it goes straight to the driver's
        executemany with positional rows and one prepared statement, not through SQLAlchemy's per-row parameter
        processing (three times slower here); the SQL is the same for SQLite and PostgreSQL.
        """
        chunks = self._rows(connector, configuration, run_id, updates, attempts)
        if not settle:
            for update_rows, attempt_rows in chunks:
                with self.engine.begin() as conn:
                    self._write_rows(conn, update_rows, attempt_rows)
            return
        with self.engine.begin() as conn:
            for update_rows, attempt_rows in chunks:
                self._write_rows(conn, update_rows, attempt_rows)
            t = in_flight_markers_table
            conn.execute(t.delete().where(t.c.id.in_(list(settle))))

    def _rows(self, connector, configuration, run_id, updates, attempts) -> Iterator[tuple[list, list]]:
        """Positional rows for the records and attempts tables, _CHUNK records at a time."""
        stamp = self._stamp
        now = stamp(utc_now())
        for start in range(0, max(len(updates), len(attempts)), _CHUNK):
            update_rows = [
                (
                    connector,
                    configuration,
                    u.record_key,
                    u.status,
                    u.operation,
                    u.fingerprint,
                    u.delivered_fingerprint,
                    u.version,
                    u.idempotency_key,
                    u.batch_key,
                    u.attempts,
                    u.last_error,
                    u.http_status,
                    u.target_ref,
                    run_id,
                    now,
                    stamp(u.delivered_at),
                    u.failed_runs,
                    stamp(u.retry_after),
                )
                for u in updates[start : start + _CHUNK]
            ]
            attempt_rows = [
                (
                    run_id,
                    connector,
                    configuration,
                    a.record_key,
                    a.operation,
                    a.outcome,
                    a.idempotency_key,
                    a.http_status,
                    a.requests,
                    (a.response_excerpt or "")[:EXCERPT_CHARS] or None,
                    a.error,
                    a.target_ref,
                    stamp(a.started_at),
                    stamp(a.finished_at),
                )
                for a in attempts[start : start + _CHUNK]
            ]
            yield update_rows, attempt_rows

    def _write_rows(self, conn, update_rows: list[tuple], attempt_rows: list[tuple]) -> None:
        cursor = conn.connection.cursor()
        try:
            if update_rows:
                self._executemany(cursor, _UPSERT_RECORDS, update_rows)
            if attempt_rows:
                self._executemany(cursor, _INSERT_ATTEMPTS, attempt_rows)
        finally:
            cursor.close()

    def _executemany(self, cursor, sql: str, rows: list[tuple]) -> None:
        if self._dialect == "postgresql":
            from psycopg2.extras import execute_values

            execute_values(cursor, sql.replace("VALUES (?)", "VALUES %s"), rows, page_size=1000)
        elif self._dialect == "sqlite":
            width = len(rows[0])
            cursor.executemany(sql.replace("VALUES (?)", f"VALUES ({', '.join('?' * width)})"), rows)
        else:
            raise NotImplementedError(f"the delivery ledger runs on SQLite or PostgreSQL, not {self._dialect}")

    def reset(self, connector: str, configuration: str | None = None) -> int:
        """Forget record states (the next run is a full sync). The attempt audit is kept: it is history."""
        t = records_table
        statement = t.delete().where(t.c.connector == connector)
        if configuration is not None:
            statement = statement.where(t.c.configuration == configuration)
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount


_RECORD_COLUMNS = [c.name for c in records_table.columns]
_KEY_COLUMNS = ("connector", "configuration", "record_key")
# The same text runs on SQLite (3.24+) and PostgreSQL; `VALUES (?)` is widened per driver in _executemany.
_UPSERT_RECORDS = (
    f"INSERT INTO cp_delivery_records ({', '.join(_RECORD_COLUMNS)}) VALUES (?) "
    f"ON CONFLICT ({', '.join(_KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _RECORD_COLUMNS if c not in _KEY_COLUMNS)
)
_ATTEMPT_COLUMNS = [c.name for c in attempts_table.columns if c.name != "id"]
_INSERT_ATTEMPTS = f"INSERT INTO cp_delivery_attempts ({', '.join(_ATTEMPT_COLUMNS)}) VALUES (?)"
_ENTRY_COLUMNS = ", ".join(("record_key", *LedgerEntry._fields))
# Well under SQLite's 32,766 bound parameters, and a PostgreSQL array this long still plans as an index lookup.
_KEYS_PER_QUERY = 2000
# What an in-flight marker keeps of each record: its RecordUpdate as `_in_flight` builds it.
_MARKER_FIELDS = (
    "record_key",
    "operation",
    "fingerprint",
    "delivered_fingerprint",
    "version",
    "idempotency_key",
    "batch_key",
    "attempts",
    "target_ref",
    "failed_runs",
)


def _marker_updates(markers: Sequence[tuple[int, str, str]]) -> dict[str, RecordUpdate]:
    """The in-flight states the markers hold, per record key; a later marker's wins."""
    updates: dict[str, RecordUpdate] = {}
    for _id, _run, members in markers:
        for values in json.loads(members):
            fields = dict(zip(_MARKER_FIELDS, values))
            updates[fields["record_key"]] = RecordUpdate(status="in_flight", **fields)
    return updates


def _read_retry_after(values: tuple) -> tuple:
    text = values[-1]
    moment = text if isinstance(text, dt.datetime) else dt.datetime.fromisoformat(text)
    return (*values[:-1], moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment)


def _add_missing_indexes(engine: sa.Engine) -> None:
    """Give a ledger made by an earlier version the indexes this one reads through (create_all makes them only
    with a new table)."""
    for table in (records_table, attempts_table):
        present = {index["name"] for index in sa.inspect(engine).get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                try:
                    index.create(engine)
                except sa.exc.DBAPIError:
                    pass  # another process created it at the same moment


# Columns added to cp_delivery_records after its first release: a ledger created before gets them on open.
_ADDED_COLUMNS = {"failed_runs": "INTEGER NOT NULL DEFAULT 0", "retry_after": None}


def _add_missing_columns(engine: sa.Engine) -> None:
    """Give a ledger made by an earlier version the columns this one writes (a look at the table's columns each
    time a ledger is opened: a millisecond, against a run's seconds)."""
    table = records_table
    present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    missing = [name for name in _ADDED_COLUMNS if name not in present]
    for name in missing:
        kind = _ADDED_COLUMNS[name] or table.c[name].type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")
        except sa.exc.DBAPIError:
            # Another process added it at the same moment; anything else shows on the check below.
            pass
    if missing:
        present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        absent = [name for name in missing if name not in present]
        if absent:
            raise RuntimeError(f"the delivery ledger's table {table.name} lacks column(s) {', '.join(absent)}")


def sqlite_timestamp(value: dt.datetime | None) -> str | None:
    """A timestamp as SQLAlchemy stores it in SQLite (naive UTC text), so its DateTime type reads it back."""
    if value is None:
        return None
    if value.tzinfo is dt.UTC:  # what the engine makes: isoformat is C-fast, strftime costs ~2 µs a call
        return value.isoformat(sep=" ")[:-6]
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ")
