"""CLI commands for imports that inspect or edit specs: preview, validate NAME, automap, duplicate, delete.

`preview_import` and `validate_import` are called by the `preview` and `validate` commands of cli.py for an
import; `automap`, `duplicate` and `delete` are added to its group. The work is done in
delivery/import_inspection.py; here it is printed, with cli.py's exit codes: 0 success, 1 failed (a source that
cannot be read, problems found), 2 bad usage or configuration (an unknown name, an unset secret variable).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from connector_pipelines.cli.common import EXIT_FAILED, EXIT_USAGE, _connector, _load, _table, resources_option
from connector_pipelines.errors import ConnectorConfigError
from connector_pipelines.spec.loader import LoadedConnector, Project


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    click.echo(message, err=True)
    return code


def _config_problems(exc: ConnectorConfigError) -> int:
    for problem in exc.problems:
        click.echo(problem, err=True)
    return EXIT_USAGE


# --------------------------------------------------------------------------------------------------
# preview NAME (import)


def preview_import(project: Project, loaded: LoadedConnector, rows: int) -> int:
    """Print the first `rows` source rows; on success record the preview (a schedule waits for one)."""
    from connector_pipelines.imports import inspect as inspection

    try:
        sample = inspection.preview(project, loaded, rows)
    except ConnectorConfigError as exc:
        return _config_problems(exc)
    except inspection.NoFileToRead as exc:
        # The connection and the folder answered: that is what a preview tests before files arrive. Recorded,
        # so the file sensor can start and pick up the first file (which is checked when it is imported).
        click.echo(f"{exc}; the connection and the folder work, so files will be picked up when they arrive")
        return _record(project, loaded, inspection)
    except inspection.SourceFailed as exc:
        click.echo(f"preview of '{loaded.name}' failed: {exc}", err=True)
        return _fail("nothing was recorded; fix the source and preview again before the import can be scheduled")
    shown = len(sample.rows)
    click.echo(f"first {shown} row{'s' if shown != 1 else ''} of {sample.origin}")
    if sample.columns:
        _table([tuple(sample.columns), *(tuple(inspection.format_value(v) for v in row) for row in sample.rows)])
    if not sample.rows:
        click.echo("(the query returned no rows; its columns are shown)" if sample.columns else "(no columns)")
    return _record(project, loaded, inspection)


def _record(project: Project, loaded: LoadedConnector, inspection) -> int:
    try:
        source_hash = inspection.record_preview(project, loaded)
    except Exception as exc:  # the state database: say so rather than pretend the preview counts
        return _fail(f"the preview worked but could not be recorded: {str(exc).splitlines()[0]}")
    click.echo(
        f"preview recorded for '{loaded.name}' (source {source_hash}): the import may now be scheduled; a change to "
        "its source or connection needs a new preview"
    )
    return 0


# --------------------------------------------------------------------------------------------------
# validate NAME (import)


def validate_import(project: Project, loaded: LoadedConnector) -> int:
    """Check the mapping against the source's columns and the target table; print each problem, then a summary."""
    from connector_pipelines.imports import inspect as inspection

    try:
        report = inspection.check_mapping(project, loaded)
    except ConnectorConfigError as exc:
        return _config_problems(exc)
    for note in report.notes:
        click.echo(f"note: {note}")
    for problem in report.problems:
        click.echo(problem, err=True)
    if report.source_columns is not None:
        checked = f"the {len(report.source_columns)} source column(s) of {report.source_origin} and {report.target}"
    else:
        checked = f"{report.target} (not the source's columns: see the note)"
    if report.problems:
        count = len(report.problems)
        return _fail(
            f"{count} problem{'s' if count != 1 else ''} in the mapping of import '{loaded.name}' (checked against "
            f"{checked}); the import will not run until they are fixed"
        )
    click.echo(f"OK: the mapping of import '{loaded.name}' fits {checked}")
    return 0


# --------------------------------------------------------------------------------------------------
# automap NAME


