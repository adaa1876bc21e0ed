"""Connections -> Dagster resources, one per named connection (the resource key is the connection name), sealed.

Sealed: a `dg.ConfigurableResource`'s fields are part of the job's run config (`resources.<key>.config.*`), so anyone
who can launch a run (the Launchpad, GraphQL `launchRun`) could repoint a connection: send the HTTP target's
credentials to their own server, import from any folder the worker can read, swap a pinned SSH host key. Each
resource is therefore handed to Dagster as a definition whose config schema is empty: a run config that names any
setting is refused before the run is created, and the settings used are the ones connections.yaml gave. The typed
`ConfigurableResource` still does the work inside (Dagster resolves its `dg.EnvVar` secrets when a run starts it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.connections import Connection
from connector_pipelines.transports.registry import missing_variables, resource_for

SEALED = "cannot be changed at launch"


def build_resources(connections: Mapping[str, Connection], base_dir: Path) -> dict[str, dg.ResourceDefinition]:
    """Every connection's resource (`transports.registry.resource_for`), keyed by the connection's name, sealed."""
    return {
        name: sealed(
            resource_for(connection, base_dir, name),
            f"connection '{name}' ({connection.type}) from connections.yaml; {SEALED}",
            check=lambda name=name, connection=connection: missing_variables(connection, name),
        )
        for name, connection in connections.items()
    }


def sealed(resource: dg.ConfigurableResource, description: str, check=None, guard=None) -> dg.ResourceDefinition:
    """`resource` as a definition that takes no run config (`config_schema={}`: any `config:` is an unknown field).

    `check()` lists problems to refuse the run with before the resource starts (an unset variable), said plainly;
    `guard(value, instance)` does the same with the initialised resource and the instance the run is on.
    """

    @dg.resource(config_schema={}, description=description)
    def sealed_resource(context: dg.InitResourceContext):
        problems = check() if check else []
        if problems:
            raise ConnectorConfigError(problems)
        # Resolves the EnvVar fields as Dagster would for a plain resource. The value is returned, not yielded:
        # none of these resources tears anything down, and a generator would force `with build_sensor_context`.
        # The `_cm` form closes the throwaway instance Dagster makes for the initialisation at once; the plain
        # form leaves it to the garbage collector, which then resets Dagster's context variables at random.
        with resource.process_config_and_initialize_cm() as value:
            problems = guard(value, context.instance) if guard else []
            if problems:
                raise ConnectorConfigError(problems)
            return value

    return sealed_resource


# Launchers that run every run on this machine (the default: a subprocess; the in-memory one of tests).
_THIS_MACHINE = ("DefaultRunLauncher", "SyncInMemoryRunLauncher")


def one_machine_only(value, instance: dg.DagsterInstance | None) -> list[str]:
    """A SQLite state database is a file on one machine: runs launched elsewhere (a pod per run, another
    container) would each open their own copy and deliver twice. Refused when the instance launches runs
    elsewhere; PostgreSQL (CONNECTOR_PIPELINES_LEDGER_URL) is shared by all."""
    url = getattr(value, "url", "")
    if instance is None or not url.startswith("sqlite"):
        return []
    launcher = type(instance.run_launcher).__name__
    if launcher in _THIS_MACHINE:
        return []
    return [
        f"the connectors' state (delivery ledger, import state) is a SQLite file of one machine, but this Dagster "
        f"instance launches runs with {launcher}, each on its own machine or pod; set CONNECTOR_PIPELINES_LEDGER_URL "
        "to a PostgreSQL database every run can reach (see README, Running in production)"
    ]
