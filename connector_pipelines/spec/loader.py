"""Load `resources/connections.yaml` and `resources/connectors/*.yaml` into validated models.

Every problem becomes one line: `file:line dotted.field: what is wrong and what is allowed`. All files are
checked before anything is raised, so one `validate` shows every problem at once.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import annotated_types
import pydantic
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.imports import (
    ExpectationSpec,
    ImportConnector,
    ImportSource,
    ImportSpec,
    ImportTarget,
)
from connector_pipelines.spec.kinds import AVAILABLE_KINDS, Connector
from connector_pipelines.spec.models import (
    CONNECTOR_KINDS,
    FILE_TRANSPORT_TYPES,
    NAME_PATTERN,
    Connection,
    ConnectionsFile,
    DataSet,
    ExtractConnector,
    ExtractSchedule,
    ExtractSpec,
    IntegrationConnector,
    IntegrationSpec,
    MappingRuleSpec,
    S3Connection,
    SmtpConnection,
    SuccessCriterion,
)
from connector_pipelines.spec.yaml_source import YamlDocument, display_path, read_yaml

RESOURCES_ENV = "CONNECTOR_PIPELINES_RESOURCES"
SECRET_FIELDS = {"password", "private_key", "access_key_id", "secret_access_key", "token", "client_secret", "value"}
CONNECTOR_MODELS: dict[str, type[BaseModel]] = dict(AVAILABLE_KINDS)
EMAIL_ONLY_FIELDS = ("to", "cc", "subject", "body")
CONNECTION_TYPES = ("sql", *FILE_TRANSPORT_TYPES, "http")

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


def default_resources_dir() -> Path:
    """`$CONNECTOR_PIPELINES_RESOURCES`, else `resources/` beside the package (the project root)."""
    configured = os.environ.get(RESOURCES_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "resources"


@dataclass(frozen=True)
class LoadedConnector:
    """A validated connector with the file it came from."""

    spec: Connector
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass(frozen=True)
class Project:
    """Everything a deployment configures: named connections and connectors."""

    resources_dir: Path
    connections: dict[str, Connection]
    connectors: dict[str, LoadedConnector] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Relative paths in the configuration are resolved against the folder that holds resources/."""
        return self.resources_dir.resolve().parent

    def connector(self, name: str) -> LoadedConnector:
        if name not in self.connectors:
            known = ", ".join(sorted(self.connectors)) or "none"
            raise ConnectorConfigError(
                [f"no connector named '{name}'{_did_you_mean(name, self.connectors)}; known connectors: {known}"]
            )
        return self.connectors[name]


def load_project(resources_dir: Path | None = None) -> Project:
    """Load and validate every file, raising one ConnectorConfigError listing all problems."""
    resources_dir = Path(resources_dir or default_resources_dir())
    problems: list[str] = []
    connections: dict[str, Connection] = {}
    connections_ok = False

    connections_path = resources_dir / "connections.yaml"
    how = (
        "a `connections:` mapping from each connection's name to its settings, starting with `type:` "
        f"({', '.join(CONNECTION_TYPES)})"
    )
    if not connections_path.exists():
        problems.append(f"{display_path(connections_path)}:1 (file): missing; create it with {how}")
    else:
        try:
            doc = read_yaml(connections_path)
            if doc.data is None:
                raise _one_problem(display_path(connections_path), 1, "(file)", f"the file is empty; write {how}")
            parsed = _validate(doc, ConnectionsFile, doc.data)
            connections = dict(parsed.connections)
            connections_ok = True
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)

    connectors: dict[str, LoadedConnector] = {}
    seen_in: dict[str, Path] = {}
    connector_dir = resources_dir / "connectors"
    for path in sorted(connector_dir.glob("*.y*ml")) if connector_dir.is_dir() else []:
        try:
            loaded, doc = _load_connector(path)
            # Without a valid connections.yaml every reference would look unknown: that file's own
            # problems are the ones to fix first.
            if connections_ok:
                _check_references(loaded, doc, connections, connections_path)
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)
            continue
        if loaded.name in seen_in:
            problems.append(
                f"{display_path(path)}:{doc.line_of(('name',))} name: '{loaded.name}' is already used by "
                f"{display_path(seen_in[loaded.name])}; connector names must be unique, so keep one of the files"
            )
            continue
        seen_in[loaded.name] = path
        connectors[loaded.name] = loaded

    if problems:
        raise ConnectorConfigError(problems)
    return Project(resources_dir=resources_dir, connections=connections, connectors=connectors)


