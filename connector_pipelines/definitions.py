"""The one entry point: every connector in resources/ as Dagster definitions (workspace.yaml loads `defs`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from connector_pipelines.factories.extract import build_extract_defs
from connector_pipelines.factories.imports import build_import_defs
from connector_pipelines.factories.integration import build_integration_defs
from connector_pipelines.factories.resources import build_resources
from connector_pipelines.factories.translator import ConnectorTranslator
from connector_pipelines.spec.loader import Project, load_project


def build_definitions(
    resources_dir: Path | None = None, translator: ConnectorTranslator | None = None
) -> dg.Definitions:
    """Load and validate every spec (all problems reported at once), then build each connector's objects."""
    return definitions_for(load_project(resources_dir), translator)


def definitions_for(project: Project, translator: ConnectorTranslator | None = None) -> dg.Definitions:
    builders = {"extract": build_extract_defs, "integration": build_integration_defs, "import": build_import_defs}
    per_connector = [
        builders[loaded.kind](loaded, project.connections, project.base_dir, translator)
        for loaded in project.connectors.values()
    ]
    return dg.Definitions.merge(
        *per_connector,
        dg.Definitions(resources=build_resources(project.connections, project.base_dir)),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / the code server on demand, so importing this module reads no YAML."""
    return build_definitions()
