"""`connector-pipelines partners add|rotate|disable|enable|list` and `serve-files`: the file exchange we host.

Passwords are printed once, by `add` and `rotate`, and never stored: the state database keeps a scrypt hash.
Exit codes: 0 done, 1 failed, 2 bad usage (an unknown partner, a partner without credentials).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from connector_pipelines.cli.common import EXIT_FAILED, EXIT_USAGE, _load, _table, resources_option
from connector_pipelines.spec.loader import Project


def _credentials(project: Project):
    from connector_pipelines.state.database import default_state_url
    from connector_pipelines.state.partner_credentials import PartnerCredentials
    from connector_pipelines.storage import Storage

    return PartnerCredentials(default_state_url(Storage.for_project(project.base_dir).root))


def _partner(project: Project, name: str):
    partners = project.partners.partners if project.partners else []
    found = next((partner for partner in partners if partner.name == name), None)
    if found is None:
        known = ", ".join(partner.name for partner in partners) or "none"
        click.echo(
            f"no partner named '{name}' in {project.resources_dir / 'partners.yaml'}; partners: {known}", err=True
        )
        sys.exit(EXIT_USAGE)
    return found


@click.group()
def partners() -> None:
    """Partners of the file exchange (partners.yaml): their credentials and usage."""


@partners.command()
@click.argument("name")
@click.option(
    "--ssh-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The partner's SSH public key (a .pub file) instead of a password.",
)
@resources_option
def add(name: str, ssh_key: Path | None, resources: Path | None) -> None:
    """Give partner NAME credentials: a new password, printed once, or (--ssh-key) its public key.

    For a partner that already has credentials, --ssh-key authorizes one more key."""
    from connector_pipelines.state.partner_credentials import UnknownPartner

    project = _load(resources)
    _partner(project, name)
    credentials = _credentials(project)
    try:
        key = ssh_key.read_text(encoding="utf-8") if ssh_key else None
        try:
            password = credentials.add(name, key)
        except ValueError as exc:
            if key is None or "already has credentials" not in str(exc):
                raise
            credentials.add_key(name, key)
            password = None
    except (ValueError, UnknownPartner) as exc:
        click.echo(f"partner '{name}': {exc}", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        credentials.dispose()
    _folders(project, name)
    if password is None:
        click.echo(f"partner '{name}': SSH public key registered")
        return
    click.echo(f"partner '{name}': password (shown once; give it to the partner over a safe channel):")
    click.echo(password)


@partners.command()
@click.argument("name")
@resources_option
def rotate(name: str, resources: Path | None) -> None:
    """A new password for partner NAME, printed once; the old one stops working at once."""
    from connector_pipelines.state.partner_credentials import UnknownPartner

    project = _load(resources)
    _partner(project, name)
    credentials = _credentials(project)
    try:
        password = credentials.rotate(name)
    except UnknownPartner:
        click.echo(f"partner '{name}' has no credentials yet; use `partners add {name}`", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        credentials.dispose()
    click.echo(f"partner '{name}': new password (shown once; the old one no longer works):")
    click.echo(password)


def _switch(name: str, resources: Path | None, enabled: bool) -> None:
    from connector_pipelines.state.partner_credentials import UnknownPartner

    project = _load(resources)
    _partner(project, name)
    credentials = _credentials(project)
    try:
        credentials.enable(name) if enabled else credentials.disable(name)
    except UnknownPartner:
        click.echo(f"partner '{name}' has no credentials yet; use `partners add {name}`", err=True)
        sys.exit(EXIT_USAGE)
    finally:
        credentials.dispose()
    click.echo(f"partner '{name}': {'enabled' if enabled else 'disabled: its logins are refused'}")


@partners.command()
@click.argument("name")
@resources_option
def disable(name: str, resources: Path | None) -> None:
    """Refuse every login of partner NAME (its files stay)."""
    _switch(name, resources, enabled=False)


@partners.command()
@click.argument("name")
@resources_option
def enable(name: str, resources: Path | None) -> None:
    """Let partner NAME log in again after `disable`."""
    _switch(name, resources, enabled=True)


@partners.command(name="list")
@resources_option
def list_partners(resources: Path | None) -> None:
    """One line per partner: methods, enabled, credentials, last login, inbox use against its quota."""
    from connector_pipelines.partners.layout import PartnerFolders, folder_usage
    from connector_pipelines.state.partner_credentials import UnknownPartner
    from connector_pipelines.storage import Storage

    project = _load(resources)
    storage_root = Storage.for_project(project.base_dir).root
    credentials = _credentials(project)
    rows = [("NAME", "METHODS", "ENABLED", "CREDENTIALS", "LAST LOGIN", "FILES USED", "BYTES USED")]
    try:
        for partner in project.partners.partners if project.partners else []:
            try:
                login = credentials.login(partner.name)
            except UnknownPartner:
                login = None
            kinds = (
                []
                if login is None
                else (["password"] if login.has_password else [])
                + ([f"{len(login.ssh_keys)} key(s)"] if login.ssh_keys else [])
            )
            enabled = partner.enabled and login is not None and login.enabled
            last = login.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if login and login.last_login_at else "never"
            used = folder_usage(PartnerFolders.of(storage_root, partner.name).inbox)
            quota = partner.quota
            rows.append(
                (
                    partner.name,
                    ",".join(partner.methods),
                    "yes" if enabled else "no",
                    ", ".join(kinds) or "none (partners add)",
                    last,
                    f"{used.files}/{quota.max_files}",
                    f"{used.bytes}/{quota.max_bytes}",
                )
            )
    finally:
        credentials.dispose()
    _table(rows)


def _folders(project: Project, name: str) -> None:
    from connector_pipelines.partners.layout import PartnerFolders
    from connector_pipelines.storage import Storage

    PartnerFolders.of(Storage.for_project(project.base_dir).root, name).ensure()


@click.command(name="serve-files")
@click.option("--sftp-host", default="127.0.0.1", show_default=True, help="Address the SFTP server listens on.")
@click.option("--sftp-port", type=click.IntRange(0, 65535), default=2222, show_default=True, help="SFTP port.")
@click.option("--ftps-port", type=click.IntRange(0, 65535), help="Also serve explicit FTPS on this port.")
@click.option("--ftps-host", help="Address the FTPS server listens on (default: the SFTP host).")
@click.option(
    "--ftps-passive-ports",
    callback=lambda _context, _parameter, value: _port_range(value),
    help="FTPS data ports, FIRST-LAST (to open in a firewall; default: any free port).",
)
@click.option("--ftps-masquerade-address", help="The public address FTPS clients are told to connect to (behind NAT).")
@click.option(
    "--lockout-after",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Failed logins (per partner, per address) before logins are locked out.",
)
@click.option(
    "--lockout-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=30,
    show_default=True,
    help="The first lockout; it doubles with each further failure, up to an hour.",
)
@resources_option
def serve_files(
    sftp_host: str,
    sftp_port: int,
    ftps_port: int | None,
    ftps_host: str | None,
    ftps_passive_ports: range | None,
    ftps_masquerade_address: str | None,
    lockout_after: int,
    lockout_seconds: float,
    resources: Path | None,
) -> None:
    """Host the partners' file exchange: SFTP (and FTPS with --ftps-port) until stopped.

    Each partner of partners.yaml logs in with its name and the credentials of `partners add`, and sees two
    folders: inbox/ (uploads, which an import of a `partner` connection picks up) and outbox/ (downloads).
    """
    from connector_pipelines.partners.exchange import Exchange
    from connector_pipelines.partners.limits import LoginThrottle, ThrottlePolicy
    from connector_pipelines.partners.serve import ServeOptions, serve
    from connector_pipelines.storage import Storage

    project = _load(resources)
    specs = {partner.name: partner for partner in (project.partners.partners if project.partners else [])}
    if not specs:
        click.echo(f"no partners in {project.resources_dir / 'partners.yaml'}; nothing to serve", err=True)
        sys.exit(EXIT_USAGE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # asyncssh's own log says every step of every session; its warnings are enough (it never logs passwords).
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    policy = ThrottlePolicy(free_failures=lockout_after, base_seconds=lockout_seconds)
    exchange = Exchange(
        storage_root=Storage.for_project(project.base_dir).root.resolve(),
        partners=specs,
        credentials=_credentials(project),
        throttle=LoginThrottle(policy),
    )

    def say(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    try:
        options = ServeOptions(sftp_host, sftp_port, ftps_host, ftps_port, ftps_passive_ports, ftps_masquerade_address)
        serve(exchange, options, say)
    except OSError as exc:
        click.echo(f"cannot serve files: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        exchange.credentials.dispose()


def _port_range(value: str | None) -> range | None:
    """'30000-30099' -> range(30000, 30100); None stays None."""
    if value is None:
        return None
    try:
        first, last = (int(part) for part in value.split("-", 1))
    except ValueError:
        raise click.BadParameter("write FIRST-LAST, such as 30000-30099") from None
    if not 1024 <= first <= last <= 65535:
        raise click.BadParameter("the ports must be between 1024 and 65535, the first no higher than the last")
    return range(first, last + 1)


COMMANDS = (partners, serve_files)
