"""Integration connector -> Dagster objects.

Per connector: a `data_set` asset (what was read this run, kept as a Parquet snapshot so any past run's source
can be downloaded and re-delivered), one delivery asset per configuration fed by it (each with the blocking
checks "no idempotency key delivered twice" and "rejected rate under the threshold"), a job over them, a
schedule when the spec has one, and a record-change sensor when it has triggers.

(No `from __future__ import annotations` here: Dagster reads the run-config annotation at definition time.)
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from connector_pipelines.errors import TransportError
from connector_pipelines.factories.translator import TRIGGER_TAG, ConnectorAssetData, ConnectorTranslator
from connector_pipelines.integration.audit import AuditFile
from connector_pipelines.integration.data_set import DataSetReader, record_keys
from connector_pipelines.integration.delivery import OPERATIONS, DeliveryReport, DeliveryScope, IntegrationDelivery
from connector_pipelines.integration.write_back import WriteBack
from connector_pipelines.mapping import MappingError
from connector_pipelines.spec.loader import LoadedConnector
from connector_pipelines.spec.models import Connection, IntegrationConnector
from connector_pipelines.state.ledger import DeliveryLedger, default_ledger_url
from connector_pipelines.storage import integration_dir, storage_dir

DATA_SET = "data_set"
TABLE_ROWS_MAX = 200
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


def job_name(connector_name: str) -> str:
    return f"integration_{connector_name}"


def op_names(connector: IntegrationConnector) -> list[str]:
    parts = [DATA_SET, *(c.name for c in connector.integration.configurations)]
    return ["__".join(["integration", connector.name, part]) for part in parts]


def run_config_for(connector: IntegrationConnector, **config: Any) -> dict:
    """The same config for every asset of the connector's job (the data set reads what the deliveries send)."""
    values = {key: value for key, value in config.items() if value not in (None, [], False)}
    return {"ops": {name: {"config": dict(values)} for name in op_names(connector)}}


def snapshot_path(base_dir: Path, connector_name: str, run_id: str) -> Path:
    return integration_dir(base_dir, connector_name, DATA_SET) / f"{run_id}.parquet"


def ledger_for(base_dir: Path) -> DeliveryLedger:
    return DeliveryLedger(default_ledger_url(storage_dir(base_dir)))


def build_integration_defs(
    loaded: LoadedConnector,
    connections: Mapping[str, Connection],
    base_dir: Path,
    translator: ConnectorTranslator | None = None,
) -> dg.Definitions:
    translator = translator or ConnectorTranslator()
    connector: IntegrationConnector = loaded.spec
    spec = connector.integration
    data_set_spec = translator.get_asset_spec(ConnectorAssetData(loaded, DATA_SET, connections))
    assets = [_data_set_asset(connector, data_set_spec, base_dir)]
    for configuration in spec.configurations:
        asset_spec = translator.get_asset_spec(ConnectorAssetData(loaded, configuration.name, connections))
        asset_spec = asset_spec.replace_attributes(deps=[data_set_spec.key])
        assets.append(_delivery_asset(connector, configuration.name, asset_spec, base_dir))
    job = dg.define_asset_job(job_name(connector.name), selection=dg.AssetSelection.groups(connector.name))
    status = dg.DefaultScheduleStatus.RUNNING if connector.enabled else dg.DefaultScheduleStatus.STOPPED
    schedules = []
    if spec.schedule is not None:
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{job_name(connector.name)}_schedule",
                job=job,
                cron_schedule=spec.schedule.cron(),
                execution_timezone=spec.schedule.timezone,
                default_status=status,
                description=f"{spec.schedule.cadence}: deliver what changed",
            )
        )
    sensors = [change_sensor(connector, job)] if spec.triggers else []
    return dg.Definitions(assets=assets, jobs=[job], schedules=schedules, sensors=sensors)


# ---- the data set ---------------------------------------------------------------------------------------------


def _data_set_asset(connector: IntegrationConnector, asset_spec: dg.AssetSpec, base_dir: Path):
    spec = connector.integration
    connection = spec.data_set.connection

    @dg.multi_asset(
        name="__".join(asset_spec.key.path),
        specs=[asset_spec],
        required_resource_keys={connection},
        pool=f"integration_{connector.name}",
    )
    def data_set(context: dg.AssetExecutionContext, config: IntegrationRunConfig):
        if config.keys and not connector.enabled:
            raise dg.Failure(
                f"integration '{connector.name}' is off (enabled: false): manual pushes are refused; "
                "set enabled: true in its spec to push records",
                allow_retries=False,
            )
        source = getattr(context.resources, connection).get_source()
        reader = DataSetReader(source, spec.data_set)
        path = snapshot_path(base_dir, connector.name, context.run.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            rows, schema, scope = _write_snapshot(reader, config, path, connector, base_dir)
        finally:
            source.dispose()
        context.log.info(f"data set: {rows:,} rows ({scope}) -> {path}")
        return dg.MaterializeResult(
            asset_key=asset_spec.key,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(rows),
                "rows": dg.MetadataValue.int(rows),
                "scope": dg.MetadataValue.text(scope),
                "snapshot_path": dg.MetadataValue.path(str(path)),
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema]
                ),
            },
        )

    return data_set


