"""deploy/ checked as far as this machine allows: images cannot be pulled or built here and there is no cluster,
so the files are checked for what each promises. The production dagster.yaml passes Dagster's own config
validation and opens an instance on the machine's PostgreSQL; the workspace passes Dagster's workspace schema and
points at the code server compose starts; every path the Dockerfile copies exists; every variable compose reads
is documented; the Helm values use the K8sRunLauncher and the secrets by the names the secret manifest gives."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import ensure_workspace_config

from connector_pipelines.storage import Storage

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SECRET_NAME = "connector-pipelines-secrets"


@pytest.fixture
def instance_database(fresh_pg_database, monkeypatch) -> str:
    """The production dagster.yaml's variables, pointing at a fresh database of the machine's PostgreSQL."""
    for variable, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": fresh_pg_database,
    }.items():
        monkeypatch.setenv(variable, value)
    return fresh_pg_database


def test_production_dagster_yaml_passes_dagsters_validation_and_opens_on_postgresql(tmp_path, instance_database):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    config, _ = dagster_instance_config(str(home))  # raises on any key Dagster does not know
    assert config["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert instance.get_runs() == []  # the schema was created in the database


def test_workspace_passes_dagsters_schema_and_points_at_the_code_server_compose_starts():
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    ensure_workspace_config(workspace, str(DEPLOY / "workspace.yaml"))
    [server] = [entry["grpc_server"] for entry in workspace["load_from"]]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "user_code", "webserver", "daemon", "email_receiver"}
    grpc = services["user_code"]["command"]
    assert grpc[:3] == ["dagster", "api", "grpc"] and grpc[grpc.index("-p") + 1] == str(server["port"])
    assert server["host"] == "user_code"
    for service in ("webserver", "daemon"):
        command = services[service]["command"]
        assert command[command.index("-w") + 1] == "/opt/dagster/app/workspace.yaml"


def test_every_path_the_dockerfile_copies_exists_and_the_files_it_places_are_the_ones_tested():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+)$", dockerfile, re.M)
    sources = [part for line in copies for part in line.split()[:-1]]
    assert sources and all((REPO / source).exists() for source in sources), sources
    assert "COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml" in dockerfile
    assert "COPY deploy/workspace.yaml /opt/dagster/app/workspace.yaml" in dockerfile


def test_every_variable_compose_reads_is_documented_in_the_env_example():
    compose = (DEPLOY / "docker-compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", compose))  # $${...} is the container's own
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert used and used <= documented
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"} <= documented


def test_helm_values_launch_each_run_in_its_pod_with_the_secrets_the_secret_manifest_names():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "connector_pipelines.definitions", "-a", "defs"]
    named = [
        values["dagsterWebserver"]["envSecrets"],
        deployment["envSecrets"],
        values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"],
    ]
    assert all(secrets == [{"name": SECRET_NAME}] for secrets in named)
    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] is False and daemon["runMonitoring"]["enabled"]

    manifests = list(yaml.safe_load_all((DEPLOY / "helm" / "secrets.example.yaml").read_text()))
    names = {m["metadata"]["name"]: m for m in manifests}
    assert set(names) == {SECRET_NAME, values["global"]["postgresqlSecretName"]}
    assert "CONNECTOR_PIPELINES_LEDGER_URL" in names[SECRET_NAME]["stringData"]
    assert {"name": "CONNECTOR_PIPELINES_ARCHIVE", "value": "archive"} in deployment["env"]

    claim, receiver, _service = yaml.safe_load_all((DEPLOY / "helm" / "email-receiver.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = receiver["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": SECRET_NAME}}]
    assert container["command"][:2] == ["connector-pipelines", "receive-email"]
    # The receiver, the user-code deployment and (through includeConfigInLaunchedRuns) each run mount the
    # same claim where the storage keeps the inboxes.
    inboxes = str(Storage.for_project(Path("/opt/dagster/app")).import_inbox_dir("any").parent)  # the image's
    for volumes, mounts in (
        (pod["volumes"], container["volumeMounts"]),
        (deployment["volumes"], deployment["volumeMounts"]),
    ):
        [volume] = volumes
        assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
        assert mounts == [{"name": volume["name"], "mountPath": inboxes}]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
