"""Import connector -> Dagster objects.

Per connector: one asset, the target table (`[import, NAME, TABLE]`), with one blocking asset check per declared
expectation; a job `import_NAME`; and what starts it:
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
import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from connector_pipelines.errors import TransportError
from connector_pipelines.factories.translator import (
    TRIGGER_TAG,
    ConnectorAssetData,
    ConnectorTranslator,
    spec_fingerprint,
)
from connector_pipelines.imports.expectations import ExpectationResult
from connector_pipelines.imports.files import FilePattern, check_file_name
from connector_pipelines.imports.run import FileOutcome, ImportReport, import_file, run_warehouse_import
from connector_pipelines.imports.upsert import UpsertConfigError, UpsertError
from connector_pipelines.mapping import MappingError
from connector_pipelines.spec.imports import ExpectationSpec, ImportConnector
from connector_pipelines.spec.loader import LoadedConnector
from connector_pipelines.spec.models import Connection
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.state.ledger import default_ledger_url
from connector_pipelines.storage import import_dir, import_inbox_dir, storage_dir
from connector_pipelines.transports.base import FileSource, RemoteFile
from connector_pipelines.transports.folder import FolderClient

FILES_TABLE_MAX = 200
# A file seen for the first time is only taken once it has not changed for a poll interval (a partner may
# still be uploading it), unless it was last modified this long ago.
SETTLED_AFTER = dt.timedelta(seconds=60)


class ImportRunConfig(dg.Config):
    """What a run covers. Empty: what is new (rows past the watermark, or every matching file not yet imported)."""

    full: bool = False  # warehouse: read everything, ignoring the watermark
    files: list[str] = []  # file sources: only these names (a sensor's request); empty: every matching file
    local_file: str | None = None  # `ingest`: one local file, loaded as if it had arrived
    rebuild: bool = False  # forget the watermark and the files seen, bring archived files back, import all


def job_name(connector_name: str) -> str:
    return f"import_{connector_name}"


def op_name(connector: ImportConnector) -> str:
    return "__".join(["import", connector.name, connector.import_.target.table])


def run_config_for(connector: ImportConnector, **config) -> dict:
    values = {key: value for key, value in config.items() if value not in (None, [], False)}
    return {"ops": {op_name(connector): {"config": values}}}


def state_for(base_dir: Path) -> ImportState:
    return ImportState(default_ledger_url(storage_dir(base_dir)))


def check_name(expectation: ExpectationSpec, index: int) -> str:
    """`expect_<kind>_<column>_<n>`: a valid check name however the column is spelled, unique per position."""
    column = re.sub(r"[^A-Za-z0-9_]", "_", expectation.column)
    return f"expect_{expectation.expect}_{column}_{index + 1}"


def build_import_defs(
    loaded: LoadedConnector,
    connections: Mapping[str, Connection],
    base_dir: Path,
    translator: ConnectorTranslator | None = None,
) -> dg.Definitions:
    translator = translator or ConnectorTranslator()
    connector: ImportConnector = loaded.spec
    spec = connector.import_
    asset_spec = translator.get_asset_spec(ConnectorAssetData(loaded, spec.target.table, connections))
    asset = _import_asset(connector, asset_spec, base_dir)
    job = dg.define_asset_job(job_name(connector.name), selection=dg.AssetSelection.groups(connector.name))
    schedules, sensors = [], []
    schedule = spec.schedule
    if schedule is not None and schedule.cadence != "once":
        schedules.append(_schedule(connector, job, connections, base_dir))
    if (schedule is not None and schedule.cadence == "once") or spec.sync_on_save:
        sensors.append(_once_sensor(connector, job, connections, base_dir, spec_fingerprint(loaded)))
    if spec.source.kind != "warehouse":
        sensors.append(file_sensor(connector, job, connections, base_dir))
    return dg.Definitions(assets=[asset], jobs=[job], schedules=schedules, sensors=sensors)


# ---- the asset ------------------------------------------------------------------------------------------------


def _import_asset(connector: ImportConnector, asset_spec: dg.AssetSpec, base_dir: Path):
    spec = connector.import_
    source = spec.source
    target_key = spec.target.connection
    resource_keys = {target_key}
    if source.warehouse is not None:
        resource_keys.add(source.warehouse.connection)
    if source.files is not None:
        resource_keys.add(source.files.connection)
    check_specs = [
        dg.AssetCheckSpec(
            check_name(expectation, index),
            asset=asset_spec.key,
            blocking=True,
            description=_describe(expectation),
        )
        for index, expectation in enumerate(spec.expectations)
    ]

    @dg.multi_asset(
        name="__".join(asset_spec.key.path),
        specs=[asset_spec],
        check_specs=check_specs,
        required_resource_keys=resource_keys,
        pool=f"import_{connector.name}",
    )
    def import_asset(context: dg.AssetExecutionContext, config: ImportRunConfig):
        run_id = context.run.run_id
        target = getattr(context.resources, target_key).get_source()
        state = state_for(base_dir)
        try:
            if config.rebuild:
                _forget_for_rebuild(context, connector, state, base_dir)
            if config.local_file:
                reports = [_ingest(connector, Path(config.local_file), target.engine, state, base_dir, run_id)]
            elif source.warehouse is not None:
                warehouse = getattr(context.resources, source.warehouse.connection).get_source()
                try:
                    full = config.full or config.rebuild
                    reports = [
                        run_warehouse_import(
                            connector, warehouse, target.engine, state, _runs_dir(base_dir), run_id, full=full
                        )
                    ]
                finally:
                    warehouse.dispose()
            else:
                client = _file_client(context.resources, connector, base_dir)
                try:
                    reports = _import_files(context, connector, client, config, target.engine, state, base_dir)
                finally:
                    client.close()
        except (UpsertConfigError, MappingError, TransportError) as exc:
            # The spec, the target table or a connection is wrong: nothing in the files or rows. Said plainly.
            raise dg.Failure(description=f"import '{connector.name}': {exc}", allow_retries=False) from None
        except UpsertError as exc:
            raise dg.Failure(
                description=f"import '{connector.name}': {exc}; batches before the failing one stay committed, "
                "the watermark was not moved, so the next run reads them again"
            ) from None
        finally:
            state.dispose()
            target.dispose()
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
        return dg.MaterializeResult(
            asset_key=asset_spec.key,
            metadata=import_metadata(reports, files, base_dir, connector, run_id),
            check_results=checks,
        )

    return import_asset


def _forget_for_rebuild(context, connector: ImportConnector, state: ImportState, base_dir: Path) -> None:
    """Rebuild: the import starts over. Archived files matching the pattern go back into the folder."""
    forgotten = state.forget(connector.name)
    context.log.info(f"rebuild: forgot the watermark and {forgotten:,} file record(s)")
    if connector.import_.source.kind == "warehouse":
        return
    folder, pattern = _folder_and_pattern(connector)
    files = connector.import_.source.files
    archive = files.archive_folder if files else "archive"
    client = _file_client(context.resources, connector, base_dir)
    try:
        archived = [remote for remote in client.list_files(archive) if pattern.matches(remote.name)]
        present = {remote.name for remote in client.list_files(folder)}
        for remote in archived:
            if remote.name in present:
                continue  # a newer delivery under the same name waits in the folder: it is the one imported
            client.move(archive, remote.name, folder)
        context.log.info(f"rebuild: {len(archived):,} archived file(s) moved back to be imported again")
    finally:
        client.close()


def _runs_dir(base_dir: Path) -> Path:
    """import_run keeps `<this>/<connector>/<run_id>/...`: the same folder as storage.import_dir."""
    return storage_dir(base_dir) / "imports"


def _file_client(resources, connector: ImportConnector, base_dir: Path) -> FileSource:
    files = connector.import_.source.files
    if files is not None:
        return getattr(resources, files.connection).get_client()
    inbox = import_inbox_dir(base_dir, connector.name)
    inbox.mkdir(parents=True, exist_ok=True)
    return FolderClient(inbox)


def _folder_and_pattern(connector: ImportConnector) -> tuple[str, FilePattern]:
    source = connector.import_.source
    if source.files is not None:
        return source.files.folder, FilePattern(source.files.pattern)
    return "", FilePattern(source.email.pattern)


def matching_files(listing: Sequence[RemoteFile], pattern: FilePattern) -> list[RemoteFile]:
    """The files an import takes from a listing: names the pattern matches, and unsafe names (a path in them)
    whose last part it matches, so that they are refused with a report instead of silently ignored."""
    found = []
    for remote in listing:
        if pattern.matches(remote.name):
            found.append(remote)
        elif check_file_name(remote.name) is not None and pattern.matches(re.split(r"[/\\]", remote.name)[-1]):
            found.append(remote)
    return found


def _import_files(context, connector, client: FileSource, config: ImportRunConfig, engine, state, base_dir):
    folder, pattern = _folder_and_pattern(connector)
    listing = matching_files(client.list_files(folder), pattern)
    if config.files:
        wanted = set(config.files)
        gone = sorted(wanted - {remote.name for remote in listing})
        if gone:
            context.log.info(f"no longer in the folder (processed by an earlier run, or removed): {', '.join(gone)}")
        listing = [remote for remote in listing if remote.name in wanted]
    if not listing:
        context.log.info(f"no file matching {pattern.pattern!r} in {folder or 'the root folder'!r}")
    reports = []
    for index, remote in enumerate(listing, start=1):
        context.log.info(f"file {index}/{len(listing)}: {remote.name} ({remote.size:,} bytes)")
        report = import_file(
            connector, client, remote.name, engine, state, _runs_dir(base_dir), context.run.run_id, remote.modified
        )
        outcome = report.file
        context.log.info(f"{remote.name}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""))
        reports.append(report)
    return reports


def ingest_dropbox(base_dir: Path, connector_name: str) -> Path:
    """Where `ingest` places a file for the run to take: run config can name only files in here."""
    return import_dir(base_dir, connector_name) / "ingest"


def _ingest(connector: ImportConnector, path: Path, engine, state: ImportState, base_dir: Path, run_id: str):
    """One local file, imported like an arrived one: from a private folder, archived or quarantined inside it.

    The file must be in the import's ingest drop box (`ingest` copies it there): run config comes from the UI
    and the GraphQL API too, and must not be able to make a run read any file the run's process can read.
    """
    dropbox = ingest_dropbox(base_dir, connector.name).resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(dropbox) or not resolved.is_file():
        raise TransportError(
            f"local_file {str(path)!r} is not a file in {dropbox}; load a local file with "
            f"`connector-pipelines ingest {connector.name} FILE`, which places it there"
        )
    problem = check_file_name(resolved.name)
    if problem is not None:
        raise TransportError(f"cannot ingest {str(path)!r}: {problem}")
    inbox = import_dir(base_dir, connector.name) / run_id / "ingest"
    inbox.mkdir(parents=True, exist_ok=True)
    modified = dt.datetime.fromtimestamp(resolved.stat().st_mtime, dt.UTC)
    shutil.move(resolved, inbox / resolved.name)
    shutil.rmtree(resolved.parent, ignore_errors=True)  # the per-call folder `ingest` made
    return import_file(
        connector, FolderClient(inbox), resolved.name, engine, state, _runs_dir(base_dir), run_id, modified
    )


def _totals(reports: Sequence[ImportReport]) -> dict[str, int]:
    names = ("rows_read", "rows_rejected", "inserted", "updated", "unchanged_or_older", "skipped_new")
    return {name: sum(getattr(report, name) for report in reports) for name in names}


def import_metadata(
    reports: Sequence[ImportReport],
    files: Sequence[FileOutcome],
    base_dir: Path,
    connector: ImportConnector,
    run_id: str,
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
    metadata["run_folder"] = dg.MetadataValue.path(str(import_dir(base_dir, connector.name) / run_id))
    rejections = [str(report.rejections_path) for report in reports if report.rejections_path is not None]
    if len(rejections) == 1:
        metadata["rejections_path"] = dg.MetadataValue.path(rejections[0])
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
    what = {
        "not_null": "is never empty",
        "unique": "holds no value twice",
        "in_set": f"is one of {', '.join(str(v) for v in expectation.values)}",
        "regex": f"matches {expectation.pattern!r}",
        "between": f"is between {expectation.min} and {expectation.max}",
    }[expectation.expect]
    share = "" if expectation.mostly == 1 else f" (in at least {expectation.mostly:.0%} of rows)"
    return f"Great Expectations: {expectation.column} {what}{share}"


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
        severity=dg.AssetCheckSeverity.ERROR,
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


def preview_missing(connector: ImportConnector, connections: Mapping[str, Connection], base_dir: Path) -> str | None:
    """Why automatic runs wait (no successful preview of the current source), or None when they may run."""
    state = state_for(base_dir)
    try:
        if state.previewed(connector.name, connector.source_hash(connections)):
            return None
    finally:
        state.dispose()
    return (
        f"no successful preview of this source yet (new or changed); run `connector-pipelines preview "
        f"{connector.name}` to test the connection and the query, then the import runs on its own"
    )


def _schedule(connector: ImportConnector, job, connections, base_dir: Path) -> dg.ScheduleDefinition:
    schedule = connector.import_.schedule

    @dg.schedule(
        name=f"{job_name(connector.name)}_schedule",
        job=job,
        cron_schedule=schedule.cron(),
        execution_timezone=schedule.timezone,
        default_status=_default_status(connector),
        description=f"{schedule.cadence}: import what is new",
    )
    def scheduled_import(context: dg.ScheduleEvaluationContext):
        waiting = preview_missing(connector, connections, base_dir)
        if waiting:
            return dg.SkipReason(waiting)
        return dg.RunRequest(run_config=run_config_for(connector), tags={TRIGGER_TAG: "schedule"})

    return scheduled_import


def _once_sensor(connector: ImportConnector, job, connections, base_dir: Path, fingerprint: str):
    """`cadence: once`: one run ever (its run key never changes); `sync_on_save`: one run per spec version."""
    once = connector.import_.schedule is not None and connector.import_.schedule.cadence == "once"

    @dg.sensor(
        name=f"{job_name(connector.name)}_once",
        job=job,
        minimum_interval_seconds=30,
        default_status=_default_sensor_status(connector),
        description="Runs the import once" + ("" if once else " each time its spec first loads or changes"),
    )
    def run_once(context: dg.SensorEvaluationContext):
        waiting = preview_missing(connector, connections, base_dir)
        if waiting:
            return dg.SkipReason(waiting)
        # Dagster starts a run key once per sensor: the key is what makes this "once".
        run_key = "once" if once else f"spec:{fingerprint}"
        return dg.RunRequest(
            run_key=run_key,
            run_config=run_config_for(connector),
            tags={TRIGGER_TAG: "once" if once else "sync_on_save"},
        )

    return run_once


def file_sensor(connector: ImportConnector, job, connections, base_dir: Path) -> dg.SensorDefinition:
    """Asks for one run per tick for the matching files that arrived (or are still there after a failed run).

    The cursor remembers, per file name, its size and modification time when a run was asked for it, and that
    run's key. A file is asked for again only when it changed (a new version under the same name) or when the
    run asked for it has finished and the file is still in the folder (the run failed before it could archive
    or quarantine it). A file not seen before is taken once it is unchanged since the previous tick, or was last
    modified over a minute ago, so a file still being uploaded is not read half-written. Whether the content
    was imported before (under any name) is decided in the run, by checksum, in the import state.
    """
    files_spec = connector.import_.source.files
    interval = files_spec.poll_interval_seconds if files_spec else 30
    resource_keys = {files_spec.connection} if files_spec else set()

    @dg.sensor(
        name=f"{job_name(connector.name)}_files",
        job=job,
        minimum_interval_seconds=interval,
        default_status=_default_sensor_status(connector),
        required_resource_keys=resource_keys,
        description=f"Runs {job_name(connector.name)} when matching files arrive",
    )
    def new_files(context: dg.SensorEvaluationContext):
        waiting = preview_missing(connector, connections, base_dir)
        if waiting:
            return dg.SkipReason(waiting)
        cursor = json.loads(context.cursor) if context.cursor else {}
        requested: dict = cursor.get("requested", {})
        pending: dict = cursor.get("pending", {})
        folder, pattern = _folder_and_pattern(connector)
        client = _file_client(context.resources, connector, base_dir)
        try:
            listing = matching_files(client.list_files(folder), pattern)
        finally:
            client.close()
        now = dt.datetime.now(dt.UTC)
        ready: list[tuple[str, list]] = []
        new_pending: dict = {}
        for remote in listing:
            signature = [remote.size, remote.modified.isoformat()]
            earlier = requested.get(remote.name)
            if earlier is not None and earlier["signature"] == signature:
                if check_file_name(remote.name) is not None:
                    continue  # refused for its name, with a report, and left in place by design: once is enough
                if not _run_finished(context.instance, earlier["run_key"]):
                    continue  # asked for, not finished yet: leave it to that run
            elif pending.get(remote.name) != signature and now - remote.modified < SETTLED_AFTER:
                new_pending[remote.name] = signature  # maybe still being written: look again next tick
                continue
            ready.append((remote.name, signature))
        present = {remote.name for remote in listing}
        # Files gone from the folder were archived or quarantined: forget them (the state keeps their record).
        new_requested = {name: value for name, value in requested.items() if name in present}
        request = None
        if ready:
            attempts = {name: new_requested.get(name, {}).get("attempt", 0) + 1 for name, _ in ready}
            digest = hashlib.sha256(
                json.dumps(sorted([name, signature, attempts[name]] for name, signature in ready)).encode()
            ).hexdigest()[:16]
            run_key = f"files:{digest}"
            for name, signature in ready:
                new_requested[name] = {"signature": signature, "run_key": run_key, "attempt": attempts[name]}
            names = sorted(name for name, _ in ready)
            request = dg.RunRequest(
                run_key=run_key,
                run_config=run_config_for(connector, files=names),
                tags={TRIGGER_TAG: "files"},
            )
        context.update_cursor(json.dumps({"requested": new_requested, "pending": new_pending}, sort_keys=True))
        if request is None:
            return dg.SkipReason(
                f"{len(new_pending)} file(s) waiting to settle" if new_pending else "no new matching files"
            )
        return [request]

    return new_files


def _run_finished(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether the run a sensor asked for under `run_key` has ended (no run yet: it is still being started)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return bool(runs) and runs[0].is_finished
