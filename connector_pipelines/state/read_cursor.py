"""How far an integration's scheduled runs have read its data set, per configuration (`cp_read_cursors`).

`read_until` is the highest `updated_at` of the rows a configuration's delivered run read; `full_diff_at` is when
its last complete read (every row of the data set, which is what finds deletes and rows whose `updated_at` did not
move) was delivered. Both are saved after the delivery, never before: a run that dies mid-way leaves the cursor
where it was, so the next run reads those rows again (the ledger's fingerprints make that harmless).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from connector_pipelines.state.ledger import DeliveryLedger, read_cursors_table, utc_now


@dataclass(frozen=True)
class ReadCursor:
    read_until: str | None  # the highest updated_at delivered (text, as a cursor keeps it); None: none seen
    full_diff_at: dt.datetime | None  # when the last complete read was delivered (aware UTC); None: never


def read_cursors(ledger: DeliveryLedger, connector: str, configurations: Iterable[str]) -> dict[str, ReadCursor | None]:
    """Each configuration's cursor (None for a configuration no run has delivered since cursors existed)."""
    t = read_cursors_table
    names = list(configurations)
    query = sa.select(t.c.configuration, t.c.read_until, t.c.full_diff_at).where(
        t.c.connector == connector, t.c.configuration.in_(names)
    )
    with ledger.engine.connect() as conn:
        found = {name: ReadCursor(until, _aware(at)) for name, until, at in conn.execute(query)}
    return {name: found.get(name) for name in names}


def save_read_cursor(
    ledger: DeliveryLedger,
    connector: str,
    configuration: str,
    read_until: str | None,
    full_diff_at: dt.datetime | None,
) -> None:
    """After a delivered run: the new high-water mark (None keeps the old one) and, after a complete read, its time
    (None keeps the old one)."""
    t = read_cursors_table
    key = (t.c.connector == connector) & (t.c.configuration == configuration)
    with ledger.engine.begin() as conn:
        current = conn.execute(sa.select(t.c.read_until, t.c.full_diff_at).where(key)).first()
        values = {"updated_at": utc_now()}
        if read_until is not None:
            values["read_until"] = read_until
        if full_diff_at is not None:
            values["full_diff_at"] = full_diff_at
        if current is None:
            conn.execute(t.insert().values(connector=connector, configuration=configuration, **values))
        else:
            conn.execute(t.update().where(key).values(**values))


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)  # SQLite keeps naive UTC
