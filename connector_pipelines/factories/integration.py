"""Integration connector -> Dagster objects.

Per connector: a `data_set` asset (what was read this run, kept as a Parquet snapshot so any past run's source
can be downloaded and re-delivered), one delivery asset per configuration fed by it (each with the blocking
checks "no idempotency key delivered twice" and "rejected rate under the threshold"), a job over them, a
schedule when the spec has one, and a record-change sensor when it has triggers.

Gates before the data leaves: the data set's `expectations` are blocking checks of the data set asset (a failure
stops the run before any delivery asset starts, and a delivery re-run alone refuses that snapshot), and each
delivery maps what it covers before its first request and sends nothing when more than
`checks.max_mapping_failure_share` of the records fail. A disabled integration refuses in every asset, and its
schedule and sensor skip saying why.

(No `from __future__ import annotations` here: Dagster reads the run-config annotation at definition time.)
"""

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import sqlalchemy as sa

from connector_pipelines.errors import TransportError
from connector_pipelines.factories import expectation_checks
from connector_pipelines.factories.naming import (
    DATA_SET,
    LEDGER_RESOURCE,
    NO_DUPLICATE_DELIVERY_CHECK,
    REJECTED_RATE_CHECK,
    STORAGE_RESOURCE,
    TRIGGER_TAG,
    ConnectorNames,
    change_sensor_name,
    op_name,
    target_pool,
)
from connector_pipelines.factories.run_config import refuse_sourced_values, tag_run
from connector_pipelines.factories.switch import disabled_reason, refuse_when_disabled, skipping_schedule
from connector_pipelines.factories.translator import ConnectorTranslator, build_connector_specs, names_from_specs
from connector_pipelines.integration.data_set import DataSetReader
from connector_pipelines.integration.delivery import DeliveryReport
from connector_pipelines.integration.expectations import check_snapshot
from connector_pipelines.integration.gates import mapping_gate
from connector_pipelines.integration.incremental import scheduled_read
from connector_pipelines.integration.retention import apply_retention
from connector_pipelines.integration.run import (
    RunScope,
    RunScopeError,
    SnapshotRead,
    keys_to_retry,
    open_delivery,
    sidecar,
    write_snapshot,
)
from connector_pipelines.mapping import MappingError
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.integration import IntegrationConnector
from connector_pipelines.spec.loader import LoadedConnector
from connector_pipelines.state.ledger import utc_now
from connector_pipelines.state.locks import DeliveryLocked
from connector_pipelines.state.read_cursor import read_cursors, save_read_cursor

TABLE_ROWS_MAX = 200
# Metadata of a data set materialization whose expectations failed: a delivery re-run alone refuses its snapshot.
EXPECTATIONS_FAILED = "expectations_failed"
TRIGGER_OPERATIONS = {"on_create": "create", "on_update": "update", "on_delete": "delete"}


class IntegrationRunConfig(dg.Config):
    """What a run covers. Empty: every record of the data set, only what changed is sent."""

    full: bool = False  # resend every record, whatever the ledger says
    keys: list[str] = []  # a manual push of these record keys (composite keys: values joined by '|')
    operations: list[str] = []  # only these operations (create, update, delete); empty: all
    updated_after: str | None = None  # only rows whose updated_at is at or after this (a sensor's cursor)
    changes_after: str | None = None  # only records in this range of change-log sequence ids
    changes_until: str | None = None
    detect_deletes: bool = False  # compare key sets to find deleted records (sensors without a change log)
    full_diff: bool = False  # read the whole data set, where a scheduled run would read only what was updated


def run_scope(config: IntegrationRunConfig) -> RunScope:
    """The run config as the engine's plain scope value (the op boundary)."""
    try:
        return RunScope(
            full=config.full,
            keys=tuple(config.keys),
            operations=tuple(config.operations),
            updated_after=config.updated_after,
            changes_after=config.changes_after,
            changes_until=config.changes_until,
            detect_deletes=config.detect_deletes,
            full_diff=config.full_diff,
        )
    except RunScopeError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


