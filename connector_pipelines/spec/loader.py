"""Load `resources/connections.yaml` and `resources/connectors/*.yaml` (or any connections file and list of
connector files, as the Dagster Component names them) into validated models.

Every problem becomes one line: `file:line dotted.field: what is wrong and what is allowed`. All files are
checked before anything is raised, so one `validate` shows every problem at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.common import CONNECTOR_KINDS, NAME_PATTERN
from connector_pipelines.spec.connections import CONNECTION_TYPES, FILE_TRANSPORT_TYPES, Connection, ConnectionsFile
from connector_pipelines.spec.environments import (
    DEFAULT_ENVIRONMENT,
    ENVIRONMENT_ENV,
    ENVIRONMENT_NAME,
    ENVIRONMENTS_KEY,
    declared_in,
    for_environment,
    is_default,
    overlay_path,
    selected_environment,
    without_environments,
)
from connector_pipelines.spec.imports import ImportConnector, ImportSpec
from connector_pipelines.spec.integration import IntegrationConnector, IntegrationSpec
from connector_pipelines.spec.kinds import AVAILABLE_KINDS, Connector, schedule_of
from connector_pipelines.spec.notifications import NotificationsFile
from connector_pipelines.spec.partners import PartnersFile, load_partners
from connector_pipelines.spec.problems import NAME_RULE, did_you_mean, kind_of, suggest_name, validate
from connector_pipelines.spec.yaml_source import YamlDocument, display_path, read_yaml

RESOURCES_ENV = "CONNECTOR_PIPELINES_RESOURCES"
CONNECTOR_MODELS: dict[str, type[BaseModel]] = dict(AVAILABLE_KINDS)
EMAIL_ONLY_FIELDS = ("to", "cc", "subject", "body")


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
    environment: str | None = None  # the project's environment, when it has one (`spec.environments`)

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
    root: Path | None = None  # where relative paths and var/ live, when not the folder that holds resources/
    notifications: NotificationsFile | None = None  # resources/notifications.yaml, when there is one
    partners: PartnersFile | None = None  # resources/partners.yaml, when there is one
    environment: str | None = None  # sandbox, production...: None when the project declares and selects none

    @property
    def base_dir(self) -> Path:
        """Relative paths in the configuration are resolved against the folder that holds resources/ (or `root`)."""
        return self.root.resolve() if self.root else self.resources_dir.resolve().parent

    def connector(self, name: str) -> LoadedConnector:
        if name not in self.connectors:
            known = ", ".join(sorted(self.connectors)) or "none"
            raise ConnectorConfigError(
                [f"no connector named '{name}'{did_you_mean(name, self.connectors)}; known connectors: {known}"]
            )
        return self.connectors[name]


def load_project(
    resources_dir: Path | None = None,
    *,
    connections_path: Path | None = None,
    connector_paths: Sequence[Path] | None = None,
    root: Path | None = None,
    environment: str | None = None,
) -> Project:
    """Load and validate every file, raising one ConnectorConfigError listing all problems.

    By default `resources_dir/connections.yaml` and `resources_dir/connectors/*.y*ml`; the Component passes its own
    connections file, connector files and project root instead. `environment` (default `$CONNECTOR_PIPELINES_ENV`)
    selects the connections' per-environment values (`spec.environments`)."""
    environment = selected_environment(environment)
    resources_dir = Path(resources_dir or default_resources_dir())
    problems: list[str] = []
    connections: dict[str, Connection] = {}
    connections_ok = False

    connections_path = connections_path or resources_dir / "connections.yaml"
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
            connections, environment = _connections_for(doc, connections_path, environment)
            connections_ok = True
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)

    connectors: dict[str, LoadedConnector] = {}
    docs: dict[str, YamlDocument] = {}
    seen_in: dict[str, Path] = {}
    if connector_paths is None:
        connector_dir = resources_dir / "connectors"
        connector_paths = sorted(connector_dir.glob("*.y*ml")) if connector_dir.is_dir() else []
    for path in connector_paths:
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
        docs[loaded.name] = doc

    for loaded in connectors.values():
        problems.extend(_automation_problems(loaded, docs[loaded.name], connectors))
    problems.extend(_cycle_problems(connectors, docs))
    notifications = None
    notifications_path = resources_dir / "notifications.yaml"
    if notifications_path.exists() and connections_path == resources_dir / "connections.yaml":
        try:
            notifications = _load_notifications(notifications_path, connections, connectors)
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)
    partners = None
    if connections_ok:
        try:
            # Beside the connections file (resources/, or a Component's own folder).
            partners = load_partners(connections_path.parent / "partners.yaml", connections, connections_path)
        except ConnectorConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConnectorConfigError(problems)
    if environment is not None:  # every connector knows it: its runs are tagged with it, its assets say it
        connectors = {name: replace(loaded, environment=environment) for name, loaded in connectors.items()}
    return Project(
        resources_dir=resources_dir,
        connections=connections,
        connectors=connectors,
        root=root,
        notifications=notifications,
        partners=partners,
        environment=environment,
    )


