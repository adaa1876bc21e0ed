"""`connector-pipelines authorize CONNECTION`: get a refresh token for an `oauth2_refresh_token` connection.

The authorization code flow with PKCE on a loopback redirect (`transports/oauth_flow.py`): the command prints the
authorization URL (and opens it with `--open`), waits for the browser to come back to
http://127.0.0.1:PORT/callback, checks the state, exchanges the code, and prints the refresh token once on stdout,
as `VARIABLE=token`, the variable being the one the connection's `refresh_token: ${VARIABLE}` names. Everything else
goes to stderr, so `connector-pipelines authorize crm >> .env` keeps the token and nothing else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from connector_pipelines.cli.common import EXIT_FAILED, EXIT_USAGE, _load, resources_option

REFRESH_AUTH = "oauth2_refresh_token"


def _usage(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(EXIT_USAGE)


@click.command()
@click.argument("connection")
@click.option("--open", "open_browser", is_flag=True, help="Also open the authorization URL in the default browser.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Seconds to wait for the browser to come back to the loopback redirect.",
)
@resources_option
def authorize(connection: str, open_browser: bool, timeout: float, resources: Path | None) -> None:
    """Authorise access to an org for CONNECTION (an http connection with `auth: {type: oauth2_refresh_token}`)
    and print its refresh token once.

    Sign in with the URL it prints (in any browser on this machine); the authorization server sends the browser
    back to http://127.0.0.1:PORT/callback (`redirect_port`, or any free port), where this command receives the
    code, checks the state and exchanges the code (PKCE, S256) at `token_url`. Store the printed token in the
    variable `refresh_token: ${...}` names, where the connectors run. Exit codes: 0 a token was printed, 1 the
    authorization failed (denied, state mismatch, timeout, the token endpoint refused), 2 an unknown CONNECTION, one
    of another auth type, or a broken project.
    """
    from connector_pipelines.spec.common import env_var_name
    from connector_pipelines.transports import oauth_flow
    from connector_pipelines.transports.http_auth import token_endpoint

    project = _load(resources)
    spec = project.connections.get(connection)
    if spec is None:
        names = ", ".join(sorted(project.connections)) or "none"
        _usage(f"unknown connection '{connection}'; connections in {project.resources_dir}: {names}")
    auth = getattr(spec, "auth", None)
    if spec.type != "http" or auth is None or auth.type != REFRESH_AUTH:
        kind = spec.type if spec.type != "http" or auth is None else f"http with auth type {auth.type}"
        _usage(
            f"connection '{connection}' is {kind}; `authorize` is for http connections with "
            f"`auth: {{type: {REFRESH_AUTH}}}`"
        )
    if auth.authorize_url is None:
        _usage(
            f"connection '{connection}' has no auth.authorize_url; set it to the authorization server's authorize "
            "endpoint (e.g. https://login.salesforce.com/services/oauth2/authorize)"
        )
    client_secret = None
    if auth.client_secret is not None:
        variable = env_var_name(auth.client_secret)
        client_secret = os.environ.get(variable)
        if client_secret is None:
            _usage(f"connection '{connection}' needs the environment variable {variable} (its auth.client_secret)")
    refresh_variable = env_var_name(auth.refresh_token)
    token_url = token_endpoint(auth.token_url, spec.base_url)
    authorize_url = oauth_flow.absolute_endpoint(auth.authorize_url, spec.base_url)
    verify: bool | str = spec.verify_tls
    if spec.verify_tls and spec.ca_file:
        verify = str((project.base_dir / Path(spec.ca_file).expanduser()).resolve())

    verifier = oauth_flow.code_verifier()
    state = oauth_flow.new_state()
    try:
        receiver = oauth_flow.CallbackReceiver(auth.redirect_port or 0)
    except oauth_flow.AuthorizationError as exc:
        click.echo(f"authorize {connection}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    with receiver:
        url = oauth_flow.authorization_url(
            authorize_url,
            client_id=auth.client_id,
            redirect=receiver.redirect_uri,
            challenge=oauth_flow.code_challenge(verifier),
            state=state,
            scope=auth.scope,
        )
        click.echo(f"Open this URL in a browser and sign in to the org of connection '{connection}':", err=True)
        click.echo(f"  {url}", err=True)
        click.echo(
            f"Waiting up to {timeout:g}s for the redirect to {receiver.redirect_uri} (register it as the client's "
            "callback URL if the server asks for one) ...",
            err=True,
        )
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            code = oauth_flow.parse_callback(receiver.wait(timeout), state)
            grant = oauth_flow.exchange_code(
                token_url,
                code=code,
                verifier=verifier,
                redirect=receiver.redirect_uri,
                client_id=auth.client_id,
                client_secret=client_secret,
                client_auth=auth.client_auth,
                timeout_seconds=spec.timeout_seconds,
                verify=verify,
            )
        except oauth_flow.AuthorizationError as exc:
            click.echo(f"authorize {connection}: {exc}", err=True)
            sys.exit(EXIT_FAILED)
    click.echo(
        f"Authorised. The refresh token of connection '{connection}' follows, shown this once: store it in the "
        f"environment variable {refresh_variable} where the connectors run (a secret store, the deployment's "
        "environment or a .env file), then restart them. Anyone holding it can act as you in that org.",
        err=True,
    )
    click.echo(f"{refresh_variable}={grant.refresh_token}")
