"""Import connector -> Dagster objects.

Per connector: one asset, the target table (`[import, NAME, TABLE]`), with one asset check per declared
expectation (blocking for `severity: error`, the default; a warning for `severity: warn`); a job `import_NAME`;
and what starts it:
- a schedule for a cadence (hourly, daily, workdays, weekly, monthly, every N minutes, cron);
- a sensor `import_NAME_once` for `cadence: once` (a single run, ever, until `rebuild`) and for `sync_on_save`
  (one run per version of the spec: when it first loads and after every change);
- a sensor `import_NAME_files` for file and email sources: it asks for a run when matching files arrive.

Automatic runs (schedules and sensors) wait until a preview of the current source has succeeded
(`connector-pipelines preview NAME` records it), so an import is never scheduled against a connection or query
that nobody has seen work; `run NAME` and the UI's Materialize run at once.

(No `from __future__ import annotations` here: Dagster reads the run-config annotation at definition time.)
"""

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from connector_pipelines.errors import TransportError
from connector_pipelines.factories.expectation_checks import rule_text
from connector_pipelines.factories.naming import (
    IMPORT_STATE_RESOURCE,
    RUN_KEY_TAG,
    STORAGE_RESOURCE,
    TRIGGER_TAG,
    ConnectorNames,
    expectation_check_name,
    file_sensor_name,
    op_name,
)
from connector_pipelines.factories.partner_reports import partner_report_keys, send_partner_reports
from connector_pipelines.factories.run_config import refuse_sourced_values, tag_run
from connector_pipelines.factories.switch import (
    disabled_reason,
    refuse_when_disabled,
    skipping_instead,
    skipping_sensor,
)
from connector_pipelines.factories.translator import (
    ConnectorTranslator,
    build_connector_specs,
    names_from_specs,
    spec_fingerprint,
)
from connector_pipelines.imports.api_source import ApiAccess, api_access
from connector_pipelines.imports.arrivals import decide_arrivals, given_up_message
from connector_pipelines.imports.expectations import ExpectationResult
from connector_pipelines.imports.lookups import lookup_connections
from connector_pipelines.imports.orchestrate import (
    FilesFailed,
    ImportScope,
    folder_and_pattern,
    matching_files,
    run_import,
)
from connector_pipelines.imports.run import FileOutcome, ImportReport
from connector_pipelines.imports.upsert import UpsertConfigError, UpsertError
from connector_pipelines.mapping import MappingError
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.imports import ExpectationSpec, ImportConnector
from connector_pipelines.spec.loader import LoadedConnector
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.storage import Storage
from connector_pipelines.transports.base import FileSource
from connector_pipelines.transports.folder import FolderClient

FILES_TABLE_MAX = 200


class ImportRunConfig(dg.Config):
    """What a run covers. Empty: what is new (rows past the watermark, or every matching file not yet imported)."""

    full: bool = False  # warehouse and api: read everything, ignoring the watermark
    files: list[str] = []  # file sources: only these names (a sensor's request); empty: every matching file
    local_file: str | None = None  # `ingest`: one local file, loaded as if it had arrived
    rebuild: bool = False  # forget the watermark and the files seen, bring archived files back, import all


def import_scope(config: ImportRunConfig) -> ImportScope:
    """The run config as the engine's plain scope value (the op boundary)."""
    return ImportScope(
        full=config.full,
        files=tuple(config.files),
        local_file=Path(config.local_file) if config.local_file else None,
        rebuild=config.rebuild,
    )


def check_name(expectation: ExpectationSpec, index: int) -> str:
    return expectation_check_name(expectation.expect, expectation.column, index)


