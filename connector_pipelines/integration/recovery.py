"""What to do with a record whose delivery may have landed without an answer saying so: a pure decision per
operation, from what is known about the request and the target.

A record is *in doubt* when a run died while it was in flight, or when its last try got no answer after the
request went out (timed out, the connection dropped, a gateway's 502/504, an answer that could not be read).
Sending it again is safe only when a repeat cannot apply it twice:

- `resend`: the method is idempotent (PUT, DELETE: a repeat leaves the target as one send did), or the connection
  declares `honours_idempotency_key: true` (the target answers a repeated key with its stored response). The
  record goes out again under the key it was in flight with; the HTTP client also retries such tries itself.
- `probe`: the configuration has a `lookup:` request; it asks the target whether the record landed, and only a
  record the target does not hold is sent again. The client does not retry an in-doubt try itself.
- `hold`: neither; the record waits for review (`push --key` sends it). The client does not retry either.

`recovery:` other than `auto` chooses one for every operation (a deliberate `resend` trusts the target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from connector_pipelines.spec.integration import Configuration

RecoveryMode = Literal["resend", "probe", "hold"]
IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class RecoveryRule:
    """The recovery of one operation: the mode, the method it is about, and why it applies (shown by `plan`)."""

    mode: RecoveryMode
    method: str
    why: str


def operation_methods(configuration: Configuration) -> dict[str, str]:
    """The HTTP method each operation goes out with; creates and updates go in the batch request when batched."""
    methods = {
        "create": configuration.request.method,
        "update": (configuration.update or configuration.request).method,
    }
    if configuration.batch is not None:
        methods = {"create": configuration.batch.method, "update": configuration.batch.method}
    if configuration.delete is not None:
        methods["delete"] = configuration.delete.method
    return methods


def recovery_rules(
    configuration: Configuration, setting: str, honours_idempotency_key: bool
) -> dict[str, RecoveryRule]:
    """Per operation of the configuration, what becomes of a record in doubt; `setting` is `recovery:`."""
    return {
        operation: recovery_rule(method, setting, honours_idempotency_key, configuration.lookup is not None)
        for operation, method in operation_methods(configuration).items()
    }


def recovery_rule(method: str, setting: str, honours_idempotency_key: bool, has_lookup: bool) -> RecoveryRule:
    if setting == "resend":
        return RecoveryRule("resend", method, "recovery: resend (the target is trusted to apply a repeat once)")
    if setting == "hold":
        return RecoveryRule("hold", method, "recovery: hold")
    if setting == "probe":
        return RecoveryRule("probe", method, "recovery: probe (the lookup asks the target first)")
    if method in IDEMPOTENT_METHODS:
        return RecoveryRule("resend", method, f"{method} is idempotent: a repeat leaves the target as one send did")
    if honours_idempotency_key:
        return RecoveryRule(
            "resend", method, "the connection declares honours_idempotency_key: the target replays a repeated key"
        )
    if has_lookup:
        return RecoveryRule(
            "probe",
            method,
            f"{method} is not idempotent and the target is not known to honour Idempotency-Key: the lookup asks "
            "whether the record landed, and only a record it does not find is sent again",
        )
    return RecoveryRule(
        "hold",
        method,
        f"{method} is not idempotent, the target is not known to honour Idempotency-Key and there is no lookup: "
        "held for review (set honours_idempotency_key: true on the connection if it does, or add a lookup:)",
    )
