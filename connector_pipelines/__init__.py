"""connector-pipelines: data connectors declared in YAML, built into Dagster definitions.

Public API: `build_definitions`, `ConnectorComponent` (for a `dg` project's `defs.yaml`), `ConnectorTranslator`
and `ConnectorAssetData`. They are imported on first use (PEP 562), so that importing an engine module
(`connector_pipelines.mapping`, `.spec`, ...) does not load Dagster. `__dir__` lists them too: that is how
`dg list components` finds the component in this package (the `dagster_dg_cli.registry_modules` entry point).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ConnectorAssetData", "ConnectorComponent", "ConnectorTranslator", "build_definitions"]

if TYPE_CHECKING:
    from connector_pipelines.definitions import build_definitions
    from connector_pipelines.factories.component import ConnectorComponent
    from connector_pipelines.factories.translator import ConnectorAssetData, ConnectorTranslator


def __getattr__(name: str):
    if name == "build_definitions":
        from connector_pipelines.definitions import build_definitions

        return build_definitions
    if name == "ConnectorComponent":
        from connector_pipelines.factories.component import ConnectorComponent

        return ConnectorComponent
    if name in ("ConnectorTranslator", "ConnectorAssetData"):
        from connector_pipelines.factories import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'connector_pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
