"""The spec loader: a valid project loads into the expected models, and every broken spec in the corpus fails
with exactly the problem line a user should see (`file:line dotted.field: what is wrong and how to fix it`).

The corpus lives in spec_corpus/: one YAML file per case, the expected problem lines in `# expect:` comments
at the top (one per problem, in order), and `# secret:` naming a value that must never be echoed back.
Cases in spec_corpus/connectors/ are loaded as resources/connectors/<same file name> next to the valid
connections.yaml; cases in spec_corpus/connections/ are loaded as resources/connections.yaml alone.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.connections import ConnectionsFile
from connector_pipelines.spec.extract import ExtractConnector
from connector_pipelines.spec.kinds import AVAILABLE_KINDS
from connector_pipelines.spec.loader import Project, load_project

CORPUS = Path(__file__).resolve().parents[1] / "spec_corpus"
VALID = CORPUS / "valid"
PROBLEM_LINE = re.compile(
    r"^resources/(connections\.yaml|connectors/[^/:]+\.ya?ml):(\d+) (YAML syntax|\(file\)|\(top level\)|[\w.-]+): (.+)$"
)


def _cases() -> list[Path]:
    return sorted((CORPUS / "connectors").glob("*.yaml")) + sorted((CORPUS / "connections").glob("*.yaml"))


def _case_id(case: Path) -> str:
    return f"{case.parent.name}/{case.stem}"


def _header(case: Path, key: str) -> list[str]:
    prefix = f"# {key}: "
    return [line[len(prefix) :] for line in case.read_text().splitlines() if line.startswith(prefix)]


def _resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty resources/ folder under tmp_path, which is made the current directory."""
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return resources


def _problems(resources: Path) -> list[str]:
    with pytest.raises(ConnectorConfigError) as caught:
        load_project(resources)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


@pytest.fixture
def valid_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    resources = _resources(tmp_path, monkeypatch)
    shutil.copytree(VALID, resources, dirs_exist_ok=True)
    return resources


# --------------------------------------------------------------------------------------------------
# 1. The valid project


