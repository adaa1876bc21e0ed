"""The connector kinds a spec may declare, and the model each one is validated with."""

from __future__ import annotations

from connector_pipelines.spec.extract import ExtractConnector
from connector_pipelines.spec.imports import ImportConnector
from connector_pipelines.spec.integration import IntegrationConnector

AVAILABLE_KINDS = {"extract": ExtractConnector, "integration": IntegrationConnector, "import": ImportConnector}
Connector = ExtractConnector | IntegrationConnector | ImportConnector


def schedule_of(connector: Connector):
    """The connector's `schedule:` (an ExtractSchedule, RunSchedule or ImportSchedule), or None."""
    body = {"extract": "extract", "integration": "integration", "import": "import_"}[connector.kind]
    return getattr(connector, body).schedule