def build_integration_defs(
    loaded: LoadedConnector,
    connections: Mapping[str, Connection],
    translator: ConnectorTranslator | None = None,
) -> dg.Definitions:
    connector: IntegrationConnector = loaded.spec
    spec = connector.integration
    specs = build_connector_specs(loaded, connections, translator)
    names = names_from_specs(loaded, specs)
    off = disabled_reason(loaded)
    data_set_spec = specs[DATA_SET]
    assets = [_data_set_asset(connector, names, data_set_spec, off)]
    for configuration in spec.configurations:
        asset_spec = specs[configuration.name].replace_attributes(deps=[data_set_spec.key])
        assets.append(_delivery_asset(connector, names, configuration.name, asset_spec, off))
    # The job selects the keys the translator returned, whatever groups it chose.
    job = dg.define_asset_job(
        names.job, selection=[asset_spec.key for asset_spec in specs.values()], tags=names.run_tags
    )
    status = dg.DefaultScheduleStatus.RUNNING if connector.enabled else dg.DefaultScheduleStatus.STOPPED
    schedules, sensors = [], []
    if spec.schedule is not None and spec.schedule.once:
        sensors.append(once_sensor(names, job, off))
    elif spec.schedule is not None and off:
        schedules.append(
            skipping_schedule(
                name=names.schedule,
                job=job,
                cron_schedule=spec.schedule.cron(),
                execution_timezone=spec.schedule.timezone,
                reason=off,
                description=f"{spec.schedule.cadence}: deliver what changed",
            )
        )
    elif spec.schedule is not None:
        schedules.append(
            dg.ScheduleDefinition(
                name=names.schedule,
                job=job,
                cron_schedule=spec.schedule.cron(),
                execution_timezone=spec.schedule.timezone,
                default_status=status,
                description=f"{spec.schedule.cadence}: deliver what changed",
            )
        )
    if spec.triggers:
        sensors.append(change_sensor(connector, names, job, off))
    return dg.Definitions(assets=assets, jobs=[job], schedules=schedules, sensors=sensors)


def once_sensor(names: ConnectorNames, job, off: str | None) -> dg.SensorDefinition:
    """`cadence: once`: one run, ever (Dagster starts a sensor's run key once), at the first tick while it is on."""

    @dg.sensor(
        name=names.once_sensor,
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED if off else dg.DefaultSensorStatus.RUNNING,
        description="Runs the integration once",
    )
    def run_once(context: dg.SensorEvaluationContext):
        if off:
            return dg.SkipReason(off)
        return dg.RunRequest(run_key="once", run_config=names.run_config(), tags={TRIGGER_TAG: "once"})

    return run_once


# ---- the data set ---------------------------------------------------------------------------------------------


