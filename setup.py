from setuptools import find_packages, setup

setup(
    name="connector-pipelines",
    version="0.1.0",
    description="Data connectors declared in YAML, run and watched in Dagster: extracts, integrations, imports",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(exclude=["connector_pipelines_tests*", "bench*"]),
    include_package_data=True,
    install_requires=[
        "dagster>=1.13,<1.14",
        "dagster-webserver>=1.13,<1.14",
        "dagster-postgres>=0.29,<0.30",
        "pandas>=2.2",
        "pyarrow>=17",
        "sqlalchemy>=2.0",
        "requests>=2.31",
        "paramiko>=3.4",
        "boto3>=1.34",
        "great-expectations>=1.0",
        "pydantic>=2.7",
        "pyyaml>=6",
        # Drivers for the SQL sources we document and test: PostgreSQL's psycopg2 also comes with
        # dagster-postgres; PyMySQL is pure Python and speaks to MariaDB/MySQL.
        "psycopg2-binary>=2.9",
        "pymysql>=1.1",
        # Integrations deliver with an async HTTP client: keep-alive and bounded concurrency on one thread
        # (requests with threads is GIL-bound at ~1,400 requests/s here; aiohttp ~9,000). It also serves the
        # demo's loopback target.
        "aiohttp>=3.9",
        # Imports by email: the package runs an SMTP receiver for connector addresses.
        "aiosmtpd>=1.4",
        # Imports from HTTP APIs page with dlt's RESTClient and paginators (next link, Link header, cursor, offset).
        "dlt>=1.31,<2",
        # `dg`: this repository is a dg project, and `ConnectorComponent` is listed, scaffolded and checked with
        # `dg list components` / `dg scaffold defs` / `dg check defs` in a team's own project.
        "dagster-dg-cli>=1.13,<1.14",
        # `serve-files`: the SFTP server partners push files to and pull files from (asyncssh's SSH server), and
        # its optional explicit FTPS server (pyftpdlib, whose TLS needs pyOpenSSL).
        "asyncssh>=2.14",
        "pyftpdlib>=1.5.9",
        "pyopenssl>=25",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "moto[server]>=5",
            "ruff>=0.5",
            # The UI test drives Debian's chromium (executable_path; no browser download) in headless mode.
            "playwright>=1.45",
        ],
    },
    entry_points={
        "console_scripts": ["connector-pipelines=connector_pipelines.cli:main"],
        # How `dg` finds ConnectorComponent in an environment that has this package installed.
        "dagster_dg_cli.registry_modules": ["connector_pipelines = connector_pipelines"],
    },
)
