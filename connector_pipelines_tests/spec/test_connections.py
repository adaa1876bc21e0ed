"""The one table of secret fields (spec/connections.py) names exactly the fields the connection models hold
environment references in, and the loader neither imports Dagster nor needs it."""

from __future__ import annotations

import subprocess
import sys
import typing

from pydantic import BaseModel

from connector_pipelines.spec import connections
from connector_pipelines.spec.common import SecretRef
from connector_pipelines.spec.connections import CONNECTION_TYPES, SECRET_FIELDS, secret_field_names


def _secret_ref_fields(model: type[BaseModel]) -> set[str]:
    hints = typing.get_type_hints(model, include_extras=True)
    return {name for name, hint in hints.items() if hint == SecretRef or SecretRef in typing.get_args(hint)}


def _models_of(union: object) -> list[type[BaseModel]]:
    members = typing.get_args(typing.get_args(union)[0])  # Annotated[A | B | ..., discriminator] -> (A, B, ...)
    return [member for member in members if isinstance(member, type) and issubclass(member, BaseModel)]


def test_secret_fields_match_the_secret_references_of_every_connection_model() -> None:
    expected: dict[str, set[str]] = {}
    for model in _models_of(connections.Connection):
        (connection_type,) = typing.get_args(model.model_fields["type"].annotation)
        expected[connection_type] = _secret_ref_fields(model)
    # An http connection's secrets are in its `auth:` models.
    expected["http"] = set().union(*(_secret_ref_fields(model) for model in _models_of(connections.HttpAuth)))

    assert {kind: set(names) for kind, names in SECRET_FIELDS.items()} == expected
    assert set(CONNECTION_TYPES) == set(SECRET_FIELDS)
    assert secret_field_names() == set().union(*expected.values())


def test_loading_a_project_leaves_dagster_unimported() -> None:
    script = (
        "import sys; from connector_pipelines.spec.loader import load_project; "
        "from pathlib import Path; import connector_pipelines_tests; "
        "load_project(Path(connector_pipelines_tests.__file__).parent / 'spec_corpus' / 'valid'); "
        "print('dagster' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
