"""One integration run, as the Dagster assets and the CLI both assemble it: what the run covers (`RunScope`), the
data set snapshot it reads (`write_snapshot`), and the delivery of one configuration (`open_delivery`).

Plain Python: the Dagster layer turns its run config into a `RunScope` at the op boundary and passes clients in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from connector_pipelines.imports.source_query import later_watermark
from connector_pipelines.integration.audit import AuditFile
from connector_pipelines.integration.data_set import (
    DataSetReader,
    MissingColumn,
    column_problems,
    conform,
    cursor_text,
    record_keys,
)
from connector_pipelines.integration.delivery import OPERATIONS, DeliveryScope, IntegrationDelivery
from connector_pipelines.integration.incremental import ReadPlan
from connector_pipelines.integration.lookups import SqlLookups
from connector_pipelines.integration.write_back import WriteBack
from connector_pipelines.spec.integration import Configuration, IntegrationConnector
from connector_pipelines.state.ledger import DeliveryLedger
from connector_pipelines.transports.http import HttpDeliveryClient
from connector_pipelines.transports.sql import SqlSource

log = logging.getLogger(__name__)


class RunScopeError(ValueError):
    """The run asked for something that does not exist (an unknown operation)."""


@dataclass(frozen=True)
class RunScope:
    """What one run covers. Empty: every record of the data set; only what changed is sent."""

    full: bool = False  # resend every record, whatever the ledger says
    keys: tuple[str, ...] = ()  # a manual push of these record keys (composite keys: values joined by '|')
    operations: tuple[str, ...] = ()  # only these operations; empty: all
    updated_after: str | None = None  # only rows whose updated_at is at or after this (a sensor's cursor)
    changes_after: str | None = None  # only records in this range of change-log sequence ids
    changes_until: str | None = None
    detect_deletes: bool = False  # compare key sets to find deleted records (sensors without a change log)
    full_diff: bool = False  # read the whole data set even where a scheduled run would read only what was updated

    def __post_init__(self) -> None:
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown:
            raise RunScopeError(f"unknown operation(s) {', '.join(sorted(unknown))}; use create, update, delete")

    @property
    def reads_change_log(self) -> bool:
        return self.changes_after is not None or self.changes_until is not None

    @property
    def incremental(self) -> bool:
        """Reads only what a sensor saw change (plus the records to retry), not the whole data set."""
        return not (self.full or self.keys or self.detect_deletes) and (
            self.updated_after is not None or self.reads_change_log
        )

    @property
    def scheduled(self) -> bool:
        """Says nothing of what to read (a schedule, a manual run): the read cursor decides (`incremental.py`)."""
        return not (self.full or self.keys or self.detect_deletes or self.incremental)

    def delivery_scope(self, deletes: Mapping[str, str] | None = None, complete: bool | None = None) -> DeliveryScope:
        """The engine's view: `deletes` are the change log's deletes in the run's sequence range; `complete` is
        whether the snapshot holds the whole data set (as its read says; by default, as the scope implies)."""
        if complete is None:
            complete = not (self.updated_after is not None or self.reads_change_log) and not self.keys
        return DeliveryScope(
            full=self.full,
            keys=frozenset(self.keys) if self.keys else None,
            operations=frozenset(self.operations or OPERATIONS),
            deletes=deletes,
            complete=complete,
            detect_deletes=self.detect_deletes,
        )


@dataclass(frozen=True)
class SnapshotResult:
    rows: int
    schema: pa.Schema
    scope: str  # what the run read, in words
    read: SnapshotRead


@dataclass(frozen=True)
class SnapshotRead:
    """What a snapshot holds, kept beside it (`<run_id>.json`) for the deliveries that read it."""

    complete: bool  # the whole data set: a key the ledger has and the snapshot lacks has vanished
    moves_cursor: bool  # a scheduled read or a full one: its delivery saves the read cursor
    read_until: str | None  # the cursor to save: the highest updated_at read (never below the old cursor)
    read_at: str  # when the read started (ISO, UTC): a complete read's full_diff_at

    def save(self, snapshot: Path) -> None:
        sidecar(snapshot).write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def of(cls, snapshot: Path) -> SnapshotRead | None:
        """The read beside a snapshot; None for a snapshot written before reads were kept."""
        path = sidecar(snapshot)
        return cls(**json.loads(path.read_text())) if path.exists() else None


def sidecar(snapshot: Path) -> Path:
    return snapshot.with_suffix(".json")


def write_snapshot(
    reader: DataSetReader,
    scope: RunScope,
    path: Path,
    retry_keys: Callable[[], set[str]],
    plan: ReadPlan | None = None,
) -> SnapshotResult:
    """Write the rows this run covers to a Parquet file, and what they are beside it (`SnapshotRead`).

    A push reads only its keys (`WHERE key IN (...)`). An incremental read (a sensor's range, or `plan`'s for a
    scheduled run) reads what changed, then also the records `retry_keys()` names (failed or in flight in earlier
    runs), by key, whatever the cursor says. Otherwise (a full run, a full diff, a key-set check) the whole data set.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    read_at = dt.datetime.now(dt.UTC).isoformat()
    key = list(reader.data_set.key)
    updated_at = reader.data_set.updated_at
    writer: pq.ParquetWriter | None = None
    rows = 0
    highest: object = None
    seen: set[str] = set()
    incremental = scope.incremental or (plan is not None and not plan.complete)

    empty_schema: pa.Schema | None = None

    def write(batches: Iterable[pa.RecordBatch]) -> None:
        nonlocal writer, rows, highest, empty_schema
        for batch in batches:
            if writer is None and empty_schema is None:
                problems = column_problems(reader.data_set, batch.schema.names)
                if problems:  # before the first row is written, so a wrong key or owner stops the run here
                    raise MissingColumn(problems)
            if not batch.num_rows:
                # An empty result's types are a guess on SQLite and MariaDB (every column text): the file takes
                # the types of the first rows read, and this schema only when no read returns a row.
                empty_schema = empty_schema or batch.schema
                continue
            if writer is not None:
                # The retry read is another query: its types are inferred again (a column all NULL comes as text).
                batch = conform(batch, writer.schema)
            if incremental:
                seen.update(record_keys(batch, key))
            if updated_at and updated_at in batch.schema.names:
                top = pc.max(batch.column(updated_at)).as_py()
                if top is not None and (highest is None or top > highest):
                    highest = top
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows

    complete = False
    if scope.keys:
        described = f"{len(set(scope.keys)):,} key(s) pushed by hand"
        write(reader.read_keys(scope.keys))
    elif incremental:
        if scope.incremental:
            described = (
                f"updated_at >= {scope.updated_after}"
                if scope.updated_after is not None
                else f"change log sequence in ({scope.changes_after}, {scope.changes_until}]"
            )
            updated_after = scope.updated_after
        else:
            described, updated_after = plan.why, plan.updated_after
        changes = {"changes_after": scope.changes_after, "changes_until": scope.changes_until}
        write(reader.read(updated_after=updated_after, **changes))
        retry = retry_keys() - seen
        if retry:
            described += f", plus {len(retry):,} record(s) to retry"
            write(reader.read_keys(sorted(retry)))
    else:
        complete = True
        described = plan.why if plan is not None else "the whole data set"
        write(reader.read())
    if writer is None:
        schema = empty_schema or pa.schema([pa.field(name, pa.string()) for name in reader.columns()])
        writer = pq.ParquetWriter(path, schema)
    schema = writer.schema
    writer.close()
    # Only a run that delivers every operation of what it read may move the cursor past it.
    moves_cursor = (plan is not None or scope.full) and not scope.keys and not scope.operations
    read_until = later_watermark(plan.cursor if plan is not None else None, cursor_text(highest))
    read = SnapshotRead(complete=complete, moves_cursor=moves_cursor, read_until=read_until, read_at=read_at)
    read.save(path)
    return SnapshotResult(rows=rows, schema=schema, scope=described, read=read)


