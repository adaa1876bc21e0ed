"""Alerts: what `resources/notifications.yaml` asks to be told. Plain Python (no Dagster): `decide` turns what
happened into state changes (one alert per change, never one per tick), `message` words an alert for each kind
of channel, `send` delivers it (email, Slack, Teams, a signed JSON webhook). The sensor in factories/alerts.py
feeds them from the instance's event log."""
