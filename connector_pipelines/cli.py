"""`connector-pipelines`: validate, list, schema, run, ui, demo.

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

from connector_pipelines.errors import ConnectorConfigError, ExtractError
from connector_pipelines.spec.loader import RESOURCES_ENV, Project, default_resources_dir, load_project

EXIT_FAILED, EXIT_USAGE = 1, 2


def _load(resources: Path | None) -> Project:
    try:
        return load_project(resources)
    except ConnectorConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(exc.problems)} problem(s) found; nothing was run.", err=True)
        sys.exit(EXIT_USAGE)


resources_option = click.option(
    "--resources",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=RESOURCES_ENV,
    help=f"Folder holding connections.yaml and connectors/ (default: ${RESOURCES_ENV} or ./resources).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Data connectors declared in YAML, run and watched in Dagster."""


@main.command()
@resources_option
def validate(resources: Path | None) -> None:
    """Check every connection and connector file; exit non-zero on any problem."""
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


@main.command(name="list")
@resources_option
def list_connectors(resources: Path | None) -> None:
    """One line per connector: name, kind, schedule, on/off, last run time and status."""
    import dagster as dg

    from connector_pipelines.dagster_home import ensure_dagster_home
    from connector_pipelines.factories.extract import cron_for, job_name

    project = _load(resources)
    ensure_dagster_home(project.base_dir)
    rows = [("NAME", "KIND", "SCHEDULE", "STATE", "LAST RUN", "STATUS")]
    with dg.DagsterInstance.get() as instance:
        for loaded in project.connectors.values():
            spec = loaded.spec.extract
            schedule = spec.schedule
            if schedule is None:
                when = "manual"
            elif spec.partitioned:
                when = f"{schedule.cadence} from {schedule.inception_date}" + (
                    f", rolling {schedule.rolling}" if schedule.rolling else ""
                )
            else:
                when = f"cron {cron_for(schedule)}"
            state = "on" if loaded.spec.enabled and (schedule is None or schedule.enabled) else "off"
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name(loaded.name)), limit=1)
            last = runs[0] if runs else None
            started = "-"
            if last is not None:
                record = instance.get_run_record_by_id(last.run_id)
                moment = record.start_time or record.create_timestamp.timestamp() if record else None
                if moment:
                    import datetime as dt

                    started = dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            rows.append((loaded.name, loaded.kind, when, state, started, last.status.value if last else "never run"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead.")
def schema(output: Path | None) -> None:
    """JSON Schema of connections.yaml and of connector files, for editors (yaml-language-server)."""
    from pydantic import TypeAdapter

    from connector_pipelines.spec.models import ConnectionsFile, ExtractConnector

    document = {
        "connections.yaml": TypeAdapter(ConnectionsFile).json_schema(),
        "connector": TypeAdapter(ExtractConnector).json_schema(),
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
@resources_option
def run(name: str, window: str | None, partition: str | None, resources: Path | None) -> None:
    """Run one connector now, through Dagster (the run shows in the UI).

    A partitioned extract runs its latest complete window unless --partition or --window says otherwise.
    """
    if window and partition:
        raise click.UsageError("give --window or --partition, not both")
    project = _load(resources)
    try:
        loaded = project.connector(name)
    except ConnectorConfigError as exc:
        click.echo(exc.problems[0], err=True)
        sys.exit(EXIT_USAGE)
    from connector_pipelines.runs import launch_extract

    try:
        outcome = launch_extract(project, loaded, window=window, partition=partition, echo=click.echo)
    except ExtractError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(0 if outcome.success else EXIT_FAILED)


@main.command()
@click.option("--port", default=3000, show_default=True)
@resources_option
def ui(port: int, resources: Path | None) -> None:
    """Open the Dagster UI (dagster dev) on this project's connectors."""
    from connector_pipelines.dagster_home import ensure_dagster_home

    project = _load(resources)
    home = ensure_dagster_home(project.base_dir)
    os.environ[RESOURCES_ENV] = str(project.resources_dir.resolve())
    workspace = project.base_dir / "workspace.yaml"
    # Started from DAGSTER_HOME so Dagster does not mistake the project's template dagster.yaml for the instance's.
    os.chdir(home)
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-p", str(port), "-h", "127.0.0.1"],
    )


@main.command()
@click.option("--scale", default=1.0, show_default=True, help="Multiply the demo data volume.")
def demo(scale: float) -> None:
    """Seed the demo warehouse and run every demo connector end to end on embedded defaults."""
    from connector_pipelines.demo.run import run_demo

    sys.exit(0 if run_demo(default_resources_dir(), scale=scale, echo=click.echo) else EXIT_FAILED)


if __name__ == "__main__":
    main()
