"""Turn one connector (and the part of it an asset stands for) into a `dg.AssetSpec`.

As in dagster-sling and dagster-dlt, naming lives in one overridable method: subclass `ConnectorTranslator`
and adjust `super().get_asset_spec(data)` with `.replace_attributes(...)` / `.merge_attributes(...)`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
from sqlalchemy.engine import make_url

from connector_pipelines.factories.describe import plain_words
from connector_pipelines.factories.naming import ConnectorNames, connector_parts, default_asset_key
from connector_pipelines.spec.connections import Connection
from connector_pipelines.spec.loader import LoadedConnector

TRANSLATOR_ENV = "CONNECTOR_PIPELINES_TRANSLATOR"
_DIALECT_KINDS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mariadb", "sqlite": "sqlite"}
_TRANSPORT_KINDS = {"s3": "s3", "sftp": "sftp", "ftp": "ftp", "smtp": "email", "folder": "file", "partner": "sftp"}
_FORMAT_KINDS = {"csv": "csv", "tsv": "csv", "parquet": "parquet", "jsonl": "json"}


@dataclass(frozen=True)
class ConnectorAssetData:
    """Everything the translator may look at for one asset."""

    connector: LoadedConnector
    part: str
    connections: Mapping[str, Connection]


class ConnectorTranslator:
    """Default asset keys `[kind, name, part]`, one group per connector, kinds from the systems touched."""

    def get_asset_spec(self, data: ConnectorAssetData) -> dg.AssetSpec:
        spec = data.connector.spec
        return dg.AssetSpec(
            key=default_asset_key(spec.kind, spec.name, data.part),
            group_name=spec.name,
            description=self._description(data),
            owners=list(spec.owners),
            tags=dict(spec.tags),
            kinds=self._kinds(data),
            code_version=spec_fingerprint(data.connector),
            metadata={"dagster/code_references": _code_reference(data.connector.path)},
        )

    def _description(self, data: ConnectorAssetData) -> str:
        """The spec's description (or the kind and name), then what the asset does in plain words."""
        spec = data.connector.spec
        text = spec.description or f"{spec.kind} {spec.name}"
        return f"{text}\n\n{plain_words(data.connector, data.part, data.connections)}"

    def _kinds(self, data: ConnectorAssetData) -> set[str]:
        spec = data.connector.spec
        if spec.kind == "integration":
            return self._integration_kinds(data)
        if spec.kind == "import":
            return self._import_kinds(data)
        extract = spec.extract
        kinds = {_FORMAT_KINDS[extract.format]}
        source = data.connections.get(extract.source.connection)
        if source is not None and source.type == "sql":
            backend = make_url(source.url).get_backend_name()
            kinds.add(_DIALECT_KINDS.get(backend, backend))
        for destination in extract.destinations:
            connection = data.connections.get(destination.connection)
            if connection is not None:
                kinds.add(_TRANSPORT_KINDS[connection.type])
        return set(sorted(kinds)[:10])

    def _integration_kinds(self, data: ConnectorAssetData) -> set[str]:
        integration = data.connector.spec.integration
        kinds = {"parquet"} if data.part == "data_set" else {"http"}
        source = data.connections.get(integration.data_set.connection)
        if source is not None and source.type == "sql":
            backend = make_url(source.url).get_backend_name()
            kinds.add(_DIALECT_KINDS.get(backend, backend))
        return kinds

    def _import_kinds(self, data: ConnectorAssetData) -> set[str]:
        spec = data.connector.spec.import_
        kinds = {"table"}
        names = [spec.target.connection]
        if spec.source.warehouse is not None:
            names.append(spec.source.warehouse.connection)
        if spec.source.files is not None:
            names.append(spec.source.files.connection)
        if spec.source.email is not None:
            kinds.add("email")
        if spec.source.api is not None:
            kinds.add("http")
        for name in names:
            connection = data.connections.get(name)
            if connection is None:
                continue
            if connection.type == "sql":
                backend = make_url(connection.url).get_backend_name()
                kinds.add(_DIALECT_KINDS.get(backend, backend))
            elif connection.type in _TRANSPORT_KINDS:
                kinds.add(_TRANSPORT_KINDS[connection.type])
        return kinds


def _code_reference(path) -> dg.CodeReferencesMetadataValue:
    """Links the asset to its YAML file in the UI. The classes are marked beta; their warning is noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.CodeReferencesMetadataValue(
            code_references=[dg.LocalFileCodeReference(file_path=str(path.resolve()), line_number=1)]
        )


def spec_fingerprint(connector: LoadedConnector) -> str:
    """A short hash of the normalized spec: the asset's code_version, so the UI flags changed config."""
    normalized = json.dumps(connector.spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(normalized.encode()).hexdigest()[:16]


def build_connector_specs(
    loaded: LoadedConnector, connections: Mapping[str, Connection], translator: ConnectorTranslator | None = None
) -> dict[str, dg.AssetSpec]:
    """Part -> the asset spec the translator returns for it: what the factories build and every name comes from.

    Without a translator, the configured one (see `configured_translator`), as `build_definitions` uses."""
    translator = translator or configured_translator()
    return {
        part: translator.get_asset_spec(ConnectorAssetData(loaded, part, connections))
        for part in connector_parts(loaded.spec)
    }


def names_from_specs(loaded: LoadedConnector, specs: Mapping[str, dg.AssetSpec]) -> ConnectorNames:
    keys = {part: spec.key for part, spec in specs.items()}
    return ConnectorNames(loaded.kind, loaded.name, keys, environment=loaded.environment)


def connector_names(
    loaded: LoadedConnector, connections: Mapping[str, Connection], translator: ConnectorTranslator | None = None
) -> ConnectorNames:
    """The names a connector's definitions carry with this translator (the CLI and the demo start runs by them);
    without one, the configured translator's."""
    return names_from_specs(loaded, build_connector_specs(loaded, connections, translator))


def configured_translator() -> ConnectorTranslator:
    """The translator the UI's definitions and the CLI share: `$CONNECTOR_PIPELINES_TRANSLATOR` (`module:name`, a
    `ConnectorTranslator` subclass or instance), else the default. Both read it, so a run the CLI starts sends run
    config to the ops the UI shows."""
    reference = os.environ.get(TRANSLATOR_ENV)
    if not reference:
        return ConnectorTranslator()
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{TRANSLATOR_ENV} must look like 'package.module:TranslatorClass', not {reference!r}")
    value = getattr(importlib.import_module(module_name), attribute)
    translator = value() if isinstance(value, type) else value
    if not isinstance(translator, ConnectorTranslator):
        raise ValueError(f"{TRANSLATOR_ENV}={reference} is not a ConnectorTranslator (subclass or instance)")
    return translator