@click.command()
@click.argument("name")
@click.option("--replace", is_flag=True, help="Replace existing rules for the targets a proposal covers.")
@click.option("--dry-run", is_flag=True, help="Print the proposal; write nothing.")
@resources_option
def automap(name: str, replace: bool, dry_run: bool, resources: Path | None) -> None:
    """Propose an import's mapping by matching source columns to target columns by name, and write it.

    Source columns come from the query's result (or the newest matching file); targets from the target table
    (or, when it does not exist yet, the existing mapping's targets). Keys come first. Existing rules are kept
    unless --replace; each new rule carries a note "automap: SOURCE -> TARGET (score S); review". Only the
    import.mapping list of the file is rewritten; the rest, comments included, stays as it is.
    """
    from connector_pipelines.imports import inspect as inspection
    from connector_pipelines.spec.loader import load_project
    from connector_pipelines.spec.yaml_source import display_path

    project = _load(resources)
    loaded = _connector(project, name, "import")
    try:
        plan = inspection.plan_automap(project, loaded, replace=replace)
    except ConnectorConfigError as exc:
        sys.exit(_config_problems(exc))
    except inspection.SourceFailed as exc:
        sys.exit(_fail(f"cannot propose a mapping for '{name}': {exc}"))
    except inspection.AutomapRefused as exc:
        sys.exit(_fail(f"nothing written: {exc}"))

    click.echo(f"source columns: {len(plan.source_columns)} of {plan.source_origin}")
    click.echo(f"targets: {plan.targets_from}")
    if plan.rows:
        rows = [("TARGET", "FROM", "SCORE", "ACTION")]
        for row in plan.rows:
            action = row.action + (" (key)" if row.key else "")
            if row.proposed is not None:
                action += f"; --replace would take '{row.proposed}'"
            rows.append((row.target, row.source, f"{row.score:.2f}" if row.score is not None else "", action))
        _table(rows)
    if plan.unmatched_targets:
        click.echo(f"no source column is close enough to: {', '.join(plan.unmatched_targets)} (map by hand if needed)")
    if plan.unused_sources:
        click.echo(f"source columns left unmapped: {', '.join(plan.unused_sources)}")
    path = display_path(loaded.path)
    if not plan.changed:
        click.echo(f"nothing to change in {path}")
        sys.exit(0)
    if dry_run:
        click.echo(f"dry run: {plan.added} rule(s) would be written to {path}; nothing was written")
        sys.exit(0)

    loaded.path.write_text(plan.text, encoding="utf-8")
    try:
        load_project(project.resources_dir)
    except ConnectorConfigError as exc:
        loaded.path.write_text(plan.original, encoding="utf-8")
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(_fail(f"the new mapping did not load, so {path} was restored as it was"))
    click.echo(
        f"wrote {plan.added} rule(s) into {path} (marked 'automap: ...; review'); review them, then run "
        f"`connector-pipelines validate {name}` and `connector-pipelines preview {name}`"
    )


# --------------------------------------------------------------------------------------------------
# duplicate NAME NEW_NAME


@click.command()
@click.argument("name")
@click.argument("new_name")
@resources_option
def duplicate(name: str, new_name: str, resources: Path | None) -> None:
    """Copy a connector's spec to connectors/NEW_NAME.yaml, switched off (enabled: false), comments kept.

    The copy starts off so that it never syncs into the same table (or target) as the original by surprise;
    review it, then set enabled: true.
    """
    from connector_pipelines.imports import inspect as inspection
    from connector_pipelines.spec.loader import load_project
    from connector_pipelines.spec.yaml_source import display_path

    project = _load(resources)
    loaded = _connector(project, name)
    if not inspection.valid_name(new_name):
        sys.exit(
            _fail(
                f"'{new_name}' is not a valid connector name: use lowercase letters, digits and underscores, "
                "starting with a letter, at most 63 characters",
                EXIT_USAGE,
            )
        )
    folder = loaded.path.parent
    taken = [path for path in sorted(folder.glob(f"{new_name}.y*ml")) if path.stem == new_name]
    if new_name in project.connectors or taken:
        where = display_path(taken[0] if taken else project.connectors[new_name].path)
        sys.exit(_fail(f"the name '{new_name}' is taken ({where}); choose another", EXIT_USAGE))

    original = loaded.path.read_text(encoding="utf-8")
    try:
        text = inspection.duplicate_text(original, new_name)
    except ValueError as exc:
        sys.exit(_fail(f"cannot copy {display_path(loaded.path)}: {exc}"))
    target = folder / f"{new_name}{loaded.path.suffix}"
    target.write_text(text, encoding="utf-8")
    try:
        copied = load_project(project.resources_dir).connector(new_name)
    except ConnectorConfigError as exc:
        target.unlink()
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(_fail(f"the copy did not load, so {display_path(target)} was removed"))

    click.echo(f"copied '{name}' to {display_path(target)} as '{new_name}'")
    click.echo(f"'{new_name}' is off (enabled: false) so it does not start syncing by surprise; {_same_target(copied)}")
    if copied.kind == "import" and copied.spec.import_.source.email is not None:
        click.echo(
            f"it receives mail at the same address as '{name}' ({copied.spec.import_.source.email.address}); give it "
            "its own import.source.email.address before turning it on"
        )
    click.echo("review it, then set enabled: true")


