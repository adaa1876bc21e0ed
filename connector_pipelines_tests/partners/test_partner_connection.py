"""A `partner` connection end to end: a file a partner pushes over SFTP into its inbox is picked up by the import's
file sensor and loaded into PostgreSQL; an extract's file written to the partner's outbox is downloaded by the
partner over SFTP. `serve-files` runs as a subprocess over the same project and storage folder as the Dagster runs."""

from __future__ import annotations

import pytest

from connector_pipelines_tests.partners.exchange import partner_entry

pytestmark = pytest.mark.timeout(180)

TARGET_DDL = "CREATE TABLE acme_orders (order_id INTEGER PRIMARY KEY, amount NUMERIC(12,2))"


def acme_project(import_project, exchanges, database, email_connection=None, **partner):
    import_project.add_connection("acme_files", {"type": "partner", "partner": "acme"})
    import_project.add_database(database, "crm")
    import_project.write()
    exchange = exchanges([partner_entry("acme", **partner)], None, "", email_connection)
    assert exchange.resources == import_project.resources and exchange.storage == import_project.storage
    return exchange


def orders_import(import_project, database) -> None:
    database.execute(TARGET_DDL)
    import_project.add_import(
        "acme_orders",
        {
            "source": {"files": {"connection": "acme_files", "folder": "inbox", "pattern": "orders_*.csv"}},
            "target": {"connection": "crm", "table": "acme_orders", "key": "order_id"},
            "mapping": [
                {"target": "order_id", "source": "id", "type": "integer", "parse": "integer"},
                {"target": "amount", "source": "amount", "type": "number"},
            ],
        },
    )


def test_a_file_pushed_into_the_inbox_is_picked_up_by_the_sensor_and_imported(
    import_project, exchanges, instance, pg_database
):
    orders_import(import_project, pg_database)
    exchange = acme_project(import_project, exchanges, pg_database)
    key = exchange.add_key("acme")
    exchange.start()
    (exchange.root / "orders_1.csv").write_text("id,amount\n1,10.5\n2,20\n")
    pushed = exchange.sftp("acme", ["put orders_1.csv inbox/orders_1.csv"], key=key)
    assert pushed.returncode == 0, pushed.stderr
    import_project.record_preview("acme_orders")

    sensor = "import_acme_orders_files"
    first = import_project.sensor_tick(sensor, instance, None)  # new and just written: it settles for a tick
    second = import_project.sensor_tick(sensor, instance, first.cursor)
    assert [request.run_key for request in first.run_requests] == []
    [request] = second.run_requests
    run = import_project.launch_request("acme_orders", instance, request)

    assert run.success
    rows = pg_database.query("SELECT order_id, amount FROM acme_orders ORDER BY order_id")
    assert [(row["order_id"], float(row["amount"])) for row in rows] == [(1, 10.5), (2, 20.0)]
    assert not (exchange.folder("acme", "inbox") / "orders_1.csv").exists()
    assert (exchange.folder("acme", "archive") / "orders_1.csv").exists()  # beside the inbox, not shown to acme
    listing = exchange.sftp("acme", ["ls"], key=key)
    assert listing.stdout.split()[-2:] == ["inbox", "outbox"]


def test_an_extract_into_the_outbox_is_downloaded_by_the_partner(import_project, exchanges, instance, pg_database):
    pg_database.execute("CREATE TABLE prices (sku VARCHAR(10), price INTEGER)")
    pg_database.execute("INSERT INTO prices VALUES ('A', 1), ('B', 2)")
    import_project.add_extract(
        "acme_prices",
        "SELECT sku, price FROM prices ORDER BY sku",
        source="crm",
        destinations=[{"connection": "acme_files", "folder": "outbox"}],
        file_name="prices.csv",
    )
    exchange = acme_project(import_project, exchanges, pg_database)
    key = exchange.add_key("acme")
    exchange.start()

    result = import_project.run("acme_prices", instance)
    assert result.success
    pulled = exchange.sftp("acme", ["get outbox/prices.csv prices.csv"], key=key)

    assert pulled.returncode == 0, pulled.stderr
    assert (exchange.root / "prices.csv").read_text().splitlines() == ["sku,price", "A,1", "B,2"]


def test_a_partner_connection_must_name_a_partner_of_partners_yaml(import_project, exchanges):
    from connector_pipelines.errors import ConnectorConfigError

    import_project.add_connection("other_files", {"type": "partner", "partner": "acmee"})
    import_project.write()
    exchanges([partner_entry("acme")], connections=None, folder="")

    with pytest.raises(ConnectorConfigError) as raised:
        import_project.load()

    [problem] = raised.value.problems
    expected = "connections.yaml:4 connections.other_files.partner: no partner named 'acmee' (did you mean 'acme'?)"
    assert expected in problem
    assert problem.endswith("partners.yaml: acme")


def test_processing_reports_go_to_the_outbox_and_the_return_email(
    import_project, exchanges, instance, pg_database, smtp_inbox
):
    orders_import(import_project, pg_database)
    import_project.add_connection("mail", smtp_inbox.connection())
    exchange = acme_project(import_project, exchanges, pg_database, "mail", return_email="data@acme.example")
    key = exchange.add_key("acme")
    exchange.start()
    (exchange.root / "orders_1.csv").write_text("id,amount\n1,10.5\n2,lots\n3,7\n")
    (exchange.root / "orders_2.csv").write_text("number,amount\n1,10\n")  # the id column is missing
    pushed = exchange.sftp("acme", ["put orders_1.csv inbox/", "put orders_2.csv inbox/"], key=key)
    assert pushed.returncode == 0, pushed.stderr

    run = import_project.run_import("acme_orders", instance)
    pulled = exchange.sftp("acme", ["get outbox/*.report.txt"], key=key)

    assert run.success, run.failure()
    assert pulled.returncode == 0, pulled.stderr
    first = (exchange.root / f"orders_1.csv.{run.run_id[:8]}.report.txt").read_text()
    second = (exchange.root / f"orders_2.csv.{run.run_id[:8]}.report.txt").read_text()
    assert "status: imported" in first and "rows imported: 2" in first and "rows rejected: 1" in first
    [rejected] = [line for line in first.splitlines() if line.startswith("2,")]
    assert "lots" in rejected or "amount" in rejected
    assert "status: quarantined (not imported)" in second and "reason: " in second and "id" in second
    [mail] = smtp_inbox.messages
    assert mail["To"] == "data@acme.example"
    assert mail["Subject"] == "Processing report: acme_orders: 2 file(s) (1 imported, 1 rejected)"
    body = mail.get_content()
    assert "file: orders_1.csv" in body and "file: orders_2.csv" in body
    assert "crm" not in body and "acme_orders (" not in body  # no connection or table internals
