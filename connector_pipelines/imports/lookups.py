"""Compound mapping in imports: `lookups:` and `foreign_key` attributes that name the table they reference.

A partner's file carries a CRM account number; the target table needs our account id. `lookup('account', crm_no)`
finds the value in the lookup table's key column and returns its value column. The tables are read per batch,
for the values the batch holds, through the integrations' `SqlLookup` (`WHERE key IN (...)`, bound, with a
bounded cache): a lookup table of ten million rows costs no more memory than a small one.

Unlike an integration's lookup, which gives null for a value it does not find, an import's is strict: a value
that is not in the table rejects its row, with the reason in the rejections, unless the lookup says
`on_missing: default`. An empty value is not looked up (it stays empty; `required` fields reject it themselves).

A `foreign_key` attribute with `references: {table, column}` is the same thing: its rule becomes a lookup of the
mapped value in `table.column` (returning the column's own value), so a value that does not resolve rejects its
row, and a referenced table or column that is not there fails the run before anything is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa

from connector_pipelines.integration.lookups import SqlLookup
from connector_pipelines.mapping.conversions import as_text, describe_value
from connector_pipelines.mapping.engine import FieldRule, MappingError
from connector_pipelines.spec.imports import ImportMappingRule, ImportSpec
from connector_pipelines.spec.integration import LookupSpec
from connector_pipelines.transports.sql import SqlSource

# Lookup names a spec cannot write (NAME_PATTERN allows no ':'), for the references of foreign keys.
REFERENCE_PREFIX = "references:"
_REJECT = object()


class LookupMissing(ValueError):
    """A value not in a lookup table: a data error, so the mapping rejects the row with this message."""


class _EngineSource:
    """The target's engine, in the shape `SqlLookup` reads (engine, dialect, display name)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.dialect = engine.dialect.name

    @property
    def display_name(self) -> str:
        url = self.engine.url
        where = url.database if url.get_backend_name() == "sqlite" else f"{url.host}:{url.port or ''}/{url.database}"
        return f"{url.get_backend_name()} {where}"


class RequiredLookup:
    """A `SqlLookup` that answers every value: what the table holds, the default, or `LookupMissing`."""

    def __init__(self, table: SqlLookup, missing: Callable[[object], str], default: object = _REJECT):
        self.table = table
        self.missing = missing
        self.default = default

    def check(self) -> None:
        self.table.check()

    def prefetch(self, values: Iterable[object]) -> None:
        self.table.prefetch([form for value in values for form in _forms(value)])

    def get(self, value: object, default: object = None) -> object:
        for form in _forms(value):
            found = self.table.get(form)
            if found is not None:
                return found
        if self.default is not _REJECT:
            return self.default
        raise LookupMissing(self.missing(value))


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")


def _forms(value: object) -> list[object]:
    """The forms a value is looked up as: itself, then its text (a number read from a database, keys of text),
    or the whole number it spells (a file's text, keys of integers: '42' finds 42; '042' does not)."""
    if value is None:
        return []
    if not isinstance(value, str):
        return [value, as_text(value)]
    if _WHOLE_NUMBER.fullmatch(value) and str(int(value)) == value:
        return [value, int(value)]
    return [value]


def import_lookups(
    spec: ImportSpec, target_engine: sa.Engine, open_source: Callable[[str], SqlSource] | None = None
) -> dict[str, RequiredLookup]:
    """Every lookup the spec's mapping uses: its `lookups:` and its foreign keys' references, checked (a missing
    table or column is a `MappingError` now, before anything is read). `open_source(connection)` gives the
    connection of a lookup on another database (kept open by the caller for the run, and disposed by it)."""
    target = _EngineSource(target_engine)

    def source_for(connection: str | None):
        if connection is None:
            return target
        if open_source is None:
            raise MappingError([f"a lookup reads connection '{connection}', which this run was not given"])
        return open_source(connection)

    tables: dict[str, RequiredLookup] = {}
    for name, lookup in spec.lookups.items():
        spec_of = LookupSpec(table=lookup.table, key=lookup.key, value=lookup.value)
        table = SqlLookup(source_for(lookup.connection), spec_of)
        where = f"{lookup.table}.{lookup.key}"
        tables[name] = RequiredLookup(
            table,
            lambda value, where=where: f"{describe_value(value)} is not in {where}",
            lookup.default if lookup.on_missing == "default" else _REJECT,
        )
    for rule in spec.mapping:
        if rule.references is None:
            continue
        ref = rule.references
        table = SqlLookup(source_for(ref.connection), LookupSpec(table=ref.table, key=ref.column, value=ref.column))
        where = f"{ref.table}.{ref.column}"
        tables[REFERENCE_PREFIX + rule.target] = RequiredLookup(
            table, lambda value, where=where: f"{describe_value(value)} does not resolve: no {where} has it"
        )
    problems = []
    for name, table in tables.items():
        try:
            table.check()
        except MappingError as exc:
            label = f"foreign key {name.removeprefix(REFERENCE_PREFIX)}" if name.startswith(REFERENCE_PREFIX) else name
            problems += [f"lookup '{label}': {problem}" for problem in exc.problems]
    if problems:
        raise MappingError(problems)
    return tables


def field_rules(mapping: Sequence[ImportMappingRule]) -> list[FieldRule]:
    """The mapping's rules, a foreign key with `references` looked up in the table it references."""
    rules = []
    for rule in mapping:
        field_rule = FieldRule.from_spec(rule)
        if rule.references is not None and (rule.source is not None or rule.expression is not None):
            argument = rule.expression if rule.expression is not None else f"column({rule.source!r})"
            field_rule = FieldRule(
                target=rule.target,
                expression=f"lookup({REFERENCE_PREFIX + rule.target!r}, {argument})",
                parse=rule.parse,
                default=rule.default,
                note=rule.note,
            )
        rules.append(field_rule)
    return rules


def lookup_connections(spec: ImportSpec) -> set[str]:
    """The connections the spec's lookups and references read (beyond the target's database)."""
    named = {lookup.connection for lookup in spec.lookups.values()}
    named |= {rule.references.connection for rule in spec.mapping if rule.references is not None}
    return {name for name in named if name}