def _same_target(loaded: LoadedConnector) -> str:
    if loaded.kind == "import":
        target = loaded.spec.import_.target
        return f"it writes into the same table '{target.table}' of connection '{target.connection}' as the original"
    if loaded.kind == "integration":
        return f"it delivers to the same target connection '{loaded.spec.integration.target.connection}'"
    destinations = ", ".join(d.connection for d in loaded.spec.extract.destinations)
    return f"it delivers to the same destinations ({destinations})"


# --------------------------------------------------------------------------------------------------
# delete NAME


@click.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Imports: also forget the state and remove the storage and inbox folders.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@resources_option
def delete(name: str, purge: bool, yes: bool, resources: Path | None) -> None:
    """Remove a connector's spec file (any kind).

    With --purge (imports only) also forget what the import remembers (watermark, files seen, previews) and
    remove its storage folder and its email inbox. An integration's ledger is forgotten by `reset NAME`, which
    needs the spec: run it before deleting.
    """
    from connector_pipelines.imports import inspect as inspection
    from connector_pipelines.spec.loader import load_project
    from connector_pipelines.spec.yaml_source import display_path
    from connector_pipelines.state.database import default_state_url
    from connector_pipelines.state.resources import project_storage
    from connector_pipelines.storage import Storage

    project = None
    try:
        project = load_project(resources)
        loaded = _connector(project, name)
        spec_path, kind, base_dir = loaded.path, loaded.kind, project.base_dir
    except ConnectorConfigError as exc:
        # The project does not load: the file to delete may be the broken one, so find it by its name.
        spec_path, kind, base_dir = _spec_file(resources, name)
        if spec_path is None:
            sys.exit(_config_problems(exc))
        click.echo(f"note: the project does not load ({len(exc.problems)} problem(s)); deleting by file name")
    if purge and kind != "import":
        if kind == "integration":
            message = (
                f"--purge forgets an import's state; '{name}' is an integration, whose ledger `connector-pipelines "
                f"reset {name}` forgets (it needs the spec, so run it first), then delete without --purge"
            )
        else:
            message = f"--purge is for imports; '{name}' is an extract and keeps no state to forget: delete without it"
        sys.exit(_fail(message, EXIT_USAGE))
    path = display_path(spec_path)
    if not yes:
        extra = " and forget its state, storage and inbox" if purge else ""
        click.confirm(f"Delete {path} ({kind} '{name}'){extra}?", abort=True)
    spec_path.unlink()
    click.echo(f"deleted {path}")
    if purge:
        # The archive is known from connections.yaml: a project that does not load purges the local folders only.
        storage = project_storage(project) if project is not None else Storage.for_project(base_dir)
        environment = project.environment if project is not None else None
        forgotten, removed = inspection.purge_import(storage, default_state_url(storage.root, environment), name)
        click.echo(f"forgot the state of '{name}': watermark, previews and {forgotten} file record(s)")
        for folder in removed:
            click.echo(f"removed {folder}")
    elif kind == "import":
        click.echo(f"its state and storage were kept (`delete {name} --purge` removes them)")


def _spec_file(resources: Path | None, name: str) -> tuple[Path | None, str, Path]:
    """(connectors/NAME.yaml or .yml, its `kind:` as written, the project folder), for a project that does not load."""
    import yaml

    from connector_pipelines.spec.loader import default_resources_dir

    resources_dir = Path(resources or default_resources_dir())
    found = [p for p in sorted((resources_dir / "connectors").glob(f"{name}.y*ml")) if p.stem == name]
    if not found:
        return None, "", resources_dir.resolve().parent
    try:
        kind = str((yaml.safe_load(found[0].read_text(encoding="utf-8")) or {}).get("kind", "unknown"))
    except Exception:  # unreadable YAML: still deletable
        kind = "unknown"
    return found[0], kind, resources_dir.resolve().parent