def test_valid_project_loads_with_expected_values(valid_resources: Path) -> None:
    project = load_project(valid_resources)

    assert isinstance(project, Project)
    assert project.resources_dir == valid_resources
    assert project.base_dir == valid_resources.resolve().parent
    assert sorted(project.connections) == [
        "acme_exchange",
        "archive",
        "bank_sftp",
        "billing_hook",
        "crm_api",
        "crm_org",
        "intranet_ftp",
        "ledger_api",
        "legacy_ftp",
        "local_out",
        "mail",
        "partner_sftp",
        "search_api",
        "status_board",
        "warehouse",
    ]
    assert {name: c.type for name, c in project.connections.items()} == {
        "acme_exchange": "partner",
        "warehouse": "sql",
        "archive": "s3",
        "partner_sftp": "sftp",
        "bank_sftp": "sftp",
        "legacy_ftp": "ftp",
        "intranet_ftp": "ftp",
        "mail": "smtp",
        "local_out": "folder",
        "crm_api": "http",
        "crm_org": "http",
        "billing_hook": "http",
        "ledger_api": "http",
        "search_api": "http",
        "status_board": "http",
    }
    warehouse = project.connections["warehouse"]
    assert warehouse.url == "postgresql://app@db.internal:5432/billing"
    assert warehouse.password == "${WAREHOUSE_PASSWORD}"
    archive = project.connections["archive"]
    assert (archive.bucket, archive.prefix, archive.region) == ("acme-exports", "finance/", "eu-west-1")
    assert archive.endpoint_url == "http://127.0.0.1:9000"
    assert (archive.access_key_id, archive.secret_access_key) == ("${ARCHIVE_KEY_ID}", "${ARCHIVE_SECRET}")
    partner = project.connections["partner_sftp"]
    assert (partner.host, partner.port, partner.username) == ("sftp.partner.example", 2222, "acme")
    assert partner.password == "${PARTNER_SFTP_PASSWORD}" and partner.private_key is None
    # The trailing comment of a known_hosts line is dropped.
    assert partner.host_key == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    assert partner.timeout_seconds == 12.5
    bank = project.connections["bank_sftp"]
    assert (bank.port, bank.password, bank.private_key) == (22, None, "${BANK_SFTP_KEY}")
    ftp = project.connections["legacy_ftp"]
    assert (ftp.port, ftp.tls, ftp.passive, ftp.ca_file, ftp.timeout_seconds) == (
        2121,
        True,
        False,
        "certs/legacy-ca.pem",
        45,
    )
    assert ftp.allow_plaintext_password is False
    intranet = project.connections["intranet_ftp"]
    assert (intranet.tls, intranet.allow_plaintext_password, intranet.port) == (False, True, 21)
    mail = project.connections["mail"]
    assert (mail.port, mail.starttls, mail.ssl, mail.from_address) == (587, True, False, "reports@acme.example")
    assert project.connections["local_out"].path == "out/exports"

    # HTTP: the trailing slash of base_url is dropped; every auth type; defaults where nothing is written.
    crm = project.connections["crm_api"]
    assert crm.base_url == "https://crm.example.com/api/v2"
    assert (crm.auth.type, crm.auth.token_url, crm.auth.client_id, crm.auth.client_secret) == (
        "oauth2",
        "/oauth/token",
        "acme-sync",
        "${CRM_CLIENT_SECRET}",
    )
    assert (crm.auth.scope, crm.auth.audience, crm.auth.client_auth, crm.auth.expiry_seconds) == (
        "contacts.read contacts.write",
        "https://crm.example.com",
        "basic",
        3600,
    )
    assert crm.headers == {"Accept": "application/json", "X-Tenant": "acme"}
    assert (crm.timeout_seconds, crm.max_concurrency, crm.rate_limit_per_second) == (20, 8, 10)
    assert (crm.retry.max_attempts, crm.retry.initial_backoff_seconds) == (6, 1)
    assert (crm.retry.max_backoff_seconds, crm.retry.max_retry_after_seconds) == (60, 300)
    assert (crm.verify_tls, crm.ca_file) == (True, "certs/crm-ca.pem")
    hook = project.connections["billing_hook"].auth
    assert (hook.type, hook.body_format, hook.token_field, hook.expiry_seconds) == (
        "token",
        "form",
        "data.session.token",
        900,
    )
    assert hook.body == {"username": "acme-billing", "password": "${PARTNER_API_PASSWORD}"}
    assert (hook.header, hook.prefix) == ("X-Session-Token", "")
    ledger = project.connections["ledger_api"]
    assert (ledger.auth.type, ledger.auth.username, ledger.auth.password) == (
        "basic",
        "integration",
        "${LEDGER_PASSWORD}",
    )
    assert (ledger.timeout_seconds, ledger.max_concurrency, ledger.rate_limit_per_second) == (30, 16, None)
    assert (ledger.retry.max_attempts, ledger.verify_tls, ledger.headers) == (5, True, {})
    search = project.connections["search_api"].auth
    assert (search.type, search.header, search.value) == ("api_key", "X-Search-Key", "${SEARCH_API_KEY}")
    board = project.connections["status_board"]
    assert (board.auth.type, board.verify_tls, board.base_url) == ("none", False, "http://127.0.0.1:8088/hooks")

    assert sorted(project.connectors) == [
        "adhoc_refunds",
        "api_events",
        "api_invoices",
        "api_orders",
        "api_products",
        "api_rates",
        "api_tickets",
        "crm_contacts",
        "customer_snapshot",
        "daily_orders",
        "emailed_leads",
        "invoice_webhook",
        "monthly_invoices",
        "partner_conversions",
        "product_usage_sync",
        "shipments_4h",
    ]
    integrations = {"crm_contacts", "invoice_webhook"}
    imports = {"emailed_leads", "partner_conversions", "product_usage_sync"} | {
        f"api_{name}" for name in ("events", "invoices", "orders", "products", "rates", "tickets")
    }
    for name, loaded in project.connectors.items():
        assert loaded.name == name
        assert loaded.kind == ("integration" if name in integrations else "import" if name in imports else "extract")
        assert loaded.path == valid_resources / "connectors" / f"{name}.yaml"
    assert project.connector("daily_orders") is project.connectors["daily_orders"]

    # Imports: a warehouse query, partner files, email attachments.
    usage = project.connectors["product_usage_sync"].spec.import_
    assert usage.source.kind == "warehouse" and usage.source.warehouse.updated_at == "updated_at"
    assert usage.source.warehouse.query.startswith("WITH usage AS")
    assert (usage.target.key, usage.target.resolve_conflicts, usage.target.timestamp) == (
        ["account_id"],
        "most_recent",
        "synced_at",
    )
    assert [rule.type for rule in usage.mapping][:6] == ["integer", "text", "text", "currency", "date", "foreign_key"]
    assert [e.expect for e in usage.expectations] == ["not_null", "unique", "in_set", "regex", "between"]
    assert usage.expectations[2].mostly == 0.95 and usage.sync_on_save
    assert usage.schedule.cron() == "*/15 * * * *"
    conversions = project.connectors["partner_conversions"].spec.import_
    assert conversions.source.files.pattern == "Conversions_202?_*.csv"
    assert conversions.source.files.csv.delimiter == ";"
    assert conversions.target.key == ["partner_id", "conversion_id"] and not conversions.target.allow_new_records
    assert conversions.schedule.cadence == "once"
    leads = project.connectors["emailed_leads"].spec.import_
    assert leads.source.email.address == "leads@imports.acme.example"
    assert leads.source.email.allowed_senders == ["events@partner.example", "@fairs.example"]
    assert [rule.source for rule in leads.mapping][1:] == ["name", "name"]
    orders = project.connectors["api_orders"].spec.import_.source.api
    assert (orders.connection, orders.records, orders.pagination.type, orders.pagination.cursor_param) == (
        "crm_api",
        "data.items",
        "cursor",
        "after",
    )
    assert (orders.params, orders.since_param, orders.lookback_delta.seconds) == (
        {"status": "open", "include_archived": False},
        "updated_since",
        600,
    )

    # Partitioned daily, rolling seven days, csv with options, gzip, a file name template, three destinations.
    daily = project.connectors["daily_orders"].spec
    assert daily.description == "Orders of the last seven days, every morning"
    assert daily.owners == ["finance@acme.example", "ops@acme.example"]
    assert daily.tags == {"team": "finance", "tier": "gold"}
    extract = daily.extract
    assert extract.source.connection == "warehouse"
    assert extract.source.uses_window
    assert ":window_start" in extract.source.query and "::date" in extract.source.query
    assert (extract.format, extract.compression, extract.gzip_level, extract.extension) == ("csv", "gzip", 9, "csv.gz")
    assert (extract.csv.header, extract.csv.delimiter) == (False, ";")
    assert extract.file_name == "{name}_{window_start:%Y%m%d}_{window_end:%Y%m%d}.{ext}"
    assert [(d.connection, d.folder) for d in extract.destinations] == [
        ("archive", "orders/daily"),
        ("partner_sftp", "inbound"),
        ("mail", ""),
    ]
    email = extract.destinations[2]
    assert (email.to, email.cc) == (["controller@acme.example"], ["audit@acme.example"])
    assert (email.subject, email.body) == ("Daily orders", "The orders of the last seven days are attached.")
    schedule = extract.schedule
    assert (schedule.cadence, schedule.inception_date, schedule.timezone) == (
        "daily",
        dt.date(2024, 1, 1),
        "Europe/Paris",
    )
    assert (schedule.rolling, schedule.hour_of_day, schedule.minute_of_hour, schedule.enabled) == (7, 6, 30, True)
    assert extract.partitioned and extract.checks.not_empty

    # Partitioned monthly, tsv, defaults everywhere else.
    monthly = project.connectors["monthly_invoices"].spec.extract
    assert (monthly.format, monthly.compression, monthly.extension) == ("tsv", "none", "tsv")
    assert (monthly.csv.header, monthly.csv.delimiter, monthly.file_name) == (True, None, None)
    assert (monthly.schedule.cadence, monthly.schedule.inception_date) == ("monthly", dt.date(2023, 7, 1))
    assert (monthly.schedule.timezone, monthly.schedule.hour_of_day, monthly.schedule.rolling) == ("UTC", 2, None)
    assert monthly.partitioned and not monthly.checks.not_empty

    # Partitioned on a cron from an inception datetime; parquet.
    shipments = project.connectors["shipments_4h"].spec.extract
    assert (shipments.format, shipments.extension) == ("parquet", "parquet")
    assert shipments.schedule.cadence == "0 */4 * * *"
    assert shipments.schedule.inception_date == dt.datetime(2024, 3, 1, 0, 0)
    assert shipments.schedule.timezone == "America/New_York"
    assert shipments.destinations[0].folder == "/incoming/shipments"
    assert shipments.partitioned

    # A full extract on a cron (no inception date), schedule switched off; jsonl with gzip.
    snapshot = project.connectors["customer_snapshot"].spec.extract
    assert (snapshot.format, snapshot.extension) == ("jsonl", "jsonl.gz")
    assert (snapshot.schedule.cadence, snapshot.schedule.inception_date) == ("0 6 * * 1-5", None)
    assert snapshot.schedule.enabled is False
    assert not snapshot.partitioned and not snapshot.source.uses_window

    # Manual only: no schedule, the query takes a window that a custom run passes.
    adhoc = project.connectors["adhoc_refunds"].spec.extract
    assert adhoc.schedule is None and not adhoc.partitioned and adhoc.source.uses_window
    assert [(d.connection, d.folder) for d in adhoc.destinations] == [("local_out", "")]

    # A CRM contact sync on workdays: the key written as one string becomes a list; two configurations.
    crm = project.connectors["crm_contacts"].spec
    assert (crm.description, crm.owners, crm.tags, crm.enabled) == (
        "Contacts from the warehouse to the CRM, every working morning",
        ["crm-team@acme.example"],
        {"team": "sales"},
        True,
    )
    contacts = crm.integration
    assert (contacts.data_set.connection, contacts.data_set.table) == ("warehouse", None)
    assert contacts.data_set.query.startswith("WITH active AS (")
    assert (contacts.data_set.key, contacts.data_set.updated_at, contacts.data_set.change_log) == (
        ["contact_id"],
        "updated_at",
        None,
    )
    assert contacts.target.connection == "crm_api"
    assert [(f.name, f.type, f.required) for f in contacts.target.fields[:3]] == [
        ("external_id", "text", True),
        ("email", "text", True),
        ("full_name", "text", False),
    ]
    assert (contacts.schedule.cadence, contacts.schedule.timezone) == ("workdays", "Europe/Paris")
    assert contacts.schedule.cron() == "15 7 * * 1-5"
    assert (contacts.triggers, contacts.sensor_interval_seconds, contacts.roles, contacts.write_back) == (
        [],
        30,
        None,
        None,
    )
    assert (contacts.recovery, contacts.checks.max_rejected_rate) == ("hold", 0.02)
    single, bulk = contacts.configurations
    assert (single.name, single.sync_mode, single.batch, single.target_ref) == ("contacts", "upsert", None, "data.id")
    rules = {rule.target: rule for rule in single.mapping}
    assert (rules["signed_up_on"].source, rules["signed_up_on"].parse) == ("signup_date", "date:%d/%m/%Y")
    assert (rules["lifetime_value"].default, rules["vip"].default) == (0, False)
    assert (rules["source_system"].constant, rules["source_system"].source) == ("warehouse", None)
    assert rules["account_manager"].expression == "lookup('managers', manager_id)"
    assert (single.lookups["managers"].table, single.lookups["managers"].connection) == ("crm.users", None)
    assert (single.request.method, single.request.path) == ("POST", "/contacts")
    assert single.request.body["properties"]["vip"] == "{{vip}}"
    assert (single.update.method, single.update.path, single.delete) == ("PATCH", "/contacts/{{target_ref}}", None)
    assert single.success is None
    assert (bulk.name, bulk.sync_mode, bulk.request.method) == ("contacts_bulk", "insert", "POST")
    assert (bulk.batch.size, bulk.batch.method, bulk.batch.path) == (200, "POST", "/contacts/batch")
    assert bulk.batch.body == {"contacts": "{{records}}", "skipDuplicates": True}

    # An event-driven webhook push: a change log, triggers, roles, write-back, a lookup, success criteria.
    webhook = project.connectors["invoice_webhook"].spec
    assert (webhook.name, webhook.enabled) == ("invoice_webhook", False)
    push = webhook.integration
    assert (push.data_set.table, push.data_set.query, push.data_set.key) == ("billing.invoices", None, ["invoice_id"])
    change_log = push.data_set.change_log
    assert (change_log.table, change_log.key, change_log.operation, change_log.sequence) == (
        "billing.invoice_changes",
        ["invoice_id"],
        "op",
        "change_id",
    )
    assert (push.data_set.owner, push.data_set.updated_at) == ("owner_user_id", None)
    assert (push.triggers, push.sensor_interval_seconds) == (["on_create", "on_update", "on_delete"], 15)
    assert (push.schedule.cadence, push.schedule.timezone, push.schedule.cron()) == (
        "every 15 minutes",
        "UTC",
        "*/15 * * * *",
    )
    assert (push.roles.allowed, push.roles.table) == (["billing_agent", "finance_admin"], "app.user_roles")
    assert (push.roles.user_column, push.roles.role_column) == ("user_id", "role_name")
    assert (push.write_back.table, push.recovery, push.checks.max_rejected_rate) == (
        "billing.integration_audit",
        "resend",
        0.1,
    )
    mirror, status = push.configurations
    assert (mirror.sync_mode, status.sync_mode) == ("mirror", "update")
    # A body written as a JSON string is parsed into the same template a YAML mapping gives.
    assert mirror.request.body == {
        "number": "{{invoice_number}}",
        "customer": "{{customer_email}}",
        "amount": "{{amount}}",
        "currency": "{{currency}}",
        "issued": "{{issued_at}}",
        "lines": "{{line_count}}",
        "tax": "{{tax_rate}}",
        "extra": "{{extra}}",
    }
    assert mirror.update.body == {"customer": "{{customer_email}}", "amount": "{{amount}}"}
    assert (mirror.delete.method, mirror.delete.path, mirror.delete.body) == (
        "DELETE",
        "/invoices/{{target_ref}}",
        None,
    )
    assert mirror.delete.headers == {"X-Reason": "removed-at-source", "X-Record": "{{key}}"}
    lookup = mirror.lookups["customer_emails"]
    assert (lookup.table, lookup.key, lookup.value, lookup.connection) == (
        "crm.customers",
        "customer_id",
        "email",
        "warehouse",
    )
    assert [(c.source, c.comparator, c.value) for c in mirror.success + status.success] == [
        ("response_body", "contains", '"accepted":true'),
        ("response_body", "not_contains", "error"),
        ("status_code", "equals", 204),
        ("status_code", "not_equals", 202),
    ]