def _connections_for(
    doc: YamlDocument, path: Path, environment: str | None
) -> tuple[dict[str, Connection], str | None]:
    """connections.yaml as `environment` sees it (its inline `environments:` values, then connections.<env>.yaml),
    and the environment in force: None when the project declares none and none is selected; `production` when it
    declares some and none is selected."""
    where = display_path(path)
    data = doc.data if isinstance(doc.data, dict) else {}
    raw = data.get("connections")
    if not isinstance(raw, dict):
        return dict(validate(doc, ConnectionsFile, doc.data).connections), environment
    problems = _environment_block_problems(doc, raw)
    declared = declared_in(raw)
    if environment is None and declared:
        environment = DEFAULT_ENVIRONMENT
    overlay_doc = None
    if environment is not None:
        if not ENVIRONMENT_NAME.match(environment):
            raise ConnectorConfigError(
                [
                    f"{ENVIRONMENT_ENV}={environment[:40]!r}: an environment name is lower case letters, digits and _ "
                    "(for example sandbox, production)"
                ]
            )
        overlay_file = overlay_path(path, environment)
        if overlay_file.exists():
            overlay_doc = read_yaml(overlay_file)
            if not isinstance(overlay_doc.data, dict) or not isinstance(overlay_doc.data.get("connections"), dict):
                problems.append(
                    f"{display_path(overlay_file)}:1 connections: write a `connections:` mapping of the connections "
                    f"whose settings differ in {environment}, each with only the keys that differ"
                )
                overlay_doc = None
        elif not is_default(environment) and environment not in declared:
            known = ", ".join(sorted(declared | {DEFAULT_ENVIRONMENT}))
            problems.append(
                f"{where}:1 (environment): {ENVIRONMENT_ENV}={environment}, but no connection declares it under "
                f"`environments:` and there is no {overlay_file.name}; declared: {known}"
            )
    if problems:
        raise ConnectorConfigError(problems)
    base = validate(doc, ConnectionsFile, {**data, "connections": without_environments(raw)})
    if environment is None:
        return dict(base.connections), None
    overlay = overlay_doc.data["connections"] if overlay_doc is not None else None
    merged, overrides = for_environment(raw, environment, overlay)
    try:
        parsed = TypeAdapter(ConnectionsFile).validate_python({**data, "connections": merged})
    except ValidationError as exc:
        raise ConnectorConfigError(_override_problems(exc, doc, overlay_doc, overrides, environment)) from None
    return dict(parsed.connections), environment


def _environment_block_problems(doc: YamlDocument, raw: dict) -> list[str]:
    where, problems = display_path(doc.path), []
    for name, entry in raw.items():
        if not isinstance(entry, dict) or ENVIRONMENTS_KEY not in entry:
            continue
        block = entry[ENVIRONMENTS_KEY]
        at = ("connections", name, ENVIRONMENTS_KEY)
        if not isinstance(block, dict) or not all(isinstance(values, dict) for values in block.values()):
            problems.append(
                f"{where}:{doc.line_of(at)} connections.{name}.environments: map each environment's name to the "
                "settings that differ there, e.g. {sandbox: {base_url: https://test.example}}"
            )
            continue
        for env, values in block.items():
            if not ENVIRONMENT_NAME.match(str(env)):
                problems.append(
                    f"{where}:{doc.line_of((*at, env))} connections.{name}.environments.{env}: an environment name "
                    "is lower case letters, digits and _ (for example sandbox, production)"
                )
            if "type" in values:
                problems.append(
                    f"{where}:{doc.line_of((*at, env, 'type'))} connections.{name}.environments.{env}.type: an "
                    "environment changes a connection's settings, not its type; make another connection instead"
                )
    return problems