def _write_snapshot(reader: DataSetReader, config: IntegrationRunConfig, path: Path, connector, base_dir: Path):
    """Write the rows this run covers; returns (rows, schema, a description of the scope)."""
    incremental = not (config.full or config.keys or config.detect_deletes) and (
        config.updated_after is not None or config.changes_after is not None or config.changes_until is not None
    )
    writer: pq.ParquetWriter | None = None
    rows = 0
    seen: set[str] = set()
    wanted = set(config.keys) if config.keys else None
    key = list(connector.integration.data_set.key)

    def write(batch: pa.RecordBatch, keep=None) -> None:
        nonlocal writer, rows
        keys = record_keys(batch, key) if (keep is not None or incremental) else None
        if keep is not None:
            mask = [keep(k) for k in keys]
            batch = batch.filter(pa.array(mask))
            keys = [k for k, m in zip(keys, mask) if m]
        if incremental and keys:
            seen.update(keys)
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema)
        if batch.num_rows:
            writer.write_batch(batch)
            rows += batch.num_rows

    if incremental:
        scope = (
            f"updated_at >= {config.updated_after}"
            if config.updated_after is not None
            else f"change log sequence in ({config.changes_after}, {config.changes_until}]"
        )
        for batch in reader.read(
            updated_after=config.updated_after, changes_after=config.changes_after, changes_until=config.changes_until
        ):
            write(batch)
        # Records that failed (or were in flight) in earlier runs are retried whatever the cursor says.
        ledger = ledger_for(base_dir)
        try:
            retry = set()
            for configuration in connector.integration.configurations:
                retry |= ledger.keys_with_status(connector.name, configuration.name, ["failed", "in_flight"])
        finally:
            ledger.dispose()
        retry -= seen
        if retry:
            scope += f", plus {len(retry):,} record(s) to retry"
            for batch in reader.read():
                write(batch, keep=retry.__contains__)
    else:
        scope = "the whole data set" if wanted is None else f"{len(wanted):,} key(s) pushed by hand"
        for batch in reader.read():
            write(batch, keep=wanted.__contains__ if wanted is not None else None)
    if writer is None:
        columns = reader.columns()
        schema = pa.schema([pa.field(name, pa.string()) for name in columns])
        writer = pq.ParquetWriter(path, schema)
    schema = writer.schema
    writer.close()
    return rows, schema, scope


# ---- deliveries -----------------------------------------------------------------------------------------------


