"""The file exchange we host for partners (`connector-pipelines serve-files`): SFTP (asyncssh) and optionally
explicit FTPS (pyftpdlib), each partner confined to `<storage>/partners/<name>/` with `inbox/` (uploads) and
`outbox/` (downloads). Engine code: no Dagster here (connector_pipelines_tests/test_layers.py checks)."""
