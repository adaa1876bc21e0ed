"""`depends_on:` and `automation:`: a connector's place among a team's other assets.

Upstreams become real dependencies of the connector's first asset (an integration's data set, an import's table,
an extract's file), so the asset graph shows the lineage from a dbt model to the integration that reads it, and
`connector: NAME` stands for that connector's outputs (an import's table, an integration's deliveries, an
extract's file). The automation is Dagster's declarative automation, evaluated by one automation-condition
sensor over the project's connectors (on by default), so a chain of connectors is requested in one evaluation:

- `on_upstream_update`: when every upstream has been updated (or is being requested in the same evaluation)
  since this connector last ran, none of them is in progress and their blocking checks passed. Stricter than
  `AutomationCondition.eager()`, which fires on any one upstream and on a missing asset: a fresh deployment
  starts nothing by itself, and a failed blocking check upstream stops the chain.
- `on_cron`: `AutomationCondition.on_cron` on the schedule's cadence (it also waits for every upstream to have
  updated since the tick), in place of the schedule.

The connector's other assets (an integration's configurations) follow its first one within the same run.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import dagster as dg

from connector_pipelines.factories.naming import CUSTOM_FILE, DATA_SET, ConnectorNames
from connector_pipelines.spec.kinds import schedule_of
from connector_pipelines.spec.loader import LoadedConnector

AC = dg.AutomationCondition


def output_keys(names: ConnectorNames) -> list[dg.AssetKey]:
    """What another connector's `depends_on: - connector: NAME` waits for: the assets that hold its result."""
    if names.kind == "integration":
        return [key for part, key in names.keys.items() if part != DATA_SET]
    return [key for part, key in names.keys.items() if part != CUSTOM_FILE]


def upstream_keys(loaded: LoadedConnector, names_by_connector: Mapping[str, ConnectorNames]) -> list[dg.AssetKey]:
    keys: list[dg.AssetKey] = []
    for upstream in loaded.spec.depends_on:
        if upstream.connector is not None:
            keys += output_keys(names_by_connector[upstream.connector])
        else:
            keys.append(dg.AssetKey(upstream.asset.split("/")))
    return list(dict.fromkeys(keys))


def on_upstream_update(upstreams: Sequence[dg.AssetKey]) -> dg.AutomationCondition:
    """True once every upstream has been updated (or is requested now) since this asset was last handled."""
    each_updated = [
        AC.asset_matches(key, AC.newly_updated() | AC.will_be_requested())
        .since_last_handled()
        .with_label(f"{key.to_user_string()} updated since the last run")
        for key in upstreams
    ]
    condition = AC.in_latest_time_window()
    for updated in each_updated:
        condition = condition & updated
    return (
        condition & ~AC.any_deps_in_progress() & ~AC.in_progress() & AC.all_deps_blocking_checks_passed()
    ).with_label("on_upstream_update")


def with_first_asset() -> dg.AutomationCondition:
    """A connector's later assets run in the run that materializes its first one."""
    return AC.any_deps_match(AC.will_be_requested()).with_label("with the connector's data set")


def root_condition(loaded: LoadedConnector, upstreams: Sequence[dg.AssetKey]) -> dg.AutomationCondition | None:
    spec = loaded.spec
    if not spec.enabled or spec.automation == "none":
        return None
    if spec.automation == "on_upstream_update":
        return on_upstream_update(upstreams)
    schedule = schedule_of(spec)
    cron = schedule.cron()
    return AC.on_cron(cron, schedule.timezone) & AC.all_deps_blocking_checks_passed()


def automated_keys(loaded: LoadedConnector, names: ConnectorNames) -> list[dg.AssetKey]:
    """The connector's assets the automation sensor evaluates (none when it is off or has no automation)."""
    if not loaded.spec.enabled or loaded.spec.automation == "none":
        return []
    return [key for part, key in names.keys.items() if part != CUSTOM_FILE]


def apply_upstreams(
    defs: dg.Definitions, loaded: LoadedConnector, names: ConnectorNames, names_by_connector
) -> dg.Definitions:
    """The connector's definitions with its upstream dependencies and automation conditions (and, for on_cron,
    without the schedule the condition replaces)."""
    spec = loaded.spec
    upstreams = upstream_keys(loaded, names_by_connector)
    if not upstreams and spec.automation == "none":
        return defs
    first_key = next(iter(names.keys.values()))
    condition = root_condition(loaded, upstreams)
    # A partitioned extract's custom-window file is run by hand with its window in run config, never automated.
    followers = set(names.keys.values()) - {first_key, names.keys.get(CUSTOM_FILE)}

    def place(asset_spec: dg.AssetSpec) -> dg.AssetSpec:
        if asset_spec.key == first_key:
            asset_spec = asset_spec.merge_attributes(deps=upstreams)
            return asset_spec.replace_attributes(automation_condition=condition) if condition else asset_spec
        if asset_spec.key in followers and condition is not None:
            return asset_spec.replace_attributes(automation_condition=with_first_asset())
        return asset_spec

    with warnings.catch_warnings():  # map_asset_specs is marked preview; it is Dagster's way to edit built specs
        warnings.simplefilter("ignore", dg.PreviewWarning)
        placed = defs.map_asset_specs(func=place)
    if spec.automation != "on_cron":
        return placed
    return dg.Definitions(
        assets=placed.assets,
        asset_checks=placed.asset_checks,
        jobs=placed.jobs,
        schedules=[s for s in placed.schedules or [] if s.name != names.schedule],
        sensors=placed.sensors,
        resources=placed.resources,
    )


def automation_sensor(name: str, keys: Sequence[dg.AssetKey]) -> dg.AutomationConditionSensorDefinition | None:
    """The sensor that evaluates the connectors' conditions: one for all of them, so that a chain's assets are
    requested in the same evaluation; on by default, as the schedules of enabled connectors are."""
    if not keys:
        return None
    return dg.AutomationConditionSensorDefinition(
        name,
        target=dg.AssetSelection.assets(*keys),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Starts connectors whose automation (on_upstream_update, on_cron) says they should run",
    )