def keys_to_retry(ledger: DeliveryLedger, connector: IntegrationConnector) -> set[str]:
    """Records of any configuration that failed or were in flight: an incremental run reads them again."""
    keys: set[str] = set()
    for configuration in connector.integration.configurations:
        keys |= ledger.keys_with_status(connector.name, configuration.name, ["failed", "in_flight"])
    return keys


def open_delivery(
    connector: IntegrationConnector,
    configuration: Configuration,
    ledger: DeliveryLedger,
    reader: DataSetReader,
    *,
    run_id: str,
    open_source: Callable[[str], SqlSource],
    client_factory: Callable[[], HttpDeliveryClient] | None = None,
    audit_path: Path | None = None,
    write_back: bool = False,
    logger: logging.Logger | Any = log,
) -> IntegrationDelivery:
    """The delivery of one configuration, its lookups checked and role filter read first, as every caller needs it.

    `open_source(connection)` opens a lookup's own connection (closed by the delivery at the end of each entry
    point, and by `close()`); a lookup without one reads the data set's database. Without a `client_factory` the
    delivery can preview and plan but not send. With `write_back` (and a `write_back` table in the spec), outcomes
    still in the write-back outbox are written first.
    """
    spec = connector.integration
    # Read per batch, for the values each batch needs (a bounded cache), not loaded whole: a lookup table of ten
    # million rows costs no more memory than one of ten. Checked now, so a table or column that is not there fails
    # before anything is read or sent.
    lookups = SqlLookups(configuration.lookups, reader.source, open_source)
    try:
        lookups.check()
        allowed = reader.owners_with_roles(spec.roles) if spec.roles else None
        writer = None
        if write_back and spec.write_back:
            writer = WriteBack(reader.source, spec.write_back.table, ledger, connector.name, configuration.name)
            # The outbox first: outcomes an earlier run committed to the ledger but died before writing back.
            replayed = writer.drain()
            if replayed:
                logger.info(
                    f"{configuration.name}: wrote back {replayed:,} outcome(s) of an earlier run that stopped before "
                    f"writing them to {spec.write_back.table}"
                )
        return IntegrationDelivery(
            connector,
            configuration,
            ledger,
            run_id=run_id,
            lookups=lookups.tables,
            close_lookups=lookups.close,
            allowed_owners=allowed,
            client_factory=client_factory,
            audit=AuditFile(audit_path) if audit_path is not None else None,
            write_back=writer,
            logger=logger,
        )
    except BaseException:
        lookups.close()
        raise
