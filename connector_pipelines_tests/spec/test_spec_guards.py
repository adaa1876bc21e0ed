"""What the spec refuses before it can do harm (issue 11): YAML aliases that expand, file name templates that do
more than place fields, literal credentials in URLs and headers, plain FTP passwords, and names or references
that end with a newline.

The broken-spec corpus (test_loading.py) pins the exact problem line of one case each; these tests cover the
variants of each rule, and the values a rule must still accept.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pydantic
import pytest

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.common import RunSchedule, SecretRef
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.extract import ExtractSpec
from connector_pipelines.spec.imports import EmailSourceSpec
from connector_pipelines.spec.integration import BatchSpec, ChangeLog, DataSet, RequestSpec
from connector_pipelines.spec.loader import load_project

pytestmark = pytest.mark.timeout(60)

VALID = Path(__file__).resolve().parents[1] / "spec_corpus" / "valid"
CONNECTION = pydantic.TypeAdapter(Connection)
SECRET = pydantic.TypeAdapter(SecretRef)


def _refusal(validate, *args, **kwargs) -> str:
    """The message of the one error a validation raises."""
    with pytest.raises(pydantic.ValidationError) as caught:
        validate(*args, **kwargs)
    [error] = caught.value.errors()
    return error["msg"].removeprefix("Value error, ")


# --------------------------------------------------------------------------------------------------
# a) YAML anchors and aliases


def _nested_aliases(levels: int) -> str:
    """A YAML list of nine aliases of nine aliases of ... `levels` deep: 9**levels values once expanded."""
    leaves = ", ".join(['"{{email}}"'] * 9)
    lines = [f"      l0: &l0 [{leaves}]"]
    for level in range(1, levels):
        lines.append(f"      l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines)


def test_an_alias_bomb_in_a_request_body_is_refused_before_it_expands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request body may hold any JSON: 9**9 (387 million) placeholders, once the aliases are followed, which the
    # placeholder check and the spec fingerprint would walk.
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    shutil.copy(VALID / "connections.yaml", resources / "connections.yaml")
    shutil.copy(VALID / "partners.yaml", resources / "partners.yaml")  # acme_exchange's partner
    bomb = resources / "connectors" / "bomb.yaml"
    bomb.write_text(
        "kind: integration\n"
        "integration:\n"
        "  data_set: {connection: warehouse, table: crm.contacts, key: contact_id}\n"
        "  target: {connection: crm_api, fields: [{name: email}]}\n"
        "  configurations:\n"
        "    - name: contacts\n"
        "      mapping: [{target: email, source: email}]\n"
        "      request:\n"
        "        path: /contacts\n"
        "        body: *l8\n"
        "  layers:\n"
        f"{_nested_aliases(9)}\n"
    )
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()

    with pytest.raises(ConnectorConfigError) as caught:
        load_project(resources)

    assert time.monotonic() - started < 5
    problems = caught.value.problems
    assert len(problems) == 10
    assert problems[0] == (
        "resources/connectors/bomb.yaml:10 integration.configurations.0.request.body: YAML alias *l8 is not allowed "
        "in spec files (aliases can make a small file expand into a huge one); write the value of &l8 out here instead"
    )
    assert problems[1].startswith("resources/connectors/bomb.yaml:12 integration.layers.l0: YAML anchor &l0 ")
    assert problems[-1].endswith("(72 more anchors or aliases follow in this file)")

    # `&` and `*` inside text are characters, not anchors: such a file loads.
    bomb.unlink()
    (resources / "connectors" / "stars.yaml").write_text(
        "kind: extract\n"
        "description: R&D *all* orders & refunds\n"
        "extract:\n"
        "  source: {connection: warehouse, query: 'SELECT * FROM orders'}\n"
        "  format: csv\n"
        "  destinations: [{connection: local_out}]\n"
    )
    assert load_project(resources).connectors["stars"].spec.description == "R&D *all* orders & refunds"


# --------------------------------------------------------------------------------------------------
# c) file_name templates


def _extract(file_name: str) -> ExtractSpec:
    return ExtractSpec(
        source={"connection": "warehouse", "query": "SELECT 1"},
        format="csv",
        file_name=file_name,
        destinations=[{"connection": "local_out"}],
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{now:%Y{ext}}",
            "a replacement field inside the format of {now} is not allowed; write the format out, e.g. "
            "{window_start:%Y%m%d}",
        ),
        (
            "{name:{ext}}",
            "a replacement field inside the format of {name} is not allowed; write the format out, e.g. "
            "{window_start:%Y%m%d}",
        ),
        (
            "{window_end[0]}.csv",
            "attribute or index access in '{window_end[0]}' is not allowed; write a field alone, one of ext, name, "
            "now, partition_key, run_id, window_end, window_start",
        ),
        ("{name!r}.csv", "a conversion (!r) on {name} is not allowed; remove it"),
        (
            "{now:%9999Y}.csv",
            "'%9999Y' is not a date format for {now}; use strftime directives without a width, e.g. {now:%Y%m%dT%H%M}",
        ),
        (
            "{run_id:>99999}.csv",
            "'>99999' is not a text format for {run_id}; use [[fill]align][width][.precision] with numbers up to 999, "
            "e.g. {run_id:.20}, or no format",
        ),
        (
            "{name:>300}.csv",
            "the file name can be 304 characters long, more than the 255 a file system allows; shorten the template",
        ),
        (
            "orders_{now:%x}.csv",
            "a field's format puts '/', '\\' or '..' into the file name (%x writes dates with slashes); use "
            "directives such as %Y%m%d",
        ),
    ],
)
def test_file_name_templates_that_do_more_than_place_fields_are_refused(template: str, message: str) -> None:
    assert _refusal(_extract, template) == message


def test_file_name_templates_with_plain_formats_load() -> None:
    for template in ("{name}_{window_start:%Y%m%dT%H%M}.{ext}", "{partition_key:_<12}.{ext}", "{now:%-d %B}.{ext}"):
        assert _extract(template).file_name == template
    # A format spec a strftime or str.format would reject at run time is refused at load.
    assert _refusal(_extract, "{name:%Y}.csv") == (
        "'%Y' is not a text format for {name}; use [[fill]align][width][.precision] with numbers up to 999, e.g. "
        "{name:.20}, or no format"
    )


# --------------------------------------------------------------------------------------------------
# d) plain FTP passwords


def test_a_plain_ftp_password_needs_tls_or_consent() -> None:
    ftp = {"type": "ftp", "host": "ftp.example", "password": "${FTP_PASSWORD}"}
    assert _refusal(CONNECTION.validate_python, ftp).startswith("plain FTP sends the password in clear")
    assert CONNECTION.validate_python({**ftp, "tls": True}).tls
    assert CONNECTION.validate_python({**ftp, "allow_plaintext_password": True}).allow_plaintext_password
    # Without a password (anonymous FTP) nothing secret crosses the network.
    assert CONNECTION.validate_python({"type": "ftp", "host": "ftp.example"}).password is None


# --------------------------------------------------------------------------------------------------
# e) literal credentials in URLs and headers


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("postgresql://app@db/billing?password=hunter2", "password"),
        ("mysql+pymysql://app@db/billing?charset=utf8mb4&passwd=hunter2", "passwd"),
        ("postgresql://app@db/billing?sslmode=require&sslpassword=hunter2", "sslpassword"),
        ("mssql+pyodbc://app@db/billing?driver=ODBC&PWD=hunter2", "PWD"),
        ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7Bx%7D%3BUID%3Dapp%3B+pwd%3Dhunter2", "odbc_connect"),
    ],
)
def test_a_secret_in_a_sql_url_query_string_is_refused(url: str, key: str) -> None:
    message = _refusal(CONNECTION.validate_python, {"type": "sql", "url": url})
    assert message == (
        f"the URL's query string holds a secret ('{key}'); remove it from the URL and set `password: ${{DB_PASSWORD}}`"
    )
    assert "hunter2" not in message
    # The same URL with plain options only loads.
    plain = url.partition("?")[0] + "?sslmode=require&application_name=exports"
    assert CONNECTION.validate_python({"type": "sql", "url": plain}).url == plain


@pytest.mark.parametrize(
    "header", ["Cookie", "Proxy-Authorization", "X-Api-Key", "apikey", "X-Auth-Token", "Ocp-Apim-Subscription-Key"]
)
def test_credential_headers_of_a_connection_are_refused(header: str) -> None:
    connection = {"type": "http", "base_url": "https://api.example", "headers": {header: "s3cr3t-value"}}
    message = _refusal(CONNECTION.validate_python, connection)
    assert message.startswith(f"header '{header}' carries a credential; set it with `auth:` instead")
    assert "s3cr3t-value" not in message
    # Headers that name no credential stay allowed.
    plain = {"Accept": "application/json", "X-Tenant": "acme", "Idempotency-Key": "fixed", "X-Author": "ops"}
    assert CONNECTION.validate_python({**connection, "headers": plain}).headers == plain


@pytest.mark.parametrize("value", ["sid=9d2f61aa0c", "${SESSION_COOKIE}", "Bearer abc{{email}}", "{{email}} x"])
def test_a_credential_header_of_a_request_is_refused_unless_it_comes_from_the_record(value: str) -> None:
    for model, extra in ((RequestSpec, {}), (BatchSpec, {"size": 10, "body": {"records": "{{records}}"}})):
        message = _refusal(model, path="/contacts", headers={"Authorization": value}, **extra)
        assert message.startswith("header 'Authorization' carries a credential, which a connector file may not hold")
        assert value not in message
    # A value that comes from the record (a mapped field, after an optional scheme) is no literal secret.
    headers = {"Authorization": "Bearer {{access_token}}", "X-Api-Key": "{{ api_key }}", "X-Reason": "sync"}
    assert RequestSpec(path="/contacts", headers=headers).headers == headers


def test_a_secret_in_an_http_base_url_query_string_is_refused() -> None:
    connection = {"type": "http", "base_url": "https://api.example/v1?token=t0k3n&format=json"}
    message = _refusal(CONNECTION.validate_python, connection)
    assert message.startswith("the URL's query string holds a secret ('token'); remove it from the URL")
    assert "t0k3n" not in message


# --------------------------------------------------------------------------------------------------
# g) a trailing newline ends no name, identifier or reference


@pytest.mark.parametrize(
    ("validate", "value"),
    [
        (lambda v: DataSet(connection="warehouse", table=v, key=["id"]), "crm.contacts\n"),
        (lambda v: DataSet(connection="warehouse", table="t", key=[v]), "contact_id\n"),
        (lambda v: ChangeLog(table="changes", sequence=v), "change_id\n"),
        (SECRET.validate_python, "${DB_PASSWORD}\n"),
        (lambda v: RunSchedule(cadence=v), "every 15 minutes\n"),
        (lambda v: EmailSourceSpec(address=v, allowed_senders=["a@b.example"], pattern="*.csv"), "in@x.example\n"),
        (lambda v: EmailSourceSpec(address="in@x.example", allowed_senders=[v], pattern="*.csv"), "@b.example\n"),
    ],
)
def test_a_trailing_newline_is_refused(validate, value: str) -> None:
    message = _refusal(validate, value)
    assert "\n" not in message  # a problem line stays one line
    # Without the newline the same value is fine.
    validate(value.removesuffix("\n"))
