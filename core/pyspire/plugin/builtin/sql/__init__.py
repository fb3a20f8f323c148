"""The built-in DataStore ``sql`` (SQLite, PostgreSQL, MySQL/MariaDB)."""

from pyspire.plugin.builtin.sql.store import SqlDataStore

__all__ = ["SqlDataStore"]