def test_unknown_connector_name_suggests_a_close_one(valid_resources: Path) -> None:
    project = load_project(valid_resources)
    with pytest.raises(ConnectorConfigError) as caught:
        project.connector("daily_order")
    assert caught.value.problems == [
        (
            "no connector named 'daily_order' (did you mean 'daily_orders'?); known connectors: adhoc_refunds, "
            "api_events, api_invoices, api_orders, api_products, api_rates, api_tickets, "
            "crm_contacts, customer_snapshot, daily_orders, emailed_leads, invoice_webhook, monthly_invoices, "
            "partner_conversions, product_usage_sync, shipments_4h"
        )
    ]


# --------------------------------------------------------------------------------------------------
# 2. The corpus of broken specs


def test_corpus_is_complete() -> None:
    """At least 20 cases, and the ones the loader must always handle stay in the corpus."""
    names = {_case_id(case) for case in _cases()}
    required = {
        "connectors/yaml_bad_indent",
        "connectors/yaml_unclosed_quote",
        "connectors/duplicate_key",
        "connectors/empty_file",
        "connectors/unknown_top_level_key",
        "connectors/unknown_nested_key",
        "connectors/bad_format",
        "connectors/bad_compression",
        "connectors/missing_query",
        "connectors/unknown_kind",
        "connectors/kind_integration",
        "connectors/unknown_connection",
        "connectors/source_wrong_type",
        "connectors/destination_wrong_type",
        "connectors/invalid_cadence",
        "connectors/invalid_cron",
        "connectors/unknown_timezone",
        "connectors/rolling_without_inception",
        "connectors/partitioned_without_window",
        "connectors/full_extract_with_window",
        "connectors/unknown_bind_parameter",
        "connectors/file_name_bad_field",
        "connectors/file_name_slash",
        "connectors/destination_dotdot",
        "connectors/email_without_to",
        "connectors/to_on_non_smtp",
        "connectors/csv_options_on_parquet",
        "connectors/parquet_gzip",
        "connectors/gzip_level_out_of_range",
        "connectors/name_differs",
        "connections/literal_secret",
        "connections/password_in_url",
        "connections/sftp_host_key_malformed",
        "connections/sftp_no_credential",
        "connections/uppercase_name",
        # Integrations and http connections
        "connectors/integration_query_and_table",
        "connectors/integration_no_query_no_table",
        "connectors/integration_query_bind_parameter",
        "connectors/integration_key_missing",
        "connectors/integration_table_sql_injection",
        "connectors/mapping_source_and_constant",
        "connectors/mapping_no_origin",
        "connectors/expression_unsafe",
        "connectors/expression_unknown_function",
        "connectors/mapping_bad_parse_format",
        "connectors/mapping_unknown_target",
        "connectors/mapping_target_twice",
        "connectors/required_target_unmapped",
        "connectors/lookup_not_declared",
        "connectors/request_body_bad_json",
        "connectors/path_placeholder_unmapped",
        "connectors/delete_uses_mapped_field",
        "connectors/batch_without_records",
        "connectors/mirror_without_delete",
        "connectors/on_delete_without_delete",
        "connectors/on_update_without_watch",
        "connectors/roles_without_owner",
        "connectors/duplicate_configuration_names",
        "connectors/schedule_every_7_minutes",
        "connectors/target_connection_sql",
        "connectors/data_set_connection_http",
        "connections/http_base_url_not_http",
        "connections/http_basic_literal_password",
        "connections/http_oauth2_literal_client_secret",
        "connections/http_token_body_literal_password",
        "connections/http_authorization_header",
        "connections/http_unknown_auth_type",
        # Issue 11: what the spec must refuse before it can do harm
        "connectors/yaml_billion_laughs",
        "connectors/yaml_merge_key",
        "connections/yaml_anchor_and_alias",
        "connectors/expression_text_too_long",
        "connectors/expression_replace_growth",
        "connectors/file_name_nested_field",
        "connectors/file_name_attribute_access",
        "connections/ftp_password_without_tls",
        "connections/sql_password_in_query",
        "connections/sql_password_in_odbc_connect",
        "connections/http_cookie_header",
        "connections/http_api_key_in_base_url",
        "connectors/request_header_cookie",
        "connectors/request_header_env_reference",
        "connectors/table_trailing_newline",
        "connectors/name_trailing_newline",
        "connections/env_reference_with_newline",
    }
    assert required <= names, sorted(required - names)
    assert len(names) >= 20
    for case in _cases():
        assert _header(case, "expect"), f"{case}: no `# expect:` line"


