"""`partners ...` and `serve-files` as commands: --help everywhere, exit codes, a password printed once and never
stored, usage errors exit 2."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from connector_pipelines.cli.main import main
from connector_pipelines.storage import STORAGE_ENV


@pytest.fixture
def invoke(tmp_path, monkeypatch):
    resources = tmp_path / "resources"
    (resources / "connectors").mkdir(parents=True)
    (resources / "connections.yaml").write_text("connections: {}\n")
    (resources / "partners.yaml").write_text(
        "partners:\n  - {name: acme, methods: [sftp], allowed_networks: [127.0.0.0/8]}\n"
    )
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "storage"))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [*args, "--resources", str(resources)])


@pytest.mark.parametrize(
    "command",
    [
        ["partners"],
        ["partners", "add"],
        ["partners", "rotate"],
        ["partners", "disable"],
        ["partners", "enable"],
        ["partners", "list"],
        ["serve-files"],
    ],
)
def test_every_command_has_help(command):
    done = CliRunner().invoke(main, [*command, "--help"])
    assert done.exit_code == 0 and "Usage:" in done.output


def test_add_prints_the_password_once_and_stores_only_its_hash(invoke, tmp_path):
    added = invoke("partners", "add", "acme")
    password = added.output.strip().splitlines()[-1]

    assert added.exit_code == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'storage' / 'ledger.db'}")
    with engine.connect() as conn:
        [row] = conn.execute(sa.text("SELECT * FROM cp_partner_credentials")).mappings().all()
    engine.dispose()
    assert row["password_hash"].startswith("scrypt$") and password not in row["password_hash"]
    assert (tmp_path / "storage" / "partners" / "acme" / "inbox").is_dir()
    listed = invoke("partners", "list")
    assert listed.exit_code == 0 and password not in listed.output and "scrypt" not in listed.output
    assert invoke("partners", "add", "acme").exit_code == 2  # already has credentials: rotate instead


def test_usage_errors_exit_2(invoke):
    assert invoke("partners", "add", "nobody").exit_code == 2
    assert invoke("partners", "rotate", "acme").exit_code == 2  # no credentials yet
    assert invoke("partners", "disable", "acme").exit_code == 2
