"""`make demo` in miniature: the shipped resources/ seeded and run end to end on a throwaway project root."""

import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from connector_pipelines.demo.run import DEMO_RUNS, run_demo
from connector_pipelines_tests.servers import free_port

REPO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def test_demo_runs_every_connector_and_writes_files(tmp_path, monkeypatch):
    resources = tmp_path / "resources"
    shutil.copytree(REPO_RESOURCES, resources)
    # The demo's CRM listens where the `crm` connection points; a free port keeps this test off the real demo's.
    connections = resources / "connections.yaml"
    connections.write_text(connections.read_text().replace(":18765", f":{free_port()}"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("CONNECTOR_PIPELINES_STORAGE", str(tmp_path / "storage"))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    lines: list[str] = []

    assert run_demo(resources, scale=0.2, echo=lines.append), "\n".join(lines)

    outbox = tmp_path / "var" / "demo" / "outbox"
    files = sorted(p.relative_to(outbox).as_posix() for p in outbox.rglob("*") if p.is_file())
    assert [f for f in files if f.startswith("invoices/")] == [
        "invoices/invoices_20260601.csv.gz",
        "invoices/invoices_20260602.csv.gz",
    ]
    assert files.count("usage/usage_20260504_20260601.parquet") == 1
    assert any(f.startswith("accounts/accounts_") and f.endswith(".jsonl") for f in files)
    assert "loans/loans_custom_20250101T0000_20250701T0000.tsv" in files
    usage = pq.read_table(outbox / "usage" / "usage_20260504_20260601.parquet")
    occurred = usage.column("occurred_at").to_pylist()
    assert usage.num_rows > 0 and min(occurred) >= "2026-05-04" and max(occurred) < "2026-06-01"
    # Each extract, three integration runs, a push and two import runs succeed; the sensor's run reports counts.
    assert sum("succeeded" in line for line in lines) == len(DEMO_RUNS) + 4 + 2
    assert any("sensor integration_contact_webhooks_changes: 1 run request(s)" in line for line in lines)
    assert any("2 create, 3 update, 1 delete, 6 delivered" in line for line in lines), "\n".join(lines)
    # The second run of crm_accounts reads only what was updated since the first (less the overlap), sends nothing.
    again = lines.index(next(line for line in lines if "run crm_accounts  (again" in line))
    read, companies = lines[again + 1], lines[again + 2]
    assert re.search(r"data_set: [1-9][0-9,]* rows \(updated_at >= .* \(since the last run", read), read
    assert re.search(r"companies: 0 sent, 0 delivered, 0 failed, 0 skipped, [1-9][0-9,]* unchanged", companies)
    assert any("records applied twice: 0" in line for line in lines)
    # The chain: after the import updated the customers table, the automation sensor's tick runs the integration
    # that depends on it (data set and profiles in one run), and the next tick runs nothing.
    assert any(
        "sensor connector_pipelines_automation: 1 run(s) for integration/customers_to_crm/data_set, "
        "integration/customers_to_crm/profiles" in line
        for line in lines
    ), "\n".join(lines)
    assert any(re.search(r"run [0-9a-f]{8}: profiles: [1-9][0-9,]* delivered", line) for line in lines)
    assert any("(again: nothing upstream is new since): 0 run(s) for nothing" in line for line in lines)
    # Imports: new columns, an incremental rerun reading only the rows at the watermark again (changing nothing),
    # partner files each handled once.
    assert any(
        "columns added to customers: country, customer_since, last_seen, plan, usage_events" in line for line in lines
    )
    assert any(
        "warehouse_customers: 2 rows read, 0 inserted, 0 updated, 2 unchanged or older" in line for line in lines
    )
    assert any("Conversions_2026_w1.csv: imported, 400 rows" in line for line in lines)
    assert any(
        "Conversions_2026_w1_resent.csv: duplicate (same content as 'Conversions_2026_w1.csv'" in line for line in lines
    )
    assert any("quarantine/Conversions_2026_w0.csv.report.txt: reason: malformed CSV" in line for line in lines)
    assert lines.count("   sensor import_partner_conversions_files: 0 run request(s) (no new matching files)") == 1
    # Nothing is left in the staging area once files are delivered.
    assert not [p for p in (tmp_path / "storage" / "staging").rglob("*") if p.is_file()]
