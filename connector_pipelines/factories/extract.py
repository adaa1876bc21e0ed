"""Extract connector -> Dagster objects: the file asset (+ check), its job, its schedule.

The `not_empty` check is blocking and judged in the asset's own op on the staged file, before any upload: when it
fails, the op reports the failed check and stops, so nothing reaches a destination and the asset is not
materialized. A disabled extract (`enabled: false`) refuses in the op, and its schedule skips saying why.

(No `from __future__ import annotations` here: Dagster reads the run-config annotation at definition time.)

The query and the upload are fused into one asset: rows stream from the database straight into the file,
and a separate "data set" asset would only write the same rows a second time.
"""

import datetime as dt
from collections.abc import Mapping

import dagster as dg

from connector_pipelines.errors import ExtractError
from connector_pipelines.extract.run import ExtractResult, run_extract
from connector_pipelines.extract.windows import WindowError, parse_window
from connector_pipelines.factories.naming import (
    CUSTOM_FILE,
    FILE,
    NOT_EMPTY_CHECK,
    RANGE_END_TAG,
    RANGE_START_TAG,
    STORAGE_RESOURCE,
    ConnectorNames,
    custom_window_job_name,
    op_name,
)
from connector_pipelines.factories.run_config import refuse_sourced_values, tag_run
from connector_pipelines.factories.switch import disabled_reason, refuse_when_disabled, skipping_schedule
from connector_pipelines.factories.translator import ConnectorTranslator, build_connector_specs, names_from_specs
from connector_pipelines.spec.connections import Connection, secret_field_names
from connector_pipelines.spec.extract import PRESET_CADENCES, ExtractConnector, ExtractSchedule
from connector_pipelines.spec.loader import LoadedConnector
from connector_pipelines.transports.sql import Window

PREVIEW_COLUMNS_MAX = 30
# The engine's name of each blocking check on the staged file -> the asset check it reports as.
STAGED_CHECK_NAMES = {"not_empty": NOT_EMPTY_CHECK}


class ExtractRunConfig(dg.Config):
    """A custom window: ISO dates or datetimes, read in the extract's time zone when they carry no offset."""

    window_start: str | None = None
    window_end: str | None = None


def build_extract_defs(
    loaded: LoadedConnector,
    connections: Mapping[str, Connection],
    translator: ConnectorTranslator | None = None,
) -> dg.Definitions:
    """Assets, checks, jobs and schedules for one extract connector."""
    connector: ExtractConnector = loaded.spec
    spec = connector.extract
    partitions_def = partitions_for(spec.schedule) if spec.partitioned else None
    specs = build_connector_specs(loaded, connections, translator)
    names = names_from_specs(loaded, specs)
    off = disabled_reason(loaded)
    assets = [_file_asset(connector, names, specs[FILE], partitions_def, off)]
    jobs = [dg.define_asset_job(names.job, selection=[specs[FILE].key], tags=names.run_tags)]
    if partitions_def is not None:
        assets.append(_file_asset(connector, names, specs[CUSTOM_FILE], None, off))
        custom = dg.define_asset_job(
            custom_window_job_name(connector.name), selection=[specs[CUSTOM_FILE].key], tags=names.run_tags
        )
        jobs.append(custom)
    schedules = []
    if spec.schedule and off:
        schedules.append(
            skipping_schedule(
                name=names.schedule,
                job=jobs[0],
                cron_schedule=schedule_cron(spec.schedule, partitions_def),
                execution_timezone=spec.schedule.timezone,
                reason=off,
            )
        )
    elif spec.schedule:
        schedules.append(_schedule(connector, names, jobs[0], partitions_def))
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules)


def partitions_for(schedule: ExtractSchedule) -> dg.TimeWindowPartitionsDefinition:
    """Time windows from the inception date, one per cadence period, in the schedule's time zone."""
    inception = schedule.inception_date
    start = inception if isinstance(inception, dt.datetime) else dt.datetime.combine(inception, dt.time())
    zone = schedule.timezone
    if schedule.cadence == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"), timezone=zone)
    if schedule.cadence == "daily":
        return dg.DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), timezone=zone)
    if schedule.cadence == "weekly":
        # Weeks run Monday to Monday, as invoices and reports usually do.
        return dg.WeeklyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), timezone=zone, day_offset=1)
    if schedule.cadence == "monthly":
        return dg.MonthlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"), timezone=zone)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=schedule.cron(), start=start.strftime("%Y-%m-%d-%H:%M"), fmt="%Y-%m-%d-%H:%M", timezone=zone
    )


