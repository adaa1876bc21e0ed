"""delivery/import_inspection.py against real systems: PostgreSQL and SQLite as warehouse and target, a local
folder and an SFTP server as file sources; and the text rewrites of automap and duplicate."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.imports import inspect as inspection
from connector_pipelines.spec.loader import load_project
from connector_pipelines.state.database import default_state_url
from connector_pipelines.state.import_state import ImportState
from connector_pipelines.storage import STORAGE_ENV, Storage

pytestmark = pytest.mark.timeout(60)

TARGET_DDL = "CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount NUMERIC(12,2), ordered DATE)"
SOURCE_ROWS = "INSERT INTO src_orders VALUES (1, 'Ann', '10.50', '2024-03-01'), (2, 'Bob', '7.25', '2024-03-02')"
MAPPING = """\
    - target: id
      source: id
      type: integer
    - target: name
      expression: trim(name)
    - target: amount
      source: amount
      type: currency
      parse: currency
"""


class Env:
    """A project folder: connections `dwh` (warehouse), `crm` (SQLite target) and `drop` (a local folder)."""

    def __init__(self, root: Path, warehouse_url: str, extra_connections: str = ""):
        self.root = root
        self.resources = root / "resources"
        (self.resources / "connectors").mkdir(parents=True, exist_ok=True)
        self.target_url = f"sqlite:///{root / 'crm.db'}"
        self.drop = root / "drop"
        (self.drop / "in").mkdir(parents=True, exist_ok=True)
        (self.resources / "connections.yaml").write_text(
            "connections:\n"
            f"  dwh: {{type: sql, url: '{warehouse_url}'}}\n"
            f"  crm: {{type: sql, url: '{self.target_url}'}}\n"
            f"  drop: {{type: folder, path: {self.drop}}}\n" + extra_connections
        )
        self.target = sa.create_engine(self.target_url)
        with self.target.begin() as connection:
            connection.exec_driver_sql(TARGET_DDL)

    def spec(self, source: str, *, mapping: str = MAPPING, target: str = "", name: str = "orders_import") -> Path:
        path = self.resources / "connectors" / f"{name}.yaml"
        path.write_text(
            "kind: import\n"
            "import:\n"
            "  source:\n" + textwrap.indent(textwrap.dedent(source).strip(), "    ") + "\n"
            "  target:\n"
            "    connection: crm\n"
            "    table: orders\n"
            "    key: id\n"
            + (textwrap.indent(textwrap.dedent(target).strip(), "    ") + "\n" if target else "")
            + "  mapping:\n"
            + mapping
        )
        return path

    def loaded(self, name: str = "orders_import"):
        project = load_project(self.resources)
        return project, project.connector(name)

    def state(self) -> ImportState:
        return ImportState(default_state_url(Storage.for_project(self.root).root))


@pytest.fixture
def env(tmp_path: Path, pg_database, monkeypatch) -> Env:
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))
    pg_database.execute("CREATE TABLE src_orders (id INTEGER, name TEXT, amount TEXT, ordered TEXT)")
    pg_database.execute(SOURCE_ROWS)
    made = Env(tmp_path, pg_database.url)
    yield made
    made.target.dispose()


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch) -> Env:
    """The same project with a SQLite warehouse (no server needed)."""
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))
    source = sa.create_engine(f"sqlite:///{tmp_path / 'dwh.db'}")
    with source.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE src_orders (id INTEGER, name TEXT, amount TEXT, ordered TEXT)")
        connection.exec_driver_sql(SOURCE_ROWS)
    source.dispose()
    made = Env(tmp_path, f"sqlite:///{tmp_path / 'dwh.db'}")
    yield made
    made.target.dispose()


WAREHOUSE = "warehouse: {connection: dwh, query: 'SELECT * FROM src_orders ORDER BY id'}"
FILES = "files: {connection: drop, folder: in, pattern: 'orders_*.csv'}"


def touch(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


# --------------------------------------------------------------------------------------------------
# Preview


def test_preview_of_a_postgresql_query_is_limited_and_recorded(env: Env) -> None:
    env.spec(WAREHOUSE)
    project, loaded = env.loaded()

    sample = inspection.preview(project, loaded, rows=1)

    assert sample.columns == ["id", "name", "amount", "ordered"]
    assert sample.rows == [(1, "Ann", "10.50", "2024-03-01")]
    assert sample.origin.startswith("the query on postgresql 127.0.0.1:5432/test")
    state = env.state()
    try:
        source_hash = loaded.spec.source_hash(project.connections)
        assert not state.previewed("orders_import", source_hash)
        assert inspection.record_preview(project, loaded) == source_hash
        assert state.previewed("orders_import", source_hash)
    finally:
        state.dispose()


def test_preview_and_columns_of_a_query_ending_in_a_sql_comment(env: Env) -> None:
    env.spec(
        'warehouse: {connection: dwh, query: "SELECT id, name FROM src_orders -- all of them"}',
        mapping="    - {target: id, source: id}\n",
    )
    project, loaded = env.loaded()

    assert inspection.preview(project, loaded, rows=5).rows == [(1, "Ann"), (2, "Bob")]
    assert inspection.source_columns(project, loaded)[0] == ["id", "name"]


def test_preview_and_validate_on_mariadb(sqlite_env: Env, mariadb_database) -> None:
    mariadb_database.execute("CREATE TABLE src_orders (id INTEGER, name TEXT, amount TEXT, ordered TEXT)")
    mariadb_database.execute(SOURCE_ROWS)
    connections = sqlite_env.resources / "connections.yaml"
    connections.write_text(connections.read_text() + f"  maria: {{type: sql, url: '{mariadb_database.url}'}}\n")
    sqlite_env.spec("warehouse: {connection: maria, query: 'SELECT * FROM src_orders ORDER BY id'}")
    project, loaded = sqlite_env.loaded()

    assert inspection.preview(project, loaded, rows=1).rows == [(1, "Ann", "10.50", "2024-03-01")]
    assert inspection.validate(project, loaded) == []

    sqlite_env.spec("warehouse: {connection: maria, query: 'SELECT * FROM src_orderz'}")
    project, loaded = sqlite_env.loaded()
    with pytest.raises(
        inspection.SourceFailed,
        match=r"^the query failed on mysql 127\.0\.0\.1:3306/cp_extract_\w+: "
        r"Table 'cp_extract_\w+\.src_orderz' doesn't exist$",
    ):
        inspection.preview(project, loaded)


def test_a_missing_sqlite_file_is_not_created(sqlite_env: Env) -> None:
    connections = sqlite_env.resources / "connections.yaml"
    connections.write_text(connections.read_text().replace("crm.db", "crm_missing.db"))
    sqlite_env.spec(WAREHOUSE)
    project, loaded = sqlite_env.loaded()

    problems = inspection.validate(project, loaded)

    assert len(problems) == 1
    assert problems[0].endswith(
        f"import.target.connection: cannot connect to sqlite {sqlite_env.root / 'crm_missing.db'}: the database file "
        "does not exist"
    )
    assert not (sqlite_env.root / "crm_missing.db").exists()


def test_preview_names_the_database_error_of_a_bad_query(env: Env) -> None:
    env.spec("warehouse: {connection: dwh, query: 'SELECT * FROM no_such_table'}")
    project, loaded = env.loaded()

    with pytest.raises(inspection.SourceFailed) as failed:
        inspection.preview(project, loaded)

    assert str(failed.value) == (
        'the query failed on postgresql 127.0.0.1:5432/test: relation "no_such_table" does not exist'
    )


def test_preview_says_a_refused_connection_cannot_connect(sqlite_env: Env) -> None:
    (sqlite_env.resources / "connections.yaml").write_text(
        (sqlite_env.resources / "connections.yaml").read_text()
        + "  closed: {type: sql, url: 'postgresql://postgres@127.0.0.1:1/test'}\n"
    )
    sqlite_env.spec(
        "warehouse: {connection: closed, query: 'SELECT 1 AS id'}", mapping="    - {target: id, source: id}\n"
    )
    project, loaded = sqlite_env.loaded()

    with pytest.raises(inspection.SourceFailed, match=r"^cannot connect to postgresql 127\.0\.0\.1:1/test: .*refused"):
        inspection.preview(project, loaded)


def test_preview_needs_the_secret_variable(sqlite_env: Env, monkeypatch) -> None:
    monkeypatch.delenv("CP_TEST_NO_SUCH_PASSWORD", raising=False)
    (sqlite_env.resources / "connections.yaml").write_text(
        (sqlite_env.resources / "connections.yaml").read_text()
        + "  secret: {type: sql, url: 'postgresql://postgres@127.0.0.1:5432/test', "
        "password: '${CP_TEST_NO_SUCH_PASSWORD}'}\n"
    )
    sqlite_env.spec(
        "warehouse: {connection: secret, query: 'SELECT 1 AS id'}", mapping="    - {target: id, source: id}\n"
    )
    project, loaded = sqlite_env.loaded()

    with pytest.raises(ConnectorConfigError, match="needs the environment variable CP_TEST_NO_SUCH_PASSWORD"):
        inspection.preview(project, loaded)


def test_preview_reads_the_newest_matching_file(sqlite_env: Env) -> None:
    sqlite_env.spec(FILES)
    folder = sqlite_env.drop / "in"
    touch(folder / "orders_1.csv", "id,name,amount\n1,Old,1\n", 1_700_000_000)
    touch(folder / "orders_2.csv", "id,name,amount\n7,New,2.5\n8,Newer,3\n9,Newest,4\n", 1_700_000_100)
    touch(folder / "other.csv", "x\n1\n", 1_700_000_200)
    project, loaded = sqlite_env.loaded()

    sample = inspection.preview(project, loaded, rows=2)

    assert sample.columns == ["id", "name", "amount"]
    assert sample.rows == [("7", "New", "2.5"), ("8", "Newer", "3")]
    assert sample.origin.startswith("'orders_2.csv' (")
    assert "the newest of 2 files matching 'orders_*.csv' in folder 'in' of folder" in sample.origin


def test_preview_says_which_files_are_there_when_none_matches(sqlite_env: Env) -> None:
    sqlite_env.spec(FILES)
    for name in ("Orders_1.csv", "b.csv", "c.txt"):
        (sqlite_env.drop / "in" / name).write_text("id\n1\n")
    project, loaded = sqlite_env.loaded()

    with pytest.raises(inspection.NoFileToRead) as failed:
        inspection.preview(project, loaded)

    assert str(failed.value) == (
        f"no file in folder 'in' of folder {sqlite_env.drop} matches pattern 'orders_*.csv' "
        "(3 other files there: Orders_1.csv, b.csv, c.txt)"
    )


def test_preview_gives_the_reason_a_file_is_unreadable(sqlite_env: Env) -> None:
    sqlite_env.spec(FILES)
    (sqlite_env.drop / "in" / "orders_1.csv").write_text("id,name\n1,Ann,extra\n")
    project, loaded = sqlite_env.loaded()

    with pytest.raises(inspection.FileUnreadable) as failed:
        inspection.preview(project, loaded)

    message = str(failed.value)
    assert message.startswith("cannot read 'orders_1.csv' (the newest file matching 'orders_*.csv' in folder 'in'")
    assert message.endswith(": malformed CSV: row 2 has 3 fields where the header has 2: '1,Ann,extra'")


def test_preview_over_sftp(sqlite_env: Env, sftp_server, unique_folder: str, monkeypatch) -> None:
    for variable, value in sftp_server.env().items():
        monkeypatch.setenv(variable, value)
    (sftp_server.root / unique_folder).mkdir()
    (sftp_server.root / unique_folder / "orders_9.csv").write_text("id;name\n5;Eve\n")
    connection = yaml.safe_dump({"partner": sftp_server.connection()}, default_flow_style=False)
    (sqlite_env.resources / "connections.yaml").write_text(
        (sqlite_env.resources / "connections.yaml").read_text() + textwrap.indent(connection, "  ")
    )
    sqlite_env.spec(
        f"files: {{connection: partner, folder: {unique_folder}, pattern: 'orders_*.csv', csv: {{delimiter: ';'}}}}",
        mapping="    - {target: id, source: id}\n",
    )
    project, loaded = sqlite_env.loaded()

    sample = inspection.preview(project, loaded)

    assert sample.rows == [("5", "Eve")]
    assert f"folder '{unique_folder}' of sftp 127.0.0.1:{sftp_server.port}" in sample.origin
    monkeypatch.delenv("TEST_SFTP_PASSWORD")
    with pytest.raises(ConnectorConfigError, match="TEST_SFTP_PASSWORD"):
        inspection.preview(project, loaded)


def test_preview_of_an_email_import_reads_its_inbox(sqlite_env: Env) -> None:
    sqlite_env.spec(
        "email: {address: orders@imports.example, allowed_senders: ['@partner.example'], pattern: 'orders_*.csv'}"
    )
    project, loaded = sqlite_env.loaded()
    with pytest.raises(inspection.NoFileToRead, match="no file has been received at orders@imports.example yet"):
        inspection.preview(project, loaded)

    inbox = Storage.for_project(sqlite_env.root).import_inbox_dir("orders_import")
    inbox.mkdir(parents=True)
    (inbox / "orders_1.csv").write_text("id,name\n3,Cy\n")

    sample = inspection.preview(project, loaded)

    assert sample.rows == [("3", "Cy")] and "the inbox of orders@imports.example" in sample.origin


# --------------------------------------------------------------------------------------------------
# Validate


def test_validate_passes_a_good_import(env: Env) -> None:
    env.spec(WAREHOUSE)
    project, loaded = env.loaded()

    report = inspection.check_mapping(project, loaded)

    assert report.problems == [] and report.notes == []
    assert report.source_columns == ["id", "name", "amount", "ordered"]
    assert inspection.validate(project, loaded) == []


def test_validate_names_a_misspelled_source_column_with_did_you_mean(env: Env) -> None:
    path = env.spec(
        WAREHOUSE,
        mapping=MAPPING.replace("source: amount", "source: amout").replace("trim(name)", "trim(nmae)"),
    )
    project, loaded = env.loaded()

    problems = inspection.validate(project, loaded)

    assert len(problems) == 2, problems
    lines = path.read_text().splitlines()
    source_line = lines.index("      source: amout") + 1
    assert problems[0].endswith(
        f"orders_import.yaml:{lines.index('      expression: trim(nmae)') + 1} import.mapping.1.expression: reads "
        "'nmae', which is not a column of the source (did you mean 'name'?); the source's columns: id, name, "
        "amount, ordered"
    )
    assert (
        f"orders_import.yaml:{source_line} import.mapping.2.source: 'amout' is not a column of the source "
        in (problems[1])
    )
    assert "(did you mean 'amount'?)" in problems[1]


def test_validate_finds_a_target_column_missing_and_a_missing_table(sqlite_env: Env) -> None:
    sqlite_env.spec(WAREHOUSE, mapping=MAPPING + "    - target: note\n      source: ordered\n")
    project, loaded = sqlite_env.loaded()

    problems = inspection.validate(project, loaded)

    assert len(problems) == 1
    assert " import.mapping.3.target: column 'note' is mapped but table 'orders' has no such column" in problems[0]
    assert "allow new attributes" in problems[0]

    sqlite_env.spec(
        WAREHOUSE, mapping=MAPPING + "    - target: note\n      source: ordered\n", target="allow_new_attributes: true"
    )
    project, loaded = sqlite_env.loaded()
    assert inspection.validate(project, loaded) == []

    with sqlite_env.target.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE orders RENAME TO order_rows")
    problems = inspection.validate(project, loaded)
    assert len(problems) == 1
    assert " import.target.table: table 'orders' does not exist on sqlite " in problems[0]


def test_validate_checks_updated_at_and_a_failing_query(sqlite_env: Env) -> None:
    sqlite_env.spec("warehouse: {connection: dwh, query: 'SELECT * FROM src_orders', updated_at: changed}")
    project, loaded = sqlite_env.loaded()
    problems = inspection.validate(project, loaded)
    assert len(problems) == 1 and " import.source.warehouse.updated_at: 'changed' is not a column" in problems[0]

    sqlite_env.spec("warehouse: {connection: dwh, query: 'SELECT * FROM src_order'}")
    project, loaded = sqlite_env.loaded()
    problems = inspection.validate(project, loaded)
    assert len(problems) == 1
    assert problems[0].endswith(
        "import.source.warehouse.query: the query failed on sqlite "
        + str(sqlite_env.root / "dwh.db")
        + ": no such table: src_order"
    )


def test_validate_of_a_file_source_without_a_file_checks_the_target_only(sqlite_env: Env) -> None:
    sqlite_env.spec(FILES, mapping=MAPPING + "    - {target: extra, source: x}\n")
    project, loaded = sqlite_env.loaded()

    report = inspection.check_mapping(project, loaded)

    assert report.source_columns is None
    assert report.notes == [
        "the source columns could not be checked: no file in folder 'in' of folder "
        f"{sqlite_env.drop} matches pattern 'orders_*.csv' (no other files there)"
    ]
    assert len(report.problems) == 1 and "column 'extra' is mapped but" in report.problems[0]

    (sqlite_env.drop / "in" / "orders_1.csv").write_text("id,name\n1,Ann\n")
    problems = inspection.validate(project, loaded)
    assert [p.split(": ", 1)[0].split(" ")[-1] for p in problems] == [
        "import.mapping.2.source",
        "import.mapping.3.source",
        "import.mapping.3.target",
    ]
    assert inspection.validate(project, loaded, columns=["id", "name", "amount", "x"]) == [problems[-1]]


# --------------------------------------------------------------------------------------------------
# Automap and the mapping rewrite


SPEC_WITH_COMMENTS = """\
# Orders from the partner (header comment)
kind: import
import:
  source:
    warehouse:
      connection: dwh   # the warehouse
      query: SELECT * FROM src_orders
  target:
    connection: crm
    table: orders
    key: id
  # the mapping, reviewed by Ann
  mapping:
    # the name is trimmed
    - target: name   # shown in the CRM
      expression: trim(name)

    # the key
    - target: id
      source: id
    # after the last rule
  # before expectations
  expectations:
    - {expect: not_null, column: id}
