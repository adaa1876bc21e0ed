"""What every CLI command shares: loading the project, finding a connector, exit codes, plain tables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.environments import ENVIRONMENT_ENV
from connector_pipelines.spec.loader import RESOURCES_ENV, LoadedConnector, Project, load_project

EXIT_FAILED, EXIT_USAGE = 1, 2

_resources = click.option(
    "--resources",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=RESOURCES_ENV,
    help=f"Folder holding connections.yaml and connectors/ (default: ${RESOURCES_ENV} or ./resources).",
)


def _choose_environment(ctx: click.Context, _param, value: str | None) -> str | None:
    # Set for the whole process before the command runs: the project loads with it, and the run and the state
    # database it opens are that environment's.
    if value:
        os.environ[ENVIRONMENT_ENV] = value
        ctx.meta[ENVIRONMENT_ENV] = value
    return value


_environment = click.option(
    "--env",
    "environment",
    expose_value=False,
    callback=_choose_environment,
    help=f"Environment (sandbox, production...): the connections' values, the ledger and state for it "
    f"(default: ${ENVIRONMENT_ENV}, else production).",
)


def resources_option(command):
    """`--resources` and `--env`, which every command that loads the project takes."""
    return _resources(_environment(command))


def chosen_environment() -> str | None:
    """The `--env` given to this command, if any."""
    context = click.get_current_context(silent=True)
    return context.meta.get(ENVIRONMENT_ENV) if context is not None else None


def _load(resources: Path | None) -> Project:
    try:
        return load_project(resources)
    except ConnectorConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{len(exc.problems)} problem(s) found; nothing was run.", err=True)
        sys.exit(EXIT_USAGE)


def _connector(project: Project, name: str, kind: str | None = None) -> LoadedConnector:
    try:
        loaded = project.connector(name)
    except ConnectorConfigError as exc:
        click.echo(exc.problems[0], err=True)
        sys.exit(EXIT_USAGE)
    if kind is not None and loaded.kind != kind:
        click.echo(f"'{name}' is an {loaded.kind} connector; this command is for {kind}s", err=True)
        sys.exit(EXIT_USAGE)
    return loaded


def _table(rows) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
