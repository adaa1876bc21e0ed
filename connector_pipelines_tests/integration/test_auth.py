"""Each HTTP auth mode end to end through the integration job, against the loopback target requiring it.

Credentials come from environment variables (set with monkeypatch); the target checks every data request and
issues short-lived tokens where asked, so token renewal during a run is exercised for real.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator

import dagster as dg
import pytest

from connector_pipelines.runs import failure_message
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC


@pytest.fixture(scope="module")
def _shared_instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:  # one per module: building one takes ~2 s
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """This module's tests share one instance (they tell their runs apart), overriding the per-test one."""
    return _shared_instance


PASSWORD = "pw-auth-71c3e9"
API_KEY = "key-auth-0d5a42"
CLIENT_SECRET = "cs-auth-b83f10"

MODES = {
    "basic": (
        """
        auth:
          type: basic
          username: pipelines
          password: ${TARGET_PASSWORD}
        """,
        lambda target: target.require_basic(password=PASSWORD),
    ),
    "api_key": (
        """
        auth:
          type: api_key
          header: X-Api-Token
          value: ${TARGET_API_KEY}
        """,
        lambda target: target.require_api_key(value=API_KEY, header="X-Api-Token"),
    ),
    "token": (
        """
        auth:
          type: token
          token_url: /oauth/token
          body: {username: "${TARGET_USER}", password: "${TARGET_PASSWORD}"}
        """,
        lambda target: target.require_bearer(password=PASSWORD),
    ),
    "oauth2": (
        """
        auth:
          type: oauth2
          token_url: /oauth/token
          client_id: pipelines-client
          client_secret: ${TARGET_CLIENT_SECRET}
        """,
        lambda target: target.require_bearer(client_id="pipelines-client", client_secret=CLIENT_SECRET),
    ),
    "oauth2_basic": (
        """
        auth:
          type: oauth2
          token_url: /oauth/token
          client_id: pipelines-client
          client_secret: ${TARGET_CLIENT_SECRET}
          client_auth: basic
        """,
        lambda target: target.require_bearer(client_id="pipelines-client", client_secret=CLIENT_SECRET),
    ),
}


@pytest.fixture
def credentials(monkeypatch) -> None:
    monkeypatch.setenv("TARGET_USER", "pipelines")
    monkeypatch.setenv("TARGET_PASSWORD", PASSWORD)
    monkeypatch.setenv("TARGET_API_KEY", API_KEY)
    monkeypatch.setenv("TARGET_CLIENT_SECRET", CLIENT_SECRET)


def _data_requests(target) -> list:
    return [r for r in target.requests if r.path != "/oauth/token"]


def _exactly_once(target, count: int) -> None:
    assert len(target.records("customers")) == count
    applied = target.applied
    assert len(applied) == count and max(applied.values()) == 1


@pytest.mark.parametrize("mode", list(MODES))
def test_each_auth_mode_delivers(integration_project, source_db, http_target, credentials, mode):
    auth_yaml, require = MODES[mode]
    source_db.add_customers(12)
    project = integration_project(BASIC_SYNC, http_extra=auth_yaml)
    require(http_target)

    result = project.run()

    assert result.success, failure_message(result.result)
    assert result.metadata["customers"]["delivered"] == 12
    data = _data_requests(http_target)
    assert {r.status for r in data} == {201}
    _exactly_once(http_target, 12)
    if mode in ("token", "oauth2", "oauth2_basic"):
        assert http_target.tokens_issued == 1  # one token, shared by every concurrent request of the run
        assert all(r.headers["authorization"].startswith("Bearer ") for r in data)


def test_a_wrong_credential_fails_every_record_with_401_without_retrying(
    integration_project, source_db, http_target, credentials, monkeypatch
):
    monkeypatch.setenv("TARGET_API_KEY", "not-the-key")
    source_db.add_customers(4)
    project = integration_project(BASIC_SYNC, http_extra=MODES["api_key"][0])
    MODES["api_key"][1](http_target)

    result = project.run()

    assert not result.success  # 100% rejected: the blocking check fails the run
    assert result.metadata["customers"]["failed"] == 4
    assert len(http_target.requests) == 4  # a 401 for a fixed key is final: not retried
    assert project.ledger().record("sync", "customers", "2")["http_status"] == 401


RATE_LIMITED = "rate_limit_per_second: 60\n"


