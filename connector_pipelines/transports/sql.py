"""The Dagster resource for a `sql` connection; the engine-side reader is `sources.sql.SqlSource`."""

from __future__ import annotations

import dagster as dg

from connector_pipelines.transports.sql_source import SqlSource


class SqlResource(dg.ConfigurableResource):
    """A database reached through SQLAlchemy. `password` is set with `dg.EnvVar`, so the UI shows its name only."""

    url: str
    password: str | None = None

    def get_source(self, timezone: str = "UTC") -> SqlSource:
        return SqlSource(self.url, self.password, timezone=timezone)
