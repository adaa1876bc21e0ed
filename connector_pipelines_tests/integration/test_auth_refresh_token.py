"""The OAuth2 refresh token auth end to end through the integration job, against the loopback recording target,
whose token endpoint takes the refresh token grant (see test_auth.py for the other auth modes)."""

from __future__ import annotations

import dagster as dg
import pytest

from connector_pipelines.runs import failure_message
from connector_pipelines_tests.fixtures.integration import BASIC_SYNC

REFRESH_TOKEN = "rt-auth-5e07c3"

AUTH = """
auth:
  type: oauth2_refresh_token
  token_url: /oauth/token
  authorize_url: /oauth/authorize
  client_id: pipelines-client
  refresh_token: ${TARGET_REFRESH_TOKEN}
"""


@pytest.fixture(scope="module")
def _shared_instance():
    with dg.instance_for_test() as instance:  # one per module: building one takes ~2 s
        yield instance


@pytest.fixture
def fresh_instance(_shared_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    return _shared_instance


def test_a_refresh_token_delivers_and_renews_expiring_access_tokens(
    integration_project, source_db, http_target, monkeypatch
):
    monkeypatch.setenv("TARGET_REFRESH_TOKEN", REFRESH_TOKEN)
    source_db.add_customers(30)
    project = integration_project(BASIC_SYNC, http_extra=AUTH + "rate_limit_per_second: 60\n")
    http_target.require_bearer(client_id="pipelines-client", refresh_token=REFRESH_TOKEN, token_ttl=0.3)

    result = project.run()

    assert result.success, failure_message(result.result)
    assert result.metadata["customers"]["delivered"] == 30
    grants = [r.body for r in http_target.requests if r.path == "/oauth/token"]
    assert len(grants) >= 2  # the ~0.5 s run outlives its first access token
    assert {(g["grant_type"], g["refresh_token"]) for g in grants} == {("refresh_token", REFRESH_TOKEN)}
    assert len(http_target.records("customers")) == 30 and max(http_target.applied.values()) == 1


def test_a_refused_refresh_token_fails_the_run_saying_how_to_get_a_new_one(
    integration_project, source_db, http_target, monkeypatch
):
    monkeypatch.setenv("TARGET_REFRESH_TOKEN", "rt-revoked-0a9d")
    source_db.add_customers(4)
    project = integration_project(BASIC_SYNC, http_extra=AUTH)
    http_target.require_bearer(client_id="pipelines-client", refresh_token=REFRESH_TOKEN)

    result = project.run()

    assert not result.success
    rows = [row.data for row in result.metadata["customers"]["records"].records]
    errors = {row["error"] for row in rows}
    assert len(errors) == 1
    [error] = errors
    assert "connection 'target'" in error and "TARGET_REFRESH_TOKEN" in error
    assert "run `connector-pipelines authorize target`" in error and "rt-revoked-0a9d" not in error
    assert [r.path for r in http_target.requests] == ["/oauth/token"]  # asked once, nothing sent to the API
