"""The live state of each connector's schedules and sensors, as the UI and the daemon see it: the state stored in
the instance (someone switched it on or off in the UI) or else the default the definitions declare.

The YAML's `enabled` decides the default and whether a tick may start a run; what actually ticks is the stored
state, which `enabled: false` does not change. `list` shows both, so a schedule switched on in the UI for a
disabled connector (it ticks, and skips) is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

RUNNING, STOPPED = "RUNNING", "STOPPED"


@dataclass(frozen=True)
class TriggerState:
    """One schedule or sensor: its name, whether it is running, and whether someone switched it (the UI,
    `dagster schedule start`) rather than it following the definitions' default."""

    name: str
    running: bool
    switched: bool

    def describe(self, job: str, enabled: bool) -> str:
        """e.g. `schedule running (default)`, `changes stopped (switched off)`; `..., skips: disabled` when a
        disabled connector's trigger runs."""
        label = self.name.removeprefix(f"{job}_")
        state = "running" if self.running else "stopped"
        how = ("switched on" if self.running else "switched off") if self.switched else "default"
        return f"{label} {state} ({how})" + (", skips: disabled" if self.running and not enabled else "")


def live_trigger_states(
    instance: dg.DagsterInstance, repository: dg.RepositoryDefinition
) -> dict[str, list[TriggerState]]:
    """Job name -> the live state of every schedule and sensor that targets it."""
    # Matched by name: the stored state is keyed by the code location's origin, which depends on how the
    # webserver loaded the project (workspace.yaml, `dg dev`), while the names are the project's own and unique.
    stored: dict[str, str] = {}
    for state in instance.all_instigator_state():
        status = state.status.value
        if status in (RUNNING, STOPPED) or state.name not in stored:
            stored[state.name] = status
    out: dict[str, list[TriggerState]] = {}
    definitions = [
        (schedule.name, schedule.job_name, schedule.default_status == dg.DefaultScheduleStatus.RUNNING)
        for schedule in repository.schedule_defs
    ] + [
        (sensor.name, job, sensor.default_status == dg.DefaultSensorStatus.RUNNING)
        for sensor in repository.sensor_defs
        for job in _jobs_of(sensor, repository)
    ]
    for name, job, default_running in definitions:
        status = stored.get(name)
        explicit = status in (RUNNING, STOPPED)
        running = status == RUNNING if explicit else default_running
        out.setdefault(job, []).append(TriggerState(name, running, explicit))
    return out


def _jobs_of(sensor: dg.SensorDefinition, repository: dg.RepositoryDefinition) -> list[str]:
    """The jobs a sensor starts; for the automation sensor (it targets assets, not a job), the connector jobs
    whose assets it evaluates."""
    if not isinstance(sensor, dg.AutomationConditionSensorDefinition):
        return [target.job_name for target in sensor.targets]  # none for the alerts sensor: it starts no run
    keys = sensor.asset_selection.resolve(repository.asset_graph)
    return [
        job.name
        for job in repository.get_all_jobs()
        if not job.name.startswith("__") and job.asset_layer.selected_asset_keys & keys
    ]
