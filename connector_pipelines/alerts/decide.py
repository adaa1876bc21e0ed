"""One alert per state change: each rule watches each connector it covers, per condition (the runs, each
blocking check, the rejected rate, records held for review, files due by a deadline); a condition that turns bad
alerts once, and once it is good again, a recovery notice goes to the rules that ask for one.

Pure: `step(states, observations, rules)` returns the alerts to send and the new states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from connector_pipelines.spec.notifications import Rule

# condition -> the `on:` event that watches it (a check's condition is "check:<name>")
EVENT_OF = {
    "run": "run_failure",
    "rejected_rate": "rejected_rate",
    "held": "held_for_review",
    "missing_file": "missing_file",
}


def event_of(condition: str) -> str:
    return "check_failure" if condition.startswith("check:") else EVENT_OF[condition]


@dataclass(frozen=True)
class Observation:
    """What one run (or one deadline) said about one condition of one connector."""

    connector: str
    condition: str  # run, check:<name>, rejected_rate, held, missing_file
    bad: bool
    cause: str  # one line, no secrets: the failure's message, the check's description, the rate ...
    run_id: str | None = None
    value: float | None = None  # the measured value, for threshold conditions (rejected_rate)


@dataclass(frozen=True)
class Alert:
    rule: int  # the rule's position in notifications.yaml
    channels: tuple[str, ...]
    connector: str
    event: str  # run_failure, check_failure, rejected_rate, held_for_review, missing_file, recovery
    condition: str
    cause: str
    run_id: str | None


def step(
    states: Mapping[str, bool], observations: Iterable[Observation], rules: Sequence[Rule]
) -> tuple[list[Alert], dict[str, bool]]:
    """`states`: watch key -> bad. Observations are applied in order; the first bad one after a good state (or
    none) alerts, the first good one after a bad state sends a recovery notice (to rules with `recovery`)."""
    states = dict(states)
    alerts: list[Alert] = []
    for observation in observations:
        event = event_of(observation.condition)
        for index, rule in enumerate(rules):
            if not rule.covers(observation.connector) or event not in rule.on:
                continue
            bad = observation.bad
            if observation.condition == "rejected_rate" and observation.value is not None:
                bad = observation.value > (rule.rejected_rate_above or 0)
            key = f"{index}|{observation.connector}|{observation.condition}"
            was_bad = states.get(key, False)
            if bad and not was_bad:
                alerts.append(_alert(index, rule, observation, event))
            elif was_bad and not bad and "recovery" in rule.on:
                alerts.append(_alert(index, rule, observation, "recovery"))
            states[key] = bad
    return alerts, states


def _alert(index: int, rule: Rule, observation: Observation, event: str) -> Alert:
    return Alert(
        index,
        tuple(rule.channels),
        observation.connector,
        event,
        observation.condition,
        observation.cause,
        observation.run_id,
    )
