"""CLI commands for running imports: rebuild, ingest, receive-email. (`run NAME [--full]`, `history` and
`download` are shared by every kind: main.py and history.py; spec editing lives in imports.py.)"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from connector_pipelines.cli.common import EXIT_FAILED, EXIT_USAGE, _connector, _load, resources_option
from connector_pipelines.spec.loader import LoadedConnector, Project


def _import(name: str, resources: Path | None) -> tuple[Project, LoadedConnector]:
    project = _load(resources)
    return project, _connector(project, name, "import")


@click.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@resources_option
def rebuild(name: str, yes: bool, resources: Path | None) -> None:
    """Forget what the import knows (watermark, files seen) and import everything again.

    File imports move the archived files that match the pattern back into the folder first.
    """
    from connector_pipelines.runs import launch_import

    project, loaded = _import(name, resources)
    if not yes:
        click.confirm(f"Forget import '{name}''s watermark and file records and import everything again?", abort=True)
    outcome = launch_import(project, loaded, rebuild=True, echo=click.echo)
    sys.exit(0 if outcome.success else EXIT_FAILED)


@click.command()
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@resources_option
def ingest(name: str, file: Path, resources: Path | None) -> None:
    """Load one local file (CSV, TSV, Parquet, JSON Lines, gzip) through an import's mapping, now.

    The file is copied; the original is left where it is. A file that is rejected exits 1 with the reason.
    """
    from connector_pipelines.runs import launch_import

    project, loaded = _import(name, resources)
    outcome = launch_import(project, loaded, local_file=str(file.resolve()), echo=click.echo)
    rejected = outcome.metadata.get("files_rejected", 0)
    sys.exit(0 if outcome.success and not rejected else EXIT_FAILED)


def _size(context: click.Context, parameter: click.Parameter, value: str) -> int:
    """A click callback: '50MiB', '50MB' or plain bytes -> bytes."""
    from connector_pipelines.imports.email_inbox import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(name="receive-email")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2525, show_default=True, help="SMTP port.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Certificate for STARTTLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Its private key.")
@click.option("--require-tls", is_flag=True, help="Refuse mail sent without STARTTLS.")
@click.option(
    "--max-sessions",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Connections at once; the next is answered 421 and closed.",
)
@click.option(
    "--max-message-size",
    default="50MiB",
    show_default=True,
    callback=_size,
    help="Largest message (bytes, or 50MB, 50MiB ...), advertised as SIZE; a bigger one is refused with 552.",
)
@click.option(
    "--max-recipients",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="RCPT commands a message; more are answered 452.",
)
@click.option(
    "--inbox-quota",
    default="10GiB",
    show_default=True,
    callback=_size,
    help="Most an import's inbox folder may hold (waiting files, archive, quarantine); then mail is refused with 452.",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=300,
    show_default=True,
    help="Seconds a command (a whole DATA transfer included) may take before the session is ended.",
)
@resources_option
def receive_email(
    host: str,
    port: int,
    tls_cert: str | None,
    tls_key: str | None,
    require_tls: bool,
    max_sessions: int,
    max_message_size: int,
    max_recipients: int,
    inbox_quota: int,
    timeout_seconds: float,
    resources: Path | None,
) -> None:
    """Receive files by email for every enabled email import (SMTP; runs until stopped with Ctrl-C).

    Mail to an import's address from a sender on its allow-list is kept: attachments matching its pattern are
    saved into its inbox folder, where the import's file sensor picks them up. Anything else is refused, and so
    is mail past the limits (sessions, message size, recipients, inbox quota, command timeout).
    """
    from connector_pipelines.imports.email_inbox import EmailReceiver
    from connector_pipelines.imports.email_routes import inbox_routes

    project = _load(resources)
    routes = inbox_routes(project)
    if not routes:
        click.echo("no enabled import has an email source; nothing to receive", err=True)
        sys.exit(EXIT_USAGE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    receiver = EmailReceiver(
        routes,
        host,
        port,
        max_message_bytes=max_message_size,
        max_sessions=max_sessions,
        max_recipients=max_recipients,
        inbox_quota_bytes=inbox_quota,
        timeout_seconds=timeout_seconds,
        tls_cert=tls_cert,
        tls_key=tls_key,
        require_tls=require_tls,
    )
    try:
        receiver.start()
    except OSError as exc:
        click.echo(f"cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)
    for route in routes:
        click.echo(f"{route.address} -> {route.folder} (from {', '.join(route.allowed_senders)})")
    click.echo(f"limits: {receiver.describe_limits()}")
    click.echo(f"receiving on {host}:{receiver.port}; Ctrl-C stops")
    sys.stdout.flush()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


COMMANDS = (rebuild, ingest, receive_email)
