"""`connector-pipelines prune [NAME ...] [--dry-run]`: apply the integrations' `retention:` now.

Each delivery run applies it when it ends; this command is for a connector whose runs stopped, for a retention
just shortened, or to see what a retention setting would remove before trusting it (`--dry-run`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from connector_pipelines.cli.common import EXIT_FAILED, _connector, _load, _table, resources_option
from connector_pipelines.spec.loader import LoadedConnector, Project

_KIND_LABELS = {"snapshots": "snapshots", "audit_files": "audit files", "attempts": "attempts"}


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, and remove nothing.")
@resources_option
def prune(names: tuple[str, ...], dry_run: bool, resources: Path | None) -> None:
    """Remove the data set snapshots, audit files and attempt history that each integration's `retention:` lets
    go (every delivery run also does this when it ends). Without NAME, every integration of the project.

    Always kept: the newest snapshot and audit file of each folder, each configuration's latest attempt, attempts
    not yet written back, and the ledger's record states (what makes delivery exactly-once). Exit codes: 0 done,
    1 a file or the ledger could not be changed, 2 an unknown or non-integration NAME, or a broken project.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from connector_pipelines.errors import TransportError
    from connector_pipelines.integration.inspect import ledger_for
    from connector_pipelines.integration.retention import apply_retention
    from connector_pipelines.state.ledger import utc_now
    from connector_pipelines.state.resources import project_storage

    project = _load(resources)
    connectors = _integrations(project, names)
    if not connectors:
        click.echo("no integration connectors in this project; nothing to prune")
        return
    storage = project_storage(project)
    ledger = ledger_for(project)
    reports = []
    try:
        for loaded in connectors:
            reports.append(apply_retention(loaded.spec, storage, ledger, now=utc_now(), dry_run=dry_run))
    except (OSError, SQLAlchemyError, TransportError) as exc:
        _echo_reports(reports, dry_run)
        where = connectors[len(reports)].name
        click.echo(f"cannot prune '{where}': {str(exc).splitlines()[0]}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        ledger.dispose()
    _echo_reports(reports, dry_run)


def _integrations(project: Project, names: tuple[str, ...]) -> list[LoadedConnector]:
    """The named integrations (each once, in the order given), or every integration by name."""
    if names:
        return [_connector(project, name, "integration") for name in dict.fromkeys(names)]
    return [
        project.connectors[name]
        for name in sorted(project.connectors)
        if project.connectors[name].kind == "integration"
    ]


def _echo_reports(reports, dry_run: bool) -> None:
    if not reports:
        return
    rows: list[tuple] = [("CONNECTOR", "KIND", "PART", "WOULD REMOVE" if dry_run else "REMOVED", "SIZE")]
    for report in reports:
        if report.nothing_removed:
            rows.append((report.connector, "", "", "nothing", ""))
        for removal in report.removals:
            amount = f"{removal.count:,} {'attempt' if removal.kind == 'attempts' else 'file'}(s)"
            size = human_bytes(removal.bytes) if removal.kind != "attempts" else ""
            rows.append((report.connector, _KIND_LABELS[removal.kind], removal.part, amount, size))
    _table(rows)
    files = sum(r.files for r in reports)
    attempts = sum(r.attempts_deleted for r in reports)
    size = sum(r.bytes() for r in reports)
    verb = "would remove" if dry_run else "removed"
    tail = " (dry run: nothing was removed)" if dry_run else ""
    click.echo(
        f"total: {verb} {files:,} file(s) ({human_bytes(size)}) and {attempts:,} attempt(s) "
        f"across {len(reports)} connector(s){tail}"
    )


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    if count < 1024:
        return f"{count:,} B"
    value, units = count / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"