@pytest.mark.parametrize("case", _cases(), ids=_case_id)
def test_broken_spec_reports_exact_problem(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _resources(tmp_path, monkeypatch)
    if case.parent.name == "connectors":
        shutil.copy(VALID / "connections.yaml", resources / "connections.yaml")
        shutil.copy(VALID / "partners.yaml", resources / "partners.yaml")  # acme_exchange's partner
        shutil.copy(case, resources / "connectors" / case.name)
    else:
        shutil.copy(case, resources / "connections.yaml")

    problems = _problems(resources)

    assert problems == _header(case, "expect")
    for problem in problems:
        match = PROBLEM_LINE.match(problem)
        assert match, f"not `file:line field: message`: {problem}"
        line = int(match.group(2))
        # The header comments take lines 1-2, so only a problem with the whole file may point at line 1.
        assert line > 1 or match.group(3) == "(file)", problem
        assert line <= len(case.read_text().splitlines()), problem
    for secret in _header(case, "secret"):
        assert all(secret not in problem for problem in problems)


# --------------------------------------------------------------------------------------------------
# Problems across files, and the project-level checks


def test_problems_in_two_files_are_reported_together(valid_resources: Path) -> None:
    for case in ("bad_format", "unknown_connection"):
        shutil.copy(CORPUS / "connectors" / f"{case}.yaml", valid_resources / "connectors" / f"{case}.yaml")

    problems = _problems(valid_resources)

    assert problems == [
        *_header(CORPUS / "connectors" / "bad_format.yaml", "expect"),
        *_header(CORPUS / "connectors" / "unknown_connection.yaml", "expect"),
    ]


def test_broken_connections_file_and_broken_connector_are_reported_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = _resources(tmp_path, monkeypatch)
    shutil.copy(CORPUS / "connections" / "literal_secret.yaml", resources / "connections.yaml")
    shutil.copy(VALID / "connectors" / "daily_orders.yaml", resources / "connectors")
    shutil.copy(CORPUS / "connectors" / "bad_format.yaml", resources / "connectors")

    problems = _problems(resources)

    # daily_orders' connections are not reported as unknown: connections.yaml is what needs fixing first.
    assert problems == [
        *_header(CORPUS / "connections" / "literal_secret.yaml", "expect"),
        *_header(CORPUS / "connectors" / "bad_format.yaml", "expect"),
    ]
    assert all("hunter2" not in problem for problem in problems)


def test_missing_connections_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _resources(tmp_path, monkeypatch)
    assert _problems(resources) == [
        (
            "resources/connections.yaml:1 (file): missing; create it with a `connections:` mapping from each "
            "connection's name to its settings, starting with `type:` (sql, s3, sftp, ftp, smtp, folder, partner, http)"
        ),
    ]


def test_two_files_with_one_name(valid_resources: Path) -> None:
    shutil.copy(
        valid_resources / "connectors" / "adhoc_refunds.yaml", valid_resources / "connectors" / "adhoc_refunds.yml"
    )
    assert _problems(valid_resources) == [
        (
            "resources/connectors/adhoc_refunds.yml:2 name: 'adhoc_refunds' is already used by "
            "resources/connectors/adhoc_refunds.yaml; connector names must be unique, so keep one of the files"
        )
    ]


def test_paths_outside_the_working_directory_are_shown_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _resources(tmp_path / "project", monkeypatch)
    shutil.copy(VALID / "connections.yaml", resources / "connections.yaml")
    shutil.copy(VALID / "partners.yaml", resources / "partners.yaml")  # acme_exchange's partner
    shutil.copy(CORPUS / "connectors" / "bad_format.yaml", resources / "connectors")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    [problem] = _problems(resources)

    assert problem.startswith(f"{resources / 'connectors' / 'bad_format.yaml'}:8 extract.format: ")


# --------------------------------------------------------------------------------------------------
# Coverage: every configurable field is exercised by the valid project


def _annotation_models(annotation: object) -> typing.Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if typing.get_origin(annotation) in (typing.Annotated, typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            yield from _annotation_models(arg)


def _reachable_fields(*roots: type[BaseModel]) -> set[tuple[str, str]]:
    """(model, field) for every field of every model reachable from `roots` through the annotations."""
    fields: set[tuple[str, str]] = set()
    todo, seen = list(roots), set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            fields.add((model.__name__, info.alias or name))
            todo.extend(_annotation_models(info.annotation))
    return fields


def _fields_set(value: object) -> set[tuple[str, str]]:
    """(model, field) for every field written in the YAML (pydantic's `model_fields_set`), recursively."""
    found: set[tuple[str, str]] = set()
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        found |= {(type(value).__name__, fields[name].alias or name) for name in value.model_fields_set}
        for name in type(value).model_fields:
            found |= _fields_set(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= _fields_set(item)
    elif isinstance(value, dict):
        for item in value.values():
            found |= _fields_set(item)
    return found


def _yaml_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return {str(key) for key in value} | {k for item in value.values() for k in _yaml_keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in _yaml_keys(item)}
    return set()


def test_valid_project_covers_every_field(valid_resources: Path) -> None:
    """A new field (or a new connection type or connector kind) needs a place in the valid project."""
    reachable = _reachable_fields(ConnectionsFile, ExtractConnector, *AVAILABLE_KINDS.values())
    assert len(reachable) > 60  # the walk did reach the nested models

    project = load_project(valid_resources)
    written = _fields_set(ConnectionsFile(connections=project.connections)) | {
        pair for loaded in project.connectors.values() for pair in _fields_set(loaded.spec)
    }
    assert sorted(reachable - written) == []

    keys: set[str] = set()
    for path in sorted(valid_resources.rglob("*.yaml")):
        keys |= _yaml_keys(yaml.safe_load(path.read_text()))
    assert sorted({name for _, name in reachable} - keys) == []