def _one_problem(where: str, line: int, field_name: str, message: str) -> ConnectorConfigError:
    return ConnectorConfigError([f"{where}:{line} {field_name}: {message}"])


def _load_connector(path: Path) -> tuple[LoadedConnector, YamlDocument]:
    doc = read_yaml(path)
    where = display_path(path)
    data = doc.data
    if data is None:
        raise _one_problem(
            where,
            1,
            "(file)",
            "the file is empty; write a connector that starts with `kind:` (extract, integration or import)",
        )
    if not isinstance(data, dict):
        raise _one_problem(
            where,
            doc.line_of(()),
            "(top level)",
            f"expected a mapping that starts with `kind:` (extract, integration or import), got {_kind_of(data)}",
        )
    kind = data.get("kind")
    kind_line = doc.line_of(("kind",))
    kinds = ", ".join(CONNECTOR_KINDS)
    if kind is None:
        raise _one_problem(where, kind_line, "kind", f"required field is missing; add `kind:` (one of {kinds})")
    if kind not in CONNECTOR_KINDS:
        raise _one_problem(
            where, kind_line, "kind", f"'{kind}' is not one of {kinds}{_did_you_mean(str(kind), CONNECTOR_KINDS)}"
        )
    if kind not in CONNECTOR_MODELS:
        raise _one_problem(
            where,
            kind_line,
            "kind",
            f"'{kind}' connectors are not available in this version yet; available: {', '.join(CONNECTOR_MODELS)}; "
            f"move this file out of {display_path(path.parent)} until then",
        )
    data = dict(data)
    if "name" not in data:
        if not re.fullmatch(NAME_PATTERN, path.stem):
            raise _one_problem(
                where,
                doc.line_of(()),
                "name",
                f"the file name '{path.stem}' is not a valid connector name ({_NAME_RULE}); rename the file, "
                f"e.g. to {_suggest_name(path.stem)}{path.suffix}",
            )
        data["name"] = path.stem
    spec = _validate(doc, CONNECTOR_MODELS[kind], data)
    if spec.name != path.stem:
        raise _one_problem(
            where,
            doc.line_of(("name",)),
            "name",
            f"'{spec.name}' differs from the file name '{path.stem}'; rename the file to {spec.name}{path.suffix} "
            "or remove `name:`",
        )
    return LoadedConnector(spec=spec, path=path), doc


def _check_references(
    loaded: LoadedConnector, doc: YamlDocument, connections: dict[str, Connection], connections_path: Path
) -> None:
    """Connections named by a connector must exist and be of a type that fits where they are used."""
    where = display_path(loaded.path)
    problems: list[str] = []

    def check(location: tuple, name: str, allowed: tuple[str, ...], role: str) -> None:
        line = doc.line_of(location)
        field_name = ".".join(str(s) for s in location)
        if name not in connections:
            known = ", ".join(sorted(connections)) or "none"
            problems.append(
                f"{where}:{line} {field_name}: unknown connection '{name}'{_did_you_mean(name, connections)}; "
                f"connections in {display_path(connections_path)}: {known}"
            )
            return
        actual = connections[name].type
        if actual not in allowed:
            fitting = sorted(n for n, c in connections.items() if c.type in allowed)
            problems.append(
                f"{where}:{line} {field_name}: connection '{name}' is of type {actual}, which cannot {role}; "
                f"use a connection of type {', '.join(allowed)}" + (f" ({', '.join(fitting)})" if fitting else "")
            )

    if isinstance(loaded.spec, IntegrationConnector | ImportConnector):
        if isinstance(loaded.spec, IntegrationConnector):
            _check_integration(loaded.spec.integration, doc, where, check, problems)
        else:
            _check_import(loaded.spec.import_, doc, where, check, problems)
        if problems:
            raise ConnectorConfigError(problems)
        return
    spec = loaded.spec.extract
    check(("extract", "source", "connection"), spec.source.connection, ("sql",), "run a query")
    for index, destination in enumerate(spec.destinations):
        location = ("extract", "destinations", index)
        check((*location, "connection"), destination.connection, FILE_TRANSPORT_TYPES, "receive a file")
        connection = connections.get(destination.connection)
        if connection is None:
            continue
        prefix = f"extract.destinations.{index}"
        if connection.type == "smtp" and not destination.to:
            problems.append(
                f"{where}:{doc.line_of(location)} {prefix}.to: an email destination needs at least one recipient; "
                "add `to: [someone@example.com]`"
            )
        if connection.type == "smtp" and destination.folder:
            problems.append(
                f"{where}:{doc.line_of((*location, 'folder'))} {prefix}.folder: an email destination has no "
                "folder; remove it"
            )
        if connection.type != "smtp":
            for key in EMAIL_ONLY_FIELDS:
                if key in destination.model_fields_set:
                    problems.append(
                        f"{where}:{doc.line_of((*location, key))} {prefix}.{key}: applies to smtp connections "
                        f"only, and '{destination.connection}' is {connection.type}; remove it"
                    )
    if problems:
        raise ConnectorConfigError(problems)


