"""The demo warehouse's side of the integrations: account managers with roles, and a change log on contacts.

Added after seeding, as a source system would have them: `users` and `user_roles` (who may push which
accounts), and `contact_changes`, filled by triggers on every insert, update and delete of a contact.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MANAGERS = 10
# Manager 1..10: the roles each holds. Managers 4 and 9 are support only, so their accounts are not pushed.
ROLES = {
    1: ("sales", "admin"),
    2: ("sales",),
    3: ("sales",),
    4: ("support",),
    5: ("sales",),
    6: ("sales",),
    7: ("admin",),
    8: ("sales",),
    9: ("support",),
    10: ("sales",),
}

SCHEMA = """
DROP TABLE IF EXISTS users;
DROP TABLE IF EXISTS user_roles;
DROP TABLE IF EXISTS contact_changes;
DROP TRIGGER IF EXISTS contacts_created;
DROP TRIGGER IF EXISTS contacts_updated;
DROP TRIGGER IF EXISTS contacts_deleted;
CREATE TABLE users (user_id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL);
CREATE TABLE user_roles (user_id INTEGER NOT NULL REFERENCES users (user_id), role TEXT NOT NULL);
CREATE TABLE contact_changes (
    sequence_id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('create', 'update', 'delete')),
    changed_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TRIGGER contacts_created AFTER INSERT ON contacts
BEGIN INSERT INTO contact_changes (contact_id, operation) VALUES (NEW.contact_id, 'create'); END;
CREATE TRIGGER contacts_updated AFTER UPDATE ON contacts
BEGIN INSERT INTO contact_changes (contact_id, operation) VALUES (NEW.contact_id, 'update'); END;
CREATE TRIGGER contacts_deleted AFTER DELETE ON contacts
BEGIN INSERT INTO contact_changes (contact_id, operation) VALUES (OLD.contact_id, 'delete'); END;
"""


def add_integration_tables(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO users VALUES (?, ?, ?)",
            [(i, f"Manager {i}", f"manager{i}@demo.example") for i in range(1, MANAGERS + 1)],
        )
        conn.executemany(
            "INSERT INTO user_roles VALUES (?, ?)", [(user, role) for user, roles in ROLES.items() for role in roles]
        )


def change_some_contacts(database: Path) -> dict[str, int]:
    """What a day in the CRM looks like: a few contacts edited, two added, one removed (the triggers log it)."""
    with sqlite3.connect(database) as conn:
        conn.execute(
            "UPDATE contacts SET phone = '+33 1 00 00 00 0' || contact_id, updated_at = '2026-07-01 09:00:00' "
            "WHERE contact_id IN (1, 2, 3)"
        )
        top = conn.execute("SELECT max(contact_id) FROM contacts").fetchone()[0]
        conn.executemany(
            "INSERT INTO contacts VALUES (?, 1, ?, ?, ?, NULL, 'buyer', '2026-07-01 09:05:00', '2026-07-01 09:05:00')",
            [(top + i, f"New{i}", "Contact", f"new.contact{i}@demo.example") for i in (1, 2)],
        )
        conn.execute("DELETE FROM contacts WHERE contact_id = 4")
    return {"updated": 3, "created": 2, "deleted": 1}