def test_tokens_revoked_during_a_run_are_renewed_once_and_every_record_lands_once(
    integration_project, source_db, http_target, credentials
):
    source_db.add_customers(60)  # ~1 s at 60 requests/s
    project = integration_project(BASIC_SYNC, http_extra=textwrap.dedent(MODES["token"][0]) + RATE_LIMITED)
    http_target.require_bearer(password=PASSWORD)
    revoker = threading.Thread(
        target=lambda: http_target.wait_until(lambda: len(http_target.applied) >= 20) and http_target.expire_tokens()
    )
    revoker.start()

    result = project.run()
    revoker.join()

    assert result.success, failure_message(result.result)
    assert result.metadata["customers"]["delivered"] == 60
    refused = [r for r in _data_requests(http_target) if r.status == 401]
    assert refused, "the run should have met the revoked token"
    assert http_target.tokens_issued == 2  # every request refused with the old token waits for one renewal
    assert all(http_target.applied[r.idempotency_key] == 1 for r in refused)  # resent under the same key
    _exactly_once(http_target, 60)


def test_oauth2_tokens_expiring_while_requests_queue_still_deliver(
    integration_project, source_db, http_target, credentials
):
    """The target's tokens live 0.4 s and say so (`expires_in`); the run lasts ~0.75 s behind its rate limit. The
    client knows when its token expires, so every record must land, renewed in time or once after a 401."""
    source_db.add_customers(45)
    project = integration_project(BASIC_SYNC, http_extra=textwrap.dedent(MODES["oauth2"][0]) + RATE_LIMITED)
    http_target.require_bearer(client_id="pipelines-client", client_secret=CLIENT_SECRET, token_ttl=0.4)

    result = project.run()

    rows = [row.data for row in result.metadata["customers"]["records"].records]
    failed = [(row["key"], row["http_status"], row["error"]) for row in rows if row["status"] == "failed"]
    assert result.success, f"{len(failed)} record(s) failed, e.g. {failed[:2]}"
    assert http_target.tokens_issued >= 2
    _exactly_once(http_target, 45)


def test_tokens_revoked_between_runs_are_fetched_again(integration_project, source_db, http_target, credentials):
    source_db.add_customers(5)
    project = integration_project(BASIC_SYNC, http_extra=MODES["token"][0])
    http_target.require_bearer(password=PASSWORD)
    assert project.run().success

    http_target.expire_tokens()
    source_db.execute("UPDATE customers SET name = 'Renamed' WHERE customer_id IN (1, 2)")
    result = project.run()

    assert result.success, failure_message(result.result)
    assert http_target.tokens_issued == 2
    assert http_target.records("customers")["1"]["name"] == "RENAMED"
    assert [r.status for r in _data_requests(http_target)][-2:] == [200, 200]
    assert max(http_target.applied.values()) == 1


@pytest.mark.parametrize("mode", ["basic", "token", "oauth2"])
def test_a_missing_environment_variable_stops_the_run_naming_it(
    integration_project, source_db, http_target, credentials, monkeypatch, mode
):
    variable = {"basic": "TARGET_PASSWORD", "token": "TARGET_USER", "oauth2": "TARGET_CLIENT_SECRET"}[mode]
    monkeypatch.delenv(variable)
    source_db.add_customers(3)
    project = integration_project(BASIC_SYNC, http_extra=MODES[mode][0])
    MODES[mode][1](http_target)

    # The target's resource refuses to start, naming the variable: the step that needs it never runs.
    result = project.run()

    assert not result.success
    message = failure_message(result.result)
    assert f"connection 'target' needs the environment variable {variable}" in message
    assert PASSWORD not in message and CLIENT_SECRET not in message
    assert http_target.requests == []
    assert project.ledger().counts("sync", "customers") == {}  # nothing left in flight


def test_the_cli_says_which_variable_is_missing_and_starts_no_run(
    integration_project, source_db, http_target, credentials, monkeypatch, tmp_path
):
    from click.testing import CliRunner

    from connector_pipelines.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("TARGET_PASSWORD")
    source_db.add_customers(3)
    integration_project(BASIC_SYNC, http_extra=MODES["basic"][0])
    MODES["basic"][1](http_target)

    result = CliRunner().invoke(main, ["run", "sync", "--resources", str(tmp_path / "resources")])

    assert result.exit_code == 1
    assert "the run of integration_sync was not started" in result.output
    assert "TARGET_PASSWORD" in result.output and PASSWORD not in result.output
    assert "Traceback" not in result.output
    assert http_target.requests == []
