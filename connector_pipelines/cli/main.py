"""`connector-pipelines`: validate, list, schema, run, ui, demo; for integrations also fields, preview, plan,
push, trace and reset; for imports preview, validate NAME and the commands of import_cli.py (automap,
duplicate, delete) and import_ops.py (rebuild, ingest, receive-email); history.py (history, download: every kind);
authorize.py (authorize: an OAuth2 refresh token for an http connection).

Runs go through Dagster (`execute_in_process` on the instance in DAGSTER_HOME), so every run the CLI starts
shows in the UI with its logs and metadata. Exit codes: 0 success, 1 a run or validation failed,
2 bad usage or configuration.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from connector_pipelines.cli import authorize as authorize_cli
from connector_pipelines.cli import partners as partners_cli
from connector_pipelines.cli import prune as prune_cli
from connector_pipelines.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    _connector,
    _load,
    _table,
    chosen_environment,
    resources_option,
)
from connector_pipelines.errors import ConnectorConfigError, ExtractError
from connector_pipelines.spec.loader import RESOURCES_ENV, default_resources_dir, load_project


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Data connectors declared in YAML, run and watched in Dagster."""


@main.command()
@click.argument("name", required=False)
@resources_option
def validate(name: str | None, resources: Path | None) -> None:
    """Check every connection and connector file; exit non-zero on any problem.

    With NAME of an import, also check its mapping against the source's columns and the target table; with NAME
    of an integration, check its key, owner and mapping against the data set's columns.
    """
    try:
        project = load_project(resources)
    except ConnectorConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(exc.problems)} problem(s) found.", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(
        f"OK: {len(project.connectors)} connector(s), {len(project.connections)} connection(s) in "
        f"{project.resources_dir}"
    )
    if name is not None and project.connectors.get(name) and project.connectors[name].kind == "integration":
        from connector_pipelines.integration import inspect as inspection

        problems = _engine_call(inspection.check_mapping_columns, project, project.connectors[name])
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        sys.exit(EXIT_FAILED if problems else 0)
    if name is not None:
        from connector_pipelines.cli.imports import validate_import

        sys.exit(validate_import(project, _connector(project, name, "import")))


@main.command(name="list")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON list: each connector with its live triggers and last run."
)
@resources_option
def list_connectors(as_json: bool, resources: Path | None) -> None:
    """One line per connector: name, kind, schedule, enabled (the YAML), the live state of its schedules and
    sensors (as the UI and the daemon see them), last run time and status."""
    import dagster as dg

    from connector_pipelines.cli.run_history import run_history
    from connector_pipelines.cli.trigger_state import live_trigger_states
    from connector_pipelines.definitions import definitions_for
    from connector_pipelines.factories.describe import trigger_words
    from connector_pipelines.factories.naming import job_name
    from connector_pipelines.factories.translator import configured_translator
    from connector_pipelines.instance import ensure_dagster_home

    project = _load(resources)
    ensure_dagster_home(project.base_dir)
    repository = definitions_for(project, configured_translator()).get_repository_def()
    listed = []
    with dg.DagsterInstance.get() as instance:
        live = live_trigger_states(instance, repository)
        for loaded in project.connectors.values():
            job = job_name(loaded.kind, loaded.name)
            last = next(iter(run_history(project, loaded, limit=1, instance=instance)), None)
            listed.append((loaded, job, live.get(job, []), last))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": loaded.name,
                        "kind": loaded.kind,
                        "environment": project.environment,
                        "schedule": trigger_words(loaded),
                        "enabled": loaded.spec.enabled,
                        "automation": loaded.spec.automation,
                        "depends_on": [u.connector or u.asset for u in loaded.spec.depends_on],
                        "triggers": [{"name": t.name, "running": t.running, "switched": t.switched} for t in triggers],
                        "last_run": None
                        if last is None
                        else {"run_id": last.run_id, "started": last.as_json()["started"], "status": last.status},
                    }
                    for loaded, job, triggers, last in listed
                ],
                indent=2,
            )
        )
        return
    if project.environment:
        click.echo(f"environment: {project.environment}")
    rows = [("NAME", "KIND", "SCHEDULE", "ENABLED", "SCHEDULES/SENSORS (LIVE)", "LAST RUN", "STATUS")]
    for loaded, job, triggers, last in listed:
        enabled = "yes" if loaded.spec.enabled else "no"
        described = ", ".join(state.describe(job, loaded.spec.enabled) for state in triggers) or "-"
        started = last.started.strftime("%Y-%m-%d %H:%M UTC") if last is not None and last.started else "-"
        status = last.status if last else "never run"
        rows.append((loaded.name, loaded.kind, trigger_words(loaded), enabled, described, started, status))
    _table(rows)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead.")
