"""The import commands of `connector-pipelines` that inspect or edit specs: preview, validate NAME, automap,
duplicate and delete, run through click against a temporary project (PostgreSQL or SQLite warehouse, SQLite
target, a local folder for files)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from connector_pipelines.cli import main
from connector_pipelines.spec.loader import load_project
from connector_pipelines.state.database import default_state_url
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.storage import STORAGE_ENV, Storage

pytestmark = pytest.mark.timeout(60)

SPEC = """\
# Orders from the warehouse (a comment automap and duplicate keep)
kind: import
name: orders_import
enabled: true
import:
  source:
    warehouse:
      connection: dwh
      query: SELECT * FROM src_orders ORDER BY id  # newest last
  target:
    connection: crm
    table: orders
    key: id
  mapping:
    # the customer's name, trimmed
    - target: name
      expression: trim(customer_name)
    - target: id
      source: id
  expectations:
    - {expect: not_null, column: id}
"""


class Project:
    def __init__(self, root: Path, warehouse_url: str):
        self.root = root
        self.resources = root / "resources"
        (self.resources / "connectors").mkdir(parents=True)
        self.drop = root / "drop"
        self.drop.mkdir()
        self.target_url = f"sqlite:///{root / 'crm.db'}"
        (self.resources / "connections.yaml").write_text(
            "connections:\n"
            f"  dwh: {{type: sql, url: '{warehouse_url}'}}\n"
            f"  crm: {{type: sql, url: '{self.target_url}'}}\n"
            f"  drop: {{type: folder, path: {self.drop}}}\n"
            "  api: {type: http, base_url: 'http://127.0.0.1:9'}\n"
        )
        engine = sa.create_engine(self.target_url)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), "
                "order_date DATE)"
            )
        engine.dispose()
        self.runner = CliRunner()

    def write(self, name: str, text: str) -> Path:
        path = self.resources / "connectors" / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    def cli(self, *args: str, input: str | None = None):
        return self.runner.invoke(
            main, [*args, "--resources", str(self.resources)], input=input, catch_exceptions=False
        )

    def state(self) -> ImportState:
        return ImportState(default_state_url(Storage.for_project(self.root).root))


@pytest.fixture
def project(tmp_path: Path, pg_database, monkeypatch) -> Project:
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))
    pg_database.execute("CREATE TABLE src_orders (id INTEGER, customer_name TEXT, amount TEXT, ordered_on DATE)")
    pg_database.execute(
        "INSERT INTO src_orders VALUES (1, ' Ann ', '10.50', '2024-03-01'), (2, 'Bob', '7.25', '2024-03-02'), "
        "(3, 'Cy', '1', '2024-03-03')"
    )
    made = Project(tmp_path, pg_database.url)
    made.write("orders_import", SPEC)
    return made


@pytest.fixture
def sqlite_project(tmp_path: Path, monkeypatch) -> Project:
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'dwh.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE src_orders (id INTEGER, customer_name TEXT, amount TEXT)")
        connection.exec_driver_sql("INSERT INTO src_orders VALUES (1, 'Ann', '10.50')")
    engine.dispose()
    made = Project(tmp_path, f"sqlite:///{tmp_path / 'dwh.db'}")
    made.write("orders_import", SPEC)
    return made


# --------------------------------------------------------------------------------------------------
# preview


def test_preview_prints_rows_and_records_the_preview(project: Project) -> None:
    result = project.cli("preview", "orders_import", "--rows", "2")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "first 2 rows of the query on postgresql 127.0.0.1:5432/test"
    assert lines[1].split() == ["id", "customer_name", "amount", "ordered_on"]
    assert lines[2].split() == ["1", "Ann", "10.50", "2024-03-01"] and lines[3].startswith("2 ")
    assert len(lines) == 5 and lines[4].startswith("preview recorded for 'orders_import' (source ")
    loaded = load_project(project.resources).connector("orders_import")
    state = project.state()
    try:
        assert state.previewed("orders_import", loaded.spec.source_hash(load_project(project.resources).connections))
    finally:
        state.dispose()


def test_preview_failures_name_the_cause_and_record_nothing(project: Project) -> None:
    project.write("orders_import", SPEC.replace("FROM src_orders", "FROM src_orderz"))
    bad_query = project.cli("preview", "orders_import")
    assert bad_query.exit_code == 1
    assert 'the query failed on postgresql 127.0.0.1:5432/test: relation "src_orderz" does not exist' in (
        bad_query.output
    )
    assert "nothing was recorded" in bad_query.output

    project.write(
        "dropped",
        """\
        kind: import
        import:
          source:
            files: {connection: drop, pattern: 'orders_*.csv'}
          target: {connection: crm, table: orders, key: id}
          mapping:
            - {target: id, source: id}
        """,
    )
    (project.drop / "orders.txt").write_text("id\n1\n")
    (project.drop / "orders_1.csv").write_text("")
    empty = project.cli("preview", "dropped")
    assert empty.exit_code == 1 and "cannot read 'orders_1.csv'" in empty.output and "empty (0 bytes)" in empty.output

    def previewed() -> bool:
        state = project.state()
        try:
            loaded = load_project(project.resources)
            return state.previewed("dropped", loaded.connector("dropped").spec.source_hash(loaded.connections))
        finally:
            state.dispose()

    assert not previewed()
    # No file yet, but the folder answers: the preview counts, so the file sensor may wait for the first file.
    (project.drop / "orders_1.csv").unlink()
    nothing = project.cli("preview", "dropped")
    assert nothing.exit_code == 0, nothing.output
    assert f"no file in the root of folder {project.drop} matches pattern 'orders_*.csv' (1 other file there: " in (
        nothing.output
    )
    assert "files will be picked up when they arrive" in nothing.output
    assert previewed()


def test_preview_of_a_closed_port_and_of_an_unset_secret(sqlite_project: Project, monkeypatch) -> None:
    monkeypatch.delenv("CP_TEST_UNSET", raising=False)
    connections = sqlite_project.resources / "connections.yaml"
    connections.write_text(
        connections.read_text()
        + "  closed: {type: sql, url: 'postgresql://postgres@127.0.0.1:1/test'}\n"
        + "  locked: {type: sql, url: 'postgresql://postgres@127.0.0.1:5432/test', password: '${CP_TEST_UNSET}'}\n"
    )
    sqlite_project.write("orders_import", SPEC.replace("connection: dwh", "connection: closed"))
    refused = sqlite_project.cli("preview", "orders_import")
    assert refused.exit_code == 1 and "cannot connect to postgresql 127.0.0.1:1/test: " in refused.output

    sqlite_project.write("orders_import", SPEC.replace("connection: dwh", "connection: locked"))
    unset = sqlite_project.cli("preview", "orders_import")
    assert unset.exit_code == 2
    assert "connection 'locked' needs the environment variable CP_TEST_UNSET (its password); set it" in unset.output


# --------------------------------------------------------------------------------------------------
# validate NAME


def test_validate_an_import_prints_each_problem_and_a_summary(project: Project) -> None:
    good = project.cli("validate", "orders_import")
    assert good.exit_code == 0, good.output
    assert (
        "OK: the mapping of import 'orders_import' fits the 4 source column(s) of the query on postgresql "
        "127.0.0.1:5432/test and table 'orders' on sqlite"
    ) in good.output

    project.write(
        "orders_import",
        SPEC.replace("trim(customer_name)", "trim(customer_nam)").replace(
            "  expectations:",
            "    - {target: amount, source: amout}\n    - {target: discount, source: amount}\n  expectations:",
        ),
    )
    bad = project.cli("validate", "orders_import")

    assert bad.exit_code == 1
    problems = [line for line in bad.output.splitlines() if " import." in line]
    assert [p.split(" ")[1] for p in problems] == [
        "import.mapping.0.expression:",
        "import.mapping.2.source:",
        "import.mapping.3.target:",
    ]
    assert "'customer_nam', which is not a column of the source (did you mean 'customer_name'?)" in problems[0]
    assert "'amout' is not a column of the source (did you mean 'amount'?)" in problems[1]
    assert "column 'discount' is mapped but table 'orders' has no such column" in problems[2]
    assert "3 problems in the mapping of import 'orders_import'" in bad.output

    project.write("orders_import", SPEC.replace("table: orders", "table: order"))
    missing = project.cli("validate", "orders_import")
    assert missing.exit_code == 1
    assert "import.target.table: table 'order' does not exist on sqlite" in missing.output
    assert "(did you mean 'orders'?)" in missing.output


def test_validate_a_file_import_without_a_file_checks_the_target(sqlite_project: Project) -> None:
    sqlite_project.write(
        "dropped",
        """\
        kind: import
        import:
          source:
            files: {connection: drop, folder: inbound, pattern: 'orders_*.csv'}
          target: {connection: crm, table: orders, key: id}
          mapping:
            - {target: id, source: id}
            - {target: name, source: customer}
        """,
    )

    result = sqlite_project.cli("validate", "dropped")

    assert result.exit_code == 0, result.output
    assert (
        f"note: the source columns could not be checked: no file in folder 'inbound' of folder {sqlite_project.drop} "
        "matches pattern 'orders_*.csv' (no other files there)"
    ) in result.output
    assert "OK: the mapping of import 'dropped' fits table 'orders' on sqlite" in result.output


def test_preview_of_a_query_without_rows_shows_its_columns(sqlite_project: Project) -> None:
    sqlite_project.write("orders_import", SPEC.replace("ORDER BY id", "WHERE id > 99"))

    result = sqlite_project.cli("preview", "orders_import")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:3] == [
        "id  customer_name  amount",
        "(the query returned no rows; its columns are shown)",
    ]


# --------------------------------------------------------------------------------------------------
# automap


def test_automap_writes_a_mapping_that_loads_keys_first_and_keeps_comments(project: Project) -> None:
    path = project.resources / "connectors" / "orders_import.yaml"
    before = path.read_text()

    dry = project.cli("automap", "orders_import", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert path.read_text() == before
    assert "dry run: 1 rule(s) would be written" in dry.output

    result = project.cli("automap", "orders_import")

    assert result.exit_code == 0, result.output
    table = [line.split() for line in result.output.splitlines() if line.startswith(("id ", "name ", "amount "))]
    assert table[0][:3] == ["id", "id", "kept"] and table[2][:4] == ["amount", "amount", "1.00", "new"]
    assert "no source column is close enough to: order_date" in result.output  # ordered_on scores below 0.8
    text = path.read_text()
    assert text.startswith("# Orders from the warehouse (a comment automap and duplicate keep)\n")
    assert "    # the customer's name, trimmed\n" in text and "  # newest last\n" in text
    assert text.endswith("  expectations:\n    - {expect: not_null, column: id}\n")
    rules = load_project(project.resources).connector("orders_import").spec.import_.mapping
    assert [rule.target for rule in rules] == ["id", "name", "amount"]
    assert rules[2].note == "automap: amount -> amount (score 1.00); review" and rules[2].type == "currency"

    again = project.cli("automap", "orders_import")
    assert again.exit_code == 0 and "nothing to change" in again.output


def test_automap_of_files_for_a_table_yet_to_be_created(sqlite_project: Project) -> None:
    path = sqlite_project.write(
        "dropped",
        """\
        kind: import
        import:
          source:
            files: {connection: drop, pattern: 'orders_*.csv'}
          target: {connection: crm, table: new_orders, key: order_id}
          mapping:
            - {target: order_id, source: id}
            - {target: email, source: mail}
        """,
    )
    before = path.read_text()
    nothing = sqlite_project.cli("automap", "dropped")
    assert nothing.exit_code == 1 and "cannot propose a mapping for 'dropped': no file in the root of" in nothing.output

    (sqlite_project.drop / "orders_1.csv").write_text("OrderID,E-Mail,Amount\n1,a@x.example,2\n")
    kept = sqlite_project.cli("automap", "dropped")
    assert kept.exit_code == 0, kept.output
    assert "targets: the existing mapping (table 'new_orders' on sqlite" in kept.output
    assert "nothing to change" in kept.output and path.read_text() == before

    replaced = sqlite_project.cli("automap", "dropped", "--replace")

    assert replaced.exit_code == 0, replaced.output
    rules = load_project(sqlite_project.resources).connector("dropped").spec.import_.mapping
    assert [(rule.target, rule.source) for rule in rules] == [("order_id", "OrderID"), ("email", "E-Mail")]
    assert "source columns left unmapped: Amount" in replaced.output
    assert path.read_text().endswith(
        "  mapping:\n"
        "    - {target: order_id, source: OrderID, note: 'automap: OrderID -> order_id (score 0.98); review'}\n"
        "    - {target: email, source: E-Mail, note: 'automap: E-Mail -> email (score 0.95); review'}\n"
    )


# --------------------------------------------------------------------------------------------------
# duplicate and delete


def test_duplicate_copies_switched_off(project: Project) -> None:
    result = project.cli("duplicate", "orders_import", "orders_copy")

    assert result.exit_code == 0, result.output
    copy = project.resources / "connectors" / "orders_copy.yaml"
    assert copy.read_text() == SPEC.replace("name: orders_import", "name: orders_copy").replace(
        "enabled: true", "enabled: false"
    )
    assert "'orders_copy' is off (enabled: false)" in result.output
    assert "same table 'orders' of connection 'crm'" in result.output
    loaded = load_project(project.resources).connector("orders_copy")
    assert loaded.spec.enabled is False

    taken = project.cli("duplicate", "orders_import", "orders_copy")
    assert taken.exit_code == 2 and "the name 'orders_copy' is taken" in taken.output
    invalid = project.cli("duplicate", "orders_import", "Orders-Copy")
    assert invalid.exit_code == 2 and "not a valid connector name" in invalid.output
    unknown = project.cli("duplicate", "orders_imprt", "x")
    assert unknown.exit_code == 2 and "did you mean 'orders_import'" in unknown.output


def test_duplicate_of_a_file_without_a_name_switches_it_off(project: Project) -> None:
    path = project.resources / "connectors" / "orders_import.yaml"
    path.write_text(path.read_text().replace("name: orders_import\n", "").replace("enabled: true\n", ""))

    result = project.cli("duplicate", "orders_import", "second")

    assert result.exit_code == 0, result.output
    text = (project.resources / "connectors" / "second.yaml").read_text()
    assert text.startswith(
        "# Orders from the warehouse (a comment automap and duplicate keep)\nkind: import\n"
        "enabled: false  # a copy starts off; turn it on once reviewed\nimport:\n"
    )
    assert load_project(project.resources).connector("second").spec.enabled is False


def test_delete_asks_and_purge_removes_state_and_storage(project: Project) -> None:
    assert project.cli("preview", "orders_import").exit_code == 0
    storage = Storage.for_project(project.root).import_dir("orders_import")
    inbox = Storage.for_project(project.root).import_inbox_dir("orders_import")
    for folder in (storage / "run1", inbox):
        folder.mkdir(parents=True)
        (folder / "snapshot.parquet").write_text("x")
    path = project.resources / "connectors" / "orders_import.yaml"

    declined = project.cli("delete", "orders_import", "--purge", input="n\n")
    assert declined.exit_code == 1 and path.exists() and storage.exists()

    result = project.cli("delete", "orders_import", "--purge", input="y\n")

    assert result.exit_code == 0, result.output
    assert not path.exists() and not storage.exists() and not inbox.exists()
    assert "forgot the state of 'orders_import'" in result.output
    state = project.state()
    try:
        assert state.watermark("orders_import") is None
        with state.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM cp_import_previews").scalar() == 0
    finally:
        state.dispose()


def test_delete_any_kind_but_purge_only_imports(sqlite_project: Project) -> None:
    spec = """\
    kind: integration
    integration:
      data_set: {connection: dwh, table: src_orders, key: id}
      target:
        connection: api
        fields: [{name: id, type: integer}]
      configurations:
        - name: main
          request: {method: POST, path: /x}
          mapping: [{target: id, source: id}]
    """
    path = sqlite_project.write("sync", spec)
    assert load_project(sqlite_project.resources).connector("sync").kind == "integration"

    refused = sqlite_project.cli("delete", "sync", "--purge", "--yes")
    assert refused.exit_code == 2 and "`connector-pipelines reset sync` forgets" in refused.output
    assert path.exists()

    result = sqlite_project.cli("delete", "sync", "--yes")
    assert result.exit_code == 0 and not path.exists()

    kept = sqlite_project.cli("delete", "orders_import", "--yes")
    assert kept.exit_code == 0 and "its state and storage were kept" in kept.output


def test_delete_removes_a_spec_that_breaks_the_project(sqlite_project: Project) -> None:
    broken = sqlite_project.write("broken", "kind: import\nimport: {}\n")

    result = sqlite_project.cli("delete", "broken", "--yes")

    assert result.exit_code == 0, result.output
    assert not broken.exists() and "the project does not load" in result.output
    assert yaml.safe_load((sqlite_project.resources / "connections.yaml").read_text())  # untouched
