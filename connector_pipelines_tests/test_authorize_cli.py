"""`connector-pipelines authorize CONNECTION` end to end: the command runs as a subprocess, the test plays the
browser (a plain HTTP GET of the printed URL, following the redirect to the command's loopback receiver), and the
loopback authorization server approves, denies or forges the state. Usage errors run in process (CliRunner)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines.spec.loader import load_project
from connector_pipelines.transports.http import HttpRequest
from connector_pipelines.transports.registry import client_for
from connector_pipelines_tests.servers.oauth_server import OAuthServer

CLIENT_SECRET = "cs-cli-93b0e4"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with OAuthServer(client_secret=CLIENT_SECRET) as server:
        yield server


@pytest.fixture
def resources(tmp_path: Path, oauth: OAuthServer) -> Path:
    folder = tmp_path / "resources"
    (folder / "connectors").mkdir(parents=True)
    (folder / "connections.yaml").write_text(
        textwrap.dedent(
            f"""\
            connections:
              crm:
                type: http
                base_url: {oauth.base_url}/api
                auth:
                  type: oauth2_refresh_token
                  authorize_url: {oauth.url("/authorize")}
                  token_url: {oauth.url("/token")}
                  client_id: {oauth.client_id}
                  client_secret: ${{CRM_CLIENT_SECRET}}
                  refresh_token: ${{CRM_REFRESH_TOKEN}}
                  scope: api refresh_token
              partner:
                type: http
                base_url: {oauth.base_url}/api
                auth: {{type: oauth2, token_url: /token, client_id: x, client_secret: "${{CRM_CLIENT_SECRET}}"}}
            """
        )
    )
    return folder


def start(resources: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CRM_CLIENT_SECRET": CLIENT_SECRET}
    env.pop("CRM_REFRESH_TOKEN", None)
    command = [sys.executable, "-m", "connector_pipelines.cli", "authorize", "crm", "--resources", str(resources)]
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def printed_url(process: subprocess.Popen[str]) -> tuple[str, list[str]]:
    """The authorization URL from the command's stderr, and the lines read up to it."""
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line)
        if line.strip().startswith("http"):
            return line.strip(), lines
    raise AssertionError(f"no URL printed: {''.join(lines)}")


def browse(url: str) -> bytes:
    """The browser: follow the authorization server's redirect to the command's loopback receiver."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def finish(process: subprocess.Popen[str], before: list[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=30)
    return process.returncode, stdout, "".join(before) + stderr


def test_authorize_prints_a_refresh_token_that_then_gets_access(
    resources: Path, oauth: OAuthServer, monkeypatch
) -> None:
    process = start(resources, "--timeout", "30")
    url, before = printed_url(process)

    page = browse(url)
    code, stdout, stderr = finish(process, before)

    assert code == 0, stderr
    assert b"return to the terminal" in page
    [line] = stdout.splitlines()  # the token, once, as VARIABLE=value
    variable, _, token = line.partition("=")
    assert variable == "CRM_REFRESH_TOKEN" and oauth.refresh_token_valid(token)
    assert "store it in the environment variable CRM_REFRESH_TOKEN" in stderr
    [asked] = oauth.authorize_requests
    assert asked["code_challenge_method"] == "S256" and asked["scope"] == "api refresh_token"
    assert asked["redirect_uri"].startswith("http://127.0.0.1:") and asked["redirect_uri"].endswith("/callback")
    [exchange] = oauth.grants("authorization_code")
    assert exchange.status == 200 and exchange.form["code_verifier"]
    for secret in (token, CLIENT_SECRET, exchange.form["code"], exchange.form["code_verifier"]):
        assert secret not in stderr

    # The printed token works: a client of the same connection gets an access token with it and reaches the API.
    monkeypatch.setenv("CRM_REFRESH_TOKEN", token)
    monkeypatch.setenv("CRM_CLIENT_SECRET", CLIENT_SECRET)
    project = load_project(resources)

    async def send() -> int | None:
        async with client_for(project.connections["crm"], project.base_dir, "crm") as client:
            return (await client.send(HttpRequest("GET", "/contacts"))).status

    assert asyncio.run(send()) == 200
    assert oauth.grants("refresh_token")[0].form["refresh_token"] == token


def test_a_denied_authorization_exits_1_and_prints_no_token(resources: Path, oauth: OAuthServer) -> None:
    oauth.deny_next()
    process = start(resources, "--timeout", "30")
    url, before = printed_url(process)

    browse(url)
    code, stdout, stderr = finish(process, before)

    assert (code, stdout) == (1, "")
    assert "did not grant access (access_denied: The user denied access)" in stderr
    assert oauth.grants("authorization_code") == []


def test_a_redirect_with_another_state_is_refused_and_nothing_is_exchanged(resources: Path, oauth: OAuthServer) -> None:
    oauth.forge_state_next()
    process = start(resources, "--timeout", "30")
    url, before = printed_url(process)

    browse(url)
    code, stdout, stderr = finish(process, before)

    assert (code, stdout) == (1, "")
    assert "state does not match" in stderr
    assert oauth.grants("authorization_code") == []


def test_no_browser_coming_back_times_out_with_exit_1(resources: Path) -> None:
    process = start(resources, "--timeout", "1")
    _, before = printed_url(process)

    code, stdout, stderr = finish(process, before)

    assert (code, stdout) == (1, "")
    assert "no redirect reached http://127.0.0.1:" in stderr and "--timeout" in stderr


def test_a_fixed_redirect_port_is_used_for_the_redirect(resources: Path, oauth: OAuthServer) -> None:
    from connector_pipelines_tests.servers import free_port

    port = free_port()
    text = (resources / "connections.yaml").read_text()
    (resources / "connections.yaml").write_text(
        text.replace(
            "      scope: api refresh_token\n", f"      scope: api refresh_token\n      redirect_port: {port}\n"
        )
    )
    process = start(resources, "--timeout", "30")
    url, before = printed_url(process)

    browse(url)
    code, _, stderr = finish(process, before)

    assert code == 0, stderr
    assert oauth.authorize_requests[0]["redirect_uri"] == f"http://127.0.0.1:{port}/callback"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("crmm", "unknown connection 'crmm'"),
        ("partner", "connection 'partner' is http with auth type oauth2; `authorize` is for http connections"),
    ],
)
def test_a_connection_that_cannot_be_authorised_is_a_usage_error(resources: Path, name: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["authorize", name, "--resources", str(resources)])

    assert result.exit_code == 2
    assert expected in result.output


def test_help_describes_the_flow_and_the_exit_codes() -> None:
    result = CliRunner().invoke(main, ["authorize", "--help"])

    assert result.exit_code == 0
    assert "PKCE" in result.output and "--open" in result.output and "--timeout" in result.output
    assert "Exit codes" in result.output


def test_an_unset_client_secret_variable_is_a_usage_error_naming_it(resources: Path) -> None:
    result = CliRunner(env={"CRM_CLIENT_SECRET": None}).invoke(
        main, ["authorize", "crm", "--resources", str(resources)]
    )

    assert result.exit_code == 2
    assert "needs the environment variable CRM_CLIENT_SECRET (its auth.client_secret)" in result.output
