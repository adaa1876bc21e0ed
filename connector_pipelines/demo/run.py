"""`connector-pipelines demo`: seed the demo warehouse and run every demo connector through Dagster."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from connector_pipelines.definitions import definitions_for
from connector_pipelines.demo.app import drop_partner_files, prepare_app_database
from connector_pipelines.demo.crm import add_integration_tables, change_some_contacts
from connector_pipelines.demo.crm_api import CrmApi
from connector_pipelines.demo.seed import seed_demo_warehouse
from connector_pipelines.errors import ConnectorConfigError, ExtractError
from connector_pipelines.factories.naming import (
    AUTOMATION_SENSOR,
    RUN_KEY_TAG,
    change_sensor_name,
    file_sensor_name,
    job_name,
)
from connector_pipelines.instance import ensure_dagster_home
from connector_pipelines.runs import failure_message, launch_extract, launch_import, launch_integration
from connector_pipelines.spec.loader import Project, load_project

# Fixed windows inside the seeded data (2024-01-01 .. 2026-06-30), so every demo run prints the same counts.
DEMO_RUNS: list[tuple[str, dict[str, str]]] = [
    ("invoices_daily", {"partition": "2026-06-01"}),
    ("invoices_daily", {"partition": "2026-06-02"}),
    ("usage_weekly_rolling", {"partition": "2026-05-04..2026-05-25"}),
    ("accounts_full", {}),
    ("loans_custom", {"window": "2025-01-01..2025-07-01"}),
]
DEMO_TARGET_PORT = 18765  # the demo's `crm` connection points here
EVENT_DRIVEN = "contact_webhooks"
CHAIN = ("warehouse_customers", "customers_to_crm")  # an import, then the integration that pushes what it imported


def run_demo(resources_dir: Path, *, scale: float = 1.0, echo: Callable[[str], None] = print) -> bool:
    """Returns True when every demo run succeeded."""
    try:
        project = load_project(resources_dir)
    except ConnectorConfigError as exc:
        for problem in exc.problems:
            echo(problem)
        return False
    base = project.base_dir
    started = time.perf_counter()
    database = base / "var" / "demo" / "warehouse.db"
    echo(f"1. Seeding the demo warehouse {database} ...")
    counts = seed_demo_warehouse(database, scale=scale)
    add_integration_tables(database)
    echo("   " + ", ".join(f"{table}: {rows:,}" for table, rows in counts.items()))
    outbox = base / "var" / "demo" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    home = ensure_dagster_home(base)
    echo(f"2. Running the demo connectors through Dagster (DAGSTER_HOME={home}) ...")
    ok = True
    with dg.DagsterInstance.get() as instance:
        for name, options in DEMO_RUNS:
            shown = " ".join(f"--{k} {v}" for k, v in options.items())
            echo(f"   connector-pipelines run {name} {shown}".rstrip())
            try:
                outcome = launch_extract(
                    project,
                    project.connector(name),
                    instance=instance,
                    echo=lambda line: echo(f"     {line}"),
                    **options,
                )
            except ExtractError as exc:
                echo(f"     {exc}")
                ok = False
                continue
            ok = ok and outcome.success
        ok = _integrations(project, instance, database, echo) and ok
        # The automation sensor's first evaluation: it starts nothing on a fresh deployment (no run is new to it).
        _, cursor = _automation_tick(project, instance, cursor=None)
        ok = _imports(project, instance, echo) and ok
        ok = _chain(project, instance, cursor, echo) and ok
    echo(f"6. Files written under {outbox}:")
    for path in sorted(p for p in outbox.rglob("*") if p.is_file()):
        echo(f"   {path.relative_to(outbox)}  ({path.stat().st_size:,} bytes)")
    echo(
        f"Demo {'finished' if ok else 'FAILED'} in {time.perf_counter() - started:.1f}s. "
        "Open the Dagster UI with `make ui` (http://127.0.0.1:3000) to see the runs, the asset graph, "
        "partitions, schedules and each file's metadata."
    )
    return ok


def _integrations(project: Project, instance: dg.DagsterInstance, database: Path, echo) -> bool:
    """Deliver to the loopback CRM: a full sync, a change in the warehouse picked up by the sensor, a push."""
    port = _crm_port(project)
    echo(f"3. Integrations, delivering to a loopback CRM on http://127.0.0.1:{port} ...")
    ok = True
    with CrmApi(port=port) as crm:
        for name in ("crm_accounts", EVENT_DRIVEN):
            echo(f"   connector-pipelines run {name}")
            outcome = launch_integration(project, project.connector(name), instance=instance, echo=_indent(echo))
            ok = ok and outcome.success
        echo("   connector-pipelines run crm_accounts  (again: reads what changed since, sends nothing)")
        outcome = launch_integration(project, project.connector("crm_accounts"), instance=instance, echo=_indent(echo))
        ok = ok and outcome.success
        changed = change_some_contacts(database)
        echo(f"   In the warehouse: {changed['updated']} contacts edited, {changed['created']} added, 1 deleted")
        ok = _sensor_tick(project, instance, echo) and ok
        echo("   connector-pipelines push contact_webhooks --key 5 --key 6")
        outcome = launch_integration(
            project, project.connector(EVENT_DRIVEN), keys=["5", "6"], instance=instance, echo=_indent(echo)
        )
        ok = ok and outcome.success
        stats = crm.stats()
        echo(
            f"   The CRM received {stats['requests']:,} requests; companies: {len(crm.records('companies')):,}, "
            f"contacts: {len(crm.records('contacts')):,}, health scores: {len(crm.records('health')):,}; "
            f"records applied twice: {stats['duplicates']}"
        )
    return ok


def _sensor_tick(project: Project, instance: dg.DagsterInstance, echo) -> bool:
    """One evaluation of the change sensor, and the runs it asks for."""
    sensor, job = change_sensor_name(EVENT_DRIVEN), job_name("integration", EVENT_DRIVEN)
    ok, _, results = _run_sensor(project, instance, sensor, job, echo)
    for result in results:
        for event in result.get_asset_materialization_events():
            values = event.materialization.metadata
            if "sent" in values:
                echo(
                    f"     run {result.run_id[:8]}: {values['create'].value} create, {values['update'].value} update, "
                    f"{values['delete'].value} delete, {values['delivered'].value} delivered"
                )
    return ok


def _imports(project: Project, instance: dg.DagsterInstance, echo) -> bool:
    """A warehouse import (preview, run, incremental rerun) and partner files picked up by the file sensor."""
    from connector_pipelines.imports.inspect import preview, record_preview

    base = project.base_dir
    echo("4. Imports, into the app's database var/demo/app.db ...")
    prepare_app_database(base / "var" / "demo" / "app.db")
    ok = True

    def previewed(name: str) -> None:
        sample = preview(project, project.connector(name), rows=3)
        record_preview(project, project.connector(name))
        echo(f"   connector-pipelines preview {name}: {len(sample.columns)} columns ({', '.join(sample.columns)})")

    previewed("warehouse_customers")
    for label in ("", "   (again: only rows from the watermark less the lookback are read, and stay unchanged)"):
        echo(f"   connector-pipelines run warehouse_customers{label}")
        outcome = launch_import(
            project, project.connector("warehouse_customers"), instance=instance, echo=_indent(echo)
        )
        ok = ok and outcome.success
        if outcome.metadata.get("added_columns"):
            echo(f"     columns added to customers: {outcome.metadata['added_columns']}")
    drop = base / "var" / "demo" / "partner_drop"
    names = drop_partner_files(drop)
    # Delivered a few minutes ago, one after the other: the sensor takes files that stopped changing.
    for index, name in enumerate(names):
        delivered = time.time() - 300 + 10 * index
        os.utime(drop / name, (delivered, delivered))
    echo(f"   The partner drops {len(names)} files into {drop.relative_to(base)}: {', '.join(names)}")
    previewed("partner_conversions")
    sensor, job = file_sensor_name("partner_conversions"), job_name("import", "partner_conversions")
    ran, cursor, results = _run_sensor(project, instance, sensor, job, echo)
    ok = ok and ran
    for result in results:
        for event in result.get_asset_materialization_events():
            for record in event.materialization.metadata["files"].value.records:
                data = record.data
                rows = f", {data['rows']} rows" if data["rows"] else ""
                echo(
                    f"     {data['file']}: {data['status']}{rows}" + (f" ({data['reason']})" if data["reason"] else "")
                )
    for report in sorted((drop / "quarantine").glob("*.report.txt")):
        reason = next(line for line in report.read_text().splitlines() if line.startswith("reason:"))
        echo(f"   quarantine/{report.name}: {reason}")
    echo("   (next tick: the files were archived or quarantined, so nothing is asked for twice)")
    ran, _, _ = _run_sensor(project, instance, sensor, job, echo, cursor=cursor)
    return ok and ran


def _run_sensor(project: Project, instance: dg.DagsterInstance, sensor_name: str, job: str, echo, cursor=None):
    """One evaluation of a sensor (from `cursor`), and the runs it asks for, as the daemon would start them.

    Returns (every run succeeded, the new cursor, the runs' results)."""
    defs = definitions_for(project)
    sensor = defs.resolve_sensor_def(sensor_name)
    with dg.build_sensor_context(
        instance=instance, resources=defs.get_repository_def().get_top_level_resources(), cursor=cursor
    ) as context:
        data = sensor.evaluate_tick(context)
    skipped = f" ({data.skip_message})" if data.skip_message else ""
    echo(f"   sensor {sensor.name}: {len(data.run_requests)} run request(s){skipped}")
    job_def = defs.resolve_job_def(job)
    ok, results = True, []
    for request in data.run_requests:
        run_config = dict(request.run_config)
        run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
        tags = {**request.tags, **({RUN_KEY_TAG: request.run_key} if request.run_key else {})}
        result = job_def.execute_in_process(instance=instance, run_config=run_config, tags=tags, raise_on_error=False)
        if not result.success:
            echo(f"     run {result.run_id} failed: {failure_message(result)}")
        ok = ok and result.success
        results.append(result)
    return ok, data.cursor, results


def _chain(project: Project, instance: dg.DagsterInstance, cursor, echo) -> bool:
    """The import above updated the customers table: the automation sensor's next evaluation asks for the
    integration that depends on it (`automation: on_upstream_update`), as the daemon would; the one after, nothing."""
    upstream, downstream = CHAIN
    echo(f"5. A chain: {upstream} updated the customers table, so {downstream} (depends_on it) runs next ...")
    ok = True
    with CrmApi(port=_crm_port(project)) as crm:
        for label in ("", " (again: nothing upstream is new since)"):
            results, cursor = _automation_tick(project, instance, cursor=cursor)
            requested = sorted({key for result in results for key in result["keys"]})
            echo(f"   sensor {AUTOMATION_SENSOR}{label}: {len(results)} run(s) for {', '.join(requested) or 'nothing'}")
            for result in results:
                echo(f"     run {result['run_id'][:8]}: {result['summary']}")
                ok = ok and result["success"]
        echo(f"   The CRM holds {len(crm.records('customers')):,} customer profiles")
    return ok


def _automation_tick(project: Project, instance: dg.DagsterInstance, cursor):
    """One evaluation of the connectors' automation conditions (the sensor's tick) and a run of what it requests,
    on the implicit asset job as the daemon launches it. Returns ([{keys, run_id, success, summary}], cursor)."""
    defs = definitions_for(project)
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    evaluation = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=sensor.asset_selection, cursor=cursor
    )
    keys = [
        result.key
        for result in evaluation.results
        if isinstance(result.key, dg.AssetKey) and evaluation.get_num_requested(result.key)
    ]
    if not keys:
        return [], evaluation.cursor
    job = defs.resolve_implicit_global_asset_job_def()
    run = job.execute_in_process(
        instance=instance,
        asset_selection=keys,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={"dagster/from_automation_condition": "true"},
        raise_on_error=False,
    )
    delivered = [
        f"{event.asset_key.path[-1]}: {event.materialization.metadata['delivered'].value} delivered"
        for event in run.get_asset_materialization_events()
        if "delivered" in event.materialization.metadata
    ]
    summary = ", ".join(delivered) if run.success else f"failed: {failure_message(run)}"
    entry = {"keys": [key.to_user_string() for key in keys], "run_id": run.run_id, "success": run.success}
    return [{**entry, "summary": summary}], evaluation.cursor


def _crm_port(project: Project) -> int:
    """The port of the demo's `crm` connection (a loopback URL), where the demo starts its CRM."""
    from urllib.parse import urlsplit

    crm = project.connections.get("crm")
    port = urlsplit(crm.base_url).port if crm is not None and crm.type == "http" else None
    return port or DEMO_TARGET_PORT


def _indent(echo):
    return lambda line: echo(f"     {line}")
