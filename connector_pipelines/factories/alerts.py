"""The alerts sensor: what `resources/notifications.yaml` asks for, fed from the instance's event log.

Each tick reads the runs that ended since its cursor, and of each its asset check evaluations and
materializations (rejected rates, held records, file arrivals), checks the files due by a deadline, turns
them into observations per connector and hands them to `alerts.decide`, which alerts once per state change and
sends a recovery notice when a condition is good again. A failed asset check does not fail its run, so a
run-failure sensor would never see one: checks are watched as their own events. The cursor (the event log
positions read, every watch's state, the deadlines checked) survives restarts. On its first tick the sensor
starts from the present: past failures do not alert.

The sensor is on by default (an alert that must be switched on is an alert nobody gets).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping

import dagster as dg
from dagster._utils.schedules import reverse_cron_string_iterator

from connector_pipelines.alerts.decide import Observation, step
from connector_pipelines.alerts.message import compose
from connector_pipelines.alerts.send import AlertNotSent, deliver
from connector_pipelines.errors import ConnectorConfigError, TransportError
from connector_pipelines.factories.naming import ALERTS_SENSOR, ConnectorNames
from connector_pipelines.spec.loader import Project
from connector_pipelines.transports.registry import client_for

T = dg.DagsterEventType
RUN_ENDS = (T.RUN_FAILURE, T.RUN_SUCCESS)
BATCH = 500  # run ends read per kind and tick


def alerts_sensor(
    project: Project, names: Mapping[str, ConnectorNames], clock: Callable[[], dt.datetime] | None = None
) -> dg.SensorDefinition | None:
    """None when there is no notifications.yaml (or it has no rules). `clock` stands in for the time of day in
    tests of deadlines."""
    notifications = project.notifications
    if notifications is None or not notifications.rules:
        return None
    by_job = {n.job: connector for connector, n in names.items()}
    by_key = {key: connector for connector, n in names.items() for key in n.keys.values()}

    @dg.sensor(
        name=ALERTS_SENSOR,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts per resources/notifications.yaml: failures, blocking checks, rejected rates, held "
        "records, files missing by their deadline, and recoveries",
    )
    def connector_alerts(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        instance = context.instance
        after = cursor.get("after") or _now_positions(instance)
        finished = []  # (storage id, record) of the runs that ended since the last tick
        for event_type in RUN_ENDS:
            result = instance.fetch_run_status_changes(
                event_type, limit=BATCH, cursor=after.get(event_type.value), ascending=True
            )
            finished += [(record.storage_id, record) for record in result.records]
            if result.records:
                after[event_type.value] = result.cursor
        observations: list[Observation] = []
        for _, record in sorted(finished, key=lambda pair: pair[0]):
            observations += _observe_run(instance, record, by_job, by_key)
        deadlines = dict(cursor.get("deadlines", {}))
        now = clock() if clock else dt.datetime.now(dt.UTC)
        observations += _deadlines(instance, project, names, deadlines, now)
        alerts, states = step(cursor.get("states", {}), observations, notifications.rules)
        for alert in alerts:
            message = compose(alert, notifications.base_url)
            for channel_name in alert.channels:
                try:
                    deliver(message, channel_name, notifications.channels[channel_name], _smtp(project))
                    context.log.info(f"alert sent to {channel_name}: {message.subject}")
                except (AlertNotSent, TransportError, ConnectorConfigError) as exc:  # unreachable, refused, unset
                    context.log.error(f"alert not sent: {exc}")
        new_cursor = json.dumps({"after": after, "states": states, "deadlines": deadlines}, sort_keys=True)
        return dg.SensorResult(
            skip_reason=f"{len(alerts)} alert(s) sent" if alerts else "nothing to alert", cursor=new_cursor
        )

    return connector_alerts


def _now_positions(instance: dg.DagsterInstance) -> dict[str, str | None]:
    """The latest run end of each kind: where a new sensor starts, so history does not alert."""
    positions = {}
    for event_type in RUN_ENDS:
        latest = instance.fetch_run_status_changes(event_type, limit=1, ascending=False)
        positions[event_type.value] = latest.cursor if latest.records else None
    return positions


def _observe_run(instance, record, by_job, by_key) -> list[Observation]:
    """What an ended run says: its checks and materializations first, then its outcome. (Checks and
    materializations are read from the run's own events: that works on every event log storage.)"""
    entry = record.event_log_entry
    run_id = entry.run_id
    observations: list[Observation] = []
    for log in instance.all_logs(run_id, of_type={T.ASSET_CHECK_EVALUATION, T.ASSET_MATERIALIZATION}):
        observations += _observe_event(log.dagster_event, run_id, by_key)
    for connector in _connectors_of_run(instance, run_id, entry.job_name, by_job, by_key):
        if entry.dagster_event.event_type == T.RUN_FAILURE:
            observations.append(Observation(connector, "run", True, _failure_cause(instance, run_id), run_id))
        else:
            observations.append(Observation(connector, "run", False, "the run succeeded", run_id))
    return observations


def _observe_event(event, run_id: str, by_key) -> Iterator[Observation]:
    if event.event_type == T.ASSET_CHECK_EVALUATION:
        data = event.asset_check_evaluation_data
        connector = by_key.get(data.asset_key)
        if connector is None or data.severity != dg.AssetCheckSeverity.ERROR:
            return
        cause = data.description or f"check {data.check_name} on {data.asset_key.to_user_string()} failed"
        yield Observation(connector, f"check:{data.check_name}", not data.passed, cause, run_id)
        return
    materialization = event.step_materialization_data.materialization
    connector = by_key.get(materialization.asset_key)
    if connector is None:
        return
    values = {name: getattr(value, "value", value) for name, value in materialization.metadata.items()}
    rate = values.get("rejected_rate")
    if rate is None and values.get("rows_read"):
        rate = values.get("rows_rejected", 0) / values["rows_read"]
    if isinstance(rate, int | float):
        cause = f"{rate:.1%} of the records were rejected"
        yield Observation(connector, "rejected_rate", False, cause, run_id, rate)
    if isinstance(values.get("held"), int):
        held = values["held"]
        yield Observation(connector, "held", held > 0, f"{held:,} record(s) held for review", run_id)
    if values.get("files_imported"):
        yield Observation(connector, "missing_file", False, f"{values['files_imported']} file(s) arrived", run_id)


def _connectors_of_run(instance, run_id: str, job: str, by_job, by_key) -> list[str]:
    if job in by_job:
        return [by_job[job]]
    run = instance.get_run_by_id(run_id)  # an automation or UI run of the implicit asset job
    keys = (run.asset_selection or set()) if run is not None else set()
    return sorted({by_key[key] for key in keys if key in by_key})


def _failure_cause(instance, run_id: str) -> str:
    from connector_pipelines.run_queue import FinishedRun
    from connector_pipelines.runs import failure_message

    return failure_message(FinishedRun(instance, run_id))


def _deadlines(instance, project: Project, names, checked: dict[str, str], now: dt.datetime) -> Iterator[Observation]:
    """Each rule's file deadline that passed since the last tick: a file import that received no file in the period
    before it is missing one. The first tick only notes the latest deadline."""
    for index, rule in enumerate(project.notifications.rules):
        if "missing_file" not in rule.on:
            continue
        deadline = rule.deadline
        ticks = reverse_cron_string_iterator(now.timestamp(), deadline.cron, deadline.timezone)
        latest, before = next(ticks), next(ticks)
        for name, loaded in project.connectors.items():
            if loaded.kind != "import" or loaded.spec.import_.source.kind not in ("files", "email"):
                continue
            if not rule.covers(name):
                continue
            key = f"{index}|{name}"
            seen = checked.get(key)
            checked[key] = latest.isoformat()
            if seen is None or seen == latest.isoformat():
                continue
            start = max(before, dt.datetime.fromisoformat(seen))
            if not _file_arrived(instance, names[name], start, latest):
                local = latest.strftime("%Y-%m-%d %H:%M %Z")
                yield Observation(name, "missing_file", True, f"no file arrived by the deadline {local}")


def _file_arrived(instance, names: ConnectorNames, start: dt.datetime, end: dt.datetime) -> bool:
    for key in names.keys.values():
        for record in instance.fetch_materializations(key, limit=100).records:
            materialization = record.asset_materialization
            imported = materialization.metadata.get("files_imported") if materialization else None
            in_period = start.timestamp() < record.timestamp <= end.timestamp()
            if imported is not None and getattr(imported, "value", 0) and in_period:
                return True
    return False


def _smtp(project: Project):
    return lambda connection: client_for(project.connections[connection], project.base_dir, connection)