def build_import_defs(
    loaded: LoadedConnector,
    connections: Mapping[str, Connection],
    translator: ConnectorTranslator | None = None,
) -> dg.Definitions:
    connector: ImportConnector = loaded.spec
    spec = connector.import_
    specs = build_connector_specs(loaded, connections, translator)
    names = names_from_specs(loaded, specs)
    asset_spec = specs[spec.target.table]
    off = disabled_reason(loaded)
    asset = _import_asset(connector, names, asset_spec, off, partner_report_keys(connector, connections))
    job = dg.define_asset_job(names.job, selection=[asset_spec.key], tags=names.run_tags)
    schedules, sensors = [], []
    schedule = spec.schedule
    if schedule is not None and not schedule.once:
        schedules.append(_schedule(connector, names, job, connections))
    if (schedule is not None and schedule.once) or spec.sync_on_save:
        sensors.append(_once_sensor(connector, names, job, connections, spec_fingerprint(loaded)))
    if spec.source.kind in ("files", "email"):
        sensors.append(file_sensor(connector, names, job, connections))
    if off:  # off is off: the same schedules and sensors, whose ticks only say why they do not run
        schedules = [skipping_instead(schedule, job, off) for schedule in schedules]
        sensors = [skipping_sensor(sensor, job, off) for sensor in sensors]
    return dg.Definitions(assets=[asset], jobs=[job], schedules=schedules, sensors=sensors)


# ---- the asset ------------------------------------------------------------------------------------------------


def _import_asset(
    connector: ImportConnector,
    names: ConnectorNames,
    asset_spec: dg.AssetSpec,
    off: str | None,
    report_keys: frozenset[str] = frozenset(),  # the smtp connection of a partner's processing reports
):
    spec = connector.import_
    source = spec.source
    target_key = spec.target.connection
    resource_keys = {target_key, STORAGE_RESOURCE, IMPORT_STATE_RESOURCE, *report_keys}
    if source.warehouse is not None:
        resource_keys.add(source.warehouse.connection)
    if source.files is not None:
        resource_keys.add(source.files.connection)
    if source.api is not None:
        resource_keys.add(source.api.connection)
    resource_keys |= lookup_connections(spec)
    check_specs = [
        dg.AssetCheckSpec(
            check_name(expectation, index),
            asset=asset_spec.key,
            blocking=expectation.blocking,
            description=_describe(expectation),
        )
        for index, expectation in enumerate(spec.expectations)
    ]

    @dg.multi_asset(
        name=op_name(asset_spec.key),
        specs=[asset_spec],
        check_specs=check_specs,
        required_resource_keys=resource_keys,
        pool=names.pool,
    )
    def import_asset(context: dg.AssetExecutionContext, config: ImportRunConfig):
        refuse_sourced_values(context)
        tag_run(context, names)
        refuse_when_disabled(off)
        scope = import_scope(config)
        run_id = context.run.run_id
        resources = context.resources
        storage = getattr(resources, STORAGE_RESOURCE).get_storage()
        target = getattr(resources, target_key).get_source()
        state = getattr(resources, IMPORT_STATE_RESOURCE).get_state()
        run_folder = storage.import_dir(connector.name) / run_id
        # The run's folder (snapshots, rejections, reports) goes to the archive when the run ends, however it ends.
        try:
            with storage.keeping(run_folder, context.log.error):
                try:
                    reports = run_import(
                        connector,
                        scope,
                        target_engine=target.engine,
                        state=state,
                        storage=storage,
                        run_id=run_id,
                        open_warehouse=(
                            (lambda: getattr(resources, source.warehouse.connection).get_source())
                            if source.warehouse is not None
                            else None
                        ),
                        open_files=lambda: _file_client(resources, connector, storage),
                        logger=context.log,
                        open_api=lambda: _api_access(resources, connector),
                        open_source=lambda name: getattr(resources, name).get_source(),
                    )
                except (UpsertConfigError, MappingError, TransportError) as exc:
                    # The spec, the target table or a connection is wrong: nothing in the files or rows. Said plainly.
                    raise dg.Failure(description=f"import '{connector.name}': {exc}", allow_retries=False) from None
                except FilesFailed as exc:
                    # The files named were left in the folder (not their fault, perhaps); the others were handled,
                    # and a partner is told of those as after any run.
                    send_partner_reports(context, connector, exc.handled, run_id)
                    raise dg.Failure(description=f"import '{connector.name}': {exc}") from None
                except UpsertError as exc:
                    raise dg.Failure(
                        description=f"import '{connector.name}': {exc}; batches before the failing one stay committed, "
                        "the watermark was not moved, so the next run reads them again"
                    ) from None
                finally:
                    state.dispose()
                    target.dispose()
        except TransportError as exc:  # the block's own errors are Failures by now: this is the archive's
            raise dg.Failure(
                description=f"import '{connector.name}': the run's folder could not be kept in the storage archive: "
                f"{exc}"
            ) from None
        send_partner_reports(context, connector, reports, run_id)
        totals = _totals(reports)
        context.log.info(
            f"{connector.name}: {totals['rows_read']:,} rows read, {totals['inserted']:,} inserted, "
            f"{totals['updated']:,} updated, {totals['unchanged_or_older']:,} unchanged or older, "
            f"{totals['skipped_new']:,} new keys skipped, {totals['rows_rejected']:,} rejected"
        )
        files = [report.file for report in reports if report.file is not None]
        checks = [
            _check_result(asset_spec.key, expectation, index, reports)
            for index, expectation in enumerate(spec.expectations)
        ]
        metadata = import_metadata(reports, files, storage.import_dir(connector.name) / run_id)
        blocked = [item for report in reports for item in report.blocked]
        if blocked and not any(report.merged for report in reports):
            # The gate held everything back: the table is as it was, so no materialization; the checks say why.
            yield from checks
            failed = [check.check_name for check in checks if not check.passed and check.severity.value == "ERROR"]
            raise dg.Failure(
                description=blocked_description(connector, failed, blocked), metadata=metadata, allow_retries=False
            )
        yield dg.MaterializeResult(asset_key=asset_spec.key, metadata=metadata, check_results=checks)

    return import_asset


