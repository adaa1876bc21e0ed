"""The Dagster resource for an `http` connection; the engine-side client is `transports.http.HttpDeliveryClient`.

The connection's settings travel as JSON in which every secret is still an environment reference (`${NAME}`);
the client resolves them from the environment when a run starts, so the UI and the run config only ever show
variable names.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from connector_pipelines.spec.models import HttpConnection
from connector_pipelines.transports.http import HttpDeliveryClient


class HttpResource(dg.ConfigurableResource):
    """An HTTP API that integrations deliver to (auth, limits and retries as configured)."""

    connection_json: str
    base_dir: str = "."

    @property
    def connection(self) -> HttpConnection:
        return HttpConnection.model_validate_json(self.connection_json)

    def get_client(self) -> HttpDeliveryClient:
        return HttpDeliveryClient(self.connection, base_dir=Path(self.base_dir))