def _data_set_asset(connector: IntegrationConnector, names: ConnectorNames, asset_spec: dg.AssetSpec, off):
    spec = connector.integration
    connection = spec.data_set.connection

    @dg.multi_asset(
        name=op_name(asset_spec.key),
        specs=[asset_spec],
        check_specs=expectation_checks.check_specs(asset_spec.key, spec.expectations),
        required_resource_keys={connection, STORAGE_RESOURCE, LEDGER_RESOURCE},
        pool=names.pool,
    )
    def data_set(context: dg.AssetExecutionContext, config: IntegrationRunConfig):
        refuse_sourced_values(context)
        tag_run(context, names)
        refuse_when_disabled(off)
        scope = run_scope(config)
        resources = context.resources
        storage = getattr(resources, STORAGE_RESOURCE).get_storage()
        path = storage.integration_dir(connector.name, DATA_SET) / f"{context.run.run_id}.parquet"
        source = getattr(resources, connection).get_source()
        # One ledger for the read cursors and the keys to retry (opening one checks its tables and indexes).
        ledger = getattr(resources, LEDGER_RESOURCE).get_ledger()
        try:
            plan = None
            if scope.scheduled:  # the read cursors decide: only what was updated, or a full diff
                cursors = read_cursors(ledger, connector.name, [c.name for c in spec.configurations])
                plan = scheduled_read(spec.data_set, spec.full_diff_every_delta, cursors, utc_now(), scope.full_diff)
            reader = DataSetReader(source, spec.data_set)
            result = write_snapshot(reader, scope, path, lambda: keys_to_retry(ledger, connector), plan)
        except MappingError as exc:  # the key or owner names a column the data set does not return
            raise dg.Failure(f"integration '{connector.name}': {exc}", allow_retries=False) from None
        finally:
            ledger.dispose()
            source.dispose()
        try:  # before any check or delivery: a delivery step on another machine reads it from the archive
            storage.keep(path, sidecar(path))
        except TransportError as exc:
            raise dg.Failure(
                f"integration '{connector.name}': the data set snapshot could not be kept in the storage archive, so "
                f"nothing is delivered: {exc}"
            ) from None
        context.log.info(f"data set: {result.rows:,} rows ({result.scope}) -> {storage.where(path)}")
        # Judged here, in the data set's own op: these checks are blocking, so when one fails the step fails
        # after recording them, and no delivery asset of the run starts.
        checks = [
            expectation_checks.check_result(asset_spec.key, expectation, index, outcome)
            for index, (expectation, outcome) in enumerate(
                zip(spec.expectations, check_snapshot(path, spec.expectations))
            )
        ]
        failed = [
            check.check_name
            for check, expectation in zip(checks, spec.expectations)
            if not check.passed and expectation.blocking
        ]
        if failed:
            context.log.error(f"data set: expectations failed ({', '.join(failed)}); nothing will be delivered")
        return dg.MaterializeResult(
            asset_key=asset_spec.key,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(result.rows),
                "rows": dg.MetadataValue.int(result.rows),
                "scope": dg.MetadataValue.text(result.scope),
                "full_diff": dg.MetadataValue.bool(result.read.complete),
                "snapshot_path": dg.MetadataValue.path(str(path)),
                **({"snapshot_uri": dg.MetadataValue.url(storage.where(path))} if storage.archive else {}),
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in result.schema]
                ),
                **({EXPECTATIONS_FAILED: dg.MetadataValue.text(", ".join(failed))} if failed else {}),
            },
            check_results=checks,
        )

    return data_set


# ---- deliveries -----------------------------------------------------------------------------------------------


