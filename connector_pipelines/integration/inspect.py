"""What the CLI reads without starting a run: fields, preview, plan, trace (and a record's ledger state), reset.

These open the data set and the ledger directly (no Dagster run), send nothing and record nothing, except
`reset`, which forgets ledger state on purpose.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.integration.data_set import DataSetReader, column_problems
from connector_pipelines.integration.delivery import DeliveryReport, DeliveryScope, IntegrationDelivery
from connector_pipelines.integration.plan_output import PlanFile
from connector_pipelines.integration.retries import DEAD_LETTER, dead_letter_reason, describe_time, waiting_reason
from connector_pipelines.integration.run import open_delivery
from connector_pipelines.spec.integration import Configuration, IntegrationConnector
from connector_pipelines.spec.loader import LoadedConnector, Project
from connector_pipelines.state.database import default_state_url
from connector_pipelines.state.ledger import DeliveryLedger, utc_now
from connector_pipelines.storage import Storage
from connector_pipelines.transports.registry import client_for
from connector_pipelines.transports.sql import SqlSource


def integration_of(loaded: LoadedConnector) -> IntegrationConnector:
    if loaded.kind != "integration":
        raise ConnectorConfigError([f"'{loaded.name}' is an {loaded.kind} connector; this command is for integrations"])
    return loaded.spec


def configuration_of(connector: IntegrationConnector, name: str | None) -> list[Configuration]:
    configurations = connector.integration.configurations
    if name is None:
        return list(configurations)
    for configuration in configurations:
        if configuration.name == name:
            return [configuration]
    known = ", ".join(c.name for c in configurations)
    raise ConnectorConfigError([f"integration '{connector.name}' has no configuration '{name}'; it has: {known}"])


def sql_source(project: Project, connection_name: str) -> SqlSource:
    """A SqlSource for a `sql` connection, its password read from the environment variable it names."""
    source = client_for(project.connections[connection_name], project.base_dir, connection_name)
    assert isinstance(source, SqlSource)
    return source


def ledger_for(project: Project) -> DeliveryLedger:
    return DeliveryLedger(default_state_url(Storage.for_project(project.base_dir).root, project.environment))


@dataclass(frozen=True)
class FieldsReport:
    source: list[tuple[str, str]]  # (column, Arrow type)
    target: list[tuple[str, str, bool]]  # (field, type, required)
    mappings: dict[str, list[tuple[str, str, str]]]  # configuration -> (target, from, note)


def fields(project: Project, loaded: LoadedConnector) -> FieldsReport:
    connector = integration_of(loaded)
    spec = connector.integration
    with _reader(project, connector) as reader:
        schema = reader.source.schema(f"SELECT ds.* FROM ({reader.base_query}) ds", {})
    mappings = {}
    for configuration in spec.configurations:
        rows = []
        for rule in configuration.mapping:
            if rule.source is not None:
                origin = rule.source + (f" (parse {rule.parse})" if rule.parse else "")
            elif rule.expression is not None:
                origin = rule.expression
            else:
                origin = f"constant {rule.constant!r}"
            rows.append((rule.target, origin, rule.note))
        mappings[configuration.name] = rows
    return FieldsReport(
        source=[(f.name, str(f.type)) for f in schema],
        target=[(f.name, f.type, f.required) for f in spec.target.fields],
        mappings=mappings,
    )


def preview(project: Project, loaded: LoadedConnector, configuration: str | None, rows: int = 10) -> dict[str, list]:
    """Per configuration, the first `rows` mapped records and the request each would make."""
    connector = integration_of(loaded)
    out = {}
    with _reader(project, connector) as reader, _ledger(project) as ledger:
        for config in configuration_of(connector, configuration):
            delivery = _delivery(project, connector, config, reader, ledger)
            out[config.name] = delivery.preview(_limited(reader, rows), rows)
    return out


def plan(
    project: Project,
    loaded: LoadedConnector,
    configuration: str | None,
    full: bool = False,
    output: PlanFile | None = None,
) -> dict[str, DeliveryReport]:
    """A dry run per configuration: counts per operation and sample requests; nothing is sent or recorded.

    With `output`, every record's planned row goes to that file as the plan reads it (the caller closes it).
    """
    connector = integration_of(loaded)
    out = {}
    with _reader(project, connector) as reader, _ledger(project) as ledger:
        for config in configuration_of(connector, configuration):
            delivery = _delivery(project, connector, config, reader, ledger)
            # What the target connection declares decides the recovery rules the plan shows and applies.
            delivery.use_connection(project.connections.get(connector.integration.target.connection))
            sink = (lambda rows, name=config.name: output.write(name, rows)) if output is not None else None
            out[config.name] = delivery.plan(reader.read(), DeliveryScope(full=full), sink=sink)
    return out


def record_states(
    project: Project, loaded: LoadedConnector, key: str, configuration: str | None = None
) -> list[tuple[str, str]]:
    """(configuration, what the ledger says of the record now) for each configuration that knows the key."""
    connector = integration_of(loaded)
    limit = connector.integration.retry_across_runs.max_attempts
    out = []
    with _ledger(project) as ledger:
        for config in configuration_of(connector, configuration):
            record = ledger.record(connector.name, config.name, key)
            if record is not None:
                out.append((config.name, describe_record(record, limit, utc_now())))
    return out


def revivals(project: Project, loaded: LoadedConnector, keys: Sequence[str]) -> list[str]:
    """What a push of `keys` revives: the dead letters and the records waiting for their retry time among them."""
    connector = integration_of(loaded)
    limit = connector.integration.retry_across_runs.max_attempts
    lines = []
    with _ledger(project) as ledger:
        for config in connector.integration.configurations:
            for key in keys:
                record = ledger.record(connector.name, config.name, key)
                if record is None or record["status"] not in ("failed", DEAD_LETTER):
                    continue
                failed_runs = record.get("failed_runs") or 0
                retry_after = _retry_after(record)
                if record["status"] == DEAD_LETTER or failed_runs >= limit:
                    was = f"a dead letter after {failed_runs} failed run(s)"
                elif retry_after is not None and retry_after > utc_now():
                    was = f"waiting until {describe_time(retry_after)} after {failed_runs} failed run(s)"
                else:
                    continue
                lines.append(f"key {key} ({config.name}) was {was}: sent now, and counted from attempt 1 again")
    return lines


def describe_record(record: dict, max_attempts: int, now: dt.datetime) -> str:
    """One line on a record's ledger row: its status and, for a refused record, when (or whether) it is retried."""
    status = record["status"]
    failed_runs = record.get("failed_runs") or 0
    retry_after = _retry_after(record)
    if status == DEAD_LETTER or (status == "failed" and failed_runs >= max_attempts):
        text = dead_letter_reason(failed_runs, max_attempts)
    elif status == "failed" and retry_after is not None and retry_after > now:
        text = waiting_reason(failed_runs, max_attempts, retry_after)
    elif status == "failed" and failed_runs:
        text = f"failed {failed_runs} of at most {max_attempts} runs: the next run sends it again"
    elif status == "failed":
        text = "failed: the next run tries it again"
    else:
        text = status
    if status in ("failed", DEAD_LETTER, "pending", "in_flight") and record.get("last_error"):
        http = f" (HTTP {record['http_status']})" if record.get("http_status") else ""
        text += f"; last error{http}: {record['last_error']}"
    return text


