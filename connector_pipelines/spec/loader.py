"""Load `resources/connections.yaml` and `resources/connectors/*.yaml` into validated models.

Every problem becomes one line: `file:line dotted.field: what is wrong and what is allowed`. All files are
checked before anything is raised, so one `validate` shows every problem at once.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pydantic
from pydantic import BaseModel, TypeAdapter

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.models import (
    AVAILABLE_KINDS,
    CONNECTOR_KINDS,
    FILE_TRANSPORT_TYPES,
    Connection,
    ConnectionsFile,
    ExtractConnector,
)
from connector_pipelines.spec.yaml_source import YamlDocument, display_path, read_yaml

RESOURCES_ENV = "CONNECTOR_PIPELINES_RESOURCES"
SECRET_FIELDS = {"password", "private_key", "access_key_id", "secret_access_key", "token"}
CONNECTOR_MODELS: dict[str, type[BaseModel]] = dict(AVAILABLE_KINDS)


def default_resources_dir() -> Path:
    """`$CONNECTOR_PIPELINES_RESOURCES`, else `resources/` beside the package (the project root)."""
    configured = os.environ.get(RESOURCES_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "resources"


@dataclass(frozen=True)
class LoadedConnector:
    """A validated connector with the file it came from."""

    spec: ExtractConnector
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
            hint = difflib.get_close_matches(name, self.connectors, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConnectorConfigError([f"no connector named '{name}'{suggestion}; known connectors: {known}"])
        return self.connectors[name]


def load_project(resources_dir: Path | None = None) -> Project:
    """Load and validate every file, raising one ConnectorConfigError listing all problems."""
    resources_dir = Path(resources_dir or default_resources_dir())
    problems: list[str] = []
    connections: dict[str, Connection] = {}

    connections_path = resources_dir / "connections.yaml"
    if not connections_path.exists():
        problems.append(
            f"{display_path(connections_path)}:1 missing file: create it with a `connections:` mapping "
            "(see README, Configuration)"
        )
    else:
        try:
            doc = read_yaml(connections_path)
            parsed = _validate(doc, ConnectionsFile, {} if doc.data is None else doc.data)
            connections = dict(parsed.connections)
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)

    connectors: dict[str, LoadedConnector] = {}
    seen_in: dict[str, Path] = {}
    connector_dir = resources_dir / "connectors"
    for path in sorted(connector_dir.glob("*.y*ml")) if connector_dir.is_dir() else []:
        try:
            loaded = _load_connector(path)
            _check_references(loaded, connections, connections_path)
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)
            continue
        if loaded.name in seen_in:
            problems.append(
                f"{display_path(path)}:1 name: '{loaded.name}' is already used by {display_path(seen_in[loaded.name])}; "
                "connector names must be unique"
            )
            continue
        seen_in[loaded.name] = path
        connectors[loaded.name] = loaded

    if problems:
        raise ConnectorConfigError(problems)
    return Project(resources_dir=resources_dir, connections=connections, connectors=connectors)


def _load_connector(path: Path) -> LoadedConnector:
    doc = read_yaml(path)
    where = display_path(path)
    data = doc.data
    if not isinstance(data, dict):
        raise ConnectorConfigError([f"{where}:1 expected a mapping with `kind:` and its settings, got {_kind_of(data)}"])
    kind = data.get("kind")
    if kind not in CONNECTOR_KINDS:
        shown = "missing" if kind is None else f"'{kind}' is not one of {', '.join(CONNECTOR_KINDS)}"
        raise ConnectorConfigError([f"{where}:{doc.line_of(('kind',))} kind: {shown}"])
    if kind not in CONNECTOR_MODELS:
        raise ConnectorConfigError(
            [f"{where}:{doc.line_of(('kind',))} kind: '{kind}' connectors are not available in this version; "
             f"available: {', '.join(CONNECTOR_MODELS)}"]
        )
    data = dict(data)
    data.setdefault("name", path.stem)
    spec = _validate(doc, CONNECTOR_MODELS[kind], data)
    if spec.name != path.stem:
        raise ConnectorConfigError(
            [f"{where}:{doc.line_of(('name',))} name: '{spec.name}' differs from the file name; "
             f"rename the file to {spec.name}{path.suffix} or remove `name:`"]
        )
    return LoadedConnector(spec=spec, path=path)


def _check_references(loaded: LoadedConnector, connections: dict[str, Connection], connections_path: Path) -> None:
    """Connections named by a connector must exist and be of a type that fits where they are used."""
    doc = read_yaml(loaded.path)
    where = display_path(loaded.path)
    spec = loaded.spec.extract
    problems: list[str] = []

    def check(location: tuple, name: str, allowed: tuple[str, ...]) -> None:
        line = doc.line_of(location)
        field_name = ".".join(str(s) for s in location)
        if name not in connections:
            hint = difflib.get_close_matches(name, connections, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            known = ", ".join(sorted(connections)) or "none"
            problems.append(
                f"{where}:{line} {field_name}: unknown connection '{name}'{suggestion}; "
                f"connections in {display_path(connections_path)}: {known}"
            )
            return
        actual = connections[name].type
        if actual not in allowed:
            problems.append(
                f"{where}:{line} {field_name}: connection '{name}' is of type {actual}; "
                f"this needs one of {', '.join(allowed)}"
            )

    check(("extract", "source", "connection"), spec.source.connection, ("sql",))
    for index, destination in enumerate(spec.destinations):
        location = ("extract", "destinations", index, "connection")
        check(location, destination.connection, FILE_TRANSPORT_TYPES)
        connection = connections.get(destination.connection)
        if connection is None:
            continue
        prefix = f"{where}:{doc.line_of(location[:-1])} extract.destinations.{index}"
        if connection.type == "smtp" and not destination.to:
            problems.append(f"{prefix}.to: an email destination needs at least one recipient in `to:`")
        if connection.type != "smtp" and (destination.to or destination.cc or destination.subject or destination.body):
            problems.append(
                f"{prefix}: to/cc/subject/body apply to smtp connections only; '{destination.connection}' is {connection.type}"
            )
        if connection.type == "smtp" and destination.folder:
            problems.append(f"{prefix}.folder: an email destination has no folder; remove it")
    if problems:
        raise ConnectorConfigError(problems)


def _validate(doc: YamlDocument, model: type[BaseModel], data: object):
    try:
        return TypeAdapter(model).validate_python(data)
    except pydantic.ValidationError as exc:
        where = display_path(doc.path)
        lines = []
        for error in exc.errors(include_url=False):
            location = tuple(error["loc"])
            shown_location = _display_location(model, location)
            lines.append(f"{where}:{doc.line_of(location)} {shown_location}: {_describe(error, model)}")
        raise ConnectorConfigError(lines) from None


def _display_location(model: type[BaseModel], location: tuple) -> str:
    """Drop the union tags pydantic inserts (`connections.sftp_in.sftp.host` -> `connections.sftp_in.host`)."""
    steps = [str(step) for step in location if not (isinstance(step, str) and _is_union_tag(model, location, step))]
    return ".".join(steps) or "(top level)"


def _is_union_tag(model: type[BaseModel], location: tuple, step: str) -> bool:
    return step in ("sql", "s3", "sftp", "ftp", "smtp", "folder") and location.index(step) >= 2 and location[0] == "connections"


def _describe(error: dict, model: type[BaseModel]) -> str:
    kind = error["type"]
    location = error["loc"]
    value = error.get("input")
    last = str(location[-1]) if location else ""
    secret = last in SECRET_FIELDS or bool(SECRET_FIELDS & {str(s) for s in location})
    context = error.get("ctx") or {}
    if kind == "literal_error":
        allowed = ", ".join(_quoted_choices(context.get("expected", "")))
        return f"'{value}' is not one of {allowed}"
    if kind == "union_tag_invalid":
        allowed = ", ".join(_quoted_choices(context.get("expected_tags", "")))
        return f"type '{context.get('tag')}' is not one of {allowed}"
    if kind == "union_tag_not_found":
        return "missing `type`: one of sql, s3, sftp, ftp, smtp, folder"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, location[:-1])
        hint = difflib.get_close_matches(last, allowed, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key '{last}'{suggestion}; allowed keys: {', '.join(allowed)}"
    if kind == "string_pattern_mismatch":
        return f"'{value}' is not a valid name: use lowercase letters, digits and underscores, starting with a letter"
    message = error["msg"]
    if message.startswith("Value error, "):
        return message[len("Value error, "):]
    if message.startswith("Assertion failed, "):
        message = message[len("Assertion failed, "):]
    if secret or isinstance(value, (dict, list)) or value is None:
        return message[0].lower() + message[1:]
    return f"{message[0].lower() + message[1:]} (got {value!r})"


def _quoted_choices(expected: str) -> list[str]:
    import re

    return re.findall(r"'([^']*)'", expected)


def _allowed_keys(model: type, location: tuple) -> list[str]:
    """The field names of the model that sits at `location`, by walking type annotations."""
    current: object = model
    for step in location:
        current = _unwrap(current, step)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: object, step: str | int) -> object:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field_info = annotation.model_fields.get(str(step))
        return field_info.annotation if field_info else None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict:
        return args[1]
    if origin is list:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            arg = _strip(arg)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                literal = arg.model_fields.get("type")
                if literal is not None and step in typing.get_args(literal.annotation):
                    return arg
                if str(step) in arg.model_fields:
                    return arg.model_fields[str(step)].annotation
        return None
    return None


def _strip(annotation: object) -> object:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _kind_of(value: object) -> str:
    return "an empty file" if value is None else f"a {type(value).__name__}"
