"""Whether a delivery counts: a configuration's success criteria checked against the target's response.

Rules, as documented for `success:` in a configuration:

- No criteria: the status must be 2xx.
- `status_code` with `equals` / `not_equals` compares numbers: `201` and `"201"` are the same value. A status
  class such as `"2xx"` or `"4XX"` matches every status of that hundred.
- `status_code` with `contains` / `not_contains` compares the status as text: `contains: "20"` holds for 200-209
  and for 120, so prefer `equals: "2xx"` for classes.
- `response_body` compares text, case-sensitively: `equals` compares the whole body with the value, both stripped
  of surrounding whitespace; `contains` looks for the value anywhere in the body.
- Every criterion must hold. A request that got no response, or that the client gave up on (retries exhausted on
  503, a Retry-After too long to wait for), never counts, whatever the criteria: the reason is the client's error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from connector_pipelines.spec.integration import SuccessCriterion
from connector_pipelines.transports.bounded_json import UnreadableJson, parse_json
from connector_pipelines.transports.http_auth import dotted_get

STATUS_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)


class ResponseLike(Protocol):
    """What `SuccessCheck.evaluate` reads: an `HttpOutcome` fits."""

    @property
    def status(self) -> int | None: ...

    @property
    def body(self) -> str: ...

    @property
    def error(self) -> str | None: ...


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _status_test(criterion: SuccessCriterion) -> Callable[[int], str | None]:
    """A test of a status that returns None when it holds, else why not."""
    comparator, value = criterion.comparator, criterion.value
    text = str(value).strip()
    if comparator in ("contains", "not_contains"):
        wanted = comparator == "contains"

        def contains(status: int) -> str | None:
            if (text in str(status)) == wanted:
                return None
            return f"status_code {status} {'does not contain' if wanted else 'must not contain'} {_quote(text)}"

        return contains

    wanted = comparator == "equals"
    status_class = STATUS_CLASS.match(text)
    if status_class:
        hundred = int(status_class.group(1))
        label = f"{hundred}xx"

        def in_class(status: int) -> str | None:
            if (status // 100 == hundred) == wanted:
                return None
            return f"status_code {status} is not {label}" if wanted else f"status_code {status} must not be {label}"

        return in_class
    if isinstance(value, bool) or not (isinstance(value, int) or text.isdigit()):
        raise ValueError(
            f"success criterion status_code {comparator} {value!r}: expected a status such as 201 or a class such "
            "as 2xx"
        )
    expected = int(text)

    def equals(status: int) -> str | None:
        if (status == expected) == wanted:
            return None
        return f"status_code {status} {'does not equal' if wanted else 'must not equal'} {expected}"

    return equals


def _body_test(criterion: SuccessCriterion) -> Callable[[str], str | None]:
    comparator, text = criterion.comparator, str(criterion.value)
    if comparator in ("equals", "not_equals"):
        wanted = comparator == "equals"
        stripped = text.strip()

        def equals(body: str) -> str | None:
            if (body.strip() == stripped) == wanted:
                return None
            return f"response_body {'does not equal' if wanted else 'must not equal'} {_quote(stripped)}"

        return equals
    wanted = comparator == "contains"

    def contains(body: str) -> str | None:
        if (text in body) == wanted:
            return None
        return f"response_body {'does not contain' if wanted else 'must not contain'} {_quote(text)}"

    return contains


def _default_test(status: int) -> str | None:
    return None if 200 <= status < 300 else f"status_code {status} is not 2xx"


class SuccessCheck:
    """A configuration's success criteria, compiled once and evaluated per response.

    `criteria=None` is the default, "the status is 2xx". An invalid status value (neither a number nor a class
    such as 2xx) raises `ValueError` when the check is built.
    """

    def __init__(self, criteria: Sequence[SuccessCriterion] | None = None):
        self.criteria = tuple(criteria or ())
        # (position, test) pairs keep the order of the configuration, so the first failing criterion is reported.
        self._tests: list[tuple[str, Callable[[int], str | None] | Callable[[str], str | None]]] = []
        for criterion in self.criteria:
            if criterion.source == "status_code":
                self._tests.append(("status", _status_test(criterion)))
            else:
                self._tests.append(("body", _body_test(criterion)))
        if not self._tests:
            self._tests.append(("status", _default_test))

    def check(self, status: int | None, body: str, error: str | None = None) -> str | None:
        """None when every criterion holds for this response, else the reason of the first that fails.

        `status=None` (no response) or an `error` from the client always fails, with that error as the reason.
        """
        if status is None:
            return error or "no response from the target"
        if error:
            return error
        for source, test in self._tests:
            reason = test(status) if source == "status" else test(body)  # type: ignore[arg-type]
            if reason is not None:
                return reason
        return None

    def evaluate(self, outcome: ResponseLike) -> str | None:
        """None when the outcome counts as delivered, else why not (see `check`)."""
        return self.check(outcome.status, outcome.body, outcome.error)


def extract_target_ref(body: str, path: str | None) -> str | None:
    """The target's id for a record: the value at a dotted path (`id`, `data.id`, `results.0.id`) of the JSON body.

    None when there is no path, the body is not JSON, or the value is absent, null, empty or not a scalar.
    Numbers come back as their JSON text (`42`), booleans as `true`/`false`.
    """
    return read_target_ref(body, path)[0]


def read_target_ref(body: str, path: str | None) -> tuple[str | None, str | None]:
    """`extract_target_ref`'s id, and why the body was not read when the client refused to parse it (nested
    deeper than `bounded_json.MAX_JSON_DEPTH`); a body that is simply not JSON has no reason: many targets answer
    text."""
    if not path or not body:
        return None, None
    try:
        document = parse_json(body)
    except UnreadableJson as exc:
        return None, f"the target's id was not read from its answer: {exc}"
    except ValueError:
        return None, None
    value = dotted_get(document, path)
    if value is None or isinstance(value, dict | list):
        return None, None
    if isinstance(value, str):
        return value or None, None
    return json.dumps(value), None