def blocked_description(connector: ImportConnector, checks: Sequence[str], blocked: Sequence[str]) -> str:
    """Why a run merged nothing: the failed blocking checks and what they found, and what to do."""
    watermark = ", the watermark did not move" if connector.import_.source.kind in ("warehouse", "api") else ""
    return (
        f"import '{connector.name}': nothing was merged (the target table is as it was{watermark}): blocking "
        f"check{'s' if len(checks) != 1 else ''} {', '.join(checks)} failed: {'; '.join(blocked)}. Fix the source "
        "data and run again, or give the expectation `severity: warn` to merge such data anyway"
    )


def _file_client(resources, connector: ImportConnector, storage: Storage) -> FileSource:
    """The folder's client: the files connection's, or the email receiver's inbox for an email import."""
    files = connector.import_.source.files
    if files is not None:
        return getattr(resources, files.connection).get_client()
    inbox = storage.import_inbox_dir(connector.name)
    inbox.mkdir(parents=True, exist_ok=True)
    return FolderClient(inbox)


def _api_access(resources, connector: ImportConnector) -> ApiAccess:
    """The API's access: the http resource's settings, its secrets read by Dagster (get_client checks they are)."""
    resource = getattr(resources, connector.import_.source.api.connection)
    resource.get_client()  # refuses an unresolved secret, naming it
    return api_access(**resource.model_dump())


def _totals(reports: Sequence[ImportReport]) -> dict[str, int]:
    names = ("rows_read", "rows_rejected", "inserted", "updated", "unchanged_or_older", "skipped_new")
    return {name: sum(getattr(report, name) for report in reports) for name in names}