def schema(output: Path | None) -> None:
    """JSON Schema of connections.yaml and of connector files, for editors (yaml-language-server)."""
    from pydantic import TypeAdapter

    from connector_pipelines.spec.connections import ConnectionsFile
    from connector_pipelines.spec.kinds import Connector

    document = {
        "connections.yaml": TypeAdapter(ConnectionsFile).json_schema(),
        "connector": TypeAdapter(Connector).json_schema(),
    }
    text = json.dumps(document, indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@main.command()
@click.argument("name")
@click.option("--window", help="Custom window START..END (ISO dates or datetimes, in the extract's time zone).")
@click.option("--partition", help="One partition key, or FIRST..LAST for a range in one run.")
@click.option(
    "--full",
    is_flag=True,
    help="Integrations: resend every record, whatever the ledger says. Imports: read everything, not only what "
    "is past the watermark.",
)
@click.option(
    "--full-diff",
    is_flag=True,
    help="Integrations: read and compare the whole data set (finds deletes and rows whose updated_at did not "
    "move), sending only what changed; a scheduled run reads only what was updated since the last run.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="With a dagster-daemon running: follow the submitted run to its end (its progress lines), and exit with "
    "its status.",
)
@click.option(
    "--in-process", "in_process", is_flag=True, help="Run in this process even when a dagster-daemon is running."
)
@resources_option
def run(
    name: str,
    window: str | None,
    partition: str | None,
    full: bool,
    full_diff: bool,
    wait: bool,
    in_process: bool,
    resources: Path | None,
) -> None:
    """Run one connector now, through Dagster (the run shows in the UI).

    When a dagster-daemon is running against the instance (DAGSTER_HOME), the run is submitted to its run queue
    (its limits and pools apply; the daemon launches and monitors it) and the command returns once it is queued,
    or follows it to its end with --wait. Without a daemon (or with --in-process) it runs in this process.
    Either way it says which.

    A partitioned extract runs its latest complete window unless --partition or --window says otherwise.
    An integration delivers what changed since the ledger last saw it (everything with --full); with an
    updated_at column it reads only the rows updated since its last run, and the whole data set every
    full_diff_every or with --full-diff.
    An import loads what is new: rows past its watermark (everything with --full), or the files that arrived.
    A disabled connector (enabled: false) is refused, whatever the options.
    """
    if window and partition:
        raise click.UsageError("give --window or --partition, not both")
    if wait and in_process:
        raise click.UsageError("--wait follows a run the daemon launches; an --in-process run ends before it returns")
    from connector_pipelines.runs import AUTO, IN_PROCESS

    through = IN_PROCESS if in_process else AUTO
    if chosen_environment() and not in_process:
        # The daemon's code server loaded its own environment: a run in another one is run here.
        click.echo(f"--env {chosen_environment()}: running in this process, in that environment")
        through = IN_PROCESS
    project = _load(resources)
    loaded = _connector(project, name)
    from connector_pipelines.factories.switch import disabled_reason

    off = disabled_reason(loaded)
    if off:  # the assets refuse too (the UI, GraphQL); saying it here starts no run that can only fail
        click.echo(f"{off}: nothing was run; set enabled: true in that file to run it", err=True)
        sys.exit(EXIT_USAGE)
    if loaded.kind in ("integration", "import"):
        if window or partition:
            raise click.UsageError(f"--window and --partition are for extracts; an {loaded.kind} takes --full")
        from connector_pipelines.runs import launch_import, launch_integration

        if full_diff and loaded.kind != "integration":
            raise click.UsageError("--full-diff is for integrations")
        if loaded.kind == "integration":
            outcome = launch_integration(
                project, loaded, full=full, full_diff=full_diff, echo=click.echo, through=through, wait=wait
            )
        else:
            outcome = launch_import(project, loaded, full=full, echo=click.echo, through=through, wait=wait)
        sys.exit(0 if outcome.success else EXIT_FAILED)
    if full or full_diff:
        raise click.UsageError("--full is for integrations and imports, --full-diff for integrations")
    from connector_pipelines.runs import launch_extract

    try:
        outcome = launch_extract(
            project, loaded, window=window, partition=partition, echo=click.echo, through=through, wait=wait
        )
    except ExtractError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(0 if outcome.success else EXIT_FAILED)


def _engine_call(function, *args, **kwargs):
    """Run an engine read; configuration problems and unreachable systems exit 2 with the reason."""
    from connector_pipelines.mapping.engine import MappingError

    try:
        return function(*args, **kwargs)
    except (ConnectorConfigError, MappingError) as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # a database that cannot be reached, a missing table: say which, not a traceback
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError | OSError):
            click.echo(f"cannot read the data set: {str(exc).splitlines()[0]}", err=True)
            sys.exit(EXIT_FAILED)
        raise