def _override_problems(exc: ValidationError, doc, overlay_doc, overrides, environment: str) -> list[str]:
    """The merged connections' problems, each at the line that set the value: the inline `environments:` block,
    the overlay file, or the base entry."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [step for step in error["loc"] if not (isinstance(step, str) and step in CONNECTION_TYPES)]
        name = loc[1] if len(loc) > 1 else None
        key = loc[2] if len(loc) > 2 else None
        field = ".".join(str(step) for step in loc)
        source = next((o.source for o in reversed(overrides) if o.connection == name and key in o.keys), None)
        if source == "overlay":
            text = f"{display_path(overlay_doc.path)}:{overlay_doc.line_of(('connections', name, key))} {field}"
        elif source == "inline":
            at = ("connections", name, ENVIRONMENTS_KEY, environment, key)
            text = f"{display_path(doc.path)}:{doc.line_of(at)} connections.{name}.environments.{environment}.{key}"
        else:
            text = f"{display_path(doc.path)}:{doc.line_of(tuple(loc))} {field}"
        lines.append(f"{text}: {error['msg']} (in {environment})")
    return list(dict.fromkeys(lines))


def _load_notifications(
    path: Path, connections: dict[str, Connection], connectors: dict[str, LoadedConnector]
) -> NotificationsFile | None:
    """notifications.yaml, with its references checked: an email channel's smtp connection, the rules'
    connectors."""
    doc = read_yaml(path)
    if doc.data is None:
        return None
    parsed = validate(doc, NotificationsFile, doc.data)
    where, problems = display_path(path), []
    for name, channel in parsed.channels.items():
        if channel.type != "email":
            continue
        line = doc.line_of(("channels", name, "connection"))
        connection = connections.get(channel.connection)
        if connection is None or connection.type != "smtp":
            smtp = ", ".join(sorted(n for n, c in connections.items() if c.type == "smtp")) or "none"
            problems.append(
                f"{where}:{line} channels.{name}.connection: '{channel.connection}' is not an smtp connection of "
                f"connections.yaml{did_you_mean(channel.connection, connections)}; smtp connections: {smtp}"
            )
    for index, rule in enumerate(parsed.rules):
        for position, name in enumerate(rule.connectors):
            if name != "*" and name not in connectors:
                line = doc.line_of(("rules", index, "connectors", position))
                problems.append(
                    f"{where}:{line} rules.{index}.connectors.{position}: no connector named '{name}'"
                    f"{did_you_mean(name, connectors)}; known connectors: {', '.join(sorted(connectors)) or 'none'}"
                )
    if problems:
        raise ConnectorConfigError(problems)
    return parsed


def _automation_problems(
    loaded: LoadedConnector, doc: YamlDocument, connectors: dict[str, LoadedConnector]
) -> list[str]:
    """`depends_on: - connector: X` must name a connector of the project; `automation: on_cron` needs a schedule
    whose cadence it takes (and a partitioned extract's schedule already runs each window)."""
    where, spec, problems = display_path(loaded.path), loaded.spec, []
    for index, upstream in enumerate(spec.depends_on):
        if upstream.connector is not None and upstream.connector not in connectors:
            known = ", ".join(sorted(set(connectors) - {spec.name})) or "none"
            problems.append(
                f"{where}:{doc.line_of(('depends_on', index, 'connector'))} depends_on.{index}.connector: no connector "
                f"named '{upstream.connector}'{did_you_mean(upstream.connector, connectors)}; known connectors: {known}"
            )
    if spec.automation == "on_cron":
        schedule = schedule_of(spec)
        line = doc.line_of(("automation",))
        if schedule is None:
            problems.append(
                f"{where}:{line} automation: on_cron runs on the schedule's cadence; add `{spec.kind}.schedule:` "
                "(cadence and timezone) or choose on_upstream_update"
            )
        elif spec.kind == "extract" and spec.extract.partitioned:
            problems.append(
                f"{where}:{line} automation: a partitioned extract's schedule already runs each window after it "
                "ends; remove `automation: on_cron` (or use on_upstream_update to wait for the upstreams)"
            )
        elif getattr(schedule, "cadence", None) == "once":
            problems.append(f"{where}:{line} automation: on_cron needs a repeating cadence, not `once`")
    return problems


def _cycle_problems(connectors: dict[str, LoadedConnector], docs: dict[str, YamlDocument]) -> list[str]:
    """Connectors that wait for each other through `depends_on: - connector:` would never run: one problem per
    cycle, at the cycle's first connector by name, on its dependency that leads round."""
    waits_for = {
        name: [u.connector for u in loaded.spec.depends_on if u.connector in connectors]
        for name, loaded in connectors.items()
    }
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    done: set[str] = set()

    def visit(path: list[str]) -> None:
        for step in waits_for[path[-1]]:
            if step in path:  # round again: the part of the path from `step` on is a cycle
                cycle = path[path.index(step) :]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(_cycle_problem(cycle, connectors, docs))
            elif step not in done:
                visit([*path, step])
        done.add(path[-1])

    for name in sorted(waits_for):
        if name not in done:
            visit([name])
    return problems


def _cycle_problem(cycle: list[str], connectors: dict[str, LoadedConnector], docs: dict[str, YamlDocument]) -> str:
    first = cycle.index(min(cycle))
    ordered = cycle[first:] + cycle[:first]
    loaded = connectors[ordered[0]]
    index = next(i for i, u in enumerate(loaded.spec.depends_on) if u.connector == ordered[1 % len(ordered)])
    line = docs[ordered[0]].line_of(("depends_on", index, "connector"))
    return (
        f"{display_path(loaded.path)}:{line} depends_on.{index}.connector: these connectors wait for each other "
        f"({' -> '.join([*ordered, ordered[0]])}), so none of them would ever run; remove one of the dependencies"
    )


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
            f"expected a mapping that starts with `kind:` (extract, integration or import), got {kind_of(data)}",
        )
    kind = data.get("kind")
    kind_line = doc.line_of(("kind",))
    kinds = ", ".join(CONNECTOR_KINDS)
    if kind is None:
        raise _one_problem(where, kind_line, "kind", f"required field is missing; add `kind:` (one of {kinds})")
    if kind not in CONNECTOR_KINDS:
        raise _one_problem(
            where, kind_line, "kind", f"'{kind}' is not one of {kinds}{did_you_mean(str(kind), CONNECTOR_KINDS)}"
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
                f"the file name '{path.stem}' is not a valid connector name ({NAME_RULE}); rename the file, "
                f"e.g. to {suggest_name(path.stem)}{path.suffix}",
            )
        data["name"] = path.stem
    spec = validate(doc, CONNECTOR_MODELS[kind], data)
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
                f"{where}:{line} {field_name}: unknown connection '{name}'{did_you_mean(name, connections)}; "
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
            files = loaded.spec.import_.source.files
            partner = connections.get(files.connection) if files is not None else None
            if partner is not None and partner.type == "partner" and files.folder.strip("/") != "inbox":
                problems.append(
                    f"{where}:{doc.line_of(('import', 'source', 'files', 'folder'))} import.source.files.folder: a "
                    "partner uploads into its inbox only; set `folder: inbox`"
                )
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
        if connection.type == "partner" and destination.folder.strip("/") != "outbox":
            problems.append(
                f"{where}:{doc.line_of((*location, 'folder'))} {prefix}.folder: a partner sees its outbox only (and "
                "its inbox, for its uploads); set `folder: outbox`"
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
                    f"{did_you_mean(rule.target, fields)}; declare it under integration.target.fields "
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
                        f"lookup '{name}' is not declared{did_you_mean(name, configuration.lookups)}; add it under "
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
    if source.api is not None:
        check((*root, "source", "api", "connection"), source.api.connection, ("http",), "serve an API to import from")
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
        for name in sorted(parse_expression(rule.expression).lookups - set(spec.lookups) if rule.expression else []):
            problems.append(
                f"{where}:{doc.line_of((*at, 'expression'))} import.mapping.{index}.expression: lookup '{name}' is "
                f"not declared{did_you_mean(name, spec.lookups)}; add it under `import.lookups:` (table, key, value)"
            )
        if rule.references is not None and rule.references.connection:
            check((*at, "references", "connection"), rule.references.connection, ("sql",), "hold the referenced table")
    for lookup_name, lookup in spec.lookups.items():
        if lookup.connection:
            check((*root, "lookups", lookup_name, "connection"), lookup.connection, ("sql",), "hold a lookup table")
    for index, expectation in enumerate(spec.expectations):
        if expectation.column not in mapped:
            at = (*root, "expectations", index, "column")
            problems.append(
                f"{where}:{doc.line_of(at)} import.expectations.{index}.column: '{expectation.column}' is not a "
                f"mapped target column{did_you_mean(expectation.column, mapped)}; expectations check the mapped "
                f"rows (columns: {', '.join(sorted(mapped))})"
            )