def _delivery_asset(
    connector: IntegrationConnector, names: ConnectorNames, configuration_name: str, asset_spec: dg.AssetSpec, off
):
    spec = connector.integration
    configuration = next(c for c in spec.configurations if c.name == configuration_name)
    source_key, target_key = spec.data_set.connection, spec.target.connection
    lookup_keys = {lookup.connection for lookup in configuration.lookups.values() if lookup.connection}
    check_specs = [
        dg.AssetCheckSpec(
            NO_DUPLICATE_DELIVERY_CHECK,
            asset=asset_spec.key,
            blocking=True,
            description="No idempotency key was recorded as delivered twice",
        ),
        dg.AssetCheckSpec(
            REJECTED_RATE_CHECK,
            asset=asset_spec.key,
            blocking=True,
            description=f"At most {spec.checks.max_rejected_rate:.0%} of the records judged this run were rejected",
        ),
    ]

    @dg.multi_asset(
        name=op_name(asset_spec.key),
        specs=[asset_spec],
        check_specs=check_specs,
        required_resource_keys={source_key, target_key, *lookup_keys, STORAGE_RESOURCE, LEDGER_RESOURCE},
        pool=target_pool(target_key),
    )
    def deliver(context: dg.AssetExecutionContext, config: IntegrationRunConfig):
        refuse_sourced_values(context)
        tag_run(context, names)
        refuse_when_disabled(off)
        scope = run_scope(config)
        resources = context.resources
        storage = getattr(resources, STORAGE_RESOURCE).get_storage()
        run_id = context.run.run_id
        snapshot = _snapshot_for(context, storage, names, run_id)
        read = SnapshotRead.of(snapshot)
        source = getattr(resources, source_key).get_source()
        reader = DataSetReader(source, spec.data_set)
        ledger = getattr(resources, LEDGER_RESOURCE).get_ledger()
        delivery = None
        audit_path = storage.integration_dir(connector.name, configuration.name) / f"{run_id}.parquet"
        try:
            deletes = reader.changes(scope.changes_after, scope.changes_until) if scope.reads_change_log else None
            try:
                delivery = open_delivery(
                    connector,
                    configuration,
                    ledger,
                    reader,
                    run_id=run_id,
                    open_source=lambda name: getattr(resources, name).get_source(),
                    client_factory=getattr(resources, target_key).get_client,
                    audit_path=audit_path,
                    write_back=True,
                    logger=context.log,
                )
                delivery_scope = scope.delivery_scope(deletes, complete=read.complete if read else None)
                gate = mapping_gate(
                    delivery.mapping,
                    pq.ParquetFile(snapshot).iter_batches(batch_size=10_000),
                    list(spec.data_set.key),
                    spec.checks.max_mapping_failure_share,
                    keys=delivery_scope.keys,
                )
                if not gate.passed:
                    raise dg.Failure(
                        description=f"integration '{connector.name}' / {configuration.name}: nothing was sent: "
                        f"{gate.describe()}; fix the mapping or the data, or raise the share",
                        metadata={
                            "records": dg.MetadataValue.int(gate.records),
                            "failed_to_map": dg.MetadataValue.int(gate.failed),
                            "mapping_failure_share": dg.MetadataValue.float(round(gate.share, 4)),
                        },
                        allow_retries=False,
                    )
                snapshot_file = pq.ParquetFile(snapshot)
                with storage.keeping(audit_path, context.log.error):
                    report = delivery.run(
                        snapshot_file.iter_batches(batch_size=10_000),
                        delivery_scope,
                        total=snapshot_file.metadata.num_rows,
                    )
            except DeliveryLocked as exc:  # another run kept the configuration longer than this one waits
                raise dg.Failure(description=f"integration '{connector.name}' / {configuration.name}: {exc}") from None
            except (TransportError, MappingError) as exc:
                # A configuration problem (a missing environment variable, an unreadable CA file, a lookup that
                # does not resolve): said plainly, without a stack trace. Nothing was sent.
                raise dg.Failure(
                    description=f"integration '{connector.name}' / {configuration.name}: {exc}", allow_retries=False
                ) from None
            duplicates = ledger.duplicate_deliveries(connector.name, configuration.name, report.attempts_before)
            if read is not None and read.moves_cursor and snapshot.stem == run_id:
                # Delivered (its failures are in the ledger, and retried by key): later runs read from here.
                full_diff_at = dt.datetime.fromisoformat(read.read_at) if read.complete else None
                save_read_cursor(ledger, connector.name, configuration.name, read.read_until, full_diff_at)
            # After the cursor: a retention failure only logs, and the delivery it follows stands.
            _apply_retention(context, connector, storage, ledger, keep={snapshot, report.audit_path})
        finally:
            if delivery is not None:  # the lookups' own connections, also when the mapping gate stopped the run
                delivery.close()
            ledger.dispose()
            source.dispose()
        counts = report.counts
        context.log.info(
            f"{configuration.name}: {counts['sent']:,} sent, {counts['delivered']:,} delivered, "
            f"{counts['failed']:,} failed, {counts['skipped']:,} skipped, {counts['unchanged']:,} unchanged"
        )
        threshold = spec.checks.max_rejected_rate
        checks = [
            dg.AssetCheckResult(
                check_name=NO_DUPLICATE_DELIVERY_CHECK,
                asset_key=asset_spec.key,
                passed=not duplicates,
                metadata={"duplicated_keys": dg.MetadataValue.int(len(duplicates))},
                description=None if not duplicates else f"delivered twice: {duplicates[:5]}",
            ),
            dg.AssetCheckResult(
                check_name=REJECTED_RATE_CHECK,
                asset_key=asset_spec.key,
                passed=report.rejected_rate <= threshold,
                metadata={
                    "rejected_rate": dg.MetadataValue.float(round(report.rejected_rate, 4)),
                    "threshold": dg.MetadataValue.float(threshold),
                },
            ),
        ]
        return dg.MaterializeResult(asset_key=asset_spec.key, metadata=delivery_metadata(report), check_results=checks)

    return deliver