def _delivery_asset(connector: IntegrationConnector, configuration_name: str, asset_spec: dg.AssetSpec, base_dir: Path):
    spec = connector.integration
    configuration = next(c for c in spec.configurations if c.name == configuration_name)
    source_key, target_key = spec.data_set.connection, spec.target.connection
    lookup_keys = {lookup.connection for lookup in configuration.lookups.values() if lookup.connection}
    check_specs = [
        dg.AssetCheckSpec(
            "no_duplicate_delivery",
            asset=asset_spec.key,
            blocking=True,
            description="No idempotency key was recorded as delivered twice",
        ),
        dg.AssetCheckSpec(
            "rejected_rate",
            asset=asset_spec.key,
            blocking=True,
            description=f"At most {spec.checks.max_rejected_rate:.0%} of the records judged this run were rejected",
        ),
    ]

    @dg.multi_asset(
        name="__".join(asset_spec.key.path),
        specs=[asset_spec],
        check_specs=check_specs,
        required_resource_keys={source_key, target_key, *lookup_keys},
        pool=f"target_{target_key}",
    )
    def deliver(context: dg.AssetExecutionContext, config: IntegrationRunConfig):
        resources = context.resources
        source = getattr(resources, source_key).get_source()
        reader = DataSetReader(source, spec.data_set)
        ledger = ledger_for(base_dir)
        run_id = context.run.run_id
        try:
            snapshot = _snapshot_for(context, base_dir, connector.name, run_id)
            lookups = {}
            for name, lookup in configuration.lookups.items():
                lookup_source = getattr(resources, lookup.connection).get_source() if lookup.connection else source
                lookups[name] = DataSetReader(lookup_source, spec.data_set).lookup_table(lookup)
            allowed = reader.owners_with_roles(spec.roles) if spec.roles else None
            deletes = None
            if config.changes_after is not None or config.changes_until is not None:
                deletes = reader.changes(config.changes_after, config.changes_until)
            scope = scope_from_config(config, deletes)
            try:
                delivery = IntegrationDelivery(
                    connector,
                    configuration,
                    ledger,
                    run_id=run_id,
                    lookups=lookups,
                    allowed_owners=allowed,
                    client_factory=getattr(resources, target_key).get_client,
                    audit=AuditFile(
                        integration_dir(base_dir, connector.name, configuration.name) / f"{run_id}.parquet"
                    ),
                    write_back=WriteBack(source, spec.write_back.table) if spec.write_back else None,
                    logger=context.log,
                )
                report = delivery.run(pq.ParquetFile(snapshot).iter_batches(batch_size=10_000), scope)
            except (TransportError, MappingError) as exc:
                # A configuration problem (a missing environment variable, an unreadable CA file, a lookup that
                # does not resolve): said plainly, without a stack trace. Nothing was sent.
                raise dg.Failure(
                    description=f"integration '{connector.name}' / {configuration.name}: {exc}", allow_retries=False
                ) from None
            duplicates = ledger.duplicate_deliveries(connector.name, configuration.name)
        finally:
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
                check_name="no_duplicate_delivery",
                asset_key=asset_spec.key,
                passed=not duplicates,
                metadata={"duplicated_keys": dg.MetadataValue.int(len(duplicates))},
                description=None if not duplicates else f"delivered twice: {duplicates[:5]}",
            ),
            dg.AssetCheckResult(
                check_name="rejected_rate",
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


def scope_from_config(config: IntegrationRunConfig, deletes: Mapping[str, str] | None = None) -> DeliveryScope:
    operations = set(config.operations) or set(OPERATIONS)
    unknown = operations - set(OPERATIONS)
    if unknown:
        raise dg.Failure(f"unknown operation(s) {', '.join(sorted(unknown))}; use create, update, delete")
    incremental = (
        config.updated_after is not None or config.changes_after is not None or config.changes_until is not None
    )
    return DeliveryScope(
        full=config.full,
        keys=frozenset(config.keys) if config.keys else None,
        operations=frozenset(operations),
        deletes=deletes,
        complete=not incremental and not config.keys,
        detect_deletes=config.detect_deletes,
    )


def _snapshot_for(context: dg.AssetExecutionContext, base_dir: Path, name: str, run_id: str) -> Path:
    """This run's snapshot; when the delivery is re-executed alone, the latest one the data set asset wrote."""
    path = snapshot_path(base_dir, name, run_id)
    if path.exists():
        return path
    event = context.instance.get_latest_materialization_event(dg.AssetKey(["integration", name, DATA_SET]))
    if event is not None and event.asset_materialization is not None:
        value = event.asset_materialization.metadata.get("snapshot_path")
        if value is not None and Path(value.value).exists():
            context.log.info(f"re-delivering the data set snapshot of an earlier run: {value.value}")
            return Path(value.value)
    raise dg.Failure(f"no data set snapshot for this run; run the whole integration_{name} job", allow_retries=False)


def delivery_metadata(report: DeliveryReport) -> dict[str, dg.MetadataValue]:
    """Counts the UI plots over time, and the records this run touched (all of them when few)."""
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(report.counts[name])
        for name in ("sent", "delivered", "failed", "skipped", "unchanged", "held", "create", "update", "delete")
    }
    metadata["requests"] = dg.MetadataValue.int(report.counts["requests"])
    metadata["rejected_rate"] = dg.MetadataValue.float(round(report.rejected_rate, 4))
    for name in ("retries", "throttled_429", "timeouts", "connection_errors"):
        if name in report.client_stats:
            metadata[f"http_{name}"] = dg.MetadataValue.int(int(report.client_stats[name]))
    touched = report.counts["delivered"] + report.counts["failed"] + report.counts["skipped"] + report.counts["held"]
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


def change_sensor(connector: IntegrationConnector, job) -> dg.SensorDefinition:
    """Watches the change log (or updated_at, and the key set for deletes) and asks for one run per batch."""
    spec = connector.integration
    data_set = spec.data_set
    operations = sorted(TRIGGER_OPERATIONS[t] for t in spec.triggers)
    watch_keys = "on_delete" in spec.triggers and data_set.change_log is None

    @dg.sensor(
        name=f"{job_name(connector.name)}_changes",
        job=job,
        minimum_interval_seconds=spec.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if connector.enabled else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={data_set.connection},
        description=f"Runs {job_name(connector.name)} on {', '.join(spec.triggers)}",
    )
    def record_changes(context: dg.SensorEvaluationContext):
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
                            run_config=run_config_for(
                                connector, changes_after=after, changes_until=summary.until, operations=operations
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
                            run_config=run_config_for(
                                connector,
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
                            run_config=run_config_for(connector, detect_deletes=True, operations=["delete"]),
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