def import_metadata(
    reports: Sequence[ImportReport], files: Sequence[FileOutcome], run_folder: Path
) -> dict[str, dg.MetadataValue]:
    """Counts the UI plots over time, links to this run's source snapshot(s), and the files it handled."""
    totals = _totals(reports)
    metadata: dict[str, dg.MetadataValue] = {name: dg.MetadataValue.int(value) for name, value in totals.items()}
    metadata["dagster/row_count"] = dg.MetadataValue.int(totals["inserted"] + totals["updated"])
    metadata["seconds"] = dg.MetadataValue.float(round(sum((report.seconds for report in reports), 0.0), 3))
    added = sorted({column for report in reports for column in report.added_columns})
    if added:
        metadata["added_columns"] = dg.MetadataValue.text(", ".join(added))
    snapshots = [report.snapshot_path for report in reports if report.snapshot_path is not None]
    if len(snapshots) == 1:
        metadata["snapshot_path"] = dg.MetadataValue.path(str(snapshots[0]))
    metadata["run_folder"] = dg.MetadataValue.path(str(run_folder))
    rejections = [str(report.rejections_path) for report in reports if report.rejections_path is not None]
    if len(rejections) == 1:
        metadata["rejections_path"] = dg.MetadataValue.path(rejections[0])
    blocked = [item for report in reports for item in report.blocked]
    if blocked:
        metadata["blocked_by"] = dg.MetadataValue.text("; ".join(blocked))
    watermarks = [report.watermark for report in reports if report.watermark is not None]
    if watermarks:
        metadata["watermark"] = dg.MetadataValue.text(watermarks[-1])
    if files:
        for status in ("imported", "rejected", "duplicate"):
            metadata[f"files_{status}"] = dg.MetadataValue.int(sum(1 for f in files if f.status == status))
        columns = ["file", "status", "rows", "reason"]
        rows = [
            dg.TableRecord(
                {
                    "file": outcome.name,
                    "status": outcome.status,
                    "rows": str(report.rows_read) if outcome.status == "imported" else "",
                    "reason": outcome.reason or "",
                }
            )
            for report, outcome in ((r, r.file) for r in reports if r.file is not None)
        ][:FILES_TABLE_MAX]
        metadata["files"] = dg.MetadataValue.table(
            records=rows, schema=dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in columns])
        )
    return metadata


def _describe(expectation: ExpectationSpec) -> str:
    gate = "; nothing is merged when it fails" if expectation.blocking else "; a warning, the rows merge anyway"
    return rule_text(expectation) + gate


def _check_result(
    asset_key: dg.AssetKey, expectation: ExpectationSpec, index: int, reports: Sequence[ImportReport]
) -> dg.AssetCheckResult:
    """One expectation over everything this run read (every file): it passes only if it passed everywhere."""
    results: list[ExpectationResult] = [
        report.expectation_results[index] for report in reports if len(report.expectation_results) > index
    ]
    unexpected = sum(result.unexpected_count for result in results)
    elements = sum(result.element_count for result in results)
    sample = [value for result in results for value in result.sample_unexpected][:10]
    passed = all(result.success for result in results)
    return dg.AssetCheckResult(
        check_name=check_name(expectation, index),
        asset_key=asset_key,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if expectation.blocking else dg.AssetCheckSeverity.WARN,
        metadata={
            "unexpected_count": dg.MetadataValue.int(unexpected),
            "element_count": dg.MetadataValue.int(elements),
            "unexpected_percent": dg.MetadataValue.float(round(100.0 * unexpected / elements, 3) if elements else 0.0),
            "sample_unexpected": dg.MetadataValue.text(", ".join(repr(value) for value in sample)),
        },
        description=None if results else "no rows were read this run",
    )


# ---- what starts runs -----------------------------------------------------------------------------------------


def _default_status(connector: ImportConnector):
    return dg.DefaultScheduleStatus.RUNNING if connector.enabled else dg.DefaultScheduleStatus.STOPPED


def _default_sensor_status(connector: ImportConnector):
    return dg.DefaultSensorStatus.RUNNING if connector.enabled else dg.DefaultSensorStatus.STOPPED


def preview_missing(connector: ImportConnector, connections: Mapping[str, Connection], resources) -> str | None:
    """Why automatic runs wait (no successful preview of the current source), or None when they may run."""
    state: ImportState = getattr(resources, IMPORT_STATE_RESOURCE).get_state()
    try:
        if state.previewed(connector.name, connector.source_hash(connections)):
            return None
    finally:
        state.dispose()
    return (
        f"no successful preview of this source yet (new or changed); run `connector-pipelines preview "
        f"{connector.name}` to test the connection and the query, then the import runs on its own"
    )