def _check_integration(spec: IntegrationSpec, doc: YamlDocument, where: str, check, problems: list[str]) -> None:
    """Connections, and what a configuration refers to: target fields, lookups, template placeholders."""
    from connector_pipelines.mapping.expressions import parse_expression
    from connector_pipelines.mapping.templates import check_fields, placeholders

    root = ("integration",)
    check((*root, "data_set", "connection"), spec.data_set.connection, ("sql",), "run a query")
    check((*root, "target", "connection"), spec.target.connection, ("http",), "receive records")
    fields = {f.name: f for f in spec.target.fields}
    for index, configuration in enumerate(spec.configurations):
        at = (*root, "configurations", index)
        mapped: set[str] = set()
        for rule_index, rule in enumerate(configuration.mapping):
            rule_at = (*at, "mapping", rule_index)
            shown = ".".join(str(s) for s in (*rule_at, "target"))
            if rule.target not in fields:
                problems.append(
                    f"{where}:{doc.line_of((*rule_at, 'target'))} {shown}: '{rule.target}' is not a target field"
                    f"{_did_you_mean(rule.target, fields)}; declare it under integration.target.fields "
                    f"(fields: {', '.join(fields)})"
                )
            elif rule.target in mapped:
                problems.append(
                    f"{where}:{doc.line_of((*rule_at, 'target'))} {shown}: '{rule.target}' is mapped twice; keep one"
                )
            mapped.add(rule.target)
            if rule.expression:
                for name in sorted(parse_expression(rule.expression).lookups - set(configuration.lookups)):
                    shown = ".".join(str(s) for s in (*rule_at, "expression"))
                    problems.append(
                        f"{where}:{doc.line_of((*rule_at, 'expression'))} {shown}: "
                        f"lookup '{name}' is not declared{_did_you_mean(name, configuration.lookups)}; add it under "
                        "`lookups:` of this configuration (table, key, value)"
                    )
        for name, field_spec in fields.items():
            if field_spec.required and name not in mapped:
                shown = ".".join(str(s) for s in (*at, "mapping"))
                problems.append(
                    f"{where}:{doc.line_of((*at, 'mapping'))} {shown}: the required target "
                    f"field '{name}' has no mapping; add `- target: {name}` with a source, expression or constant"
                )
        for lookup_name, lookup in configuration.lookups.items():
            if lookup.connection:
                check((*at, "lookups", lookup_name, "connection"), lookup.connection, ("sql",), "hold a lookup table")
        for part in ("request", "update"):
            request = getattr(configuration, part)
            if request is None:
                continue
            for piece in ("path", "body", "headers"):
                location = (*at, part, piece)
                label = f"{where}:{doc.line_of(location)} {'.'.join(str(s) for s in location)}"
                problems.extend(check_fields(getattr(request, piece), mapped, label))
        for piece in ("path", "body", "headers") if configuration.delete is not None else ():
            location = (*at, "delete", piece)
            extra = placeholders(getattr(configuration.delete, piece)) - {"key", "target_ref"}
            if extra:
                problems.append(
                    f"{where}:{doc.line_of(location)} {'.'.join(str(s) for s in location)}: a delete "
                    f"request can use only {{{{key}}}} and {{{{target_ref}}}} (the record is gone from the data set); "
                    f"found {', '.join('{{' + e + '}}' for e in sorted(extra))}"
                )
        if configuration.batch is not None:
            location = (*at, "batch", "body")
            if "records" not in placeholders(configuration.batch.body):
                problems.append(
                    f"{where}:{doc.line_of(location)} {'.'.join(str(s) for s in location)}: the batch body needs a "
                    '"{{records}}" placeholder where the list of records goes, e.g. {"records": "{{records}}"}'
                )


