"""Each asset's description says in plain words what its connector does: source, target, what starts it, the
mode, and whether it is on."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from connector_pipelines import build_definitions

DEMO_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def _words(defs: dg.Definitions, key: str) -> str:
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == key)
    return spec.description.split("\n\n", 1)[1]


def test_demo_asset_descriptions_name_source_target_trigger_mode_and_switch():
    defs = build_definitions(DEMO_RESOURCES)
    assert _words(defs, "extract/accounts_full/file") == (
        "Queries warehouse (sql), writes jsonl as accounts_{now:%Y%m%d}.jsonl and uploads it to outbox (folder) "
        "folder accounts. Starts: cron 30 6 * * *. On."
    )
    assert _words(defs, "extract/invoices_daily/custom_file").endswith("Starts: by hand, with its window. On.")
    assert _words(defs, "integration/customers_to_crm/profiles") == (
        "Configuration profiles: sends each new or changed record to crm (http) (PUT /customers/{{external_id}}); "
        "mode upsert; each change delivered once (idempotency keys, the delivery ledger). One profile per "
        "customer, created or replaced by PUT. Starts: after warehouse_customers. On."
    )
    assert _words(defs, "integration/contact_webhooks/data_set").startswith(
        "Reads table contacts from warehouse (sql) (key contact_id), incrementally by updated_at"
    )
    assert _words(defs, "import/partner_conversions/conversions") == (
        "Upserts into table conversions on app (sql) (key partner, conversion_id) from files matching "
        "Conversions_202?_*.csv on partner_drop (folder), after its blocking expectations pass. Starts: on arrival "
        "(files). On."
    )


def test_a_switched_off_connector_says_so_in_its_description(tmp_path):
    resources = tmp_path / "resources"
    shutil.copytree(DEMO_RESOURCES, resources)
    path = resources / "connectors" / "accounts_full.yaml"
    path.write_text(path.read_text().replace("kind: extract\n", "kind: extract\nenabled: false\n", 1))
    words = _words(build_definitions(resources), "extract/accounts_full/file")
    assert words.endswith("Starts: cron 30 6 * * *. Off (enabled: false): it refuses to run.")
