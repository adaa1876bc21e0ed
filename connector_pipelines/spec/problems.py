"""From pydantic's validation errors to problem lines: `file:line dotted.field: what is wrong and what is allowed`.

A pydantic error names a location in the models (with the union tags it inserts) and a terse message. This walks
the location through the model types to the YAML key a user wrote, finds that key's line in the document, and
words the message for a person: the allowed choices, a did-you-mean for a typo, the range a number must be in, and
never the value of a secret.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import types
import typing
from dataclasses import dataclass

import annotated_types
import pydantic
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.common import MappingRuleSpec, quoted
from connector_pipelines.spec.connections import (
    CONNECTION_TYPES,
    CREDENTIAL_HEADER,
    SECRET_KEY_WORDS,
    S3Connection,
    SmtpConnection,
    secret_field_names,
)
from connector_pipelines.spec.extract import ExtractConnector, ExtractSchedule, ExtractSpec
from connector_pipelines.spec.imports import ExpectationSpec, ImportSource, ImportSpec, ImportTarget
from connector_pipelines.spec.integration import DataSet, IntegrationSpec, SuccessCriterion
from connector_pipelines.spec.yaml_source import YamlDocument, display_path

NAME_RULE = "use lowercase letters, digits and underscores, starting with a letter, at most 63 characters"
_SECRET_FIELD_NAMES = secret_field_names()
# In these free mappings (a token request's `body:`, a connection's or request's `headers:`) a key that looks
# like a secret (`client_secret`, `X-Api-Token`) holds one, though no model declares it.
_FREE_MAPPINGS = ("body", "headers")

# A model validator reports on the whole model; these say which of its fields the user has to change, so
# the error points at that line. Candidates are tried in order; the first one written in the file wins.
# Keyed by the start of the model's message: an unknown message keeps the model's own line.
RULE_FIELDS: dict[tuple[type[BaseModel], str], tuple[tuple[str, ...], ...]] = {
    (ExtractSpec, "csv options apply"): (("csv",),),
    (ExtractSpec, "parquet files are compressed"): (("compression",),),
    (ExtractSchedule, "rolling needs an inception_date"): (("rolling",),),
    (ExtractConnector, "a partitioned extract"): (("extract", "source", "query"),),
    (ExtractConnector, "a scheduled full extract"): (("extract", "source", "query"),),
    (S3Connection, "set both access_key_id"): (("access_key_id",), ("secret_access_key",)),
    (SmtpConnection, "choose starttls"): (("ssl",),),
    (MappingRuleSpec, "set exactly one of"): (("constant",), ("expression",), ("source",)),
    (DataSet, "set either query or table"): (("table",), ("query",)),
    (SuccessCriterion, "'"): (("value",),),
    (IntegrationSpec, "roles need data_set.owner"): (("roles",),),
    (IntegrationSpec, "on_delete needs"): (("triggers",),),
    (IntegrationSpec, "on_create/on_update sensors"): (("triggers",),),
    (ImportSource, "set exactly one source"): (("email",), ("files",), ("warehouse",)),
    (ImportTarget, "resolve_conflicts: most_recent"): (("resolve_conflicts",),),
    (ImportSpec, "the target key"): (("mapping",),),
    (ImportSpec, "target.timestamp"): (("target", "timestamp"),),
    (ExpectationSpec, "in_set needs"): (("expect",),),
    (ExpectationSpec, "regex needs"): (("expect",),),
    (ExpectationSpec, "the pattern is not"): (("pattern",),),
    (ExpectationSpec, "between needs"): (("expect",),),
}


@dataclass(frozen=True)
class _Place:
    """Where a pydantic error location lands in the models: the steps as written in YAML, and the type there."""

    steps: tuple[str | int, ...]
    annotation: object  # the type at the end of the location, None when unknown
    field_info: FieldInfo | None  # the model field the location ends on, if it does
    parent: object  # the type that holds the last step


def _place(model: type[BaseModel], location: tuple) -> _Place:
    """Follow `location` through the type annotations, dropping the union tags pydantic inserts.

    A union's members are tried in turn and pydantic names the member in the location (`sftp` in
    `connections.partner.sftp.host`, `date` in `inception_date.date`); those steps are not in the YAML.
    """
    current: object = model
    parent: object = None
    steps: list[str | int] = []
    field_info: FieldInfo | None = None
    for step in location:
        if step == "[key]":  # follows a dict key: the error is about the key itself (a name), not its value
            current = None
            continue
        current = _strip(current)
        if typing.get_origin(current) in (typing.Union, types.UnionType):
            current = _union_member(current, step)
            continue
        parent, field_info = current, None
        if isinstance(current, type) and issubclass(current, BaseModel):
            field_info = _field_by_key(current, str(step))
            current = field_info.annotation if field_info else None
            steps.append(step)
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
            steps.append(step)
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
            steps.append(step)
        else:
            current = None
            if step != "[key]":
                steps.append(step)
    return _Place(tuple(steps), _strip(current), field_info, parent)


def _union_member(union: object, tag: object) -> object:
    for member in typing.get_args(union):
        member = _strip(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            literal = member.model_fields.get("type")
            if member.__name__ == tag or (literal is not None and tag in typing.get_args(literal.annotation)):
                return member
        elif getattr(member, "__name__", None) == tag:
            return member
    return None


def _strip(annotation: object) -> object:
    """`Annotated[X, ...]` -> X and `X | None` -> X, repeatedly."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def validate(doc: YamlDocument, model: type[BaseModel], data: object):
    """`data` (read from `doc`) validated as `model`; a ConnectorConfigError with one line per problem if it is not."""
    try:
        return TypeAdapter(model).validate_python(data)
    except pydantic.ValidationError as exc:
        raise ConnectorConfigError(problem_lines(doc, model, exc.errors(include_url=False))) from None


