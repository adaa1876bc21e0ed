"""The `connector-pipelines` command: one click group (`main.py`), commands grouped by kind, shared helpers."""

from connector_pipelines.cli.main import main

__all__ = ["main"]
