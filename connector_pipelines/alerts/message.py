"""An alert in words: one line for the cause, the connector, the run and a link to it in the UI."""

from __future__ import annotations

from dataclasses import dataclass

from connector_pipelines.alerts.decide import Alert

TITLES = {
    "run_failure": "run failed",
    "check_failure": "blocking check failed",
    "rejected_rate": "rejected rate above the threshold",
    "held_for_review": "records held for review",
    "missing_file": "no file by the deadline",
    "recovery": "recovered",
}
MAX_CAUSE = 300


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    link: str | None
    payload: dict  # the webhook's JSON body


def compose(alert: Alert, base_url: str | None) -> Message:
    cause = " ".join(alert.cause.split())[:MAX_CAUSE]
    what = TITLES[alert.event]
    if alert.event == "recovery":
        what = f"recovered ({_condition_words(alert.condition)} is fine again)"
    link = f"{base_url.rstrip('/')}/runs/{alert.run_id}" if base_url and alert.run_id else None
    subject = f"[connector-pipelines] {alert.connector}: {what}"
    lines = [f"{alert.connector}: {what}", f"cause: {cause}"]
    if alert.run_id:
        lines.append(f"run: {alert.run_id}")
    if link:
        lines.append(f"open: {link}")
    payload = {
        "connector": alert.connector,
        "event": alert.event,
        "condition": alert.condition,
        "cause": cause,
        "run_id": alert.run_id,
        "link": link,
    }
    return Message(subject, "\n".join(lines), link, payload)


def _condition_words(condition: str) -> str:
    if condition.startswith("check:"):
        return f"check {condition.removeprefix('check:')}"
    return {"run": "the last run", "rejected_rate": "the rejected rate", "held": "no record is held"}.get(
        condition, "a file arrived" if condition == "missing_file" else condition
    )
