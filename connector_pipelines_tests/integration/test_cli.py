"""The integration commands of `connector-pipelines`: fields, preview, plan, run, push, trace, reset."""

from __future__ import annotations

import pytest

from connector_pipelines_tests.fixtures.integration import BASIC_SYNC, ROLES_SPEC


def test_fields_lists_both_sides_and_the_mapping(integration_project, source_db, cli):
    source_db.add_customers(1)
    integration_project(BASIC_SYNC)

    result = cli("fields", "sync")

    assert result.exit_code == 0, result.output
    assert "SOURCE FIELDS" in result.output and "signup_date" in result.output and "int64" in result.output
    assert "TARGET FIELDS" in result.output and "balance" in result.output and "currency" in result.output
    assert "upper(name)" in result.output


def test_fields_names_a_mapping_that_reads_a_missing_column(integration_project, source_db, cli):
    source_db.add_customers(1)
    integration_project(BASIC_SYNC.replace("{target: email, source: email}", "{target: email, source: e_mail}"))

    result = cli("fields", "sync")

    assert result.exit_code == 1
    assert "e_mail" in result.output and "did you mean 'email'" in result.output


WRONG_OWNER = ROLES_SPEC.replace("owner: owner_id", "owner: owner_ids")


@pytest.mark.parametrize("command", ["fields", "validate"])
def test_fields_and_validate_name_an_owner_column_the_data_set_lacks(integration_project, source_db, cli, command):
    source_db.add_customers(1)
    integration_project(WRONG_OWNER)

    result = cli(command, "sync")

    assert result.exit_code == 1, result.output
    assert "data_set.owner 'owner_ids' is not a column of the data set (did you mean 'owner_id'?)" in result.output


def test_plan_refuses_a_key_column_the_data_set_lacks(integration_project, source_db, http_target, cli):
    source_db.add_customers(2)
    integration_project(BASIC_SYNC.replace("key: customer_id", "key: customerid"))

    result = cli("plan", "sync")

    assert result.exit_code == 2, result.output
    assert "data_set.key 'customerid' is not a column of the data set" in result.output
    assert http_target.requests == []


def test_preview_shows_the_first_requests_and_sends_nothing(integration_project, source_db, http_target, cli):
    source_db.add_customers(15)
    integration_project(BASIC_SYNC)

    result = cli("preview", "sync", "--rows", "3")

    assert result.exit_code == 0, result.output
    assert "key 1: PUT /customers/1" in result.output and "key 4:" not in result.output
    assert '"name":"CUSTOMER 2"' in result.output
    assert http_target.requests == []


def test_plan_counts_creates_updates_and_unchanged_without_sending(integration_project, source_db, http_target, cli):
    source_db.add_customers(5)
    integration_project(BASIC_SYNC)
    first = cli("plan", "sync")
    assert "5 create, 0 update, 0 delete, 0 unchanged" in first.output, first.output
    assert http_target.requests == []

    assert cli("run", "sync").exit_code == 0
    source_db.execute("UPDATE customers SET name = 'Other' WHERE customer_id = 2")
    source_db.add_customers(1, start=6)
    http_target.clear()

    second = cli("plan", "sync")

    assert "1 create, 1 update, 0 delete, 4 unchanged" in second.output, second.output
    assert "update key 2: PUT /customers/2" in second.output
    assert http_target.requests == []
    assert "0 create, 0 update" not in cli("plan", "sync", "--full").output


def test_run_full_and_trace_and_reset(integration_project, source_db, http_target, cli):
    source_db.add_customers(3)
    integration_project(BASIC_SYNC)

    assert cli("run", "sync").exit_code == 0
    again = cli("run", "sync", "--full")
    assert again.exit_code == 0 and "customers: 3 sent" in again.output

    trace = cli("trace", "sync", "2")
    assert trace.exit_code == 0
    assert trace.output.splitlines()[0] == "customers: delivered"  # the record's state now, then its attempts
    assert trace.output.count("delivered") == 3 and "create" in trace.output and "update" in trace.output
    assert cli("trace", "sync", "99").exit_code == 1

    reset = cli("reset", "sync", "--yes")
    assert "forgot 3 record state(s)" in reset.output
    http_target.clear()
    assert "customers: 3 sent" in cli("run", "sync").output


def test_push_sends_chosen_keys_and_reports_each(integration_project, source_db, http_target, cli):
    source_db.add_customers(4)
    integration_project(BASIC_SYNC)
    assert cli("run", "sync").exit_code == 0
    http_target.clear()

    result = cli("push", "sync", "--key", "3", "--key", "4")

    assert result.exit_code == 0, result.output
    assert "key 3: delivered" in result.output and "key 4: delivered" in result.output
    assert sorted(r.path for r in http_target.requests) == ["/customers/3", "/customers/4"]
    missing = cli("push", "sync", "--key", "77")
    assert missing.exit_code == 1 and "not in the data set" in missing.output


def test_push_is_refused_when_off_or_when_roles_forbid(integration_project, source_db, http_target, cli):
    source_db.add_customers(3)
    source_db.execute("INSERT INTO user_roles VALUES (1, 'sales'), (2, 'support'), (3, 'sales')")
    integration_project(ROLES_SPEC)

    refused = cli("push", "sync", "--key", "1")  # owner (1 % 3) + 1 = 2 holds support only
    assert refused.exit_code == 1
    assert "key 1: skipped (owner 2 holds none of the roles sales)" in refused.output
    assert http_target.requests == []

    integration_project("enabled: false\n" + ROLES_SPEC)
    off = cli("push", "sync", "--key", "2")
    assert off.exit_code == 2 and "is off" in off.output
    assert http_target.requests == []


def test_integration_commands_refuse_an_extract_and_unknown_names(integration_project, source_db, cli):
    integration_project(BASIC_SYNC)
    result = cli("plan", "synk")
    assert result.exit_code == 2 and "did you mean 'sync'" in result.output
    result = cli("run", "sync", "--window", "2024-01-01..2024-02-01")
    assert result.exit_code == 2
