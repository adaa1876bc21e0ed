"""Compound mapping in imports: `lookups:` resolve a partner's reference into ours while importing (a value not in
the lookup table rejects its row with the reason, or takes the lookup's default), `foreign_key` attributes that
name the table they reference reject a value that does not resolve, a lookup may read another connection, the
tables are read per batch (never whole), and the loader names what is wrong in a spec."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.imports.lookups import import_lookups
from connector_pipelines.spec.imports import ImportSpec

PARTNER_ROWS = "CREATE TABLE partner_orders (order_no TEXT, crm_number TEXT, customer TEXT, updated_at TEXT)"
ACCOUNTS = "CREATE TABLE crm_accounts (crm_number VARCHAR(20) PRIMARY KEY, account_id INTEGER NOT NULL)"
CUSTOMERS = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"
TARGET = "CREATE TABLE orders (order_no VARCHAR(20) PRIMARY KEY, account_id INTEGER, customer_id INTEGER)"


def _seed(database) -> None:
    for ddl in (PARTNER_ROWS, ACCOUNTS, CUSTOMERS, TARGET):
        database.execute(ddl)
    database.execute("INSERT INTO crm_accounts VALUES (:n, :i)", [{"n": "CRM-1", "i": 101}, {"n": "CRM-2", "i": 102}])
    database.execute("INSERT INTO customers VALUES (:i, :n)", [{"i": 7, "n": "Ann"}, {"i": 8, "n": "Bob"}])
    database.execute(
        "INSERT INTO partner_orders VALUES (:o, :c, :k, '2026-12-01')",
        [
            {"o": "A1", "c": "CRM-1", "k": "7"},
            {"o": "A2", "c": "CRM-2", "k": "8"},
            {"o": "A3", "c": "CRM-9", "k": "7"},  # no such CRM account
            {"o": "A4", "c": "CRM-1", "k": "99"},  # no such customer
        ],
    )


def _import(import_project, database, lookup: dict | None = None, references: dict | None = None, **spec) -> None:
    import_project.add_database(database, "db")
    import_project.add_import(
        "orders",
        {
            "source": {"warehouse": {"connection": "db", "query": "SELECT * FROM partner_orders"}},
            "target": {"connection": "db", "table": "orders", "key": "order_no"},
            "lookups": {
                "account": {"table": "crm_accounts", "key": "crm_number", "value": "account_id", **(lookup or {})}
            },
            "mapping": [
                {"target": "order_no", "source": "order_no"},
                {"target": "account_id", "expression": "lookup('account', crm_number)", "type": "integer"},
                {
                    "target": "customer_id",
                    "source": "customer",
                    "type": "foreign_key",
                    **({"references": references} if references else {}),
                },
            ],
            **spec,
        },
    )


def _rejections(run) -> dict[str, str]:
    path = run.metadata.get("rejections_path") or run.metadata.get("rejections")
    table = pq.read_table(path).to_pylist()
    return {row["key"]: row["reason"] for row in table}


@pytest.mark.parametrize("database_fixture", ["pg_database", "sqlite_database"])
def test_a_lookup_resolves_the_partners_reference_and_a_value_not_found_rejects_its_row(
    import_project, instance, request, database_fixture
):
    database = request.getfixturevalue(database_fixture)
    _seed(database)
    _import(import_project, database)
    run = import_project.run_import("orders", instance)
    assert run.success, run.failure()
    rows = {r["order_no"]: r["account_id"] for r in database.query("SELECT * FROM orders")}
    assert rows == {"A1": 101, "A2": 102, "A4": 101}
    assert run.metadata["rows_rejected"] == 1
    assert _rejections(run) == {"A3": "account_id: lookup: 'CRM-9' is not in crm_accounts.crm_number"}


def test_a_lookup_with_a_default_gives_it_for_a_value_not_found(import_project, instance, sqlite_database):
    _seed(sqlite_database)
    _import(import_project, sqlite_database, lookup={"on_missing": "default", "default": 0})
    run = import_project.run_import("orders", instance)
    assert run.success, run.failure()
    rows = {r["order_no"]: r["account_id"] for r in sqlite_database.query("SELECT * FROM orders")}
    assert rows == {"A1": 101, "A2": 102, "A3": 0, "A4": 101} and run.metadata["rows_rejected"] == 0


def test_a_foreign_key_that_does_not_resolve_rejects_its_row(import_project, instance, pg_database):
    _seed(pg_database)
    _import(import_project, pg_database, references={"table": "customers", "column": "id"})
    run = import_project.run_import("orders", instance)
    assert run.success, run.failure()
    rows = {r["order_no"]: r["customer_id"] for r in pg_database.query("SELECT * FROM orders")}
    assert rows == {"A1": 7, "A2": 8}
    assert _rejections(run) == {
        "A3": "account_id: lookup: 'CRM-9' is not in crm_accounts.crm_number",
        "A4": "customer_id: lookup: '99' does not resolve: no customers.id has it",
    }


def test_a_lookup_reads_another_connection(import_project, instance, sqlite_database, mariadb_database):
    _seed(sqlite_database)
    mariadb_database.execute(ACCOUNTS)
    mariadb_database.execute("INSERT INTO crm_accounts VALUES ('CRM-1', 501), ('CRM-2', 502), ('CRM-9', 509)")
    import_project.add_database(mariadb_database, "crm")
    _import(import_project, sqlite_database, lookup={"connection": "crm"})
    run = import_project.run_import("orders", instance)
    assert run.success, run.failure()
    rows = {r["order_no"]: r["account_id"] for r in sqlite_database.query("SELECT * FROM orders")}
    assert rows == {"A1": 501, "A2": 502, "A3": 509, "A4": 501}


def test_a_lookup_table_that_is_not_there_fails_the_run_before_anything_is_merged(
    import_project, instance, sqlite_database
):
    _seed(sqlite_database)
    _import(import_project, sqlite_database, lookup={"table": "crm_accountz"})
    run = import_project.run_import("orders", instance)
    assert not run.success
    assert "lookup 'account': lookup table crm_accountz" in run.failure() and "no such table" in run.failure()
    assert sqlite_database.query("SELECT * FROM orders") == []


def test_a_large_lookup_table_is_read_for_the_values_each_batch_holds_not_whole(pg_database):
    pg_database.execute(ACCOUNTS)
    pg_database.execute("INSERT INTO crm_accounts SELECT 'CRM-' || n, n FROM generate_series(1, 200000) AS n")
    spec = ImportSpec.model_validate(
        {
            "source": {"warehouse": {"connection": "db", "query": "SELECT 1"}},
            "target": {"connection": "db", "table": "orders", "key": "order_no"},
            "lookups": {"account": {"table": "crm_accounts", "key": "crm_number", "value": "account_id"}},
            "mapping": [{"target": "order_no", "expression": "lookup('account', crm_number)"}],
        }
    )
    [table] = import_lookups(spec, pg_database.engine).values()
    batch = [f"CRM-{n}" for n in (5, 17, 5, 199999)]
    table.prefetch(batch)
    assert [table.get(value) for value in batch] == [5, 17, 5, 199999]
    assert table.table.values_asked == 3 and table.table.cached <= 3  # the batch's distinct values, not 200,000


def _loader_problems(import_project, sqlite_database, **changes) -> str:
    _seed(sqlite_database)
    _import(import_project, sqlite_database)
    spec = import_project.connectors["orders"]["import"]
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
    import_project.write()
    with pytest.raises(ConnectorConfigError) as error:
        import_project.load()
    return str(error.value)


def test_an_undeclared_lookup_is_named_with_its_line(import_project, sqlite_database):
    problems = _loader_problems(import_project, sqlite_database, **{"mapping.1.expression": "lookup('acount', x)"})
    assert "import.mapping.1.expression: lookup 'acount' is not declared (did you mean 'account'?)" in problems
    assert "orders.yaml:" in problems


def test_references_on_an_attribute_that_is_no_foreign_key_is_refused(import_project, sqlite_database):
    problems = _loader_problems(
        import_project, sqlite_database, **{"mapping.0.references": {"table": "customers", "column": "id"}}
    )
    assert "references is for `type: foreign_key` attributes, not text" in problems


def test_a_default_without_on_missing_default_is_refused(import_project, sqlite_database):
    problems = _loader_problems(import_project, sqlite_database, **{"lookups.account.default": 0})
    assert "default is used only with `on_missing: default`" in problems


def test_a_lookup_on_a_connection_that_is_not_sql_is_refused(import_project, sqlite_database, tmp_path):
    import_project.add_folder("files")
    problems = _loader_problems(import_project, sqlite_database, **{"lookups.account.connection": "files"})
    assert "lookups.account.connection" in problems and "files" in problems
