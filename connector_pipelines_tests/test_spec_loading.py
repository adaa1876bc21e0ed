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
from connector_pipelines.spec.loader import Project, load_project
from connector_pipelines.spec.models import AVAILABLE_KINDS, ConnectionsFile, ExtractConnector

CORPUS = Path(__file__).parent / "spec_corpus"
VALID = CORPUS / "valid"
PROBLEM_LINE = re.compile(
    r"^resources/(connections\.yaml|connectors/[^/:]+\.ya?ml):(\d+) (YAML syntax|\(file\)|\(top level\)|[\w.]+): (.+)$"
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
        "archive",
        "bank_sftp",
        "legacy_ftp",
        "local_out",
        "mail",
        "partner_sftp",
        "warehouse",
    ]
    assert {name: c.type for name, c in project.connections.items()} == {
        "warehouse": "sql",
        "archive": "s3",
        "partner_sftp": "sftp",
        "bank_sftp": "sftp",
        "legacy_ftp": "ftp",
        "mail": "smtp",
        "local_out": "folder",
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
    mail = project.connections["mail"]
    assert (mail.port, mail.starttls, mail.ssl, mail.from_address) == (587, True, False, "reports@acme.example")
    assert project.connections["local_out"].path == "out/exports"

    assert sorted(project.connectors) == [
        "adhoc_refunds",
        "customer_snapshot",
        "daily_orders",
        "monthly_invoices",
        "shipments_4h",
    ]
    for name, loaded in project.connectors.items():
        assert loaded.name == name
        assert loaded.kind == "extract"
        assert loaded.path == valid_resources / "connectors" / f"{name}.yaml"
    assert project.connector("daily_orders") is project.connectors["daily_orders"]

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


def test_unknown_connector_name_suggests_a_close_one(valid_resources: Path) -> None:
    project = load_project(valid_resources)
    with pytest.raises(ConnectorConfigError) as caught:
        project.connector("daily_order")
    assert caught.value.problems == [
        (
            "no connector named 'daily_order' (did you mean 'daily_orders'?); known connectors: "
            "adhoc_refunds, customer_snapshot, daily_orders, monthly_invoices, shipments_4h"
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
        "connectors/kind_import",
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
            "connection's name to its settings, starting with `type:` (sql, s3, sftp, ftp, smtp, folder)"
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
            fields.add((model.__name__, name))
            todo.extend(_annotation_models(info.annotation))
    return fields


def _fields_set(value: object) -> set[tuple[str, str]]:
    """(model, field) for every field written in the YAML (pydantic's `model_fields_set`), recursively."""
    found: set[tuple[str, str]] = set()
    if isinstance(value, BaseModel):
        found |= {(type(value).__name__, name) for name in value.model_fields_set}
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