def problem_lines(doc: YamlDocument, model: type[BaseModel], errors: list[dict]) -> list[str]:
    """One `file:line field: message` line per distinct problem among pydantic's `errors` for `model`."""
    where = display_path(doc.path)
    placed = [(error, _place(model, tuple(error["loc"]))) for error in errors]
    # A key that is probably a typo of a missing required key is one problem, not two.
    suggested = {
        (place.steps[:-1], _best_match(str(place.steps[-1]), _allowed_keys(place.parent)))
        for error, place in placed
        if error["type"] == "extra_forbidden" and place.steps
    }
    lines: list[str] = []
    done: set[tuple] = set()
    for error, place in placed:
        if error["type"] == "missing" and place.steps and (place.steps[:-1], str(place.steps[-1])) in suggested:
            continue
        steps, message = _describe(error, place, doc)
        if steps in done:
            continue  # the other members of a union saying the same thing about the same field
        done.add(steps)
        shown = ".".join(str(step) for step in steps) or "(top level)"
        lines.append(f"{where}:{doc.line_of(steps)} {shown}: {message}")
    return lines


def _describe(error: dict, place: _Place, doc: YamlDocument) -> tuple[tuple, str]:
    """The location to show and the message for one pydantic error."""
    kind = error["type"]
    steps = place.steps
    value = error.get("input")
    last = str(steps[-1]) if steps else ""
    secret = _names_a_secret(steps)
    context = error.get("ctx") or {}
    message = error["msg"]

    if kind == "literal_error":
        choices = _quoted_choices(str(context.get("expected", "")))
        return steps, f"{quoted(value)} is not one of {', '.join(choices)}{did_you_mean(str(value), choices)}"
    if kind == "union_tag_invalid":
        choices = _quoted_choices(str(context.get("expected_tags", "")))
        tag = str(context.get("tag"))
        return (*steps, "type"), f"'{tag}' is not one of {', '.join(choices)}{did_you_mean(tag, choices)}"
    if kind == "union_tag_not_found":
        return steps, f"missing `type:`; add one of {', '.join(CONNECTION_TYPES)}"
    if kind == "missing":
        description = place.field_info.description if place.field_info else None
        return steps, f"required field is missing; add `{last}:`" + (f" ({description})" if description else "")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(place.parent)
        return steps, f"unknown key '{last}'{did_you_mean(last, allowed)}; allowed keys: {', '.join(allowed)}"
    if kind == "string_pattern_mismatch":
        what = "connection name" if steps[:1] == ("connections",) else "name"
        return steps, f"{quoted(value)} is not a valid {what}: {NAME_RULE}, e.g. '{suggest_name(str(value))}'"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if len(steps) == 2 and steps[0] == "connections":
            return steps, (
                f"expected the connection's settings (`key: value` lines) here, got {kind_of(value)}; "
                f"start with `type:` ({', '.join(CONNECTION_TYPES)})"
            )
        return steps, f"expected a mapping of `key: value` lines here, got {kind_of(value)}"
    if secret and kind.endswith("_type"):
        # Whatever was written is a literal, so the same advice as for a literal string; never the value.
        return steps, (
            "a literal secret is not allowed here; write an environment reference such as ${MY_SECRET} "
            "and set that variable where the connector runs"
        )
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return steps, _range_message(place, value)
    if kind == "too_short" and place.annotation is not None and typing.get_origin(place.annotation) is list:
        return steps, f"needs at least {context.get('min_length', 1)} entry; add one under `{last}:`"
    if place.annotation in (dt.date, dt.datetime) or kind.startswith(("date", "datetime")):
        return steps, f"{quoted(value)} is not a date; write YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS for a date and time"
    if kind == "value_error":
        steps = _rule_field(place, message, doc) or steps
        return steps, message.removeprefix("Value error, ")
    message = message.removeprefix("Assertion failed, ")
    message = message[0].lower() + message[1:]
    if secret or isinstance(value, (dict, list)) or value is None:
        return steps, message
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return steps, f"{message} (got {shown})"


