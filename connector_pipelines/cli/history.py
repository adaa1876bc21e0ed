"""`history NAME` and `download NAME RUN_ID`, for every kind of connector, with `--json` for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from connector_pipelines.cli.common import EXIT_USAGE, _connector, _load, _table, resources_option


@click.command()
@click.argument("name")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list: each run with everything it recorded.")
@resources_option
def history(name: str, limit: int, as_json: bool, resources: Path | None) -> None:
    """Past runs of a connector, newest first: when, how it was started, status, and what it did (an extract:
    rows, bytes, file, checksum; an integration: records read, sent, delivered, failed, unchanged and its audit
    files; an import: rows read, inserted, updated, rejected, files)."""
    from connector_pipelines.cli.run_history import history_table, run_history

    project = _load(resources)
    loaded = _connector(project, name)
    rows = run_history(project, loaded, limit)
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2, default=str))
        return
    if not rows:
        click.echo(f"no runs of {loaded.kind} '{name}' yet; start one with `connector-pipelines run {name}`")
        return
    _table(history_table(loaded, rows))


@click.command()
@click.argument("name")
@click.argument("run_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="File (an extract's file, an import's data) or folder (an integration's files, several files of an "
    "import) to write; default: in the current folder.",
)
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
@resources_option
def download(
    name: str, run_id: str, output: Path | None, file_format: str, as_json: bool, resources: Path | None
) -> None:
    """What a past run left: an extract's file (fetched back from its destination, its checksum checked), an
    integration's data-set snapshot and audit files, an import's source data as read. RUN_ID may be its first 8
    characters. --format applies to snapshots and audit files; an extract's file is copied as it is."""
    from connector_pipelines.cli.import_history import RunNotFound
    from connector_pipelines.cli.run_history import download_run
    from connector_pipelines.errors import TransportError

    project = _load(resources)
    loaded = _connector(project, name)
    try:
        written = download_run(project, loaded, run_id, output, file_format)
    except (RunNotFound, TransportError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps([{"path": str(path), "rows": rows} for path, rows in written], indent=2))
        return
    for path, rows in written:
        click.echo(f"wrote {path}" + (f" ({rows:,} rows)" if rows is not None else ""))


COMMANDS = (history, download)
