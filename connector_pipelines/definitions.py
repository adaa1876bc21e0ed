"""The one assembly point: every connector under resources/ as Dagster definitions (workspace.yaml loads `defs`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from connector_pipelines.factories.alerts import alerts_sensor
from connector_pipelines.factories.automation import apply_upstreams, automated_keys, automation_sensor
from connector_pipelines.factories.extract import build_extract_defs
from connector_pipelines.factories.imports import build_import_defs
from connector_pipelines.factories.integration import build_integration_defs
from connector_pipelines.factories.naming import (
    AUTOMATION_SENSOR,
    IMPORT_STATE_RESOURCE,
    LEDGER_RESOURCE,
    RESERVED_RESOURCE_KEYS,
    STORAGE_RESOURCE,
)
from connector_pipelines.factories.resources import SEALED, build_resources, one_machine_only, sealed
from connector_pipelines.factories.translator import ConnectorTranslator, configured_translator, connector_names
from connector_pipelines.spec.common import PLATFORM_RESOURCE_PREFIX
from connector_pipelines.spec.loader import Project, load_project
from connector_pipelines.state.resources import default_state_resources

BUILDERS = {"extract": build_extract_defs, "integration": build_integration_defs, "import": build_import_defs}


def build_definitions(
    resources_dir: Path | None = None,
    translator: ConnectorTranslator | None = None,
    state: Mapping[str, dg.ConfigurableResource] | None = None,
) -> dg.Definitions:
    """Load and validate every spec (all problems reported at once), then build each connector's objects.

    `translator` names the assets (default: `$CONNECTOR_PIPELINES_TRANSLATOR`, else `ConnectorTranslator()`; set
    the variable when you pass your own, so the CLI names them the same way). `state` replaces the platform's
    own resources (keys in `factories.naming.RESERVED_RESOURCE_KEYS`: storage, ledger, import state).
    """
    return definitions_for(load_project(resources_dir), translator, state)


def definitions_for(
    project: Project,
    translator: ConnectorTranslator | None = None,
    state: Mapping[str, dg.ConfigurableResource] | None = None,
    automation_sensor_name: str = AUTOMATION_SENSOR,
) -> dg.Definitions:
    translator = translator or configured_translator()
    names = {
        name: connector_names(loaded, project.connections, translator) for name, loaded in project.connectors.items()
    }
    per_connector = [
        apply_upstreams(BUILDERS[loaded.kind](loaded, project.connections, translator), loaded, names[name], names)
        for name, loaded in project.connectors.items()
    ]
    automated = [key for name, loaded in project.connectors.items() for key in automated_keys(loaded, names[name])]
    sensors = [
        sensor
        for sensor in (automation_sensor(automation_sensor_name, automated), alerts_sensor(project, names))
        if sensor is not None
    ]
    unknown = set(state or {}) - set(RESERVED_RESOURCE_KEYS)
    if unknown:
        raise ValueError(f"state resources must be keyed by {', '.join(RESERVED_RESOURCE_KEYS)}, not {unknown}")
    storage, ledger, import_state = default_state_resources(project)
    platform = {
        STORAGE_RESOURCE: storage,
        LEDGER_RESOURCE: ledger,
        IMPORT_STATE_RESOURCE: import_state,
        **(state or {}),
    }
    # Sealed like the connections: a launch must not point the ledger at another database or the storage elsewhere.
    sealed_platform = {
        key: sealed(
            resource,
            f"the platform's {key.removeprefix(PLATFORM_RESOURCE_PREFIX).replace('_', ' ')}; {SEALED}",
            guard=one_machine_only if key != STORAGE_RESOURCE else None,
        )
        for key, resource in platform.items()
    }
    return dg.Definitions.merge(
        *per_connector,
        dg.Definitions(
            resources={**build_resources(project.connections, project.base_dir), **sealed_platform},
            sensors=sensors,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server on demand, so importing this module reads no YAML."""
    return build_definitions()