def _retry_after(record: dict) -> dt.datetime | None:
    value = record.get("retry_after")
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)  # SQLite keeps naive UTC


def check_mapping_columns(project: Project, loaded: LoadedConnector) -> list[str]:
    """Problems where the key, the owner or a mapping names a column the data set does not return."""
    connector = integration_of(loaded)
    with _reader(project, connector) as reader:
        columns = reader.columns()
    problems = column_problems(connector.integration.data_set, columns)
    for config in connector.integration.configurations:
        from connector_pipelines.integration.delivery import build_mapping, target_fields

        mapping = build_mapping(config, target_fields(connector), {})
        problems += [f"configuration '{config.name}': {p}" for p in mapping.check_columns(columns)]
    return problems


@contextmanager
def _reader(project: Project, connector: IntegrationConnector) -> Iterator[DataSetReader]:
    source = sql_source(project, connector.integration.data_set.connection)
    try:
        yield DataSetReader(source, connector.integration.data_set)
    finally:
        source.dispose()


@contextmanager
def _ledger(project: Project) -> Iterator[DeliveryLedger]:
    ledger = ledger_for(project)
    try:
        yield ledger
    finally:
        ledger.dispose()


def _delivery(project, connector, configuration, reader: DataSetReader, ledger) -> IntegrationDelivery:
    """The delivery a run would make, assembled as the asset does, without a client: it previews and plans only."""
    return open_delivery(
        connector, configuration, ledger, reader, run_id="plan", open_source=lambda name: sql_source(project, name)
    )


def _limited(reader: DataSetReader, rows: int) -> Iterator[pa.RecordBatch]:
    table = reader.preview(rows)
    yield from table.to_batches()