def _schedule(connector: ExtractConnector, names: ConnectorNames, job, partitions_def) -> dg.ScheduleDefinition:
    schedule = connector.extract.schedule
    assert schedule is not None
    status = (
        dg.DefaultScheduleStatus.RUNNING if connector.enabled and schedule.enabled else dg.DefaultScheduleStatus.STOPPED
    )
    name = names.schedule
    if partitions_def is None:
        return dg.ScheduleDefinition(
            name=name,
            job=job,
            cron_schedule=schedule.cron(),
            execution_timezone=schedule.timezone,
            default_status=status,
        )
    if schedule.rolling:
        return _rolling_schedule(name, job, partitions_def, schedule, status)
    # A cron cadence fires on its own cron; Dagster refuses timing arguments for it.
    timing = {"minute_of_hour": schedule.minute_of_hour} if schedule.cadence in PRESET_CADENCES else {}
    if schedule.cadence in ("daily", "weekly", "monthly"):
        timing["hour_of_day"] = schedule.hour_of_day
    return dg.build_schedule_from_partitioned_job(job, name=name, default_status=status, **timing)


def schedule_cron(schedule: ExtractSchedule, partitions_def) -> str:
    """The cron an extract's schedule ticks on: the full extract's, or the end of each partition's window."""
    if partitions_def is None:
        return schedule.cron()
    if schedule.cadence in ("hourly", "daily", "weekly", "monthly"):
        return partitions_def.get_cron_schedule(
            minute_of_hour=schedule.minute_of_hour,
            hour_of_day=schedule.hour_of_day if schedule.cadence in ("daily", "weekly", "monthly") else None,
        )
    return partitions_def.cron_schedule


def _rolling_schedule(name, job, partitions_def, schedule: ExtractSchedule, status) -> dg.ScheduleDefinition:
    """Each tick sends the last N complete windows in one run (a single-run partition range)."""
    count = schedule.rolling
    cron = schedule_cron(schedule, partitions_def)

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone=schedule.timezone, default_status=status)
    def rolling_schedule(context: dg.ScheduleEvaluationContext):
        keys = partitions_def.get_partition_keys(current_time=context.scheduled_execution_time)
        if not keys:
            return dg.SkipReason("no complete window since the inception date yet")
        first, last = keys[max(0, len(keys) - count)], keys[-1]
        return dg.RunRequest(run_key=f"{first}..{last}", tags={RANGE_START_TAG: first, RANGE_END_TAG: last})

    return rolling_schedule


