"""Shared fixtures. Server fixtures (SFTP, S3, FTP, SMTP) live in servers/ and start real servers on loopback."""

pytest_plugins = [
    "connector_pipelines_tests.servers.fixtures",
    "connector_pipelines_tests.servers.http_target_fixtures",
    "connector_pipelines_tests.fixtures.extract",
    "connector_pipelines_tests.fixtures.integration",
    "connector_pipelines_tests.fixtures.source_databases",
    "connector_pipelines_tests.fixtures.imports",
    "connector_pipelines_tests.fixtures.postgres",
]
