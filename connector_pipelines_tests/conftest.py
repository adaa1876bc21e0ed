"""Shared fixtures. Server fixtures (SFTP, S3, FTP, SMTP) live in servers/ and start real servers on loopback."""

pytest_plugins = [
    "connector_pipelines_tests.servers.fixtures",
    "connector_pipelines_tests.servers.http_target_fixtures",
    "connector_pipelines_tests.extract_fixtures",
    "connector_pipelines_tests.integration_fixtures",
    "connector_pipelines_tests.import_fixtures",
]
