"""The two layers stay apart: the engine is plain Python, and only the Dagster layer builds Dagster objects.

Engine modules (spec/, mapping/, state/ without its resources, extract/, integration/, imports/, the plain clients
in transports/, storage.py, errors.py) must import without loading Dagster at all, and must never import the
Dagster layer (factories/, definitions.py, runs.py, cli/). The import check runs in a fresh interpreter, so nothing the
test session loaded hides an import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "connector_pipelines"
ENGINE_FOLDERS = ("spec", "mapping", "state", "extract", "integration", "imports", "transports", "alerts", "partners")
# The modules of those folders that wrap engine objects for Dagster (ConfigurableResource classes, the registry).
DAGSTER_WRAPPERS = {"state/resources.py", "transports/resources.py", "transports/registry.py"}
DAGSTER_LAYER = (
    "connector_pipelines.factories",
    "connector_pipelines.definitions",
    "connector_pipelines.runs",
    "connector_pipelines.run_queue",
    "connector_pipelines.cli",
    "connector_pipelines.demo",
)


def engine_modules() -> list[str]:
    paths = [PACKAGE / "storage.py", PACKAGE / "errors.py", PACKAGE / "progress.py"]
    for folder in ENGINE_FOLDERS:
        paths += sorted((PACKAGE / folder).glob("*.py"))
    return [
        ".".join(("connector_pipelines", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in paths
        if path.relative_to(PACKAGE).as_posix() not in DAGSTER_WRAPPERS
    ]


def test_the_engine_list_covers_every_kind():
    modules = engine_modules()
    for expected in (
        "connector_pipelines.integration.delivery",
        "connector_pipelines.imports.run",
        "connector_pipelines.extract.run",
        "connector_pipelines.state.ledger",
        "connector_pipelines.transports.sftp",
        "connector_pipelines.spec.loader",
    ):
        assert expected in modules


PROBE = """
import importlib, json, sys
loaded_dagster = {}
for module in sys.argv[1:]:
    importlib.import_module(module)
    if "dagster" in sys.modules:
        loaded_dagster = {"first module that loads dagster": module}
        break
print(json.dumps(loaded_dagster))
"""


def test_no_engine_module_loads_dagster():
    # One fresh interpreter imports the modules one by one and names the first after which Dagster is loaded.
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *engine_modules()], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{}", result.stdout


@pytest.mark.parametrize("module", engine_modules())
def test_an_engine_module_never_imports_the_dagster_layer(module):
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    offending = [name for name in imported if name.startswith(DAGSTER_LAYER) or name == "dagster"]
    assert not offending, f"{module} imports {offending}"