def _file_asset(
    connector: ExtractConnector, names: ConnectorNames, asset_spec: dg.AssetSpec, partitions_def, off: str | None
):
    spec = connector.extract
    timezone = spec.schedule.timezone if spec.schedule else "UTC"
    connection_keys = {spec.source.connection} | {d.connection for d in spec.destinations}
    check_specs = (
        [
            dg.AssetCheckSpec(
                NOT_EMPTY_CHECK,
                asset=asset_spec.key,
                blocking=True,
                description="The window must hold at least one row; judged before the upload, so an empty "
                "file never reaches a destination",
            )
        ]
        if spec.checks.not_empty
        else []
    )

    @dg.multi_asset(
        name=op_name(asset_spec.key),
        specs=[asset_spec],
        check_specs=check_specs,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def is not None else None,
        required_resource_keys={*connection_keys, STORAGE_RESOURCE},
        pool=names.pool,
    )
    def extract_file(context: dg.AssetExecutionContext, config: ExtractRunConfig):
        refuse_sourced_values(context)
        tag_run(context, names)
        refuse_when_disabled(off)
        window, partition_label = _run_window(context, config, partitions_def, timezone)
        resources = {key: getattr(context.resources, key) for key in connection_keys}
        storage = getattr(context.resources, STORAGE_RESOURCE).get_storage()
        source = resources[spec.source.connection].get_source(timezone=timezone)
        transports = {d.connection: resources[d.connection].get_client() for d in spec.destinations}
        try:
            result = run_extract(
                connector,
                source=source,
                transports=transports,
                window=window,
                run_id=context.run.run_id,
                partition_key=partition_label,
                staging_dir=storage.staging_dir,
                secrets=_secret_values(resources.values()),
                log=context.log.info,
            )
        except ExtractError as exc:
            # A clean failure: the UI shows the message (connector, system, cause) without a stack trace.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        finally:
            source.dispose()
            for transport in transports.values():
                transport.close()
        checks = [
            dg.AssetCheckResult(
                check_name=STAGED_CHECK_NAMES[check.kind],
                asset_key=asset_spec.key,
                passed=check.passed,
                metadata={"rows": dg.MetadataValue.int(check.rows)},
                description=check.reason,
            )
            for check in result.checks
        ]
        if result.blocked:
            # The verdicts are recorded on the asset; the file stayed in staging and is gone. Not materialized.
            yield from checks
            reasons = "; ".join(f"{check.kind}: {check.reason}" for check in result.blocked)
            raise dg.Failure(
                description=f"extract '{connector.name}': {result.file_name} was not uploaded, a blocking check "
                f"failed ({reasons})",
                metadata={"rows": dg.MetadataValue.int(result.rows)},
                allow_retries=False,
            )
        yield dg.MaterializeResult(
            asset_key=asset_spec.key, metadata=materialization_metadata(result), check_results=checks
        )

    return extract_file


def _run_window(context: dg.AssetExecutionContext, config: ExtractRunConfig, partitions_def, timezone: str):
    """The window of this run: the partition (range) when partitioned, else the run config's, else none."""
    if partitions_def is not None:
        time_window = context.partition_time_window
        keys = context.partition_key_range
        # Not "start..end": file names may not contain "..", and {partition_key} may name the file.
        label = keys.start if keys.start == keys.end else f"{keys.start}_{keys.end}"
        return Window(time_window.start, time_window.end), label
    if config.window_start or config.window_end:
        if not (config.window_start and config.window_end):
            raise dg.Failure("set both window_start and window_end in the run config, or neither")
        try:
            return parse_window(config.window_start, config.window_end, timezone), None
        except WindowError as exc:
            # The reason, not the message: that repeats the values, and a step's error is shown to every UI user.
            raise dg.Failure(f"run config window_start/window_end: {exc.reason}", allow_retries=False) from None
    return None, None


def materialization_metadata(result: ExtractResult) -> dict[str, dg.MetadataValue]:
    """Numbers the UI plots over time, the file's identity, and a preview of its first rows."""
    metadata: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "rows": dg.MetadataValue.int(result.rows),
        "bytes": dg.MetadataValue.int(result.bytes),
        "duration_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "rows_per_second": dg.MetadataValue.float(round(result.rows / result.seconds, 1) if result.seconds else 0.0),
        "file_name": dg.MetadataValue.text(result.file_name),
        "sha256": dg.MetadataValue.text(result.sha256),
        "uri": dg.MetadataValue.text(result.uris[0]) if len(result.uris) == 1 else dg.MetadataValue.json(result.uris),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in result.schema]
        ),
    }
    if result.window is not None:
        metadata["window_start"] = dg.MetadataValue.text(result.window.start.isoformat())
        metadata["window_end"] = dg.MetadataValue.text(result.window.end.isoformat())
    if result.preview:
        names = list(result.preview[0])[:PREVIEW_COLUMNS_MAX]
        metadata["preview"] = dg.MetadataValue.table(
            records=[dg.TableRecord({n: row.get(n, "") for n in names}) for row in result.preview],
            schema=dg.TableSchema(columns=[dg.TableColumn(name=n, type="string") for n in names]),
        )
    return metadata


def _secret_values(resources) -> tuple[str, ...]:
    values = []
    for resource in resources:
        for name in secret_field_names():
            value = getattr(resource, name, None)
            if isinstance(value, str) and value:
                values.append(value)
    return tuple(values)
