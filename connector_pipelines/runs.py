"""Start a connector run through Dagster from outside the UI (the CLI and the demo use this)."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from connector_pipelines.definitions import definitions_for
from connector_pipelines.errors import ExtractError
from connector_pipelines.extract.windows import parse_window_range
from connector_pipelines.factories.extract import partitions_for
from connector_pipelines.factories.naming import (
    CUSTOM_FILE,
    FILE,
    HOST_TAG,
    PARTITION_TAG,
    PID_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    TRIGGER_TAG,
    ConnectorNames,
    custom_window_job_name,
)
from connector_pipelines.factories.translator import configured_translator, connector_names
from connector_pipelines.instance import ensure_dagster_home
from connector_pipelines.run_queue import FinishedRun, QueuedRun, SubmitError, daemon_running, follow, submit
from connector_pipelines.spec.loader import RESOURCES_ENV, LoadedConnector, Project
from connector_pipelines.storage import Storage
from connector_pipelines.transports.registry import missing_variables

IN_PROCESS = "in_process"  # execute_in_process on the instance (the demo, tests, `run --in-process`)
AUTO = "auto"  # the CLI: through the instance's run queue when a daemon runs against it, else in process


def launch_tags() -> dict[str, str]:
    """Which process runs this in-process run, so a later run can tell that it died (see reap_dead_runs)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def reap_dead_runs(instance: dg.DagsterInstance, echo: Callable[[str], None] = print) -> int:
    """Mark failed the runs this machine started in a process that is gone, and free their pool slots.

    A run killed mid-flight (kill -9, a crash, a closed terminal) stays STARTED and keeps its concurrency slot,
    so the next run of anything in that pool would wait forever. (Runs launched by the daemon are watched by
    Dagster's run monitoring instead; see dagster.yaml.) Its in-flight records are the ledger's business: the
    next delivery resolves them.
    """
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
            tags={HOST_TAG: socket.gethostname()},
        )
    )
    reaped = 0
    for run in runs:
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if pid <= 0 or pid == os.getpid() or _alive(pid):
            continue
        instance.report_run_failed(run, message=f"its process (pid {pid}) is gone: it was killed or crashed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        echo(f"run {run.run_id} of {run.job_name} died with its process (pid {pid}); marked failed, slots freed")
        reaped += 1
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, with the materialization's metadata values as plain Python."""

    success: bool  # for a queued run (not followed): it was queued
    run_id: str
    metadata: dict = field(default_factory=dict)
    queued: bool = False


NOT_STARTED = RunOutcome(success=False, run_id="")


def launch_extract(
    project: Project,
    loaded: LoadedConnector,
    *,
    window: str | None = None,
    partition: str | None = None,
    echo: Callable[[str], None] = print,
    instance: dg.DagsterInstance | None = None,
    through: str = IN_PROCESS,
    wait: bool = False,
) -> RunOutcome:
    """Run an extract for a custom window, a partition (range), or by default its latest complete window."""
    name = loaded.name
    spec = loaded.spec.extract
    timezone = spec.schedule.timezone if spec.schedule else "UTC"
    run_config: dict = {}
    partition_key = None
    tags: dict[str, str] = {}
    names = _names(project, loaded)
    job_name = names.job
    if window:
        parsed = parse_window_range(window, timezone)
        part = CUSTOM_FILE if spec.partitioned else FILE
        if spec.partitioned:
            job_name = custom_window_job_name(name)
        run_config = names.run_config([part], window_start=parsed.start.isoformat(), window_end=parsed.end.isoformat())
    elif spec.partitioned:
        partitions_def = partitions_for(spec.schedule)
        keys = partitions_def.get_partition_keys()
        if not keys:
            raise ExtractError(f"extract '{name}': no complete window since the inception date yet")
        if partition and ".." in partition:
            first, last = partition.split("..", 1)
            for key in (first, last):
                _check_key(name, key, keys)
            tags = {RANGE_START_TAG: first, RANGE_END_TAG: last}
        elif partition:
            _check_key(name, partition, keys)
            partition_key = partition
        else:
            partition_key = keys[-1]
    elif partition:
        raise ExtractError(f"extract '{name}' is not partitioned (no schedule.inception_date); drop --partition")
    elif spec.source.uses_window:
        raise ExtractError(
            f"extract '{name}': the query filters by :window_start/:window_end; give --window START..END"
        )

    # Our own progress lines are INFO; Dagster's step-by-step DEBUG events stay in the UI's run logs.
    run_config["loggers"] = {"console": {"config": {"log_level": "INFO"}}}
    result = _execute(project, job_name, run_config, tags, instance, echo, partition_key, through=through, wait=wait)
    if result is None:
        return NOT_STARTED
    if isinstance(result, QueuedRun):
        return RunOutcome(success=True, run_id=result.run_id, queued=True)
    metadata: dict = {}
    for event in result.get_asset_materialization_events():
        metadata = {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
    if result.success:
        echo(
            f"run {result.run_id} succeeded: {metadata.get('rows', 0):,} rows, {metadata.get('bytes', 0):,} bytes "
            f"-> {metadata.get('uri')}"
        )
    else:
        echo(f"run {result.run_id} failed: {failure_message(result)}")
    return RunOutcome(success=result.success, run_id=result.run_id, metadata=metadata)


def launch_integration(
    project: Project,
    loaded: LoadedConnector,
    *,
    full: bool = False,
    full_diff: bool = False,
    keys: list[str] | None = None,
    echo: Callable[[str], None] = print,
    instance: dg.DagsterInstance | None = None,
    through: str = IN_PROCESS,
    wait: bool = False,
) -> RunOutcome:
    """Run an integration's job now: every configuration, only what changed (or all with `full`, or `keys`; the
    whole data set compared with `full_diff`)."""
    names = _names(project, loaded)
    run_config = names.run_config(full=full, full_diff=full_diff, keys=list(keys or []))
    run_config["loggers"] = {"console": {"config": {"log_level": "INFO"}}}
    result = _execute(project, names.job, run_config, {}, instance, echo, through=through, wait=wait)
    if result is None:
        return NOT_STARTED
    if isinstance(result, QueuedRun):
        return RunOutcome(success=True, run_id=result.run_id, queued=True)
    metadata: dict = {}
    for event in result.get_asset_materialization_events():
        part = names.part_of(event.materialization.asset_key)
        metadata[part] = {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
    if result.success:
        for part, values in metadata.items():
            if "scope" in values:  # the data set: what this run read, and why
                echo(f"{part}: {values['rows']:,} rows ({values['scope']})")
            if "sent" in values:
                echo(
                    f"{part}: {values['sent']:,} sent, {values['delivered']:,} delivered, {values['failed']:,} failed, "
                    f"{values['skipped']:,} skipped, {values['unchanged']:,} unchanged"
                    + (f" (audit: {values['audit_path']})" if values.get("audit_path") else "")
                )
        echo(f"run {result.run_id} succeeded")
    else:
        echo(f"run {result.run_id} failed: {failure_message(result)}")
    return RunOutcome(success=result.success, run_id=result.run_id, metadata=metadata)


def launch_import(
    project: Project,
    loaded: LoadedConnector,
    *,
    full: bool = False,
    local_file: str | None = None,
    rebuild: bool = False,
    echo: Callable[[str], None] = print,
    instance: dg.DagsterInstance | None = None,
    through: str = IN_PROCESS,
    wait: bool = False,
) -> RunOutcome:
    """Run an import now (what is new; everything with `full`; one local file; or a rebuild from scratch).

    Schedules and sensors are not touched: the run is one more run of the import's job."""
    if local_file is not None:
        # The run takes files only from the import's drop box: copy it there (the original stays where it is).
        source = Path(local_file)
        dropbox = Storage.for_project(project.base_dir).ingest_dropbox(loaded.name) / uuid.uuid4().hex
        dropbox.mkdir(parents=True)
        shutil.copy2(source, dropbox / source.name)
        local_file = str(dropbox / source.name)
    names = _names(project, loaded)
    run_config = names.run_config(full=full, local_file=local_file, rebuild=rebuild)
    run_config["loggers"] = {"console": {"config": {"log_level": "INFO"}}}
    trigger = "ingest" if local_file else "rebuild" if rebuild else "cli"
    tags = {TRIGGER_TAG: trigger}
    result = _execute(project, names.job, run_config, tags, instance, echo, through=through, wait=wait)
    if result is None:
        return NOT_STARTED
    if isinstance(result, QueuedRun):
        return RunOutcome(success=True, run_id=result.run_id, queued=True)
    metadata: dict = {}
    for event in result.get_asset_materialization_events():
        metadata = {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
    if metadata:
        echo(
            f"{loaded.name}: {metadata['rows_read']:,} rows read, {metadata['inserted']:,} inserted, "
            f"{metadata['updated']:,} updated, {metadata['unchanged_or_older']:,} unchanged or older, "
            f"{metadata['skipped_new']:,} new keys skipped, {metadata['rows_rejected']:,} rejected"
        )
        if "files" in metadata:
            for record in metadata["files"].records:
                data = record.data
                echo(f"  {data['file']}: {data['status']}" + (f" ({data['reason']})" if data["reason"] else ""))
        if "rejections_path" in metadata:
            echo(f"  rejected rows and their reasons: {metadata['rejections_path']}")
    failed_checks = [
        evaluation.check_name for evaluation in result.get_asset_check_evaluations() if not evaluation.passed
    ]
    for name in failed_checks:
        echo(f"check failed: {name}")
    success = result.success and not failed_checks
    if result.success:
        echo(f"run {result.run_id} succeeded" if success else f"run {result.run_id} finished with failed checks")
    else:
        echo(f"run {result.run_id} failed: {failure_message(result)}")
    return RunOutcome(success=success, run_id=result.run_id, metadata=metadata)


def _execute(
    project: Project,
    job: str,
    run_config: dict,
    tags: dict,
    instance,
    echo,
    partition_key: str | None = None,
    *,
    through: str = IN_PROCESS,
    wait: bool = False,
):
    """Run `job` on the instance: in this process, or (`through=AUTO` with a dagster-daemon running against the
    instance) submitted to its run queue, followed to its end with `wait`. Returns the in-process result, a
    FinishedRun read back from the instance, a QueuedRun (submitted, not followed), or None (said why) when it was
    not started: a variable that a connection the job uses needs is not set, or Dagster refused the run config."""
    home = ensure_dagster_home(project.base_dir)
    job_def = definitions_for(project, configured_translator()).resolve_job_def(job)
    used = sorted(set(job_def.required_resource_keys) & set(project.connections))
    missing = [line for name in used for line in missing_variables(project.connections[name], name)]
    if missing:
        echo(f"the run of {job} was not started: {'; '.join(missing)}")
        return None
    tags = {TRIGGER_TAG: "cli", **tags}  # what `history` shows; an import's ingest or rebuild says so itself
    owned = instance is None
    instance = instance or dg.DagsterInstance.get()
    try:
        if through == AUTO:
            workspace = project.base_dir / "workspace.yaml"
            daemon = daemon_running(instance)
            if daemon and workspace.exists():
                return _submit(project, job, run_config, tags, partition_key, instance, home, echo, wait)
            if daemon:
                echo(f"a dagster-daemon is running, but there is no {workspace} to submit through: in this process")
            else:
                echo(f"no dagster-daemon is running against DAGSTER_HOME={home}: running in this process")
        reap_dead_runs(instance, echo)
        return job_def.execute_in_process(
            instance=instance,
            run_config=run_config,
            partition_key=partition_key,
            tags={**tags, **launch_tags()},
            raise_on_error=False,
        )
    except dg.DagsterInvalidConfigError as exc:
        reasons = "; ".join(error.message for error in exc.errors) or str(exc)
        echo(f"the run of {job} was not started: {reasons}")
        return None
    finally:
        if owned:
            instance.dispose()


def _submit(project: Project, job: str, run_config, tags, partition_key, instance, home: Path, echo, wait: bool):
    """Queue the run for the daemon (the queued run coordinator's limits and pools apply; the daemon's run
    monitoring watches it, so it carries no host/pid tags for `reap_dead_runs`)."""
    workspace = project.base_dir / "workspace.yaml"  # the code location, as the daemon loads it
    if partition_key is not None:
        tags = {**tags, PARTITION_TAG: partition_key}
    env = {RESOURCES_ENV: str(project.resources_dir.resolve()), "DAGSTER_HOME": str(home)}
    try:
        run_id = submit(workspace, job, run_config, tags, env, cwd=home)
    except SubmitError as exc:
        echo(f"the run of {job} was not started: {exc}")
        return None
    echo(f"submitted run {run_id} of {job} to the run queue of DAGSTER_HOME={home}; the dagster-daemon launches it")
    if not wait:
        echo("follow it in the UI, or run with --wait")
        return QueuedRun(run_id)
    follow(instance, run_id, echo)
    return FinishedRun(instance, run_id)


def _names(project: Project, loaded: LoadedConnector) -> ConnectorNames:
    """The names the connector's definitions carry, through the translator the UI uses too."""
    return connector_names(loaded, project.connections, configured_translator())


def _check_key(name: str, key: str, keys: list[str]) -> None:
    if key not in keys:
        raise ExtractError(
            f"extract '{name}': '{key}' is not a complete partition; partitions run from {keys[0]} to {keys[-1]}"
        )


def failure_message(result) -> str:
    """The innermost error of the first failed step (or of a resource that did not start), without Dagster's
    wrapper classes."""
    error = None
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
        elif event.event_type_value == "RESOURCE_INIT_FAILURE":
            error = event.event_specific_data.error
        if error is not None:
            break
    if error is None:
        return "the run failed before any step ran; see the run's logs"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    head, _, rest = message.partition(": ")
    return rest if rest and "." in head and " " not in head else message
