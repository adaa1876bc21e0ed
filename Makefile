# The two commands a new user needs: `make demo` and `make test`. Both set everything up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo ui ui-check test lint bench-extract bench-integration bench-import bench-hostile clean

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

## demo: seed the demo warehouse and run every demo connector through Dagster (SQLite storage, local folders)
demo: install
	$(BIN)/connector-pipelines demo

## ui: open the Dagster UI on http://127.0.0.1:3000 (with the demo's loopback CRM running beside it)
ui: install
	$(BIN)/connector-pipelines ui --demo-target

## test: the whole suite against real servers on loopback (PostgreSQL, MariaDB, SFTP, S3, FTP, SMTP)
test: install
	$(BIN)/connector-pipelines validate
	$(BIN)/pytest

## ui-check: the Dagster UI in headless Chromium on the demo (apt-get install -y chromium); screenshots in var/ui-check/
ui-check: install
	$(BIN)/pytest connector_pipelines_tests/ui

lint: install
	$(BIN)/ruff check connector_pipelines connector_pipelines_tests bench
	$(BIN)/ruff format --check connector_pipelines connector_pipelines_tests bench

## bench-extract: 5M rows from PostgreSQL (ROWS=... to scale), beside PostgreSQL's own COPY
bench-extract: install
	$(BIN)/python bench/extract.py

## bench-import: 2M rows from PostgreSQL mapped and upserted into a PostgreSQL table (ROWS=... to scale), beside COPY + one merge
bench-import: install
	$(BIN)/python bench/import_upsert.py

## bench-integration: 200,000 records to a loopback HTTP target (ROWS=... to scale), beside a plain requests.post loop
bench-integration: install
	$(BIN)/python bench/integration.py

## bench-hostile: what a 200 KB gzip file with one 200 MB line and to_integer('1e1000000') cost to refuse, beside a naive reader
bench-hostile: install
	$(BIN)/python bench/hostile_input.py

clean:
	rm -rf var .pytest_cache
