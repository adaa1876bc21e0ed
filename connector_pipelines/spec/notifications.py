"""`resources/notifications.yaml`: where alerts go (channels) and when (rules). Optional; validated like every spec.

```yaml
base_url: https://dagster.acme.example          # alerts link to the run in the UI
channels:
  ops_email: {type: email, connection: smtp_relay, to: [ops@acme.example]}
  ops_slack: {type: slack, webhook_url: "${SLACK_WEBHOOK_URL}"}
  ops_teams: {type: teams, webhook_url: "${TEAMS_WEBHOOK_URL}"}
  pager: {type: webhook, url: https://hooks.acme.example/alerts, secret: "${ALERT_SIGNING_SECRET}"}
rules:
  - {connectors: ["*"], on: [run_failure, check_failure, recovery], channels: [ops_email, ops_slack]}
  - {connectors: [warehouse_customers], on: [rejected_rate], rejected_rate_above: 0.05, channels: [pager]}
  - connectors: [partner_conversions]
    on: [missing_file]
    deadline: {cron: "0 9 * * 1-5", timezone: Europe/Paris}   # a file every workday by 09:00
    channels: [ops_email]
```
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from connector_pipelines.spec.common import NAME_PATTERN, SecretRef, StrictModel, known_timezone, quoted
from connector_pipelines.spec.cron import is_valid_cron

EVENTS = ("run_failure", "check_failure", "rejected_rate", "missing_file", "held_for_review", "recovery")
Event = Literal["run_failure", "check_failure", "rejected_rate", "missing_file", "held_for_review", "recovery"]


class EmailChannel(StrictModel):
    type: Literal["email"]
    connection: str = Field(description="An smtp connection of connections.yaml")
    to: list[str] = Field(min_length=1)


class SlackChannel(StrictModel):
    type: Literal["slack"]
    webhook_url: SecretRef = Field(description="The incoming webhook's URL, from the environment: ${NAME}")


class TeamsChannel(StrictModel):
    type: Literal["teams"]
    webhook_url: SecretRef = Field(description="The incoming webhook's URL, from the environment: ${NAME}")


class WebhookChannel(StrictModel):
    """A JSON POST; with `secret`, signed: header `X-Signature-SHA256: sha256=<HMAC-SHA256 of the body>`."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret: SecretRef | None = None
    timeout_seconds: float = Field(10, gt=0)


Channel = Annotated[EmailChannel | SlackChannel | TeamsChannel | WebhookChannel, Field(discriminator="type")]


class Deadline(StrictModel):
    """By when a file must have arrived: each tick of `cron` (in `timezone`) is a deadline for the period since the
    one before."""

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not is_valid_cron(value):
            raise ValueError(f"{quoted(value)} is not a valid cron expression, e.g. '0 9 * * 1-5' (workdays at 09:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return known_timezone(value)


class Rule(StrictModel):
    connectors: list[str] = Field(min_length=1, description="Connector names, or '*' for all")
    on: list[Event] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    rejected_rate_above: float | None = Field(None, ge=0, le=1)
    deadline: Deadline | None = None

    @field_validator("connectors")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"{quoted(name)} is not a connector name; write a name, or '*' for every connector")
        return value

    @model_validator(mode="after")
    def _needs(self) -> Rule:
        if "rejected_rate" in self.on and self.rejected_rate_above is None:
            raise ValueError("on: rejected_rate needs `rejected_rate_above:` (a share between 0 and 1, e.g. 0.05)")
        if "missing_file" in self.on and self.deadline is None:
            raise ValueError("on: missing_file needs `deadline:` (a cron and a timezone: by when a file is due)")
        return self

    def covers(self, connector: str) -> bool:
        return "*" in self.connectors or connector in self.connectors


class NotificationsFile(StrictModel):
    base_url: str | None = Field(None, pattern=r"^https?://", description="The Dagster UI's address, for run links")
    channels: dict[str, Channel] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_channels(self) -> NotificationsFile:
        for index, rule in enumerate(self.rules):
            unknown = [name for name in rule.channels if name not in self.channels]
            if unknown:
                known = ", ".join(sorted(self.channels)) or "none"
                raise ValueError(
                    f"rules.{index}.channels: no channel named {', '.join(map(repr, unknown))}; channels: {known}"
                )
        return self
