"""What a connector does, in plain words: its assets' descriptions in the UI and the CLI's `list`.

Source, target, what starts it (schedule, sensor, automation), the mode, and whether it is switched on, so that
someone who opens an asset in the UI knows what it does without reading the YAML.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.loader import LoadedConnector


def trigger_words(loaded: LoadedConnector) -> str:
    """What starts a connector, from its spec: `cron 30 6 * * *`, `after warehouse_customers`, `manual`, ..."""
    spec = loaded.spec
    if spec.automation == "on_upstream_update":
        return "after " + ", ".join(u.connector or u.asset for u in spec.depends_on)
    return _cadence(loaded) + (" (automation)" if spec.automation == "on_cron" else "")


def _cadence(loaded: LoadedConnector) -> str:
    if loaded.kind == "integration":
        integration = loaded.spec.integration
        schedule = integration.schedule
        parts = [] if schedule is None else [_schedule_words(schedule)]
        return ", ".join(parts + integration.triggers) or "manual"
    if loaded.kind == "import":
        spec = loaded.spec.import_
        schedule = spec.schedule
        parts = []
        if schedule is not None:
            parts.append(_schedule_words(schedule))
        if spec.source.kind in ("files", "email"):
            parts.append(f"on arrival ({spec.source.kind})")
        if spec.sync_on_save:
            parts.append("sync on save")
        return ", ".join(parts) or "manual"
    spec = loaded.spec.extract
    schedule = spec.schedule
    if schedule is None:
        return "manual"
    if spec.partitioned:
        return f"{schedule.cadence} from {schedule.inception_date}" + (
            f", rolling {schedule.rolling}" if schedule.rolling else ""
        )
    return _schedule_words(schedule)


def _schedule_words(schedule) -> str:
    """`once`, `cron 0 6 * * *`, or a preset with its cron: `workdays (0 6 * * 1-5)`."""
    if getattr(schedule, "once", False):
        return "once"
    cron = schedule.cron()
    return f"cron {cron}" if schedule.cadence == cron else f"{schedule.cadence} ({cron})"


def plain_words(loaded: LoadedConnector, part: str, connections: Mapping[str, Connection]) -> str:
    """One paragraph on what the asset of `part` does, then what starts it and whether it is on."""
    spec = loaded.spec

    def named(connection: str) -> str:
        found = connections.get(connection)
        return f"{connection} ({found.type})" if found is not None else connection

    if loaded.kind == "extract":
        extract = spec.extract
        targets = ", ".join(
            named(d.connection) + (f" folder {d.folder}" if d.folder else "") for d in extract.destinations
        )
        compression = f", {extract.compression}" if extract.compression != "none" else ""
        window = " for each time window" if extract.partitioned and part != "custom_file" else ""
        named_as = f" as {extract.file_name}" if extract.file_name else ""
        what = (
            f"Queries {named(extract.source.connection)}{window}, writes {extract.format}{compression}{named_as} "
            f"and uploads it to {targets}."
        )
        if part == "custom_file":
            what = f"For a custom window (window_start and window_end in run config): {what}"
    elif loaded.kind == "integration":
        integration = spec.integration
        data_set = integration.data_set
        configuration = next((c for c in integration.configurations if c.name == part), None)
        if configuration is None:
            source = f"table {data_set.table}" if data_set.table else "the rows of a query"
            incremental = f", incrementally by {data_set.updated_at}" if data_set.updated_at else ""
            what = (
                f"Reads {source} from {named(data_set.connection)} (key {', '.join(data_set.key)}){incremental}, "
                "and keeps what it read as a Parquet snapshot per run."
            )
        else:
            request = configuration.request
            batch = configuration.batch
            how = f"{request.method} {request.path}"
            if batch is not None:
                how += f", or {batch.size} records a request to {batch.method} {batch.path}"
            what = (
                f"Configuration {configuration.name}: sends each new or changed record to "
                f"{named(integration.target.connection)} ({how}); mode {configuration.sync_mode}; each change "
                "delivered once (idempotency keys, the delivery ledger)."
            )
            if configuration.description:
                what += f" {configuration.description.rstrip('.')}."
    else:
        imported = spec.import_
        source = imported.source
        if source.warehouse is not None:
            origin = f"a query on {named(source.warehouse.connection)}"
        elif source.files is not None:
            origin = f"files matching {source.files.pattern} on {named(source.files.connection)}"
        elif source.api is not None:
            origin = f"the API {source.api.path or '/'} on {named(source.api.connection)}"
        else:
            origin = f"emailed attachments matching {source.email.pattern}"
        target = imported.target
        what = (
            f"Upserts into table {target.table} on {named(target.connection)} (key {', '.join(target.key)}) from "
            f"{origin}, after its blocking expectations pass."
        )
    switch = "On." if spec.enabled else "Off (enabled: false): it refuses to run."
    starts = "by hand, with its window" if part == "custom_file" else trigger_words(loaded)
    environment = f" Environment: {loaded.environment}." if loaded.environment else ""
    return f"{what} Starts: {starts}. {switch}{environment}"
