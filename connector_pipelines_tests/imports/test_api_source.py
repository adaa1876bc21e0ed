"""Imports from an HTTP API (`source.api`, imports/api_source.py) against a real loopback API
(servers/paged_api.py): every way of paging, retries of 429 and 500, the incremental watermark, rejections, the
bounds on pages and bytes, and the auth modes; the engine into SQLite, and Dagster jobs into SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.imports import inspect
from connector_pipelines.imports.api_source import ApiSourceError, api_access, run_api_import
from connector_pipelines.spec.imports import ImportConnector
from connector_pipelines.state.import_state import ImportState
from connector_pipelines_tests.servers.paged_api import T0, PagedApi, make_records

TARGET_DDL = (
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), customer TEXT, "
    "updated_at TIMESTAMP)"
)
MAPPING = [
    {"target": "id", "source": "id", "type": "integer", "parse": "integer"},
    {"target": "name", "source": "name"},
    {"target": "amount", "source": "amount", "type": "currency", "parse": "currency"},
    {"target": "customer", "source": "customer.id"},  # a nested field, by its dotted path
    {"target": "updated_at", "source": "updated_at", "type": "datetime", "parse": "datetime"},
]
FAST_RETRY = {"max_attempts": 3, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}

# (path, records, pagination, requests for 25 records in pages of 10)
STYLES = {
    "next_url": ("/next_url/items", "data.items", {"type": "next_url", "next_url_path": "links.next"}, 3),
    "link_header": ("/link_header/items", "", {"type": "link_header"}, 3),
    "cursor": ("/cursor/items", "items", {"type": "cursor", "cursor_path": "meta.next_cursor"}, 3),
    "offset_total": ("/offset/items", "results", {"type": "offset", "limit": 10, "total_path": "total"}, 3),
    "offset_until_empty": ("/offset/items", "results", {"type": "offset", "limit": 10}, 4),
    "page_total": ("/page/items", "data", {"type": "page_number", "total_pages_path": "total_pages"}, 3),
    "page_until_empty": ("/page/items", "data", {"type": "page_number", "start_page": 1}, 4),
    "none": ("/all/items", "", {"type": "none"}, 1),
}


def api_connector(style: str = "cursor", *, expectations: list | None = None, **api: object) -> ImportConnector:
    path, records, pagination, _ = STYLES[style]
    source = {
        "connection": "partner_api",
        "path": path,
        "records": records,
        "pagination": pagination,
        "updated_at": "updated_at",
        "since_param": "updated_since",
        **api,
    }
    return ImportConnector.model_validate(
        {
            "name": "orders_api",
            "kind": "import",
            "import": {
                "source": {"api": source},
                "target": {"connection": "crm", "table": "orders", "key": "id"},
                "mapping": MAPPING,
                "expectations": expectations or [],
            },
        }
    )


@pytest.fixture(scope="module")
def api_server() -> Iterator[PagedApi]:
    with PagedApi() as server:
        yield server


@pytest.fixture
def api(api_server: PagedApi) -> PagedApi:
    api_server.clear()
    api_server.records = make_records(25)
    return api_server


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict]:
    url = f"sqlite:///{tmp_path / 'target.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(TARGET_DDL))
    state = ImportState(f"sqlite:///{tmp_path / 'state.db'}")
    yield {"url": url, "engine": engine, "state": state, "storage": tmp_path / "storage"}
    state.dispose()
    engine.dispose()


def access(api: PagedApi, auth: dict | None = None, **settings):
    return api_access(auth=auth or {"type": "none"}, base_url=api.base_url, retry=FAST_RETRY, **settings)


def run(env: dict, connector: ImportConnector, api: PagedApi, run_id: str = "run-1", auth=None, **kwargs):
    return run_api_import(connector, access(api, auth), env["url"], env["state"], env["storage"], run_id, **kwargs)


def target_rows(env: dict) -> dict[int, dict]:
    with env["engine"].connect() as connection:
        return {row.id: dict(row._mapping) for row in connection.execute(sa.text("SELECT * FROM orders"))}


# --------------------------------------------------------------------------------------------------
# Paging


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_pagination_style_imports_every_record_once(env, api, style):
    report = run(env, api_connector(style), api)

    assert report.merged and (report.rows_read, report.inserted, report.rows_rejected) == (25, 25, 0)
    rows = target_rows(env)
    assert sorted(rows) == list(range(1, 26))
    assert (rows[7]["name"], float(rows[7]["amount"]), rows[7]["customer"]) == ("Record 7", 7.5, "C1")
    assert len(api.requests) == STYLES[style][3]
    assert report.watermark == "2026-03-01T09:24:00"
    assert pq.read_table(report.snapshot_path).num_rows == 25


# --------------------------------------------------------------------------------------------------
# Retries


def test_429_with_retry_after_and_500_are_retried_without_loss_or_duplicates(env, api):
    api.inject(2, 429, retry_after=0.1)
    api.inject(3, 500)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    report = run(env, api_connector("cursor"), api, sleep=sleep)

    assert [request.status for request in api.requests] == [200, 429, 500, 200, 200]
    # The retried page was asked for again with the same cursor, and the next page followed it.
    assert [request.query.get("cursor") for request in api.requests] == [None, "10", "10", "10", "20"]
    assert waits[0] >= 0.1  # the Retry-After was honoured
    assert (report.rows_read, report.inserted) == (25, 25)
    assert sorted(target_rows(env)) == list(range(1, 26))


def test_a_timed_out_request_is_retried(env, api):
    api.delay(2, 1.0)
    connector = api_connector("cursor")

    report = run_api_import(
        connector, access(api, timeout_seconds=0.3), env["url"], env["state"], env["storage"], "run-1"
    )

    assert [request.query.get("cursor") for request in api.requests] == [None, "10", "10", "20"]
    assert (report.rows_read, report.inserted) == (25, 25)


def test_a_500_that_persists_fails_the_run_and_merges_nothing(env, api):
    for number in (2, 3, 4):
        api.inject(number, 500)

    with pytest.raises(ApiSourceError, match=r"GET .*/cursor/items \(page 2\): gave up after 3 attempts: 500"):
        run(env, api_connector("cursor"), api)

    assert target_rows(env) == {}
    assert env["state"].watermark("orders_api") is None


# --------------------------------------------------------------------------------------------------
# Incremental


def test_an_incremental_run_sends_the_watermark_less_the_lookback_and_imports_only_newer_records(env, api):
    connector = api_connector("cursor", lookback="2 minutes")
    first = run(env, connector, api)
    assert first.watermark == "2026-03-01T09:24:00" and "updated_since" not in api.requests[0].query

    api.clear()
    api.records = make_records(25) + make_records(5, start=26, at=T0 + dt.timedelta(hours=1))
    api.records[24] = {**api.records[24], "name": "Record 25, renamed"}
    second = run(env, connector, api, run_id="run-2")

    assert api.requests[0].query["updated_since"] == "2026-03-01T09:22:00"
    # Read: 23, 24, 25 (the lookback's overlap) and the five new ones; 23 and 24 merge as unchanged.
    assert (second.rows_read, second.inserted, second.updated) == (8, 5, 1)
    assert second.watermark == env["state"].watermark("orders_api") == "2026-03-01T10:04:00"
    rows = target_rows(env)
    assert len(rows) == 30 and rows[25]["name"] == "Record 25, renamed"


def test_full_run_ignores_the_watermark(env, api):
    connector = api_connector("cursor")
    run(env, connector, api)
    api.clear()
    report = run(env, connector, api, run_id="run-2", full=True)
    assert "updated_since" not in api.requests[0].query and report.rows_read == 25


def test_the_watermark_does_not_move_when_a_blocking_expectation_fails(env, api):
    api.records[3] = {**api.records[3], "name": ""}
    connector = api_connector("cursor", expectations=[{"expect": "regex", "column": "name", "pattern": "^Record"}])
    report = run(env, connector, api)
    assert report.blocked and not report.merged
    assert target_rows(env) == {} and env["state"].watermark("orders_api") is None


# --------------------------------------------------------------------------------------------------
# Rejections


def test_a_bad_record_is_rejected_alone_with_its_reason(env, api):
    api.records[6] = {**api.records[6], "amount": "lots"}

    report = run(env, api_connector("next_url"), api)

    assert (report.rows_read, report.inserted, report.rows_rejected) == (25, 24, 1)
    rejections = pq.read_table(report.rejections_path).to_pylist()
    assert len(rejections) == 1
    assert rejections[0]["row"] == 7 and rejections[0]["key"] == "7"
    assert "amount" in rejections[0]["reason"] and "lots" in rejections[0]["reason"]
    assert 7 not in target_rows(env)


def test_a_record_that_is_not_an_object_is_rejected_alone(env, api):
    api.records[2] = "not an object"

    report = run(env, api_connector("offset_total"), api)

    assert (report.rows_read, report.inserted, report.rows_rejected) == (25, 24, 1)
    [rejection] = pq.read_table(report.rejections_path).to_pylist()
    assert rejection == {"row": 3, "key": None, "reason": "the record is a string, not a JSON object"}


def test_an_answer_that_is_not_json_fails_saying_so(env, api):
    with pytest.raises(ApiSourceError, match=r"page 1: the answer is not JSON \(Expecting value at character 0\)"):
        run(env, api_connector("none", path="/html/items"), api)


def test_a_records_path_the_answer_lacks_fails_saying_what_it_has(env, api):
    with pytest.raises(ApiSourceError, match=r"page 1: the answer has no 'data.rows' \(records:\); it has: items"):
        run(env, api_connector("cursor", records="data.rows"), api)


# --------------------------------------------------------------------------------------------------
# Bounds


def test_max_pages_stops_an_api_that_never_stops_paging(env, api):
    connector = api_connector("cursor", path="/endless/items", max_pages=5)

    with pytest.raises(ApiSourceError, match=r"more than max_pages \(5\) pages for one run; nothing was merged"):
        run(env, connector, api)

    assert len(api.requests) == 5 and target_rows(env) == {}


def test_max_response_bytes_stops_an_oversized_answer(env, api):
    connector = api_connector("cursor", path="/big/items", max_response_bytes=64 * 1024)

    with pytest.raises(ApiSourceError, match=r"the answer is larger than max_response_bytes \(65,536 bytes\)"):
        run(env, connector, api)

    assert target_rows(env) == {}


def test_a_next_link_to_another_host_is_not_followed(env, api):
    # localhost is the same machine, but not the connection's origin: the credentials must not go there.
    api.link_origin = api.base_url.replace("127.0.0.1", "localhost")

    with pytest.raises(ApiSourceError, match=r"page 2: the API's link to the next page leads to another host"):
        run(env, api_connector("next_url"), api, auth={"type": "api_key", "header": "X-Key", "value": "k-1"})

    assert len(api.requests) == 1 and target_rows(env) == {}


# --------------------------------------------------------------------------------------------------
# Auth


@pytest.mark.parametrize(
    "require, auth",
    [
        (("bearer", "tok-123"), {"type": "api_key", "header": "Authorization", "value": "Bearer tok-123"}),
        (("basic", "acme", "s3cret-pw"), {"type": "basic", "username": "acme", "password": "s3cret-pw"}),
        (
            ("oauth", "acme-client", "client-s3"),
            {
                "type": "oauth2",
                "token_url": "/oauth/token",
                "client_id": "acme-client",
                "client_secret": "client-s3",
            },
        ),
    ],
    ids=["bearer", "basic", "oauth2"],
)
def test_the_connections_auth_mode_is_sent_on_every_page(env, api, require, auth):
    getattr(api, f"require_{require[0]}")(*require[1:])

    report = run(env, api_connector("page_total"), api, auth=auth)

    assert report.rows_read == 25 and all(request.authorised for request in api.requests)
    if require[0] == "oauth":
        assert api.issued_tokens() == 1  # fetched once, reused for every page


def test_a_fetched_token_refused_mid_read_is_renewed_once(env, api):
    api.require_oauth("acme-client", "client-s3")
    api.inject(2, 401)  # the token revoked (or expired early) between two pages
    auth = {"type": "oauth2", "token_url": "/oauth/token", "client_id": "acme-client", "client_secret": "client-s3"}

    report = run(env, api_connector("cursor"), api, auth=auth)

    assert [request.status for request in api.requests] == [200, 401, 200, 200]
    assert api.issued_tokens() == 2 and report.rows_read == 25


def test_wrong_credentials_fail_clearly_without_the_secret(env, api):
    api.require_basic("acme", "right-password")
    auth = {"type": "basic", "username": "acme", "password": "wrong-pa55word"}

    with pytest.raises(ApiSourceError) as caught:
        run(env, api_connector("cursor"), api, auth=auth)

    message = str(caught.value)
    assert "answered 401: the API refused the connection's credentials (auth type basic)" in message
    encoded = base64.b64encode(b"acme:wrong-pa55word").decode()
    assert "wrong-pa55word" not in message and encoded not in message  # the API echoed the header: redacted
    assert target_rows(env) == {}


# --------------------------------------------------------------------------------------------------
# Through Dagster: the asset, its resources (the http connection's secret a dg.EnvVar), the CLI's preview


def api_project(import_project, database, api: PagedApi, **source):
    database.execute(TARGET_DDL)
    import_project.add_database(database, "crm")
    import_project.add_connection(
        "partner_api",
        {
            "type": "http",
            "base_url": api.base_url,
            "auth": {"type": "basic", "username": "acme", "password": "${PARTNER_API_PASSWORD}"},
            "retry": FAST_RETRY,
        },
        env={"PARTNER_API_PASSWORD": "job-s3cret"},
    )
    api.require_basic("acme", "job-s3cret")
    spec = api_connector("offset_total", **source).import_.model_dump(mode="json", exclude_unset=True)
    import_project.add_import("orders_api", spec)


def test_a_job_imports_from_the_api_then_only_what_is_newer(import_project, instance, sqlite_database, api):
    api_project(import_project, sqlite_database, api, lookback="0")

    first = import_project.run_import("orders_api", instance)

    assert first.success, first.failure()
    assert (first.metadata["rows_read"], first.metadata["inserted"]) == (25, 25)
    assert first.metadata["watermark"] == "2026-03-01T09:24:00"
    api.clear()
    api.require_basic("acme", "job-s3cret")
    api.records = make_records(25) + make_records(2, start=26, at=T0 + dt.timedelta(hours=1))
    second = import_project.run_import("orders_api", instance)
    assert second.success, second.failure()
    assert api.requests[0].query["updated_since"] == "2026-03-01T09:24:00"
    assert (second.metadata["rows_read"], second.metadata["inserted"]) == (3, 2)
    assert len(sqlite_database.query("SELECT id FROM orders")) == 27


def test_a_job_into_postgresql(import_project, instance, pg_database, api):
    api_project(import_project, pg_database, api)

    run = import_project.run_import("orders_api", instance)

    assert run.success, run.failure()
    rows = {row["id"]: row for row in pg_database.query("SELECT * FROM orders")}
    assert len(rows) == 25 and rows[3]["amount"] == Decimal("3.50") and rows[3]["customer"] == "C0"
    assert rows[3]["updated_at"] == dt.datetime(2026, 3, 1, 9, 2)


def test_a_failed_job_names_the_api_and_never_the_secret(import_project, instance, sqlite_database, api):
    api_project(import_project, sqlite_database, api)
    api.require_basic("acme", "another-password")

    run = import_project.run_import("orders_api", instance)

    assert not run.success
    message = run.failure()
    assert "import 'orders_api'" in message and "answered 401" in message and "job-s3cret" not in message
    assert sqlite_database.query("SELECT id FROM orders") == []


def test_preview_shows_the_first_records_of_the_first_page(import_project, sqlite_database, api):
    api_project(import_project, sqlite_database, api)
    project = import_project.project()

    sample = inspect.preview(project, project.connector("orders_api"), rows=3)

    assert sample.columns[:4] == ["id", "name", "amount", "updated_at"] and "customer.id" in sample.columns
    assert [row[0] for row in sample.rows] == ["1", "2", "3"]
    assert inspect.validate(project, project.connector("orders_api")) == []


def test_spec_problems_name_the_file_line_and_field(import_project, sqlite_database, api):
    api_project(import_project, sqlite_database, api)
    spec = import_project.connectors["orders_api"]["import"]
    del spec["source"]["api"]["since_param"]
    spec["source"]["api"]["params"] = {"api_key": "123", "offset": 5}

    with pytest.raises(ConnectorConfigError) as caught:
        import_project.project()

    [problem] = caught.value.problems
    assert problem.endswith(
        "resources/connectors/orders_api.yaml:14 import.source.api.params.api_key: 'api_key' looks like a credential; "
        "query strings end up in logs, so set it with the connection's `auth:` (type api_key sends it in a header)"
    )


def test_an_api_source_needs_an_http_connection(import_project, sqlite_database, api):
    api_project(import_project, sqlite_database, api)
    import_project.connectors["orders_api"]["import"]["source"]["api"]["connection"] = "crm"

    with pytest.raises(ConnectorConfigError) as caught:
        import_project.project()

    [problem] = caught.value.problems
    assert problem.endswith(
        "resources/connectors/orders_api.yaml:5 import.source.api.connection: connection 'crm' is of type sql, which "
        "cannot serve an API to import from; use a connection of type http (partner_api)"
    )


def test_the_preview_command_prints_the_first_records_and_records_it(import_project, sqlite_database, api, cli):
    api_project(import_project, sqlite_database, api)
    import_project.write()

    result = cli("preview", "orders_api", "--rows", "2")

    assert result.exit_code == 0, result.output
    assert f"first 2 rows of the first page of {api.base_url}/offset/items" in result.output
    assert "Record 2" in result.output and "preview recorded for 'orders_api'" in result.output
    assert "job-s3cret" not in result.output