configuration_option = click.option("--configuration", "-c", help="Only this configuration (default: all).")


@main.command()
@click.argument("name")
@resources_option
def fields(name: str, resources: Path | None) -> None:
    """Both sides of an integration's mapping: the data set's columns, the target's fields, the mappings."""
    from connector_pipelines.integration import inspect as inspection

    project = _load(resources)
    loaded = _connector(project, name, "integration")
    report = _engine_call(inspection.fields, project, loaded)
    click.echo("SOURCE FIELDS (data set columns)")
    _table([("COLUMN", "TYPE"), *report.source])
    click.echo("\nTARGET FIELDS")
    _table([("FIELD", "TYPE", "REQUIRED"), *((n, t, "yes" if r else "") for n, t, r in report.target)])
    for configuration, rows in report.mappings.items():
        click.echo(f"\nMAPPING {configuration}")
        _table([("TARGET", "FROM", "NOTE"), *rows])
    problems = _engine_call(inspection.check_mapping_columns, project, loaded)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    sys.exit(EXIT_FAILED if problems else 0)


@main.command()
@click.argument("name")
@click.option("--rows", default=10, show_default=True, help="How many records.")
@configuration_option
@resources_option
def preview(name: str, rows: int, configuration: str | None, resources: Path | None) -> None:
    """Integrations: the first mapped payloads, as the requests they would make (nothing is sent).
    Imports: the first source rows (this tests the connection and the query; a schedule waits for one)."""
    from connector_pipelines.integration import inspect as inspection

    project = _load(resources)
    loaded = _connector(project, name)
    if loaded.kind == "import":
        from connector_pipelines.cli.imports import preview_import

        sys.exit(preview_import(project, loaded, rows))
    loaded = _connector(project, name, "integration")
    out = _engine_call(inspection.preview, project, loaded, configuration, rows)
    failed = False
    for config_name, items in out.items():
        click.echo(f"== {config_name}")
        for item in items:
            if "error" in item:
                failed = True
                click.echo(f"key {item['key']}: FAILS: {item['error']}")
            else:
                click.echo(f"key {item['key']}: {item['method']} {item['path']}\n  {item['body'] or ''}")
    sys.exit(EXIT_FAILED if failed else 0)