def _schedule(connector: ImportConnector, names: ConnectorNames, job, connections) -> dg.ScheduleDefinition:
    schedule = connector.import_.schedule

    @dg.schedule(
        name=names.schedule,
        required_resource_keys={IMPORT_STATE_RESOURCE},
        job=job,
        cron_schedule=schedule.cron(),
        execution_timezone=schedule.timezone,
        default_status=_default_status(connector),
        description=f"{schedule.cadence}: import what is new",
    )
    def scheduled_import(context: dg.ScheduleEvaluationContext):
        waiting = preview_missing(connector, connections, context.resources)
        if waiting:
            return dg.SkipReason(waiting)
        return dg.RunRequest(run_config=names.run_config(), tags={TRIGGER_TAG: "schedule"})

    return scheduled_import


def _once_sensor(connector: ImportConnector, names: ConnectorNames, job, connections, fingerprint: str):
    """`cadence: once`: one run ever (its run key never changes); `sync_on_save`: one run per spec version."""
    once = connector.import_.schedule is not None and connector.import_.schedule.once

    @dg.sensor(
        name=names.once_sensor,
        job=job,
        required_resource_keys={IMPORT_STATE_RESOURCE},
        minimum_interval_seconds=30,
        default_status=_default_sensor_status(connector),
        description="Runs the import once" + ("" if once else " each time its spec first loads or changes"),
    )
    def run_once(context: dg.SensorEvaluationContext):
        waiting = preview_missing(connector, connections, context.resources)
        if waiting:
            return dg.SkipReason(waiting)
        # Dagster starts a run key once per sensor: the key is what makes this "once".
        run_key = "once" if once else f"spec:{fingerprint}"
        return dg.RunRequest(
            run_key=run_key,
            run_config=names.run_config(),
            tags={TRIGGER_TAG: "once" if once else "sync_on_save"},
        )

    return run_once


def file_sensor(connector: ImportConnector, names: ConnectorNames, job, connections) -> dg.SensorDefinition:
    """Asks for one run per tick for the matching files that arrived (or are still there after a failed run, at
    most `limits.max_failed_attempts` times); `imports.arrivals.decide_arrivals` decides which, from the listing
    and the cursor."""
    files_spec = connector.import_.source.files
    interval = files_spec.poll_interval_seconds if files_spec else 30
    max_failed_attempts = (files_spec or connector.import_.source.email).limits.max_failed_attempts
    resource_keys = {IMPORT_STATE_RESOURCE, STORAGE_RESOURCE} | ({files_spec.connection} if files_spec else set())

    @dg.sensor(
        name=file_sensor_name(connector.name),
        job=job,
        minimum_interval_seconds=interval,
        default_status=_default_sensor_status(connector),
        required_resource_keys=resource_keys,
        description=f"Runs {names.job} when matching files arrive",
    )
    def new_files(context: dg.SensorEvaluationContext):
        waiting = preview_missing(connector, connections, context.resources)
        if waiting:
            return dg.SkipReason(waiting)
        cursor = json.loads(context.cursor) if context.cursor else {}
        folder, pattern = folder_and_pattern(connector)
        storage = getattr(context.resources, STORAGE_RESOURCE).get_storage()
        client = _file_client(context.resources, connector, storage)
        try:
            listing = matching_files(client.list_files(folder), pattern)
        finally:
            client.close()
        arrivals = decide_arrivals(
            listing,
            cursor,
            dt.datetime.now(dt.UTC),
            lambda run_key: _run_finished(context.instance, run_key),
            max_failed_attempts,
        )
        context.update_cursor(json.dumps(arrivals.cursor, sort_keys=True))
        given_up = given_up_message(arrivals.given_up, max_failed_attempts)
        if arrivals.run_key is None:
            reason = f"{arrivals.settling} file(s) waiting to settle" if arrivals.settling else "no new matching files"
            return dg.SkipReason(f"{reason}; {given_up}" if given_up else reason)
        if given_up:
            context.log.warning(given_up)
        return [
            dg.RunRequest(
                run_key=arrivals.run_key,
                run_config=names.run_config(files=arrivals.files),
                tags={TRIGGER_TAG: "files"},
            )
        ]

    return new_files


def _run_finished(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether the run a sensor asked for under `run_key` has ended (no run yet: it is still being started)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return bool(runs) and runs[0].is_finished
