"""`make demo` in miniature: the shipped resources/ seeded and run end to end on a throwaway project root."""

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines.demo.run import DEMO_RUNS, run_demo
from connector_pipelines_tests.servers import free_port

REPO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


@dataclass
class DemoRun:
    root: Path
    resources: Path
    lines: list[str]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Iterator[DemoRun]:
    """One `make demo` (at a fifth of the data) on a throwaway root, shared by this module's tests, which only
    read what it left (its output, the instance, the files)."""
    root = tmp_path_factory.mktemp("demo")
    resources = root / "resources"
    shutil.copytree(REPO_RESOURCES, resources)
    # The demo's CRM listens where the `crm` connection points; a free port keeps this test off the real demo's.
    connections = resources / "connections.yaml"
    connections.write_text(connections.read_text().replace(":18765", f":{free_port()}"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        monkeypatch.setenv("CONNECTOR_PIPELINES_STORAGE", str(root / "storage"))
        monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
        lines: list[str] = []
        assert run_demo(resources, scale=0.2, echo=lines.append), "\n".join(lines)
        yield DemoRun(root, resources, lines)


def test_demo_runs_every_connector_and_writes_files(demo_run):
    tmp_path, lines = demo_run.root, demo_run.lines

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


def _cli(demo_run: DemoRun, *args: str):
    return CliRunner().invoke(main, [*args, "--resources", str(demo_run.resources)], catch_exceptions=False)


def test_history_json_of_every_kind_shows_what_each_run_recorded(demo_run):
    extract = json.loads(_cli(demo_run, "history", "accounts_full", "--json").output)
    assert [run["status"] for run in extract] == ["SUCCESS"] and extract[0]["trigger"] == "cli"
    assert extract[0]["rows"] > 0 and len(extract[0]["sha256"]) == 64 and extract[0]["file_name"].endswith(".jsonl")

    integration = json.loads(_cli(demo_run, "history", "crm_accounts", "--json").output)
    assert len(integration) == 2  # the full sync, then the rerun that sent nothing
    newest, first = integration
    companies = first["configurations"]["companies"]
    assert companies["delivered"] > 0  # the rest are skipped: their manager lacks the role (roles:)
    assert companies["delivered"] + companies["skipped"] == first["data_set"]["rows"]
    assert newest["configurations"]["companies"]["sent"] == 0 and newest["configurations"]["companies"]["unchanged"]

    chained = json.loads(_cli(demo_run, "history", "customers_to_crm", "--json").output)
    assert [run["trigger"] for run in chained] == ["automation"]  # run by the automation sensor's tick, not a job
    assert chained[0]["configurations"]["profiles"]["delivered"] > 0

    imported = json.loads(_cli(demo_run, "history", "warehouse_customers", "--json").output)
    assert [run["inserted"] for run in imported][-1] > 0 and imported[0]["inserted"] == 0


def test_history_table_has_the_kinds_own_columns(demo_run):
    lines = _cli(demo_run, "history", "accounts_full").output.splitlines()
    assert lines[0].split() == ["RUN", "STARTED", "(UTC)", "TRIGGER", "STATUS", "ROWS", "BYTES", "FILE", "SHA256"]
    lines = _cli(demo_run, "history", "customers_to_crm").output.splitlines()
    assert lines[0].split()[-5:] == ["READ", "SENT", "DELIVERED", "FAILED", "UNCHANGED"]
    assert "automation" in lines[1] and "SUCCESS" in lines[1]


def test_download_fetches_an_extracts_file_back_and_an_integrations_snapshot_and_audit(demo_run, tmp_path):
    [run] = json.loads(_cli(demo_run, "history", "accounts_full", "--json").output)
    target = tmp_path / "accounts.jsonl"
    done = _cli(demo_run, "download", "accounts_full", run["run_id"][:8], "-o", str(target))
    assert done.exit_code == 0, done.output
    written = demo_run.root / "var" / "demo" / "outbox" / "accounts" / run["file_name"]
    assert target.read_bytes() == written.read_bytes()

    [chained] = json.loads(_cli(demo_run, "history", "customers_to_crm", "--json").output)
    folder = tmp_path / "chained"
    done = _cli(demo_run, "download", "customers_to_crm", chained["run_id"], "-o", str(folder), "--json")
    assert done.exit_code == 0, done.output
    files = {Path(item["path"]).name: item["rows"] for item in json.loads(done.output)}
    delivered = chained["configurations"]["profiles"]["delivered"]
    assert files == {"snapshot.parquet": chained["data_set"]["rows"], "audit_profiles.parquet": delivered}

    missing = _cli(demo_run, "download", "accounts_full", "deadbeef")
    assert missing.exit_code == 2 and "no run 'deadbeef' of extract 'accounts_full'" in missing.output


def test_list_json_shows_each_connector_with_its_automation_triggers_and_last_run(demo_run):
    listed = {item["name"]: item for item in json.loads(_cli(demo_run, "list", "--json").output)}
    assert set(listed) == {path.stem for path in (demo_run.resources / "connectors").glob("*.yaml")}
    chained = listed["customers_to_crm"]
    assert chained["automation"] == "on_upstream_update" and chained["depends_on"] == ["warehouse_customers"]
    assert chained["triggers"] == [{"name": "connector_pipelines_automation", "running": True, "switched": False}]
    assert chained["last_run"]["status"] == "SUCCESS"
    assert listed["loans_custom"]["triggers"] == [] and listed["accounts_full"]["last_run"]["status"] == "SUCCESS"
