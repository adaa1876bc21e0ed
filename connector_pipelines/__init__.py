"""connector-pipelines: data connectors declared in YAML, built into Dagster definitions.

Public API: `build_definitions`, `ConnectorTranslator` and `ConnectorAssetData`. They are imported on first use
(PEP 562), so that importing an engine module (`connector_pipelines.mapping`, `.spec`, ...) does not load Dagster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ConnectorAssetData", "ConnectorTranslator", "build_definitions"]

if TYPE_CHECKING:
    from connector_pipelines.definitions import build_definitions
    from connector_pipelines.factories.translator import ConnectorAssetData, ConnectorTranslator


def __getattr__(name: str):
    if name == "build_definitions":
        from connector_pipelines.definitions import build_definitions

        return build_definitions
    if name in ("ConnectorTranslator", "ConnectorAssetData"):
        from connector_pipelines.factories import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'connector_pipelines' has no attribute {name!r}")
