"""`python -m connector_pipelines.cli`: the same command as the `connector-pipelines` script."""

from connector_pipelines.cli.main import main

main()