def _apply_retention(context, connector: IntegrationConnector, storage, ledger, keep: set) -> None:
    """The integration's `retention:`, after each delivery; a failure is logged, never fails the delivery (the
    next run, or `connector-pipelines prune`, tries again)."""
    try:
        pruned = apply_retention(connector, storage, ledger, now=utc_now(), keep={Path(p) for p in keep if p})
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        context.log.warning(f"retention: {exc}")
        return
    if not pruned.nothing_removed:
        context.log.info(f"retention: removed {pruned.files} file(s), {pruned.attempts_deleted} attempt(s)")


def _snapshot_for(context: dg.AssetExecutionContext, storage, names: ConnectorNames, run_id: str):
    """This run's snapshot; when the delivery is re-executed alone, the latest one the data set asset wrote. Either
    may have been written on another machine: then it comes from the storage's archive."""
    folder = storage.integration_dir(names.connector, DATA_SET)
    path = folder / f"{run_id}.parquet"
    if _fetched(storage, path):
        return path
    event = context.instance.get_latest_materialization_event(names.key(DATA_SET))
    if event is not None and event.asset_materialization is not None:
        metadata = event.asset_materialization.metadata
        if EXPECTATIONS_FAILED in metadata:
            raise dg.Failure(
                f"the latest data set snapshot (run {event.run_id}) failed its expectations "
                f"({metadata[EXPECTATIONS_FAILED].value}), so it is not delivered; fix the data and run the whole "
                f"{names.job} job",
                allow_retries=False,
            )
        earlier = folder / f"{event.run_id}.parquet"
        if _fetched(storage, earlier):
            context.log.info(f"re-delivering the data set snapshot of an earlier run: {storage.where(earlier)}")
            return earlier
    raise dg.Failure(f"no data set snapshot for this run; run the whole {names.job} job", allow_retries=False)


def _fetched(storage, snapshot: Path) -> bool:
    """The snapshot (and its sidecar, when it has one) are here, from the archive if need be."""
    if not storage.fetch(snapshot):
        return False
    storage.fetch(sidecar(snapshot))
    return True


def delivery_metadata(report: DeliveryReport) -> dict[str, dg.MetadataValue]:
    """Counts the UI plots over time, and the records this run touched (all of them when few)."""
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(report.counts[name])
        for name in ("sent", "delivered", "failed", "skipped", "unchanged", "held", "create", "update", "delete")
    }
    metadata["requests"] = dg.MetadataValue.int(report.counts["requests"])
    # Records whose outcome is unknown (counted in failed too): kept in flight under their key for the next run.
    metadata["in_doubt"] = dg.MetadataValue.int(report.counts.get("in_doubt", 0))
    # Retries across runs: records this run did not send because their retry time had not come, the records it
    # made dead letters, and every dead letter of the configuration after the run (the ledger's count, so the
    # plot is the same whatever a run read).
    metadata["backoff"] = dg.MetadataValue.int(report.counts["backoff"])
    metadata["new_dead_letter"] = dg.MetadataValue.int(report.counts["new_dead_letter"])
    ledger_counts = report.ledger_counts
    dead_letters = ledger_counts.get("dead_letter", 0) if ledger_counts is not None else report.counts["dead_letter"]
    metadata["dead_letter"] = dg.MetadataValue.int(dead_letters)
    if report.recovery:
        metadata["recovery"] = dg.MetadataValue.json({op: rule.mode for op, rule in report.recovery.items()})
    metadata["rejected_rate"] = dg.MetadataValue.float(round(report.rejected_rate, 4))
    for name in ("retries", "throttled_429", "timeouts", "connection_errors"):
        if name in report.client_stats:
            metadata[f"http_{name}"] = dg.MetadataValue.int(int(report.client_stats[name]))
    touched = sum(report.counts[name] for name in ("delivered", "failed", "skipped", "held", "backoff", "dead_letter"))
    if report.audit_path:
        metadata["audit_path"] = dg.MetadataValue.path(report.audit_path)
    columns = ["key", "operation", "status", "http_status", "error"]
    schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in columns])
    if report.rows and touched <= TABLE_ROWS_MAX:
        metadata["records"] = dg.MetadataValue.table(
            records=[dg.TableRecord({c: _cell(row[c]) for c in columns}) for row in report.rows], schema=schema
        )
    elif report.failures:
        metadata["first_failures"] = dg.MetadataValue.table(
            records=[dg.TableRecord({c: _cell(row[c]) for c in columns}) for row in report.failures], schema=schema
        )
    return metadata


