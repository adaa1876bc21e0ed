"""Deliver a composed alert to one channel: email through an smtp connection, Slack and Microsoft Teams through
their incoming webhooks, or a generic JSON webhook signed with HMAC-SHA256 when it has a secret.

A webhook URL is itself a secret (whoever has it may post): it is read from the environment when sending and
never appears in an error. (Plain HTTPS with requests: dagster-slack and dagster-msteams add a Dagster resource
around the same POST and nothing this needs.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping

import requests

from connector_pipelines.alerts.message import Message
from connector_pipelines.spec.common import env_var_name
from connector_pipelines.spec.notifications import Channel, EmailChannel, SlackChannel, TeamsChannel, WebhookChannel
from connector_pipelines.transports.smtp import SmtpClient

SIGNATURE_HEADER = "X-Signature-SHA256"
TIMEOUT_SECONDS = 10


class AlertNotSent(Exception):
    """A channel refused or could not be reached; the message names the channel, never its URL or secret."""


def signature(secret: str, body: bytes) -> str:
    """What the receiver recomputes: `sha256=` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    message: Message,
    name: str,
    channel: Channel,
    smtp_for: Callable[[str], SmtpClient],
    environ: Mapping[str, str] = os.environ,
) -> None:
    if isinstance(channel, EmailChannel):
        smtp_for(channel.connection).send_text(message.subject, message.text, list(channel.to))
        return
    if isinstance(channel, SlackChannel | TeamsChannel):
        url = _secret(channel.webhook_url, name, "webhook_url", environ)
        _post(name, url, json.dumps({"text": message.text}).encode(), {})
        return
    assert isinstance(channel, WebhookChannel)
    body = json.dumps(message.payload, sort_keys=True).encode()
    headers = {}
    if channel.secret:
        headers[SIGNATURE_HEADER] = signature(_secret(channel.secret, name, "secret", environ), body)
    _post(name, channel.url, body, headers, channel.timeout_seconds)


def _secret(reference: str, name: str, field: str, environ: Mapping[str, str]) -> str:
    variable = env_var_name(reference)
    value = environ.get(variable)
    if not value:
        raise AlertNotSent(f"channel '{name}': the environment variable {variable} ({field}) is not set")
    return value


def _post(name: str, url: str, body: bytes, headers: dict, timeout: float = TIMEOUT_SECONDS) -> None:
    try:
        answer = requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=timeout)
    except requests.RequestException as exc:
        raise AlertNotSent(f"channel '{name}': could not be reached ({type(exc).__name__})") from None
    if answer.status_code >= 300:
        raise AlertNotSent(f"channel '{name}': answered HTTP {answer.status_code}")
