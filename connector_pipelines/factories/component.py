"""`ConnectorComponent`: a folder of connectors as a Dagster Component, for a team's own `dg` project.

A `defs.yaml` names a connections file and connector files (globs), both relative to the `defs.yaml`'s folder;
the component loads and validates them exactly as `definitions.py` loads `resources/` (the same `file:line
field:` problems, raised through `dg check defs`) and builds the same definitions.

The connector specs stay in their own files: Dagster renders `defs.yaml` with Jinja, which would eat an
integration's `{{field}}` request templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from connector_pipelines.definitions import definitions_for
from connector_pipelines.factories.naming import AUTOMATION_SENSOR
from connector_pipelines.factories.translator import ConnectorAssetData, ConnectorTranslator, configured_translator
from connector_pipelines.spec.loader import load_project

CONNECTIONS_FILE = "connections.yaml"
CONNECTOR_GLOBS = ("connectors/*.yaml", "connectors/*.yml")

_EXAMPLE_CONNECTIONS = """\
# The systems your connectors talk to. Secrets come from environment variables only: ${NAME}.
connections:
  out_folder:
    type: folder
    path: var/connector_out
"""


@dataclass(frozen=True)
class PlacedTranslator(ConnectorTranslator):
    """Another translator's specs, with the component's key prefix and group (when set) put on them."""

    base: ConnectorTranslator = field(default_factory=ConnectorTranslator)
    key_prefix: tuple[str, ...] = ()
    group_name: str | None = None

    def get_asset_spec(self, data: ConnectorAssetData) -> dg.AssetSpec:
        spec = self.base.get_asset_spec(data)
        if self.key_prefix:
            spec = spec.replace_attributes(key=spec.key.with_prefix(list(self.key_prefix)))
        if self.group_name:
            spec = spec.replace_attributes(group_name=self.group_name)
        return spec


class ConnectorScaffolder(dg.Scaffolder):
    """`dg scaffold defs connector_pipelines.ConnectorComponent NAME`: a defs.yaml, a connections file and an
    empty connectors folder beside it (the shape of this project's `resources/`)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, {"connections": CONNECTIONS_FILE, "connectors": list(CONNECTOR_GLOBS)})
        connections = request.target_path / CONNECTIONS_FILE
        if not connections.exists():
            connections.write_text(_EXAMPLE_CONNECTIONS)
        (request.target_path / "connectors").mkdir(exist_ok=True)


@dg.scaffold_with(ConnectorScaffolder)
class ConnectorComponent(dg.Component, dg.Resolvable, dg.Model):
    """Connectors declared in YAML (extracts, integrations, imports) as Dagster assets, checks, jobs, schedules
    and sensors.

    Paths are relative to the folder of this component's `defs.yaml`. Relative paths inside the connections file
    (folders, drop boxes) and the platform's state (`var/`: the delivery ledger, import state, snapshots) are
    resolved against `root`, by default the `dg` project's root."""

    connections: str = CONNECTIONS_FILE
    connectors: list[str] = list(CONNECTOR_GLOBS)
    root: str | None = None
    key_prefix: list[str] = []
    group_name: str | None = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        here = Path(context.path)
        connector_paths = sorted({path for pattern in self.connectors for path in here.glob(pattern)})
        root = here / self.root if self.root else Path(context.project_root)
        project = load_project(
            here, connections_path=here / self.connections, connector_paths=connector_paths, root=root
        )
        translator = PlacedTranslator(configured_translator(), tuple(self.key_prefix), self.group_name)
        # One automation sensor per component, so that two components in one project do not clash.
        return definitions_for(project, translator, automation_sensor_name=f"{AUTOMATION_SENSOR}_{here.name}")