"""


def test_rewrite_mapping_keeps_everything_but_the_list() -> None:
    new = {"target": "amount", "source": "amount", "note": "automap: amount -> amount (score 1.00); review"}

    text = inspection.rewrite_mapping(SPEC_WITH_COMMENTS, [1, 0, new])

    assert text == SPEC_WITH_COMMENTS.replace(
        """\
    # the name is trimmed
    - target: name   # shown in the CRM
      expression: trim(name)

    # the key
    - target: id
      source: id
""",
        """\

    # the key
    - target: id
      source: id
    # the name is trimmed
    - target: name   # shown in the CRM
      expression: trim(name)
    - target: amount
      source: amount
      note: 'automap: amount -> amount (score 1.00); review'
""",
    )
    assert yaml.safe_load(text)["import"]["mapping"][2] == new


def test_rewrite_mapping_follows_flow_items_and_unindented_dashes() -> None:
    flow = "kind: import\nimport:\n  mapping:\n  - {target: id, source: id}\n  - {target: b, source: b}\n  x: 1\n"
    text = inspection.rewrite_mapping(flow, [{"target": "c", "source": "c: d"}, 1, 0])
    assert text == (
        "kind: import\nimport:\n  mapping:\n  - {target: c, source: 'c: d'}\n  - {target: b, source: b}\n"
        "  - {target: id, source: id}\n  x: 1\n"
    )
    inline = "import:\n  mapping: [{target: id, source: id}]  \n  other: 2\n"
    text = inspection.rewrite_mapping(inline, [0, {"target": "c", "source": "c"}])
    assert yaml.safe_load(text) == {
        "import": {"mapping": [{"target": "id", "source": "id"}, {"target": "c", "source": "c"}], "other": 2}
    }


def test_plan_automap_proposes_keys_first_and_keeps_existing_rules(sqlite_env: Env) -> None:
    with sqlite_env.target.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE orders ADD COLUMN ordered_on DATE")
    path = sqlite_env.spec(
        WAREHOUSE, mapping="    - target: name  # keep me\n      constant: x\n    - {target: id, source: id}\n"
    )
    project, loaded = sqlite_env.loaded()

    plan = inspection.plan_automap(project, loaded)

    assert [(r.target, r.source, r.action) for r in plan.rows] == [
        ("id", "id", "kept"),
        ("name", "constant 'x'", "kept"),
        ("amount", "amount", "new"),
        ("ordered", "ordered", "new"),
    ]
    assert plan.unmatched_targets == ["ordered_on"] and plan.unused_sources == ["name"]
    rules = yaml.safe_load(plan.text)["import"]["mapping"]
    assert rules == [
        {"target": "id", "source": "id"},
        {"target": "name", "constant": "x"},
        {
            "target": "amount",
            "source": "amount",
            "type": "currency",
            "note": "automap: amount -> amount (score 1.00); review",
        },
        {
            "target": "ordered",
            "source": "ordered",
            "type": "date",
            "note": "automap: ordered -> ordered (score 1.00); review",
        },
    ]
    assert "  # keep me" in plan.text and path.read_text() == plan.original  # nothing written by the plan

    replaced = inspection.plan_automap(project, loaded, replace=True)
    assert [(r.target, r.action) for r in replaced.rows] == [
        ("id", "replaced"),
        ("name", "replaced"),
        ("amount", "new"),
        ("ordered", "new"),
    ]


# --------------------------------------------------------------------------------------------------
# Duplicate and purge


def test_duplicate_text_renames_and_switches_off() -> None:
    text = "# comment\nkind: import\nname: orders_import  # the name\nenabled: true\nimport: {}\n"
    assert inspection.duplicate_text(text, "orders_copy") == (
        "# comment\nkind: import\nname: orders_copy  # the name\nenabled: false\nimport: {}\n"
    )
    bare = inspection.duplicate_text("# c\nkind: import\nimport: {}\n", "x")
    assert bare == "# c\nkind: import\nenabled: false  # a copy starts off; turn it on once reviewed\nimport: {}\n"


def test_purge_import_forgets_state_and_removes_folders(sqlite_env: Env) -> None:
    state = sqlite_env.state()
    try:
        state.record_preview("orders_import", "abc")
        state.set_watermark("orders_import", "2024-01-01", "run1")
        state.record_preview("other", "abc")
    finally:
        state.dispose()
    storage = Storage.for_project(sqlite_env.root)
    for folder in (storage.import_dir("orders_import"), storage.import_inbox_dir("orders_import")):
        folder.mkdir(parents=True)
        (folder / "file").write_text("x")

    forgotten, removed = inspection.purge_import(storage, default_state_url(storage.root), "orders_import")

    assert forgotten == 0 and len(removed) == 2 and not any(Path(folder).exists() for folder in removed)
    state = sqlite_env.state()
    try:
        assert not state.previewed("orders_import", "abc") and state.watermark("orders_import") is None
        assert state.previewed("other", "abc")
    finally:
        state.dispose()
