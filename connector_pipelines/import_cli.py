"""CLI commands for imports that inspect or edit specs: preview, validate NAME, automap, duplicate, delete.

(Skeleton: being written.)
"""

from __future__ import annotations

import click

from connector_pipelines.spec.loader import LoadedConnector, Project


def preview_import(project: Project, loaded: LoadedConnector, rows: int) -> int:
    raise NotImplementedError


def validate_import(project: Project, loaded: LoadedConnector) -> int:
    raise NotImplementedError


@click.command()
@click.argument("name")
def automap(name: str) -> None:
    """(being written)"""
    raise NotImplementedError


@click.command()
@click.argument("name")
@click.argument("new_name")
def duplicate(name: str, new_name: str) -> None:
    """(being written)"""
    raise NotImplementedError


@click.command()
@click.argument("name")
def delete(name: str) -> None:
    """(being written)"""
    raise NotImplementedError
