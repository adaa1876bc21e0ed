"""The demo: a seeded SQLite warehouse of billing data and the connectors that use it."""