@main.command()
@click.argument("name")
@click.option("--full", is_flag=True, help="Plan a full resync (every record).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every record's planned operation (and the request it would make) to this file.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["parquet", "csv"]),
    help="The --output file's format (default: from its name, .parquet or .csv).",
)
@configuration_option
@resources_option
def plan(
    name: str,
    full: bool,
    output: Path | None,
    output_format: str | None,
    configuration: str | None,
    resources: Path | None,
) -> None:
    """Dry run: how many creates, updates, deletes and unchanged records, with sample requests. Sends nothing.

    \b
    Exit codes:
      0  every record would go out (or is unchanged, skipped, held, waiting for
         its retry time or a dead letter)
      1  some records would fail before any request: they do not map, their key
         is in the data set twice, or their request cannot be built; or the data
         set cannot be read
      2  bad usage or configuration (unknown connector, bad --output name, ...)
    """
    from connector_pipelines.integration import inspect as inspection
    from connector_pipelines.integration.plan_output import PlanFile, PlanFormatError, plan_format

    if output_format is not None and output is None:
        raise click.UsageError("--format is for the --output file; give --output FILE too")
    project = _load(resources)
    loaded = _connector(project, name, "integration")
    plan_file = None
    if output is not None:
        try:
            plan_file = PlanFile(output, plan_format(output, output_format))
        except (PlanFormatError, OSError) as exc:
            raise click.UsageError(f"--output: {exc}") from None
    try:
        reports = _engine_call(inspection.plan, project, loaded, configuration, full, plan_file)
    except BaseException:  # sys.exit included: no half-written file is left under the name asked for
        if plan_file is not None:
            plan_file.abandon()
        raise
    written = plan_file.close() if plan_file is not None else None
    failed = 0
    for config_name, report in reports.items():
        c = report.counts
        failed += c["failed"]
        click.echo(
            f"== {config_name}: {c['create']:,} create, {c['update']:,} update, {c['delete']:,} delete, "
            f"{c['unchanged']:,} unchanged, {c['skipped']:,} skipped, {c['failed']:,} failing to map, "
            f"{c['held']:,} held, {c['backoff']:,} waiting for their retry time, {c['dead_letter']:,} dead letter"
        )
        for operation, rule in report.recovery.items():  # what becomes of a record whose delivery is in doubt
            click.echo(f"  recovery of {operation} ({rule.method}): {rule.mode}: {rule.why}")
        for operation, samples in report.samples.items():
            for sample in samples:
                click.echo(
                    f"  {operation} key {sample['key']}: {sample['method']} {sample['path']} {sample['body'] or ''}"
                )
        for failure in report.failures[:10]:
            click.echo(f"  fails: key {failure['key']}: {failure['error']}")
        for status, label in (("backoff", "waits"), ("dead_letter", "dead letter")):  # refused in earlier runs
            for row in [r for r in report.rows if r["status"] == status][:10]:
                click.echo(f"  {label}: key {row['key']}: {row['error']}")
    if written is not None:
        click.echo(f"wrote {written:,} planned record(s) to {output}")
    if failed:
        click.echo(f"{failed:,} record(s) would fail before any request is sent", err=True)
    sys.exit(EXIT_FAILED if failed else 0)


@main.command()
@click.argument("name")
@click.option(
    "--key", "keys", multiple=True, required=True, help="A record key (repeat for several; 'a|b' for a composite key)."
)
@resources_option
def push(name: str, keys: tuple[str, ...], resources: Path | None) -> None:
    """Push chosen records now, changed or not. Refused when the integration is off or roles do not allow it.

    A dead letter, or a record waiting for its retry time, is sent now and counted from attempt 1 again; a record
    in doubt goes out under the Idempotency-Key it was in flight with.
    """
    project = _load(resources)
    loaded = _connector(project, name, "integration")
    if not loaded.spec.enabled:
        click.echo(f"integration '{name}' is off (enabled: false): manual pushes are refused", err=True)
        sys.exit(EXIT_USAGE)
    from connector_pipelines.integration import inspect as inspection
    from connector_pipelines.runs import launch_integration

    for line in _engine_call(inspection.revivals, project, loaded, keys):
        click.echo(line)

    outcome = launch_integration(project, loaded, keys=list(keys), echo=click.echo)
    ok = outcome.success
    for part, values in outcome.metadata.items():
        table = values.get("records")
        for record in getattr(table, "records", []) or []:
            row = record.data
            click.echo(f"{part}: key {row['key']}: {row['status']}" + (f" ({row['error']})" if row["error"] else ""))
            ok = ok and row["status"] == "delivered"
        if "sent" in values:
            read = outcome.metadata.get("data_set", {}).get("rows", 0)
            if read < len(keys):
                click.echo(f"{part}: {len(keys) - read} key(s) are not in the data set", err=True)
                ok = False
    sys.exit(0 if ok else EXIT_FAILED)


@main.command()
@click.argument("name")
@click.argument("key")
@configuration_option
@resources_option
def trace(name: str, key: str, configuration: str | None, resources: Path | None) -> None:
    """Every attempt for one record: when, operation, outcome, HTTP status, idempotency key, error; first, what the
    ledger holds for it now (for a record the target refused: when it is retried, or that it is a dead letter)."""
    from connector_pipelines.integration import inspect as inspection

    project = _load(resources)
    loaded = _connector(project, name, "integration")
    for config_name, state in _engine_call(inspection.record_states, project, loaded, key, configuration):
        click.echo(f"{config_name}: {state}")
    ledger = inspection.ledger_for(project)
    try:
        attempts = ledger.trace(name, key, configuration)
    finally:
        ledger.dispose()
    if not attempts:
        click.echo(f"no attempts recorded for key {key} of '{name}'", err=True)
        sys.exit(EXIT_FAILED)
    rows = [
        ("FINISHED", "CONFIGURATION", "OPERATION", "OUTCOME", "HTTP", "REQUESTS", "IDEMPOTENCY KEY", "RUN", "ERROR")
    ]
    for a in attempts:
        rows.append(
            (
                a["finished_at"].strftime("%Y-%m-%d %H:%M:%S") if a["finished_at"] else "",
                a["configuration"],
                a["operation"],
                a["outcome"],
                a["http_status"] or "",
                a["requests"],
                a["idempotency_key"] or "",
                a["run_id"][:8],
                a["error"] or "",
            )
        )
    _table(rows)