def _cell(value: object) -> str:
    return "" if value is None else str(value)


# ---- the record-change sensor ---------------------------------------------------------------------------------


def change_sensor(
    connector: IntegrationConnector, names: ConnectorNames, job, off: str | None = None
) -> dg.SensorDefinition:
    """Watches the change log (or updated_at, and the key set for deletes) and asks for one run per batch."""
    spec = connector.integration
    data_set = spec.data_set
    operations = sorted(TRIGGER_OPERATIONS[t] for t in spec.triggers)
    watch_keys = "on_delete" in spec.triggers and data_set.change_log is None

    @dg.sensor(
        name=change_sensor_name(connector.name),
        job=job,
        minimum_interval_seconds=spec.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if connector.enabled else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={data_set.connection},
        description=f"Runs {names.job} on {', '.join(spec.triggers)}",
    )
    def record_changes(context: dg.SensorEvaluationContext):
        if off:  # switched on in the UI, or not: a disabled connector starts no run
            return dg.SkipReason(off)
        cursor = json.loads(context.cursor) if context.cursor else {}
        source = getattr(context.resources, data_set.connection).get_source()
        reader = DataSetReader(source, data_set)
        requests: list[dg.RunRequest] = []
        new_cursor = dict(cursor)
        try:
            if data_set.change_log is not None:
                after = cursor.get("sequence")
                summary = reader.change_log_summary(after)
                relevant = sum(count for op, count in summary.operations.items() if op in operations)
                if summary.until is not None:
                    new_cursor["sequence"] = summary.until
                if relevant:
                    requests.append(
                        dg.RunRequest(
                            run_key=f"changes:{after}..{summary.until}",
                            run_config=names.run_config(
                                changes_after=after, changes_until=summary.until, operations=operations
                            ),
                            tags={TRIGGER_TAG: "change_log"},
                        )
                    )
            elif {"create", "update"} & set(operations):
                after = cursor.get("updated_at")
                summary = reader.updated_summary(after)
                if summary.changes:
                    new_cursor["updated_at"] = summary.until
                    # Inclusive from the old cursor: rows sharing the boundary time are read again, and the
                    # ledger's fingerprints make that harmless, while none committed late is missed.
                    requests.append(
                        dg.RunRequest(
                            run_key=f"updated:{after}..{summary.until}",
                            run_config=names.run_config(
                                updated_after=after,
                                operations=[op for op in operations if op != "delete"],
                            ),
                            tags={TRIGGER_TAG: "updated_at"},
                        )
                    )
            if watch_keys:
                digest, count = reader.key_set_digest()
                previous = cursor.get("key_set")
                new_cursor["key_set"] = digest
                if previous is not None and previous != digest:
                    # A key set can come back (delete, restore, delete): the counter keeps each run key new,
                    # since Dagster never starts a run key twice.
                    runs = int(cursor.get("key_set_runs", 0)) + 1
                    new_cursor["key_set_runs"] = runs
                    requests.append(
                        dg.RunRequest(
                            run_key=f"keys:{runs}:{digest}",
                            run_config=names.run_config(detect_deletes=True, operations=["delete"]),
                            tags={TRIGGER_TAG: "key_set"},
                        )
                    )
        finally:
            source.dispose()
        context.update_cursor(json.dumps(new_cursor, sort_keys=True))
        if not requests:
            return dg.SkipReason("no new changes")
        return requests

    return record_changes