def _names_a_secret(steps: tuple) -> bool:
    """Whether the location is a secret field, whose value a problem line must never repeat."""
    if _SECRET_FIELD_NAMES & {str(step) for step in steps}:
        return True
    if len(steps) >= 2 and steps[-2] == "headers" and CREDENTIAL_HEADER.search(str(steps[-1])):
        return True
    return len(steps) >= 2 and steps[-2] in _FREE_MAPPINGS and bool(SECRET_KEY_WORDS.search(str(steps[-1])))


def _rule_field(place: _Place, message: str, doc: YamlDocument) -> tuple | None:
    """The field a model-wide rule is about, when it is written in the file (see RULE_FIELDS)."""
    text = message.removeprefix("Value error, ")
    for (model, start), candidates in RULE_FIELDS.items():
        if place.annotation is model and text.startswith(start):
            for candidate in candidates:
                steps = (*place.steps, *candidate)
                if doc.has(steps):
                    return steps
    return None


def _range_message(place: _Place, value: object) -> str:
    bounds: dict[str, object] = {}
    for constraint in place.field_info.metadata if place.field_info else ():
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(constraint, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(constraint, name)
    low = f"at least {bounds['ge']}" if "ge" in bounds else f"more than {bounds['gt']}" if "gt" in bounds else ""
    high = f"at most {bounds['le']}" if "le" in bounds else f"less than {bounds['lt']}" if "lt" in bounds else ""
    if "ge" in bounds and "le" in bounds:
        allowed = f"from {bounds['ge']} to {bounds['le']}"
    else:
        allowed = " and ".join(part for part in (low, high) if part)
    return f"{value} is out of range; allowed: {allowed}"


def suggest_name(value: str) -> str:
    """A valid name close to `value`, to offer in a message."""
    name = re.sub(r"[^a-z0-9_]+", "_", value.lower()).strip("_")
    if not name or not name[0].isalpha():
        name = "c_" + name
    return name[:63]


def _quoted_choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _best_match(word: str, choices: typing.Iterable[str]) -> str | None:
    choices = list(choices)
    same = [choice for choice in choices if choice.lower() == word.lower()]  # `post` for POST, `Extract`
    hint = same or difflib.get_close_matches(word, choices, n=1)
    return hint[0] if hint else None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the choice closest to `word` (the same word in another case first), else ''."""
    hint = _best_match(word, [c for c in choices if c != word])
    return f" (did you mean '{hint}'?)" if hint else ""


def _allowed_keys(annotation: object) -> list[str]:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return []


def _field_by_key(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field a YAML key names: its name, or its alias (`import:` is the field `import_`)."""
    if key in model.model_fields:
        return model.model_fields[key]
    return next((info for info in model.model_fields.values() if info.alias == key), None)


def kind_of(value: object) -> str:
    """What a YAML value is, in words: 'a mapping', 'a list', 'a string', ..."""
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")