@main.command()
@click.argument("name")
@configuration_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@resources_option
def reset(name: str, configuration: str | None, yes: bool, resources: Path | None) -> None:
    """Forget what the ledger knows of an integration's records: the next run is a full sync (the audit stays)."""
    from connector_pipelines.integration import inspect as inspection

    project = _load(resources)
    loaded = _connector(project, name, "integration")
    _engine_call(inspection.configuration_of, loaded.spec, configuration)
    if not yes:
        click.confirm(f"Forget the delivery state of '{name}'? The next run resends every record", abort=True)
    ledger = inspection.ledger_for(project)
    try:
        count = ledger.reset(name, configuration)
    finally:
        ledger.dispose()
    click.echo(f"forgot {count:,} record state(s) of '{name}'; the next run is a full sync")


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option(
    "--demo-target/--no-demo-target",
    default=False,
    help="Also run the demo's loopback CRM (http://127.0.0.1:18765) while the UI is open.",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="Only the webserver, in Dagster's read-only mode: runs, assets and logs can be viewed, nothing launched, "
    "re-executed or switched on/off. For viewers, beside the operators' UI and daemon.",
)
@resources_option
def ui(port: int, demo_target: bool, read_only: bool, resources: Path | None) -> None:
    """Open the Dagster UI (dagster dev: webserver and daemon) on this project's connectors, on 127.0.0.1."""
    import subprocess

    from connector_pipelines.instance import ensure_dagster_home

    if read_only and demo_target:
        raise click.UsageError("--demo-target starts the demo CRM for runs; a read-only UI starts no run")
    project = _load(resources)
    home = ensure_dagster_home(project.base_dir)
    os.environ[RESOURCES_ENV] = str(project.resources_dir.resolve())
    workspace = project.base_dir / "workspace.yaml"
    if read_only:
        # No daemon: a viewer's webserver starts nothing; the operators' daemon runs the schedules and sensors.
        command = [sys.executable, "-m", "dagster_webserver", "--read-only", "-w", str(workspace)]
        command += ["-p", str(port), "-h", "127.0.0.1"]
    else:
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-p", str(port), "-h", "127.0.0.1"]
    mode = " read-only" if read_only else ""
    click.echo(f"Dagster UI{mode} on http://127.0.0.1:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    if not demo_target:
        # Started from DAGSTER_HOME so Dagster does not mistake the project's template dagster.yaml for the instance's.
        os.chdir(home)
        os.execvp(sys.executable, command)
    from connector_pipelines.demo.crm_api import CrmApi
    from connector_pipelines.demo.run import DEMO_TARGET_PORT

    with CrmApi(port=DEMO_TARGET_PORT) as crm:
        click.echo(f"demo CRM on {crm.base_url} (stops with the UI)")
        sys.exit(subprocess.call(command, cwd=home))


@main.command()
@click.option("--scale", default=1.0, show_default=True, help="Multiply the demo data volume.")
def demo(scale: float) -> None:
    """Seed the demo warehouse and run every demo connector end to end on embedded defaults."""
    from connector_pipelines.demo.run import run_demo

    sys.exit(0 if run_demo(default_resources_dir(), scale=scale, echo=click.echo) else EXIT_FAILED)


def _add_import_commands() -> None:
    from connector_pipelines.cli import history as history_cli
    from connector_pipelines.cli import import_ops as import_ops_cli
    from connector_pipelines.cli.imports import automap, delete, duplicate

    for command in (automap, duplicate, delete, *import_ops_cli.COMMANDS, *history_cli.COMMANDS):
        main.add_command(command)


_add_import_commands()
main.add_command(prune_cli.prune)
for _command in partners_cli.COMMANDS:
    main.add_command(_command)
main.add_command(authorize_cli.authorize)

if __name__ == "__main__":
    main()