def _check_import(spec: ImportSpec, doc: YamlDocument, where: str, check, problems: list[str]) -> None:
    """Connections of an import, and that its mapping and expectations name each target column once."""
    from connector_pipelines.mapping.expressions import parse_expression

    root = ("import",)
    source = spec.source
    if source.warehouse is not None:
        check((*root, "source", "warehouse", "connection"), source.warehouse.connection, ("sql",), "run a query")
    if source.files is not None:
        readable = tuple(t for t in FILE_TRANSPORT_TYPES if t != "smtp")
        check((*root, "source", "files", "connection"), source.files.connection, readable, "hold files to import")
    check((*root, "target", "connection"), spec.target.connection, ("sql",), "hold the target table")
    mapped: set[str] = set()
    for index, rule in enumerate(spec.mapping):
        at = (*root, "mapping", index)
        if rule.target in mapped:
            problems.append(
                f"{where}:{doc.line_of((*at, 'target'))} import.mapping.{index}.target: '{rule.target}' is mapped "
                "twice; keep one (a source column may feed two targets, a target takes one rule)"
            )
        mapped.add(rule.target)
        if rule.expression and parse_expression(rule.expression).lookups:
            problems.append(
                f"{where}:{doc.line_of((*at, 'expression'))} import.mapping.{index}.expression: lookup() is not "
                "available in imports; join the lookup table in the warehouse query instead"
            )
    for index, expectation in enumerate(spec.expectations):
        if expectation.column not in mapped:
            at = (*root, "expectations", index, "column")
            problems.append(
                f"{where}:{doc.line_of(at)} import.expectations.{index}.column: '{expectation.column}' is not a "
                f"mapped target column{_did_you_mean(expectation.column, mapped)}; expectations check the mapped "
                f"rows (columns: {', '.join(sorted(mapped))})"
            )


# --------------------------------------------------------------------------------------------------
# From pydantic errors to problem lines


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


def _validate(doc: YamlDocument, model: type[BaseModel], data: object):
    try:
        return TypeAdapter(model).validate_python(data)
    except pydantic.ValidationError as exc:
        raise ConnectorConfigError(_problem_lines(doc, model, exc.errors(include_url=False))) from None


def _problem_lines(doc: YamlDocument, model: type[BaseModel], errors: list[dict]) -> list[str]:
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
    secret = bool(SECRET_FIELDS & {str(s) for s in steps})
    context = error.get("ctx") or {}
    message = error["msg"]

    if kind == "literal_error":
        choices = _quoted_choices(str(context.get("expected", "")))
        return steps, f"'{value}' is not one of {', '.join(choices)}{_did_you_mean(str(value), choices)}"
    if kind == "union_tag_invalid":
        choices = _quoted_choices(str(context.get("expected_tags", "")))
        tag = str(context.get("tag"))
        return (*steps, "type"), f"'{tag}' is not one of {', '.join(choices)}{_did_you_mean(tag, choices)}"
    if kind == "union_tag_not_found":
        return steps, f"missing `type:`; add one of {', '.join(CONNECTION_TYPES)}"
    if kind == "missing":
        description = place.field_info.description if place.field_info else None
        return steps, f"required field is missing; add `{last}:`" + (f" ({description})" if description else "")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(place.parent)
        return steps, f"unknown key '{last}'{_did_you_mean(last, allowed)}; allowed keys: {', '.join(allowed)}"
    if kind == "string_pattern_mismatch":
        what = "connection name" if steps[:1] == ("connections",) else "name"
        return steps, f"'{value}' is not a valid {what}: {_NAME_RULE}, e.g. '{_suggest_name(str(value))}'"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if len(steps) == 2 and steps[0] == "connections":
            return steps, (
                f"expected the connection's settings (`key: value` lines) here, got {_kind_of(value)}; "
                f"start with `type:` ({', '.join(CONNECTION_TYPES)})"
            )
        return steps, f"expected a mapping of `key: value` lines here, got {_kind_of(value)}"
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
        return steps, f"'{value}' is not a date; write YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS for a date and time"
    if kind == "value_error":
        steps = _rule_field(place, message, doc) or steps
        return steps, message.removeprefix("Value error, ")
    message = message.removeprefix("Assertion failed, ")
    message = message[0].lower() + message[1:]
    if secret or isinstance(value, (dict, list)) or value is None:
        return steps, message
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return steps, f"{message} (got {shown})"


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


_NAME_RULE = "use lowercase letters, digits and underscores, starting with a letter, at most 63 characters"


def _suggest_name(value: str) -> str:
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


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
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


def _kind_of(value: object) -> str:
    if value is None:
        return "nothing"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")
