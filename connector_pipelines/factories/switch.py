"""`enabled: false` means off: every op that sends, uploads or merges refuses, and every schedule and sensor of the
connector skips, saying why, even when someone switched it on in the UI.

The refusal lives in the assets themselves, so the UI's Materialize, a GraphQL launch, a re-execution of one step
and the CLI all meet it; the default status STOPPED only keeps the daemon from ticking by default.
"""

from __future__ import annotations

import dagster as dg

from connector_pipelines.spec.loader import LoadedConnector
from connector_pipelines.spec.yaml_source import display_path


def disabled_reason(loaded: LoadedConnector) -> str | None:
    """Why the connector may not deliver ("connector NAME is disabled (enabled: false in FILE)"), or None when on."""
    if loaded.spec.enabled:
        return None
    return f"connector {loaded.name} is disabled (enabled: false in {display_path(loaded.path)})"


def refuse_when_disabled(reason: str | None) -> None:
    """Stop the op before it reads or sends anything. A clean failure: the UI shows the message, no stack trace."""
    if reason is not None:
        raise dg.Failure(
            description=f"{reason}: nothing was read or sent; set enabled: true in that file to run it",
            allow_retries=False,
        )


def skipping_schedule(
    *, name: str, job, cron_schedule: str, execution_timezone: str, reason: str, description: str | None = None
) -> dg.ScheduleDefinition:
    """A disabled connector's schedule: the same name, job and cron (so the UI shows it where it always was),
    stopped by default, and a tick that only says why it does not run."""

    def skip(context: dg.ScheduleEvaluationContext) -> dg.SkipReason:
        return dg.SkipReason(reason)

    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone=execution_timezone,
        execution_fn=skip,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )


def skipping_sensor(sensor: dg.SensorDefinition, job, reason: str) -> dg.SensorDefinition:
    """A disabled connector's sensor: the same name, job and interval as `sensor`, stopped by default, and a tick
    that only says why it does not run (it reads nothing, so it needs no resource)."""

    def skip(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        return dg.SkipReason(reason)

    return dg.SensorDefinition(
        name=sensor.name,
        evaluation_fn=skip,
        job=job,
        minimum_interval_seconds=sensor.minimum_interval_seconds,
        description=sensor.description,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )


def skipping_instead(schedule: dg.ScheduleDefinition, job, reason: str) -> dg.ScheduleDefinition:
    """`skipping_schedule` with the name, cron, time zone and description of an existing schedule definition."""
    return skipping_schedule(
        name=schedule.name,
        job=job,
        cron_schedule=schedule.cron_schedule,
        execution_timezone=schedule.execution_timezone or "UTC",
        reason=reason,
        description=schedule.description,
    )
